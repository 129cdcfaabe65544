"""MobileNetV4 conv models: the UIB's four settings, the head, widths against timm, defaults.

Parameter counts, MACs, timm weights and feature taps of the registered models are checked with
the other families (test_reference_implementations.py, test_weights.py,
test_models_timm_features.py, test_paper_figures.py, test_battery.py).
"""

import pytest
import torch
from torch import nn

import mobilenets
from mobilenets.layers import NormConfig, UniversalInvertedBottleneck
from mobilenets.models import Architecture, MobileNet, plan
from mobilenets.models.rounding import MakeDivisible
from mobilenets.models.table import FFN, IB, UIB, Conv, ConvNext, ExtraDW, FusedIB


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def tiny(*body):
    arch = Architecture(family="tiny", source="test", stem=Conv(16, kernel=3, stride=2),
                        body=body, head=None, pre_logits=None, act="relu",
                        round_channels=MakeDivisible(8), norm=NormConfig(), dropout=0.0)
    return MobileNet(plan(arch), num_classes=2)


@pytest.mark.parametrize("row,start,mid", [
    (IB(3, e=2, out=16), None, (3, 1)),
    (ConvNext(5, e=4, out=16), (5, 1), None),
    (ExtraDW(3, 5, e=4, out=16), (3, 1), (5, 1)),
    (FFN(e=2, out=16), None, None),
    (ExtraDW(5, 3, e=4, out=24, s=2), (5, 1), (3, 2)),      # stride on the middle depthwise
    (ConvNext(3, e=4, out=24, s=2), (3, 2), None),           # ... or on the start one
])
def test_uib_settings(row, start, mid):
    """IB, ConvNext-like, ExtraDW and FFN are settings of one row: (kernel, stride) of the start
    and middle depthwise convs, or none; the start one has no activation; the expanded width is
    make_divisible(in * e, 8); a shortcut when stride 1 and channels match."""
    assert isinstance(row, UIB)
    block = tiny(row).blocks[0][0]
    assert isinstance(block, UniversalInvertedBottleneck)
    for layer, want in ((block.dw_start, start), (block.dw, mid)):
        if want is None:
            assert isinstance(layer, nn.Identity)
        else:
            assert (layer.conv.kernel_size[0], layer.conv.stride[0]) == want
            assert layer.conv.groups == layer.conv.in_channels
    if start is not None:
        assert isinstance(block.dw_start.act, nn.Identity)
    assert block.expand.conv.out_channels == 16 * row.e
    assert isinstance(block.project.act, nn.Identity)
    assert block.has_residual == (row.s == 1 and row.out == 16)


def test_fused_ib_and_conv_rows():
    """FusedIB: kxk conv expanding (BN, act, stride) into a linear 1x1; a Conv body row is
    conv -> BN -> act with no shortcut (Conv-S's first stages, as the reference code)."""
    model = tiny(FusedIB(3, e=4, out=24, s=2), Conv(24, kernel=1))
    fused, conv = model.blocks[0][0], model.blocks[1][0]
    assert fused.fused.conv.kernel_size == (3, 3) and fused.fused.conv.stride == (2, 2)
    assert fused.fused.conv.out_channels == 64 and isinstance(fused.project.act, nn.Identity)
    assert isinstance(conv.act, nn.ReLU) and model.plan.rows[1][0].has_residual is False
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 2)


def test_head_conv_has_norm_and_no_bias():
    """1x1 960 (BN, ReLU) -> pool -> 1x1 1280 without bias, with BN and ReLU (timm head_norm),
    kept at 1280 for any width; the stem keeps its width below 1 (timm fix_stem)."""
    with torch.device("meta"):
        model = mobilenets.create_model("mobilenet_v4_conv_small_100", width_mult=0.5)
        wide = mobilenets.create_model("mobilenet_v4_conv_small_100", width_mult=1.5)
    assert model.head.conv.out_channels == 480 and model.stem.conv.out_channels == 32
    pre = model.pre_logits
    assert pre.conv.bias is None and pre.bn.num_features == 1280 and isinstance(pre.act, nn.ReLU)
    assert wide.pre_logits.conv.out_channels == 1280 and wide.stem.conv.out_channels == 48
    assert model.num_features == 1280


@pytest.mark.parametrize("width,theirs", [(0.35, "mobilenetv4_conv_small_035"),
                                          (0.5, "mobilenetv4_conv_small_050")])
def test_width_mult_matches_timm_small_widths(width, theirs):
    """timm's Conv-S widths are our width_mult: the same tensors, shape for shape."""
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        ours = mobilenets.create_model("mobilenet_v4_conv_small_100", width_mult=width)
        ref = timm.create_model(theirs)
    assert n_params(ours) == n_params(ref)
    assert ([tuple(p.shape) for p in ours.parameters()] ==
            [tuple(p.shape) for p in ref.parameters()])


@pytest.mark.parametrize("name,res,crop,dropout,drop_path", [
    ("mobilenet_v4_conv_small_100", 224, 0.875, 0.3, 0.0),
    ("mobilenet_v4_conv_medium_100", 256, 0.95, 0.2, 0.075),
    ("mobilenet_v4_conv_large_100", 384, 0.95, 0.2, 0.35),
])
def test_defaults(name, res, crop, dropout, drop_path):
    """timm's pretrained configs for preprocessing (bicubic), the paper's recipe (Tab. 10) for
    dropout and stochastic depth (ramped linearly over the blocks), BatchNorm eps 1e-5."""
    with torch.device("meta"):
        model = mobilenets.create_model(name)
    p, c = model.preprocess, model.config
    assert (p["resolution"], p["crop_pct"], p["interpolation"]) == (res, crop, "bicubic")
    assert (c["dropout"], c["drop_path_rate"], c["bn_eps"]) == (dropout, drop_path, 1e-5)
    rates = [b.drop_path for row in model.plan.rows for b in row]
    assert rates[0] == 0 and rates[-1] == pytest.approx(drop_path * (len(rates) - 1) / len(rates))
    with pytest.raises(ValueError, match="depth_mult is not defined for mobilenet_v4"):
        mobilenets.create_model(name, depth_mult=1.2)


def test_pruning_keeps_v4_conv_rows_and_start_depthwise_whole():
    """UIB hidden channels are cut (see tests/test_compress.py for exactness); Conv rows and
    the start depthwise, which work on block inputs, keep their widths."""
    from mobilenets.compress.prune import pruned_widths
    with torch.device("meta"):
        model = mobilenets.create_model("mobilenet_v4_conv_small_100")
    widths = pruned_widths(model, 0.5)
    for row, wrow in zip(model.plan.rows, widths):
        for spec, (cin, mid, out) in zip(row, wrow):
            assert (cin, out) == (spec.in_ch, spec.out)
            if spec.kind == "cn":
                assert mid == spec.mid
            else:
                assert spec.kind == "uib" and mid < spec.mid


def test_timm_small_050_checkpoint_loads_with_width_mult(tmp_path):
    """timm's mobilenetv4_conv_small_050 (random weights, randomised BatchNorm) loads into
    mobilenet_v4_conv_small_100 at width_mult=0.5 with the same logits."""
    timm = pytest.importorskip("timm")
    import warnings

    from conftest import randomize_bn
    from mobilenets.weights import WeightsNote
    from test_battery import assert_same_logits
    ref = randomize_bn(timm.create_model("mobilenetv4_conv_small_050"), 2).eval()
    torch.save(ref.state_dict(), tmp_path / "mobilenetv4_conv_small_050.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WeightsNote)
        model = mobilenets.create_model("mobilenet_v4_conv_small_100", width_mult=0.5,
                                        weights=tmp_path / "mobilenetv4_conv_small_050.pth")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_same_logits(model.eval()(x), ref(x))


def test_timm_layout_is_ordered_whatever_the_file_order():
    """timm's UIR (dw_start, pw_exp, dw_mid, pw_proj; conv before bn inside each), EdgeResidual
    and norm_head keys sort into execution order from their names alone, as safetensors files
    store them in alphabetical order (shapes on the meta device)."""
    timm = pytest.importorskip("timm")
    import random

    from mobilenets.weights.layouts import ordered_tensors
    with torch.device("meta"):
        state = timm.create_model("mobilenetv4_conv_medium").state_dict()
    want = [k for k in state if not k.endswith("num_batches_tracked")]
    for items in (sorted(state.items()), random.Random(0).sample(list(state.items()), len(state))):
        assert [k for k, _ in ordered_tensors(dict(items), "timm")] == want
