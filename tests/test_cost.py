"""The cost model against a tiny network computed by hand, and against FlopCounterMode."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mobilenets
from mobilenets.layers import NormConfig
from mobilenets.models import Architecture, MobileNet, plan
from mobilenets.models.rounding import Truncate
from mobilenets.models.table import Bottleneck, Conv

# stem 3->4 (3x3 s2), one inverted residual 4 -> 8 (t=2) -> 4 with shortcut, head 1x1 4->8,
# classifier 8->2, on a 3x8x8 input.
TINY = Architecture(family="tiny", source="hand-computed", stem=Conv(4, kernel=3, stride=2),
                    body=(Bottleneck(t=2, c=4, n=1, s=1),), head=Conv(8, kernel=1),
                    pre_logits=None, act="relu6", round_channels=Truncate(1),
                    norm=NormConfig(), dropout=0.0)


@pytest.fixture(scope="module")
def tiny_profile():
    model = MobileNet(plan(TINY), num_classes=2)
    return mobilenets.profile(model, (3, 8, 8))


def test_tiny_params_and_macs_by_hand(tiny_profile):
    p = tiny_profile
    # conv weights: stem 4*3*9=108, expand 8*4=32, dw 8*9=72, project 4*8=32, head 8*4=32;
    # fc 8*2+2=18; BatchNorm 2*(4+8+8+4+8)=64
    assert p.params_no_bn == 108 + 32 + 72 + 32 + 32 + 18
    assert p.params == p.params_no_bn + 64
    # output elements x MACs per element: stem 64*27, expand 128*4, dw 128*9, project 64*8,
    # head 128*4, fc 2*8
    assert p.macs == 1728 + 512 + 1152 + 512 + 512 + 16
    by_type = p.by_type()
    assert by_type["conv"] == {"params": 108, "macs": 1728}
    assert by_type["conv1x1"] == {"params": 96, "macs": 1536}
    assert by_type["depthwise"] == {"params": 72, "macs": 1152}
    assert by_type["fc"] == {"params": 18, "macs": 16}
    assert by_type["norm"] == {"params": 64, "macs": 0}
    names = [layer.name for layer in p.layers if layer.type != "norm"]
    assert names == ["stem.conv", "blocks.0.0.expand.conv", "blocks.0.0.dw.conv",
                     "blocks.0.0.project.conv", "head.conv", "classifier"]


def test_tiny_peak_memory_by_hand(tiny_profile):
    p = tiny_profile
    # definition 1: the input (3*8*8 = 192) and the block output (4*4*4 = 64)
    assert p.peak_memory_bottleneck == 192
    # definition 2: at the depthwise conv, the residual input (64), the expanded tensor (128)
    # and the depthwise output (128) are live
    assert p.peak_memory_live == 64 + 128 + 128


@pytest.mark.parametrize("name", ["mobilenet_v1_050", "mobilenet_v3_small_100",
                                  "efficientnet_b0", "fd_mobilenet_025",
                                  "mobilenet_v4_conv_small_100"])
def test_macs_are_half_of_flop_counter(name):
    model = mobilenets.create_model(name).eval()
    p = mobilenets.profile(model, (3, 160, 160))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 160, 160))
    assert 2 * p.macs == counter.get_total_flops()


def test_profile_defaults_to_model_resolution_and_restores_mode():
    model = mobilenets.create_model("mobilenet_v2_050", resolution=160)
    model.train()
    p = mobilenets.profile(model)
    assert p.input_size == (3, 160, 160) and p.resolution == 160
    assert model.training


def test_profile_rejects_bad_input_size():
    model = mobilenets.create_model("mobilenet_v2_050")
    with pytest.raises(ValueError, match="input_size"):
        mobilenets.profile(model, (3, 224))


def test_profile_of_a_training_model_at_tiny_resolution():
    """Inference figures even when the model is in training mode (BN on 1x1 maps would fail)."""
    model = mobilenets.create_model("mobilenet_v3_small_075", num_classes=3).train()
    p = mobilenets.profile(model, (3, 32, 32))
    assert p.peak_memory_live > 0 and model.training


@pytest.mark.parametrize("name", ["ssdlite_mobilenet_v3_small_100",
                                  "yolov4_mobilenet_v3_small_100"])
def test_a_detector_profiles_its_network_and_keeps_its_mode(name, capsys):
    """A detector's list-of-images forward is not traceable: profile counts its network
    (``head_outputs`` on an input of the size) and the CLI prints it at the model's classes."""
    model = mobilenets.create_model(name, resolution=128, num_classes=5).train()
    p = mobilenets.profile(model)
    assert model.training and all(m.training for m in model.modules())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.rand(1, 3, 128, 128))      # resized to 128: the same convolutions
    assert 2 * p.macs == counter.get_total_flops() and p.peak_memory_live > 0
    assert p.params == sum(t.numel() for t in model.parameters())
    mobilenets.profile(model)
    assert not any(m.training for m in model.modules())
    from mobilenets.cli.main import main
    assert main(["profile", name, "--resolution", "128"]) == 0
    out = capsys.readouterr().out
    full = mobilenets.create_model(name, resolution=128)    # 91 classes, the model's default
    assert f"params           {sum(t.numel() for t in full.parameters()):,} " in out
    assert "Table 3" not in out                                 # no block sequence
    assert main(["profile", name, "--resolution", "128", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] == sum(t.numel() for t in full.parameters())
    assert result["model"] == name and result["width_mult"] == 1.0
