"""EfficientNetV2-S/M/L: the table rows, the Fused-MBConv block, the family's defaults and every
builder option on the new block kind.

Parameter counts, MACs and feature taps against torchvision and timm are in
test_reference_implementations.py and test_models_timm_features.py, loading their checkpoints in
test_weights.py (torchvision's V2-S at full depth; timm's ``tf_`` port here, at a quarter of
its depth: the same layers, a quarter of the time), the printed figures in
test_paper_figures.py; the shared checks in test_battery.py. Whole models are built on the meta
device here (shapes only) unless they run.
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import mobilenets
from mobilenets.layers import BlockSpec, DropPath, FusedMBConv, NormConfig, SqueezeExcite
from mobilenets.weights import WeightsNote
from conftest import randomize_bn


def meta_model(name, **options):
    with torch.device("meta"):
        return mobilenets.create_model(name, **options)


# (kind, expansion, out, repeats, first stride) per row, as the family file's table
ROWS = {"s": [("fused", 1, 24, 2, 1), ("fused", 4, 48, 4, 2), ("fused", 4, 64, 4, 2),
              ("ir", 4, 128, 6, 2), ("ir", 6, 160, 9, 1), ("ir", 6, 256, 15, 2)],
        "m": [("fused", 1, 24, 3, 1), ("fused", 4, 48, 5, 2), ("fused", 4, 80, 5, 2),
              ("ir", 4, 160, 7, 2), ("ir", 6, 176, 14, 1), ("ir", 6, 304, 18, 2),
              ("ir", 6, 512, 5, 1)],
        "l": [("fused", 1, 32, 4, 1), ("fused", 4, 64, 7, 2), ("fused", 4, 96, 7, 2),
              ("ir", 4, 192, 10, 2), ("ir", 6, 224, 19, 1), ("ir", 6, 384, 25, 2),
              ("ir", 6, 640, 7, 1)]}


@pytest.mark.parametrize("variant", "sml")
def test_rows_blocks_and_defaults(variant):
    model = meta_model(f"efficientnet_v2_{variant}")
    p = model.plan
    assert p.stem.out == ROWS[variant][0][2] and p.stem.stride == 2 and p.head.out == 1280
    for row, (kind, e, out, n, s) in zip(p.rows, ROWS[variant], strict=True):
        assert len(row) == n and [b.stride for b in row] == [s] + [1] * (n - 1)
        for b in row:
            assert (b.kind, b.out, b.kernel, b.act) == (kind, out, 3, "swish")
            assert b.mid == (b.in_ch if e == 1 else b.in_ch * e)
            # SE: a quarter of the block's input channels, SiLU inside, sigmoid gate
            assert b.se == (b.in_ch // 4 if kind == "ir" else 0)
            assert (b.se_act, b.se_gate) == ("swish", "sigmoid") or kind == "fused"
    blocks = [b for row in p.rows for b in row]
    rates = [b.drop_path for b in blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.2 * (len(blocks) - 1) / len(blocks))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in bns} == {(1e-3, 0.1)}
    assert model.config["dropout"] == {"s": 0.2, "m": 0.3, "l": 0.4}[variant]
    res = {"s": 384, "m": 480, "l": 480}[variant]
    assert model.preprocess["resolution"] == model.preprocess["resize"] == res
    assert model.preprocess["interpolation"] == "bilinear"
    assert len(model.feature_info) == 6 and model.feature_info[5].module == "head"


def test_fused_block_layers_shortcut_and_stochastic_depth():
    norm = NormConfig(eps=1e-3)
    # expansion 1: one 3x3 conv to the output, no projection; shortcut at stride 1
    one = FusedMBConv(BlockSpec("fused", 8, 8, 8, 3, 1, "swish"), norm).eval()
    assert isinstance(one.project, nn.Identity) and one.fused.conv.weight.shape == (8, 8, 3, 3)
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(one(x), x + one.fused(x))
    # expansion 4: 3x3 conv to 32 with act, then a linear 1x1 projection
    four = FusedMBConv(BlockSpec("fused", 8, 32, 8, 3, 1, "swish", drop_path=0.5), norm).eval()
    assert four.fused.conv.weight.shape == (32, 8, 3, 3)
    assert four.project.conv.weight.shape == (8, 32, 1, 1)
    assert isinstance(four.project.act, nn.Identity) and isinstance(four.fused.act, nn.SiLU)
    assert isinstance(four.drop_path, DropPath) and four.drop_path.rate == 0.5
    with torch.no_grad():
        torch.testing.assert_close(four(x), x + four.project(four.fused(x)))
    # stride 2 or a change of width: no shortcut
    down = FusedMBConv(BlockSpec("fused", 8, 32, 16, 3, 2, "swish"), norm)
    assert not down.has_residual and down(x).shape == (2, 16, 5, 5)


def test_width_depth_act_and_other_options():
    model = meta_model("efficientnet_v2_s", width_mult=0.5, depth_mult=0.5, act="relu",
                       num_classes=7, drop_path_rate=0.1, in_chans=1, bn_eps=1e-5)
    p = model.plan
    assert [len(r) for r in p.rows] == [1, 2, 2, 3, 5, 8]              # ceil(0.5 * n)
    assert [r[-1].out for r in p.rows] == [16, 24, 32, 64, 80, 128]     # make_divisible(c/2, 8)
    assert p.stem.out == 16 and p.head.out == 640 and p.stem.in_ch == 1
    assert p.rows[1][0].mid == 16 * 4
    # act replaces every activation (the squeeze-excite's inner one too) but the SE's sigmoid
    # gate
    in_se = {id(m) for se in model.modules() if isinstance(se, SqueezeExcite)
             for m in se.modules()}
    acts = {type(m) for m in model.modules() if id(m) not in in_se
            and isinstance(m, (nn.SiLU, nn.ReLU, nn.Sigmoid))}
    assert acts == {nn.ReLU}
    assert all(isinstance(m.gate, nn.Sigmoid) and isinstance(m.act, nn.ReLU)
               for m in model.modules() if isinstance(m, SqueezeExcite))
    assert model.classifier.out_features == 7
    assert max(b.drop_path for r in p.rows for b in r) == pytest.approx(0.1 * 20 / 21)
    feats = meta_model("efficientnet_v2_m", features_only=True, out_indices=(2, 4))
    assert feats.feature_info.channels() == [80, 512] and feats.feature_info.reduction() == [8, 32]


def test_names_and_aliases():
    assert mobilenets.list_models("efficientnet_v2_*") == [
        "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_v2_s"]
    for v in "sml":
        assert meta_model(f"tf_efficientnetv2_{v}").config["name"] == f"efficientnet_v2_{v}"
    with pytest.raises(ValueError, match="unknown model"):     # another network (272 / 1792)
        mobilenets.models.resolve_name("efficientnetv2_rw_s")


def test_timm_tf_port_loads_with_same_padding(tmp_path):
    """timm's ``tf_efficientnetv2_s`` (ConvBnAct, EdgeResidual and InvertedResidual blocks; TF
    "SAME" padding, eps 1e-3) at depth 0.26, two blocks in every fused row but the first: its
    file loads into ours at the same depth and gives the same logits and features, at an even
    and an odd size (SAME padding's asymmetric case)."""
    timm = pytest.importorskip("timm")
    ref = randomize_bn(timm.create_model("tf_efficientnetv2_s", depth_multiplier=0.26), 2).eval()
    path = tmp_path / "tf_efficientnetv2_s.pth"
    torch.save(ref.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WeightsNote)
        ours = mobilenets.create_model("efficientnet_v2_s", weights=path, depth_mult=0.26).eval()
    assert [len(r) for r in ours.plan.rows] == [len(s) for s in ref.blocks] == [1, 2, 2, 2, 3, 4]
    assert ours.config["padding"] == "same" and ours.config["bn_eps"] == 1e-3
    for res in (64, 71):
        x = torch.randn(2, 3, res, res)
        with torch.no_grad():
            for got, want in ((ours(x), ref(x)), (ours.forward_features(x),
                                                  ref.forward_features(x))):
                got, want = got.numpy(), want.numpy()
                assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max() + 1e-6
