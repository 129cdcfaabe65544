"""Backbones for dense tasks: output stride by dilation, named taps, frozen BatchNorm, and
torchvision's own LRASPP and FasterRCNN trained on our backbones with no glue."""

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import FasterRCNN
from torchvision.models.segmentation.lraspp import LRASPP
from torchvision.ops import FrozenBatchNorm2d

import mobilenets
from mobilenets.models import create_model
from conftest import randomize_bn

# one backbone per family
FAMILIES = ["mobilenet_v1_100", "mobilenet_v2_100", "mobilenet_v3_small_100", "fd_mobilenet_100",
            "efficientnet_b0", "efficientnet_lite0", "mobilenet_v4_conv_small_100"]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name,output_stride", [(n, 16) for n in FAMILIES]
                         + [("mobilenet_v2_100", 8)])
def test_output_stride_trades_stride_for_dilation(name, output_stride):
    plain = create_model(name, features_only=True)
    net = create_model(name, features_only=True, output_stride=output_stride)
    assert n_params(net) == n_params(plain)          # same weights, only strides and dilations
    x = torch.randn(1, 3, 64, 64)
    maps = net.eval()(x)
    assert [64 // m.shape[-1] for m in maps] == net.feature_info.reduction()
    assert net.feature_info.reduction() == [min(r, output_stride)
                                            for r in plain.feature_info.reduction()]
    assert net.feature_info.channels() == plain.feature_info.channels()
    assert net.config["output_stride"] == output_stride
    # the cost model follows: MACs are half of what FlopCounterMode counts, at the larger maps
    model = create_model(name, output_stride=output_stride, num_classes=10).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert mobilenets.profile(model, (3, 64, 64)).macs * 2 == counter.get_total_flops()


def test_dilated_v3_large_equals_torchvision(tmp_path):
    """Output stride 16 is torchvision's mobilenet_v3_large(dilated=True): with its weights,
    the LR-ASPP taps (features[4], 40 ch at /8; features[16], 960 ch at /16) are equal."""
    tv = randomize_bn(torchvision.models.mobilenet_v3_large(dilated=True)).eval()
    torch.save(tv.state_dict(), tmp_path / "v3l.pth")
    with pytest.warns(mobilenets.weights.WeightsNote):
        ours = mobilenets.create_model("mobilenet_v3_large_100", weights=tmp_path / "v3l.pth",
                                       features_only=True, output_stride=16,
                                       return_layers={"blocks.3.0": "low", "head": "high"})
    assert ours.out_channels == {"low": 40, "high": 960}
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        got = ours.eval()(x)
        low = tv.features[:5](x)
        high = tv.features[5:](low)
    assert list(got) == ["low", "high"]
    torch.testing.assert_close(got["low"], low, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["high"], high, rtol=1e-4, atol=1e-5)


def test_torchvision_lraspp_trains_on_our_backbone():
    bb = create_model("mobilenet_v2_100", features_only=True, output_stride=16,
                      return_layers={2: "low", "head": "high"})
    model = LRASPP(bb, bb.out_channels["low"], bb.out_channels["high"], num_classes=5)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    out = model.train()(x)["out"]
    assert out.shape == (2, 5, 64, 64)
    loss = torch.nn.functional.cross_entropy(out, y)
    loss.backward()
    opt.step()
    assert bb.stem.conv.weight.grad is not None


def test_torchvision_faster_rcnn_trains_on_fpn_backbone_with_frozen_bn():
    bb = mobilenets.fpn_backbone("mobilenet_v3_large_100", norm_layer="frozen_batchnorm")
    assert bb.out_channels == 256
    frozen = [m for m in bb.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and not any(isinstance(m, torch.nn.BatchNorm2d) for m in bb.modules())
    model = FasterRCNN(bb, num_classes=3, min_size=128, max_size=128)
    before = frozen[0].running_mean.clone(), frozen[0].weight.clone()
    images = [torch.rand(3, 120, 128), torch.rand(3, 128, 100)]
    targets = [{"boxes": torch.tensor([[10., 20., 60., 90.]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[5., 5., 50., 40.], [30., 30., 90., 120.]]),
                "labels": torch.tensor([2, 1])}]
    losses = model.train()(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                           "loss_rpn_box_reg"}
    total = sum(losses.values())
    total.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01).step()
    assert torch.equal(frozen[0].running_mean, before[0])
    assert torch.equal(frozen[0].weight, before[1])
    assert bb.body.stem.conv.weight.grad is not None
    model.eval()
    with torch.no_grad():
        det = model(images)
    assert len(det) == 2 and set(det[0]) == {"boxes", "scores", "labels"}


def test_frozen_batchnorm_keeps_the_computation():
    opts = dict(num_classes=10, dropout=0.0, drop_path_rate=0.0)
    plain = randomize_bn(create_model("efficientnet_b0", **opts)).eval()
    frozen = create_model("efficientnet_b0", norm_layer="frozen_batchnorm", **opts)
    frozen.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(frozen.train()(x), plain(x), rtol=1e-4, atol=1e-5)


def test_taps_by_module_name_and_errors():
    net = create_model("mobilenet_v3_large_100", features_only=True,
                       out_indices=["blocks.3.0", 4])
    assert [t.module for t in net.feature_info] == ["blocks.3.0", "head"]
    assert net.out_channels == [40, 960]
    with pytest.raises(ValueError, match="no module 'blocks.99.0'"):
        create_model("mobilenet_v3_large_100", features_only=True, out_indices=["blocks.99.0"])
    with pytest.raises(ValueError, match="not both"):
        create_model("mobilenet_v2_100", features_only=True, out_indices=[1],
                     return_layers={2: "x"})
    with pytest.raises(ValueError, match="two taps to one name"):
        create_model("mobilenet_v2_100", features_only=True, return_layers={1: "x", 2: "x"})
    with pytest.raises(ValueError, match="needs features_only"):
        create_model("mobilenet_v2_100", return_layers={1: "x"})
    with pytest.raises(ValueError, match="output_stride must be one of 8, 16, 32"):
        create_model("mobilenet_v2_100", output_stride=4)
    with pytest.raises(ValueError, match="norm_layer"):
        create_model("mobilenet_v2_100", norm_layer="groupnorm")


def test_saved_backbone_with_named_taps_round_trips(tmp_path):
    net = randomize_bn(create_model("mobilenet_v2_100", features_only=True, output_stride=16,
                                    return_layers={"blocks.2.0": "low", "head": "high"}))
    mobilenets.save(net, tmp_path / "bb")
    back = mobilenets.load(tmp_path / "bb")
    assert back.return_layers == net.return_layers
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = net.eval()(x), back.eval()(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k])
