"""Builder options, names and aliases, and the errors for bad input."""

import pytest
import torch

import mobilenets
from mobilenets.layers import DropPath, SqueezeExcite
from mobilenets.models import get_entry


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_list_models_and_pattern():
    names = mobilenets.list_models()
    assert len(mobilenets.list_models(task="classification")) == 38
    assert mobilenets.list_models("mobilenet_v3_*") == [n for n in names
                                                        if n.startswith("mobilenet_v3_")]
    assert mobilenets.list_models("nothing*") == []


@pytest.mark.parametrize("alias,name", [("mobilenetv2_100", "mobilenet_v2_100"),
                                        ("mobilenet_v2", "mobilenet_v2_100"),
                                        ("mobilenet_v3_large", "mobilenet_v3_large_100"),
                                        ("mobilenetv3_small_075", "mobilenet_v3_small_075"),
                                        ("mobilenetv1_100", "mobilenet_v1_100"),
                                        ("tf_mobilenetv3_small_minimal_100",
                                         "mobilenet_v3_small_minimal_100"),
                                        ("mobilenetv4_conv_medium",
                                         "mobilenet_v4_conv_medium_100")])
def test_aliases(alias, name):
    assert mobilenets.create_model(alias).config["name"] == name


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown model 'mobilenet_v3_larg'.*did you mean.*"
                                         r"mobilenet_v3_large"):
        mobilenets.create_model("mobilenet_v3_larg")


@pytest.mark.parametrize("option,value,match", [
    ("width_mult", 0, "width_mult must be a number > 0"),
    ("width_mult", -1.0, "width_mult must be a number > 0"),
    ("depth_mult", 0.0, "depth_mult must be a number > 0"),
    ("num_classes", -1, "num_classes must be an integer >= 0"),
    ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
    ("drop_path_rate", -0.1, r"drop_path_rate must be in \[0, 1\)"),
    ("in_chans", 0, "in_chans must be an integer >= 1"),
    ("resolution", 16, "smaller than the network's total stride 32"),
    ("act", "tanhh", "unknown activation 'tanhh'; allowed:"),
    ("bn_momentum", 1.5, "bn_momentum must be in"),
])
def test_bad_options_name_the_problem(option, value, match):
    with pytest.raises(ValueError, match=match):
        mobilenets.create_model("mobilenet_v2_100", **{option: value})


def test_unknown_option_lists_allowed():
    with pytest.raises(TypeError, match="unknown option.*widht_mult.*allowed: num_classes"):
        mobilenets.create_model("mobilenet_v2_100", widht_mult=0.5)


def test_input_too_small_or_wrong_channels():
    model = mobilenets.create_model("mobilenet_v3_small_100").eval()
    with pytest.raises(ValueError, match="smaller than the network's total stride 32"):
        model(torch.randn(1, 3, 24, 24))
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="4-D input"):
        model(torch.randn(3, 64, 64))


def test_any_width_and_resolution_v1():
    """MobileNetV1 with any alpha > 0 and any rho: channels follow slim's truncation rule."""
    model = mobilenets.create_model("mobilenet_v1_100", width_mult=0.6, resolution=176)
    assert model.plan.stem.out == int(32 * 0.6)
    assert model.plan.rows[-1][-1].out == int(1024 * 0.6)
    assert model.preprocess["resolution"] == 176
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 176, 176)).shape == (1, 1000)


def test_v2_last_channel_rule():
    """1280 kept below width 1, scaled above (MobileNetV2 §4, slim finegrain mode)."""
    assert mobilenets.create_model("mobilenet_v2_050").plan.head.out == 1280
    assert mobilenets.create_model("mobilenet_v2_140").plan.head.out == 1792
    assert mobilenets.create_model("mobilenet_v2_130").plan.head.out == 1664


def test_v3_se_and_head_rules():
    model = mobilenets.create_model("mobilenet_v3_large_075")
    assert model.plan.pre_logits.out == 1280          # head unscaled for 0.75
    for se in (m for m in model.modules() if isinstance(m, SqueezeExcite)):
        mid = se.reduce.in_channels
        assert se.reduce.out_channels == mobilenets.models.rounding.make_divisible(mid / 4, 8)
        assert isinstance(se.gate, torch.nn.Hardsigmoid)
    minimal = mobilenets.create_model("mobilenet_v3_large_minimal_100")
    assert not any(isinstance(m, (SqueezeExcite, torch.nn.Hardswish)) for m in minimal.modules())
    assert all(b.kernel == 3 for row in minimal.plan.rows for b in row)


def test_efficientnet_se_on_block_input_and_drop_path_ramp():
    model = mobilenets.create_model("efficientnet_b0")
    blocks = [b for row in model.plan.rows for b in row]
    assert len(blocks) == 16
    assert all(b.se == max(1, int(b.in_ch * 0.25)) for b in blocks)
    rates = [b.drop_path for b in blocks]
    assert rates[0] == 0 and rates == sorted(rates)
    assert rates[-1] == pytest.approx(0.2 * 15 / 16)
    assert mobilenets.create_model("efficientnet_b3").config["dropout"] == 0.3
    assert mobilenets.create_model("efficientnet_b3").preprocess["interpolation"] == "bicubic"
    # depth: round_repeats = ceil(depth_mult * n)
    b7 = mobilenets.create_model("efficientnet_b7")
    assert [len(r) for r in b7.plan.rows] == [4, 7, 7, 10, 10, 13, 4]


def test_drop_path_rate_option_and_training_behaviour():
    model = mobilenets.create_model("mobilenet_v2_100", drop_path_rate=0.5)
    dps = [m for m in model.modules() if isinstance(m, DropPath)]
    assert dps and max(m.rate for m in dps) > 0.4
    block = dps[-1]
    x = torch.ones(64, 4, 2, 2)
    block.train()
    y = block(x)
    kept = (y[:, 0, 0, 0] != 0).float().mean()
    assert 0 < kept < 1 and torch.allclose(y[y != 0], torch.tensor(1 / (1 - block.rate)))
    block.eval()
    assert torch.equal(block(x), x)


def test_act_override_num_classes_in_chans_and_bn_options():
    model = mobilenets.create_model("mobilenet_v1_100", act="relu6", num_classes=5, in_chans=1,
                                    bn_eps=1e-5, bn_momentum=0.1)
    assert not any(type(m) is torch.nn.ReLU for m in model.modules())
    assert any(isinstance(m, torch.nn.ReLU6) for m in model.modules())
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-5 and m.momentum == 0.1 for m in bns)
    assert model.config["bn_eps"] == 1e-5 and model.config["act"] == "relu6"
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 64, 64)).shape == (2, 5)


def test_act_override_reaches_the_squeeze_excite_but_not_its_gate():
    from mobilenets.layers.squeeze_excite import SqueezeExcite
    model = mobilenets.create_model("mobilenet_v3_small_100", act="relu6")
    ses = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert ses and all(isinstance(m.act, torch.nn.ReLU6) for m in ses)
    assert all(isinstance(m.gate, torch.nn.Hardsigmoid) for m in ses)
    plain = mobilenets.create_model("mobilenet_v3_small_100")
    assert all(type(m.act) is torch.nn.ReLU for m in plain.modules()
               if isinstance(m, SqueezeExcite))


def test_reference_bn_defaults_recorded():
    """The reference eps is used; the momentum default is PyTorch's 0.1 for every family (the
    reference codes' tiny momenta leave the running statistics at their initial values in a
    short run), with the reference value kept in the family's table."""
    assert mobilenets.create_model("mobilenet_v3_small_100").config["bn_eps"] == 1e-3
    assert mobilenets.create_model("fd_mobilenet_100").config["bn_eps"] == 1e-5
    for name, reference in (("mobilenet_v1_100", 3e-4), ("mobilenet_v2_100", 3e-3),
                            ("mobilenet_v3_small_100", 0.01), ("efficientnet_b0", 0.01),
                            ("fd_mobilenet_100", 0.1)):
        model = mobilenets.create_model(name)
        assert model.config["bn_momentum"] == 0.1
        assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
        assert get_entry(name).arch.reference_bn_momentum == reference


def test_bn_momentum_default_lets_running_stats_follow_a_short_run():
    """After 50 train-mode steps on the same batch, the stem's BatchNorm running mean has moved
    99.5% of the way to the batch mean (1 - 0.9 ** 50); with V2's reference momentum 3e-3 it has
    moved 14%, so an eval-mode model would still normalise with its initial statistics."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32) + 3.0
    for momentum, close in ((None, True), (3e-3, False)):
        options = {} if momentum is None else {"bn_momentum": momentum}
        model = mobilenets.create_model("mobilenet_v2_035", num_classes=10, **options)
        stem = model.stem
        with torch.no_grad():
            for _ in range(50):
                stem.train()(x)
            batch = stem.conv(x).mean((0, 2, 3))
            moved = (stem.bn.running_mean @ batch / (batch @ batch)).item()
        assert (moved > 0.98) == close, (momentum, moved)


def test_reset_classifier_and_headless():
    model = mobilenets.create_model("mobilenet_v3_small_100")
    model.reset_classifier(7)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    assert model.config["num_classes"] == 7
    headless = mobilenets.create_model("mobilenet_v3_small_100", num_classes=0)
    with torch.no_grad():
        assert headless.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1024)
    assert n_params(headless) == n_params(mobilenets.create_model("mobilenet_v3_small_100")) - (
        1024 * 1000 + 1000)


def test_features_only_errors_and_truncation():
    with pytest.raises(ValueError,
                       match=r"out_indices 9 not available.*0: blocks.0.0 \(16 ch, /2\)"):
        mobilenets.create_model("mobilenet_v2_100", features_only=True, out_indices=(9,))
    with pytest.raises(ValueError, match="needs features_only"):
        mobilenets.create_model("mobilenet_v2_100", out_indices=(1,))
    early = mobilenets.create_model("mobilenet_v2_100", features_only=True, out_indices=(0, 1))
    assert [(t.channels, t.reduction) for t in early.feature_info] == [(16, 2), (24, 4)]
    assert n_params(early) < 20_000      # layers after the last tap are dropped
    last = mobilenets.create_model("mobilenet_v2_100", features_only=True, out_indices=(-1,))
    assert [(t.module, t.channels) for t in last.feature_info] == [("head", 1280)]


def test_stable_parameter_names():
    names = set(mobilenets.create_model("mobilenet_v2_100").state_dict())
    for key in ("stem.conv.weight", "blocks.0.0.dw.conv.weight", "blocks.1.1.expand.conv.weight",
                "blocks.6.0.project.bn.running_var", "head.conv.weight", "classifier.weight"):
        assert key in names
    v3 = set(mobilenets.create_model("mobilenet_v3_large_100").state_dict())
    assert {"blocks.3.0.se.reduce.weight", "pre_logits.0.weight"} <= v3


def test_depth_mult_only_where_stages_repeat():
    with pytest.raises(ValueError, match="depth_mult is not defined for mobilenet_v1"):
        mobilenets.create_model("mobilenet_v1_100", depth_mult=1.1)
    with pytest.raises(ValueError, match="depth_mult is not defined for mobilenet_v3"):
        mobilenets.create_model("mobilenet_v3_large_100", depth_mult=0.5)
    deeper = mobilenets.create_model("mobilenet_v2_100", depth_mult=1.5)
    assert [len(r) for r in deeper.plan.rows] == [2, 3, 5, 6, 5, 5, 2]


def test_out_indices_int_duplicates_and_backbone_stride():
    a = mobilenets.create_model("mobilenet_v2_100", features_only=True, out_indices=(1, 1, -5))
    assert a.out_indices == (1,) and len(a.feature_info) == 1
    b = mobilenets.create_model("mobilenet_v2_100", features_only=True, out_indices=2)
    assert b.feature_info.channels() == [32] and b.feature_info.reduction() == [8]
    with torch.no_grad():   # a /8 backbone takes an 8x8 input
        assert b.eval()(torch.randn(1, 3, 8, 8))[0].shape == (1, 32, 1, 1)
    model = mobilenets.create_model("mobilenet_v3_small_100")
    # MobileNetV3's head conv is its /32 tap (timm's index 4), not an extra one
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert model.feature_info.channels() == [16, 16, 24, 48, 576]


@pytest.mark.parametrize("given, module", [("hardswish", torch.nn.Hardswish),
                                           ("Hardsigmoid", torch.nn.Hardsigmoid),
                                           ("silu", torch.nn.SiLU)])
def test_activation_takes_torch_module_names(given, module):
    from mobilenets.layers import canonical_activation, make_activation
    assert isinstance(make_activation(given), module)
    model = mobilenets.create_model("mobilenet_v1_025", act=given)
    assert model.config["act"] == canonical_activation(given)
