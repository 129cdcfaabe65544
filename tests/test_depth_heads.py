"""The depth heads (models/heads/depth.py): FastDepth and MiDaS v2.1 small on any backbone and
on torchvision's ResNet-18.

Parameter counts are checked against the reference figures of
``../shared/reference/dense-and-families.md`` §6 (FastDepth ``MobileNetSkipAdd``: encoder
3,206,976 + decoder 753,954; MiDaS small: scratch 2,156,544, refinenets 9,570,560 / 2,393,216 /
598,592 / 151,872 with refinenet4's unused first residual unit, head 27,745, encoder 6,422,016)
and against the same figures recomputed from the layer shapes. The forwards are checked
against the references' own order of operations (fixed x2 upsampling) at a size divisible
by 32, the ResNet-18 encoder against torchvision's network, and ONNX files against
onnxruntime.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_bn
from torch import nn

from mobilenets.models import create_model
from mobilenets.models.heads import HEADS

ONE_PER_FAMILY = ["mobilenet_v1_100", "mobilenet_v2_100", "mobilenet_v3_large_100",
                  "fd_mobilenet_100", "efficientnet_b0", "efficientnet_lite0", "resnet18"]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_as_depth_heads():
    for head, default in (("fastdepth", "mobilenet_v1_100"),
                          ("midas_small", "efficientnet_lite3")):
        entry = HEADS[head]
        assert (entry.task, entry.default_backbone) == ("depth", default)
        assert "resnet18" in entry.extra_backbones


def test_fastdepth_reproduces_the_reference_parameter_counts():
    model = create_model("fastdepth")          # default backbone: mobilenet_v1_100
    assert model.config["name"] == "fastdepth_mobilenet_v1_100"
    assert model.config["options"]["decoder_channels"] == [512, 256, 128, 64, 32]
    # V1 1.0's skips (64 @ /2, 128 @ /4, 256 @ /8) meet decoder maps of their width
    assert all(isinstance(p, nn.Identity) for p in model.skip_proj)
    encoder = n_params(model.backbone)
    decoder = n_params(model) - encoder
    # the layer shapes: per stage a 5x5 depthwise conv + BN on c_in, a 1x1 c_in -> c_out + BN;
    # then the 1x1 32 -> 1 with BN (weights, BN weight and bias; no conv biases)
    chans = [1024, 512, 256, 128, 64, 32]
    by_shapes = sum(25 * a + 2 * a + a * b + 2 * b for a, b in zip(chans, chans[1:])) + 32 + 2
    assert decoder == by_shapes == 753_954
    # the reference's encoder is MobileNetV1 1.0 without its pooling and classifier
    classifier = create_model("mobilenet_v1_100")
    assert encoder == n_params(classifier) - n_params(classifier.classifier) == 3_206_976
    assert n_params(model) == 3_960_930
    # and its multiply-adds at 224 px (the reference's derived 0.737 G, unpruned)
    from mobilenets.cost import profile
    assert round(profile(model, (3, 224, 224)).macs / 1e9, 3) == 0.737


def test_midas_small_reproduces_the_reference_parameter_counts():
    model = create_model("midas_small")        # default backbone: efficientnet_lite3
    taps = model.backbone.feature_info
    # MiDaS small's encoder taps: 32 @ /4, 48 @ /8, 136 @ /16, 384 @ /32
    assert taps.channels() == [32, 48, 136, 384]
    assert taps.reduction() == [4, 8, 16, 32]
    assert n_params(model.backbone) == 6_422_016
    s = model.scratch
    assert sum(n_params(getattr(s, f"layer{k}_rn")) for k in range(1, 5)) == 2_156_544
    assert 9 * (32 * 64 + 48 * 128 + 136 * 256 + 384 * 512) == 2_156_544
    rcu = {f: 2 * (9 * f * f + f) for f in (64, 128, 256, 512)}     # two 3x3 convs with bias
    # refinenet4 has no first residual unit here (MiDaS builds one and never calls it)
    unused = rcu[512]
    assert unused == 4_719_616
    assert not hasattr(s.refinenet4, "resConfUnit1")
    assert n_params(s.refinenet4) == 9_570_560 - unused == rcu[512] + 512 * 256 + 256
    assert n_params(s.refinenet3) == 2_393_216 == 2 * rcu[256] + 256 * 128 + 128
    assert n_params(s.refinenet2) == 598_592 == 2 * rcu[128] + 128 * 64 + 64
    assert n_params(s.refinenet1) == 151_872 == 2 * rcu[64] + 64 * 64 + 64
    assert n_params(s.output_conv) == 27_745 == (9 * 64 * 32 + 32) + (9 * 32 * 32 + 32) + 33
    assert n_params(model) == 21_320_545 - unused


def reference_fastdepth_forward(model, x):
    """FastDepth's ``MobileNetSkipAdd.forward`` order: stage, nearest x2, then the skip."""
    x2, x4, x8, y = model.backbone(x)
    for i, stage in enumerate(model.decoder):
        y = F.interpolate(stage(y), scale_factor=2, mode="nearest")
        y = y + {1: x8, 2: x4, 3: x2}.get(i, 0)
    return model.final(y)


def reference_midas_forward(model, x):
    """MiDaS small's forward: every fusion block upsamples by x2 (align_corners=True)."""
    s = model.scratch

    def fuse(block, y, skip=None):
        if skip is not None:
            y = y + block.resConfUnit1(skip)
        y = F.interpolate(block.resConfUnit2(y), scale_factor=2, mode="bilinear",
                          align_corners=True)
        return block.out_conv(y)

    l1, l2, l3, l4 = model.backbone(x)
    y = fuse(s.refinenet4, s.layer4_rn(l4))
    y = fuse(s.refinenet3, y, s.layer3_rn(l3))
    y = fuse(s.refinenet2, y, s.layer2_rn(l2))
    y = fuse(s.refinenet1, y, s.layer1_rn(l1))
    return s.output_conv(y)


def test_forward_equals_the_references_at_sizes_divisible_by_32():
    x = torch.randn(1, 3, 96, 64)
    for model, reference in ((create_model("fastdepth", width_mult=0.25),
                              reference_fastdepth_forward),
                             (create_model("midas_small", backbone="mobilenet_v2_035",
                                           features=16), reference_midas_forward)):
        model = randomize_bn(model).eval()
        with torch.no_grad():
            y, ref = model(x), reference(model, x)
        assert y.shape == ref.shape == (1, 1, 96, 64)
        assert y.std() > 0
        torch.testing.assert_close(y, ref, rtol=0, atol=0)


@pytest.mark.parametrize("backbone", ONE_PER_FAMILY)
def test_output_at_the_input_size(backbone):
    x = torch.randn(2, 3, 64, 64)
    for head, kind in (("fastdepth", "metric"), ("midas_small", "inverse_relative")):
        # MiDaS at features 16: the taps are under test here, not the decoder's widths
        options = {"features": 16} if head == "midas_small" else {}
        model = create_model(head, backbone=backbone, **options).eval()
        assert (model.task, model.depth_kind, model.config["depth_kind"]) == ("depth", kind,
                                                                               kind)
        assert model.config["name"] == f"{head}_{backbone}"
        with torch.no_grad():
            y = model(x)
        assert y.shape == (2, 1, 64, 64)
        assert torch.isfinite(y).all()
        if head == "midas_small":
            assert (y >= 0).all()           # non_negative: a final ReLU


def test_sizes_not_divisible_by_32_still_give_the_input_size():
    for head in ("fastdepth", "midas_small"):
        model = create_model(head, backbone="mobilenet_v3_small_100").eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 80, 100)).shape == (1, 1, 80, 100)


def test_preprocessing_is_the_backbones_without_a_crop_margin():
    v1 = create_model("fastdepth")
    assert v1.preprocess["resolution"] == v1.preprocess["resize"] == 224
    assert v1.preprocess["crop_pct"] == 1.0
    lite = create_model("midas_small", backbone="efficientnet_lite0")
    assert lite.preprocess["resolution"] == 256              # MiDaS small's input size
    assert (lite.preprocess["mean"], lite.preprocess["std"]) == ((0.5,) * 3, (0.5,) * 3)
    assert lite.preprocess["interpolation"] == "bicubic"
    resnet = create_model("fastdepth", backbone="resnet18", resolution=128)
    assert resnet.preprocess["resolution"] == 128
    assert resnet.preprocess["mean"] == (0.485, 0.456, 0.406)
    assert resnet.preprocess["std"] == (0.229, 0.224, 0.225)


def test_skip_projection_only_where_the_widths_differ():
    # ResNet-18: deepest 512 -> decoder 256, 128, 64, 32, 16; skips 128 @ /8, 64 @ /4 match
    # stages 2 and 3, the stem's 64 @ /2 meets 32 and is projected
    model = create_model("fastdepth", backbone="resnet18")
    assert model.config["options"]["decoder_channels"] == [256, 128, 64, 32, 16]
    p8, p4, p2 = model.skip_proj
    assert isinstance(p8, nn.Identity) and isinstance(p4, nn.Identity)
    assert (p2.conv.in_channels, p2.conv.out_channels, p2.conv.kernel_size) == (64, 32, (1, 1))
    assert isinstance(p2.bn, nn.BatchNorm2d) and isinstance(p2.act, nn.Identity)


def test_resnet18_encoder_is_torchvisions():
    from torchvision.models import resnet18
    from torchvision.models.feature_extraction import create_feature_extractor
    model = create_model("midas_small", backbone="resnet18")
    reference = resnet18(weights=None).eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    model.backbone.load_state_dict(state)             # strict: the same names and shapes
    assert n_params(model.backbone) == n_params(reference) - n_params(reference.fc)
    taps = create_feature_extractor(reference, {f"layer{k}": str(k) for k in range(1, 5)})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model.backbone.eval()(x), taps(x)
    assert [t.shape[1] for t in ours] == model.backbone.feature_info.channels()
    for k, y in enumerate(ours, 1):
        torch.testing.assert_close(y, theirs[str(k)], rtol=0, atol=0)


def test_backward_reaches_every_parameter():
    # no unused parameters: DistributedDataParallel needs no find_unused_parameters
    for model in (create_model("fastdepth", backbone="resnet18"),
                  create_model("midas_small", backbone="fd_mobilenet_050", features=16)):
        model.train()
        y = model(torch.randn(2, 3, 64, 64))
        (y - 1).abs().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert missing == []
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        decoder = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
        assert sum(int(p.grad.abs().sum() > 0) for p in decoder) == len(decoder)


def test_midas_small_starts_with_a_live_output():
    """PyTorch's default init of the last conv (the reference's) left the final ReLU at zero
    everywhere for some seeds (3 of 16 seed/backbone pairs); its non-negative start cannot."""
    for seed in range(4):
        torch.manual_seed(seed)
        model = create_model("midas_small", backbone="mobilenet_v3_small_075",
                             features=8).train()
        assert (model(torch.randn(2, 3, 64, 64)) > 0).all()


@pytest.mark.parametrize("head, backbone, options", [
    ("fastdepth", "resnet18", {"decoder_channels": [64, 32, 32, 16, 8], "bn_momentum": 0.01}),
    ("midas_small", "mobilenet_v2_035", {"features": 16, "non_negative": False,
                                         "width_mult": 0.5}),
])
def test_config_rebuilds_the_model(head, backbone, options):
    torch.manual_seed(0)
    model = create_model(f"{head}_{backbone}", **options)
    config = json.loads(json.dumps(model.config))           # JSON-safe
    assert (config["name"], config["head"], config["backbone"], config["task"]) == (
        f"{head}_{backbone}", head, backbone, "depth")
    assert config["options"] == {**options, **config["options"]}
    torch.manual_seed(0)
    again = create_model(config["name"], **config["options"])
    torch.manual_seed(0)
    by_head = create_model(head, backbone=backbone, **options)
    for other in (again, by_head):
        assert other.config == model.config
        a, b = model.state_dict(), other.state_dict()
        assert [(k, v.shape) for k, v in a.items()] == [(k, v.shape) for k, v in b.items()]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_options_are_named():
    with pytest.raises(TypeError, match="decoder_channels.*width_mult"):
        create_model("fastdepth", depth_channels=[1, 2])
    with pytest.raises(TypeError, match="width_mult.*resolution, bn_eps, bn_momentum"):
        create_model("fastdepth_resnet18", width_mult=0.5)
    with pytest.raises(TypeError, match="out_indices: the head chooses"):
        create_model("midas_small", out_indices=(1, 2))
    with pytest.raises(ValueError, match="five positive integers"):
        create_model("fastdepth", decoder_channels=[64, 32])
    with pytest.raises(ValueError, match="features must be an integer"):
        create_model("midas_small", features=1)
    with pytest.raises(ValueError, match="besides the registered backbones it takes resnet18"):
        create_model("fastdepth", backbone="resnet34")


def export(model, path):
    """``mobilenets.deploy.export_onnx`` with the depth task's output names."""
    from mobilenets.deploy import export_onnx
    return export_onnx(model, path, resolution=64, task="depth")


@pytest.mark.parametrize("name, options", [
    ("fastdepth_mobilenet_v1_100", {}),
    ("midas_small_mobilenet_v3_small_100", {"features": 32}),
])
def test_onnx_export_matches_onnxruntime(tmp_path, name, options):
    import onnxruntime as ort
    model = randomize_bn(create_model(name, **options)).eval()
    path = export(model, tmp_path / "depth.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 64, 64)
    (y,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert y.shape == (1, 1, 64, 64) and expected.std() > 0
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
