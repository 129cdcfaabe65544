"""Loading torchvision and timm checkpoints, our saved format, and every bad-file case.

For each covered architecture a torchvision or timm model with random weights and randomised
BatchNorm statistics is saved to a file and loaded into ours: both must give the same logits
and feature maps.
"""

import argparse
import io
import os
import tarfile
import warnings
import zlib

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import mobilenets
from mobilenets.weights import CheckpointError, WeightsNote
from mobilenets.weights.cache import sha256, timm_file, torchvision_file
from conftest import SHARED_DATASETS, randomize_bn

timm = pytest.importorskip("timm")

TORCHVISION = {"mobilenet_v2_100": "mobilenet_v2", "mobilenet_v3_large_100": "mobilenet_v3_large",
               "mobilenet_v3_small_100": "mobilenet_v3_small",
               **{f"efficientnet_b{b}": f"efficientnet_b{b}" for b in range(8)},
               # EfficientNetV2: S only (M and L are the same blocks, 3-6x the build time)
               "efficientnet_v2_s": "efficientnet_v2_s"}
TIMM = {"mobilenetv1_100": "mobilenet_v1_100",
        **{f"mobilenetv2_{w}": f"mobilenet_v2_{w}" for w in ("140", "100", "075", "050", "035")},
        **{f"{p}mobilenetv3_{s}_{w}": f"mobilenet_v3_{s}_{w}" for p in ("", "tf_")
           for s in ("large", "small") for w in ("100", "075")},
        "tf_mobilenetv3_large_minimal_100": "mobilenet_v3_large_minimal_100",
        "tf_mobilenetv3_small_minimal_100": "mobilenet_v3_small_minimal_100",
        **{f"efficientnet_b{b}": f"efficientnet_b{b}" for b in range(8)},
        "tf_efficientnet_b0": "efficientnet_b0", "tf_efficientnet_b3": "efficientnet_b3",
        "efficientnet_lite0": "efficientnet_lite0", "tf_efficientnet_lite0": "efficientnet_lite0",
        "tf_efficientnet_lite3": "efficientnet_lite3",
        **{f"mobilenetv4_conv_{s}": f"mobilenet_v4_conv_{s}_100" for s in ("small", "medium",
                                                                           "large")}}
# timm's tf_efficientnetv2_s: test_efficientnet_v2.py (at a fraction of its depth)



def close(got, ref):
    """max |difference| <= 2e-5 x max|reference| + 1e-6, float32, eval mode."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert np.abs(got - ref).max() <= 2e-5 * np.abs(ref).max() + 1e-6


def same_outputs(ours, ref_logits, ref_features, x):
    with torch.no_grad():
        logits, feats = ours(x), ours.forward_features(x)
        want_logits, want_feats = ref_logits(x), ref_features(x)
    close(logits, want_logits)
    close(feats, want_feats)
    assert torch.equal(logits.argmax(1), want_logits.argmax(1))


def save_state(model, path):
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        torch.save(model.state_dict(), path)
    return path


def load_quietly(name, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WeightsNote)
        return mobilenets.create_model(name, **options).eval()


@pytest.mark.parametrize("ours", sorted(TORCHVISION))
def test_torchvision_checkpoint(ours, tmp_path):
    ref = randomize_bn(torchvision.models.get_model(TORCHVISION[ours], weights=None), 1).eval()
    path = save_state(ref, tmp_path / f"{TORCHVISION[ours]}.pth")
    model = load_quietly(ours, weights=path)
    assert isinstance(model, mobilenets.MobileNet)
    bn = next(m for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert model.config["bn_eps"] == bn.eps and model.config["bn_momentum"] == bn.momentum
    same_outputs(model, ref, ref.features, torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("theirs", sorted(TIMM))
def test_timm_checkpoint(theirs, tmp_path):
    ref = randomize_bn(timm.create_model(theirs, pretrained=False), 2).eval()
    suffix = ".safetensors" if zlib.crc32(theirs.encode()) % 2 else ".bin"
    path = save_state(ref, tmp_path / f"{theirs}{suffix}")
    model = load_quietly(TIMM[theirs], weights=path)
    expected_padding = "same" if theirs.startswith("tf_") else "symmetric"
    assert model.config["padding"] == expected_padding
    # odd sizes exercise TF "SAME" padding's asymmetric case
    for res in (64, 71):
        same_outputs(model, ref, ref.forward_features, torch.randn(2, 3, res, res))


def test_timm_v1_uses_relu6_and_says_so(tmp_path):
    ref = timm.create_model("mobilenetv1_100")
    path = save_state(ref, tmp_path / "mobilenetv1_100.pth")
    with pytest.warns(WeightsNote, match="ReLU6"):
        model = mobilenets.create_model("mobilenet_v1_100", weights=path)
    assert model.config["act"] == "relu6"


def test_preprocessing_from_source(tmp_path):
    ref = torchvision.models.mobilenet_v2()
    path = save_state(ref, tmp_path / "mobilenet_v2-7ebf99e0.pth")   # IMAGENET1K_V2's name
    model = load_quietly("mobilenet_v2_100", weights=path)
    assert model.preprocess["resize"] == 232 and model.preprocess["resolution"] == 224
    ref = torchvision.models.efficientnet_b0()
    model = load_quietly("efficientnet_b0", weights=save_state(ref, tmp_path / "b0.pth"))
    assert model.preprocess["resize"] == 256 and model.preprocess["interpolation"] == "bicubic"


def _real_images(n=4):
    archive = SHARED_DATASETS / "imagenette-224.tar.gz"
    if not archive.exists():
        pytest.skip("../shared/datasets is absent")
    out = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".JPEG"):
                data = tar.extractfile(member).read()
                out.append(Image.open(io.BytesIO(data)).convert("RGB"))
                if len(out) == n:
                    return out
    return out


@pytest.mark.parametrize("source,theirs,ours", [
    ("torchvision", "mobilenet_v3_large", "mobilenet_v3_large_100"),
    ("timm", "tf_efficientnet_b0", "efficientnet_b0"),
    ("timm", "mobilenetv2_100", "mobilenet_v2_100")])
def test_real_images(source, theirs, ours, tmp_path):
    images = _real_images()
    build = (torchvision.models.get_model if source == "torchvision" else timm.create_model)
    ref = randomize_bn(build(theirs), 3).eval()
    model = load_quietly(ours, weights=save_state(ref, tmp_path / f"{theirs}.pth"))
    from mobilenets.data import eval_transform
    x = torch.stack([eval_transform(model.preprocess)(img) for img in images])
    feats = ref.features if source == "torchvision" else ref.forward_features
    same_outputs(model, ref, feats, x)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = randomize_bn(mobilenets.create_model("mobilenet_v3_small_075", num_classes=3))
    model.eval()
    names = ["cat", "dog", "bird"]
    mobilenets.save(model, tmp_path / "m", class_names=names)
    again = mobilenets.load(tmp_path / "m").eval()
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert again.config["class_names"] == names and again.config["num_classes"] == 3
    import json
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["schema_version"] == 1 and cfg["architecture"] == "mobilenet_v3_small_075"
    assert cfg["cost"]["params"] == sum(p.numel() for p in model.parameters())
    also = load_quietly("mobilenet_v3_small_075", weights=tmp_path / "m")
    assert torch.equal(also.state_dict()["classifier.weight"], a["classifier.weight"])
    assert not list(tmp_path.joinpath("m").glob("*.tmp"))    # atomic writes leave nothing


def test_saved_options_survive(tmp_path):
    model = mobilenets.create_model("mobilenet_v1_100", width_mult=0.4, act="relu6",
                                    num_classes=4, resolution=160)
    mobilenets.save(model, tmp_path / "m")
    again = mobilenets.load(tmp_path / "m")
    for key in ("width_mult", "act", "num_classes", "resolution"):
        assert again.config[key] == model.config[key]


def test_saved_model_schema_and_name_errors(tmp_path):
    model = mobilenets.create_model("mobilenet_v2_050", num_classes=2)
    mobilenets.save(model, tmp_path / "m")
    with pytest.raises(CheckpointError, match="holds a mobilenet_v2_050, not a mobilenet_v2_100"):
        mobilenets.create_model("mobilenet_v2_100", weights=tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    cfg.write_text(cfg.read_text().replace('"schema_version": 1', '"schema_version": 99'))
    with pytest.raises(CheckpointError, match="schema version 99.*upgrade mobilenets"):
        mobilenets.load(tmp_path / "m")


def test_fine_tuning_reinitialises_classifier_with_a_note(tmp_path):
    ref = torchvision.models.mobilenet_v3_small()
    path = save_state(ref, tmp_path / "v3s.pth")
    with pytest.warns(WeightsNote, match="classifier re-initialised for 10 classes"):
        model = mobilenets.create_model("mobilenet_v3_small_100", weights=path, num_classes=10)
    assert model.classifier.out_features == 10
    torch.testing.assert_close(model.pre_logits[0].weight, ref.classifier[0].weight)
    # without num_classes the file's class count is used
    assert load_quietly("mobilenet_v3_small_100", weights=path).num_classes == 1000


def test_features_only_with_weights(tmp_path):
    ref = randomize_bn(timm.create_model("mobilenetv2_100", features_only=False), 4).eval()
    path = save_state(ref, tmp_path / "v2.safetensors")
    fnet = load_quietly("mobilenet_v2_100", weights=path, features_only=True, out_indices=(-1,))
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        close(fnet(x)[0], ref.forward_features(x))


# ---- bad files ------------------------------------------------------------------------------

def test_timm_training_checkpoint_with_namespace_and_ddp_prefix(tmp_path):
    ref = randomize_bn(timm.create_model("mobilenetv3_small_100"), 5).eval()
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    ckpt = {"epoch": 3, "arch": "mobilenetv3_small_100", "state_dict": state,
            "state_dict_ema": state, "args": argparse.Namespace(lr=0.1, model="x")}
    torch.save(ckpt, tmp_path / "checkpoint-3.pth.tar")
    model = load_quietly("mobilenet_v3_small_100", weights=tmp_path / "checkpoint-3.pth.tar")
    same_outputs(model, ref, ref.forward_features, torch.randn(1, 3, 64, 64))


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused: loading never executes code"):
        mobilenets.create_model("mobilenet_v2_100", weights=path)


def test_truncated_and_corrupt_files(tmp_path):
    good = save_state(torchvision.models.mobilenet_v2(), tmp_path / "v2.pth")
    data = good.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        mobilenets.create_model("mobilenet_v2_100", weights=tmp_path / "cut.pth")
    st = save_state(torchvision.models.mobilenet_v2(), tmp_path / "v2.safetensors")
    raw = st.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        mobilenets.create_model("mobilenet_v2_100", weights=tmp_path / "cut.safetensors")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        mobilenets.create_model("mobilenet_v2_100", weights=tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        mobilenets.create_model("mobilenet_v2_100", weights=tmp_path / "nope.pth")


def test_other_architecture_is_named(tmp_path):
    path = save_state(torchvision.models.mobilenet_v3_small(), tmp_path / "small.pth")
    with pytest.raises(CheckpointError, match="looks like mobilenet_v3_small_100"):
        mobilenets.create_model("mobilenet_v3_large_100", weights=path)


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path):
    model = mobilenets.create_model("mobilenet_v2_050", num_classes=5)
    state = model.state_dict()
    from safetensors.torch import save_file
    broken = {k: v for k, v in state.items() if k != "blocks.3.1.dw.conv.weight"}
    broken["blocks.9.9.extra"] = torch.zeros(1)
    save_file(broken, str(tmp_path / "a.safetensors"))
    with pytest.raises(CheckpointError, match="missing keys blocks.3.1.dw.conv.weight.*"
                                              "unexpected keys blocks.9.9.extra"):
        mobilenets.create_model("mobilenet_v2_050", weights=tmp_path / "a.safetensors")
    bad_shape = dict(state, **{"blocks.2.0.expand.conv.weight": torch.zeros(3, 3, 1, 1)})
    save_file(bad_shape, str(tmp_path / "b.safetensors"))
    with pytest.raises(CheckpointError, match="blocks.2.0.expand.conv.weight has shape"):
        mobilenets.create_model("mobilenet_v2_050", weights=tmp_path / "b.safetensors")
    ref = torchvision.models.mobilenet_v2()
    sd = ref.state_dict()
    sd["features.5.conv.1.0.weight"] = torch.zeros(7, 1, 3, 3)
    torch.save(sd, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="features.5.conv.1.0.weight has shape"):
        mobilenets.create_model("mobilenet_v2_100", weights=tmp_path / "c.pth")


def test_not_a_state_dict(tmp_path):
    torch.save({"foo": torch.zeros(2)}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="not a torchvision, timm, efficientnet_pytorch or mobilenets"):
        mobilenets.create_model("mobilenet_v2_100", weights=tmp_path / "x.pth")
    torch.save([1, 2, 3], tmp_path / "y.pth")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        mobilenets.create_model("mobilenet_v2_100", weights=tmp_path / "y.pth")


# ---- local caches -----------------------------------------------------------------------------

def test_torchvision_cache_lookup_and_hash_check(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(CheckpointError, match="not in the local cache.*allow_download=True"):
        mobilenets.create_model("mobilenet_v3_small_100", weights="torchvision")
    name = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.url.rsplit("/", 1)[1]
    target = tmp_path / "hub" / "checkpoints" / name
    target.parent.mkdir(parents=True)
    save_state(torchvision.models.mobilenet_v3_small(), target)
    # a random model cannot carry torchvision's published hash
    with pytest.raises(CheckpointError, match="fails its hash check"):
        torchvision_file("mobilenet_v3_small_100")


def test_hf_cache_lookup_and_blob_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="no timm weights for mobilenetv2_100"):
        timm_file("mobilenet_v2_100")
    repo = tmp_path / "models--timm--mobilenetv2_100.ra_in1k"
    blob_tmp = save_state(randomize_bn(timm.create_model("mobilenetv2_100"), 6).eval(),
                          tmp_path / "staging.safetensors")
    digest = sha256(blob_tmp)
    (repo / "blobs").mkdir(parents=True)
    blob = repo / "blobs" / digest
    blob_tmp.rename(blob)
    snap = repo / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to(os.path.relpath(blob, snap))
    (snap / "config.json").write_text('{"architecture": "mobilenetv2_100", "pretrained_cfg": '
                                      '{"input_size": [3, 224, 224], "crop_pct": 0.875, '
                                      '"interpolation": "bicubic"}}')
    model = load_quietly("mobilenet_v2_100", weights="timm")
    assert model.preprocess["interpolation"] == "bicubic"
    assert load_quietly("mobilenet_v2_100", weights=repo).num_classes == 1000   # cache folder
    with open(blob, "r+b") as f:                       # corrupt the blob
        f.seek(-10, io.SEEK_END)
        f.write(b"0123456789")
    with pytest.raises(CheckpointError, match="fails its hash check"):
        mobilenets.create_model("mobilenet_v2_100", weights="timm")


def test_our_layout_is_ordered_whatever_the_file_order():
    """safetensors stores keys sorted by name; execution order is recovered from the names."""
    import random
    from mobilenets.weights.layouts import ordered_tensors
    for name in ("mobilenet_v3_large_100", "efficientnet_b0", "mobilenet_v1_100",
                 "mobilenet_v4_conv_small_100"):
        state = mobilenets.create_model(name).state_dict()
        items = list(state.items())
        random.Random(0).shuffle(items)
        want = [k for k in state if not k.endswith("num_batches_tracked")]
        assert [k for k, _ in ordered_tensors(dict(items), "mobilenets")] == want


def test_same_padding_exports_to_onnx(tmp_path):
    """TF "SAME" padding exports cleanly: onnxruntime matches PyTorch at an odd size."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = randomize_bn(mobilenets.create_model("mobilenet_v3_small_minimal_100",
                                                 padding="same", num_classes=10)).eval()
    x = torch.randn(1, 3, 71, 71)
    torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=True, opset_version=18)
    onnx.checker.check_model(str(tmp_path / "m.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        close(got, model(x))
    # and fx tracing still works with the dynamic pad
    gm = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        close(gm(x), model(x))


def test_saved_backbone_round_trip(tmp_path):
    fnet = randomize_bn(mobilenets.create_model("mobilenet_v2_100", features_only=True,
                                                out_indices=(1, 2))).eval()
    mobilenets.save(fnet, tmp_path / "bb")
    again = mobilenets.load(tmp_path / "bb").eval()
    assert isinstance(again, mobilenets.FeatureNet) and again.out_indices == (1, 2)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(fnet(x), again(x)))


def test_headless_checkpoint(tmp_path):
    ref = randomize_bn(timm.create_model("mobilenetv2_100", num_classes=0), 7).eval()
    path = save_state(ref, tmp_path / "headless.safetensors")
    model = load_quietly("mobilenet_v2_100", weights=path)
    assert model.num_classes == 0
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        close(model(x), ref(x))
    with pytest.warns(WeightsNote, match="re-initialised for 10 classes"):
        assert mobilenets.create_model("mobilenet_v2_100", weights=path,
                                       num_classes=10).num_classes == 10


def test_tf_port_detected_by_file_name_only(tmp_path):
    ref = timm.create_model("mobilenetv2_100")
    folder = tmp_path / "tf_experiments"
    folder.mkdir()
    model = load_quietly("mobilenet_v2_100", weights=save_state(ref, folder / "mnv2.pth"))
    assert model.config["padding"] == "symmetric" and model.config["bn_eps"] == 1e-5
    tf = timm.create_model("tf_mobilenetv3_small_100")
    model = load_quietly("mobilenet_v3_small_100",
                         weights=save_state(tf, tmp_path / "tf_mobilenetv3_small_100.pth"))
    assert model.config["padding"] == "same" and model.config["bn_eps"] == 1e-3


def test_resolution_override_keeps_source_crop_ratio(tmp_path):
    path = save_state(torchvision.models.mobilenet_v2(), tmp_path / "mobilenet_v2-7ebf99e0.pth")
    model = load_quietly("mobilenet_v2_100", weights=path, resolution=160)
    assert model.preprocess["resolution"] == 160
    assert model.preprocess["resize"] == round(160 * 232 / 224)
