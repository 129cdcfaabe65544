"""Parameter counts and MACs equal timm's and torchvision's for every model they also have.

Both sides are built on the meta device: counts and FlopCounterMode need shapes only.

Where timm and torchvision differ (MobileNetV3 0.75: torchvision widens the 1280 head), we match
timm and the paper; torchvision's builder is compared only where it agrees with the papers.

Models are built on the meta device: parameter counts and FLOPs depend on shapes only, and
EfficientNetV2-L (118M parameters) then costs no initialisation or arithmetic.
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mobilenets

# figures from the issue / the model cards, typed once
KNOWN_PARAMS = {"mobilenet_v1_100": 4_231_976, "mobilenet_v2_100": 3_504_872,
                "mobilenet_v3_large_100": 5_483_032, "mobilenet_v3_small_100": 2_542_856,
                "efficientnet_b0": 5_288_548, "efficientnet_b7": 66_347_960,
                "efficientnet_lite0": 4_652_008, "efficientnet_lite4": 13_006_568,
                "mobilenet_v4_conv_small_100": 3_774_024,
                "mobilenet_v4_conv_medium_100": 9_715_512,
                "mobilenet_v4_conv_large_100": 32_590_864,
                # torchvision's model cards (num_params)
                "efficientnet_v2_s": 21_458_488, "efficientnet_v2_m": 54_139_356,
                "efficientnet_v2_l": 118_515_272}

TIMM = {"mobilenet_v1_100": "mobilenetv1_100",
        **{f"mobilenet_v2_{w}": f"mobilenetv2_{w}" for w in ("140", "100", "075", "050", "035")},
        **{f"mobilenet_v3_{s}_{w}": f"mobilenetv3_{s}_{w}" for s in ("large", "small")
           for w in ("100", "075")},
        "mobilenet_v3_large_minimal_100": "tf_mobilenetv3_large_minimal_100",
        "mobilenet_v3_small_minimal_100": "tf_mobilenetv3_small_minimal_100",
        **{f"efficientnet_b{b}": f"efficientnet_b{b}" for b in range(8)},
        **{f"efficientnet_lite{b}": f"tf_efficientnet_lite{b}" for b in range(5)},
        **{f"mobilenet_v4_conv_{s}_100": f"mobilenetv4_conv_{s}" for s in ("small", "medium",
                                                                          "large")},
        **{f"efficientnet_v2_{v}": f"tf_efficientnetv2_{v}" for v in "sml"}}

TORCHVISION = {"mobilenet_v2_100": "mobilenet_v2", "mobilenet_v3_large_100": "mobilenet_v3_large",
               "mobilenet_v3_small_100": "mobilenet_v3_small",
               **{f"efficientnet_b{b}": f"efficientnet_b{b}" for b in range(8)},
               **{f"efficientnet_v2_{v}": f"efficientnet_v2_{v}" for v in "sml"}}


def meta(build, *args, **kwargs):
    """``build(*args, **kwargs)`` on the meta device (shapes only)."""
    with torch.device("meta"):
        return build(*args, **kwargs)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def flops(model, res):
    model.eval()
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, res, res, device=device))
    return counter.get_total_flops()


def meta(build, name):
    with torch.device("meta"):
        return build(name)


@pytest.mark.parametrize("name", sorted(KNOWN_PARAMS))
def test_known_parameter_counts(name):
    assert n_params(meta(mobilenets.create_model, name)) == KNOWN_PARAMS[name]


@pytest.mark.parametrize("name", sorted(TIMM))
def test_matches_timm(name):
    timm = pytest.importorskip("timm")
    ours = meta(mobilenets.create_model, name)
    theirs = meta(timm.create_model, TIMM[name])
    assert n_params(ours) == n_params(theirs)
    # same MACs at 128 px means the same strides and kernels, not only the same weights
    assert 2 * mobilenets.profile(ours, (3, 128, 128)).macs == flops(theirs, 128)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_matches_torchvision(name):
    import torchvision
    ours = meta(mobilenets.create_model, name)
    theirs = meta(torchvision.models.get_model, TORCHVISION[name])
    assert n_params(ours) == n_params(theirs)
    assert 2 * mobilenets.profile(ours, (3, 128, 128)).macs == flops(theirs, 128)


def test_timm_aliases_resolve_to_same_architecture():
    for ours, theirs in TIMM.items():
        if theirs.startswith(("mobilenetv", "tf_efficientnetv2_")):
            assert meta(mobilenets.create_model, theirs).config["name"] == ours
