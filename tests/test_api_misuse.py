"""The Python deploy path under misuse: clear errors that name the problem, and nothing a
user made is overwritten or left broken (saved models, ONNX files)."""

import logging
import shutil

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets.data import SAMPLE_DIR, DataError, calibration_batches
from mobilenets.weights import CheckpointError
from conftest import sample_classifier

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from mobilenets.deploy import OnnxModel  # noqa: E402
from mobilenets.deploy.quantize import quantize_onnx  # noqa: E402

RES = 64


@pytest.fixture(scope="module")
def model():
    return sample_classifier()


@pytest.fixture(scope="module")
def fp32(model, tmp_path_factory):
    return mobilenets.export_onnx(model, tmp_path_factory.mktemp("fp32") / "m.onnx")


def test_save_refuses_models_load_cannot_rebuild_and_keeps_the_old_one(model, tmp_path):
    folder = mobilenets.save(model, tmp_path / "saved")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(TypeError, match="fused"):
        mobilenets.save(mobilenets.fuse(model), folder)
    with pytest.raises(ValueError, match="class names"):
        mobilenets.save(model, folder, class_names=["a"])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    x = torch.randn(2, 3, RES, RES)
    with torch.no_grad():
        torch.testing.assert_close(mobilenets.load(folder).eval()(x), model(x))
    with pytest.raises(ValueError, match="class names"):
        mobilenets.save(model, tmp_path / "new", class_names=["a"])
    assert not (tmp_path / "new").exists()                 # no empty folder left behind


def test_save_and_load_name_what_to_use_for_onnx(fp32, tmp_path):
    with pytest.raises(TypeError, match="ONNX"):
        mobilenets.save(OnnxModel(fp32), tmp_path / "s")
    assert not (tmp_path / "s").exists()
    with pytest.raises(CheckpointError, match="OnnxModel"):
        mobilenets.load(fp32)


def test_reset_classifier_drops_the_old_class_names(tmp_path):
    m = sample_classifier()
    m.reset_classifier(3)
    assert "class_names" not in m.config and m.num_classes == 3
    om = OnnxModel(mobilenets.export_onnx(m, tmp_path / "r3.onnx"))
    assert om.num_classes == 3 and om.config["class_names"] is None


def test_export_refuses_bad_options_and_keeps_an_existing_file(model, fp32, tmp_path):
    path = tmp_path / "keep.onnx"
    shutil.copy(fp32, path)
    before = path.read_bytes()
    newest = onnx.defs.onnx_opset_version()
    bad = [({"opset": newest + 1}, "opset"), ({"opset": "18"}, "opset"),
           ({"resolution": 0}, "resolution"), ({"resolution": 96.5}, "resolution"),
           ({"resolution": (96, 64)}, "resolution")]
    for options, word in bad:
        with pytest.raises(ValueError, match=word):
            mobilenets.export_onnx(model, path, **options)
    half = sample_classifier().half()
    with pytest.raises(ValueError, match=r"model\.float\(\)"):
        mobilenets.export_onnx(half, path)
    wrong = sample_classifier()
    wrong.config["class_names"] = ["a", "b"]
    with pytest.raises(ValueError, match="2 class names for 10"):
        mobilenets.export_onnx(wrong, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.onnx"]     # no temporary left


def test_export_metadata_describes_the_file(model, tmp_path):
    path = mobilenets.export_onnx(model, tmp_path / "m96.onnx", resolution=96, fuse=False)
    om = OnnxModel(path)
    assert om.config["resolution"] == om.preprocess["resolution"] == om.fixed_resolution == 96
    assert om.metadata["fused"] == "true"       # torch's exporter folded BatchNorm itself
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(path)).graph.node}


def test_headless_export_has_no_classes(tmp_path):
    headless = mobilenets.create_model("mobilenet_v2_035", num_classes=0, resolution=RES)
    om = OnnxModel(mobilenets.export_onnx(headless.eval(), tmp_path / "h.onnx"))
    assert headless.num_classes == 0 and om.num_classes == 0
    assert om(torch.randn(1, 3, RES, RES)).shape == (1, 1280)


def test_onnx_model_checks_its_input(model, fp32, tmp_path):
    om = OnnxModel(fp32)
    x = torch.randn(2, 3, RES, RES)
    torch.testing.assert_close(om(x.numpy()), om(x))           # numpy arrays work too
    empty = om(x[:0])                                          # a fixed batch-1 file
    assert isinstance(empty, torch.Tensor) and empty.shape == (0, 10)
    with pytest.raises(TypeError, match="float images"):
        om((x * 50).clamp(0, 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"N x 3 x 64 x 64; got shape \(2, 1, 64, 64\)"):
        om(x[:, :1])
    with pytest.raises(ValueError, match=r"got shape \(3, 64, 64\)"):
        om(x[0])
    with pytest.raises(TypeError, match="list"):
        om([1, 2, 3])
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        OnnxModel(tmp_path / "empty.onnx")


def test_evaluate_takes_paths(model, fp32):
    got = mobilenets.evaluate(str(fp32), SAMPLE_DIR)
    assert got["top1"] == mobilenets.evaluate(OnnxModel(fp32), SAMPLE_DIR)["top1"]


def test_calibration_folders(tmp_path, caplog):
    pre = sample_classifier().preprocess
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, src in enumerate(sorted((SAMPLE_DIR / "val").rglob("*.*"))[:5]):
        shutil.copy(src, flat / f"{i}{src.suffix}")
    (flat / "broken.jpg").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING, logger="mobilenets.data"):
        batches = calibration_batches(flat, pre, num_images=8, batch_size=4)
    assert [len(b) for b in batches] == [4, 1]                 # 5 readable of 6 files
    assert "fewer than the 8 asked for (1 unreadable skipped)" in caplog.text
    junk = tmp_path / "junk" / "a"
    junk.mkdir(parents=True)
    (junk / "x.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="no readable images"):
        calibration_batches(junk.parent, pre, num_images=4)


def test_quantize_refuses_misuse_and_never_replaces_its_input(model, fp32, tmp_path):
    src = tmp_path / "fp32.onnx"
    shutil.copy(fp32, src)
    before = src.read_bytes()
    with pytest.raises(ValueError, match="is the fp32 file"):
        quantize_onnx(src, src, SAMPLE_DIR, num_images=4, calibrate_method="minmax")
    with pytest.raises(ValueError, match="not in the graph: nope"):
        quantize_onnx(src, tmp_path / "q.onnx", SAMPLE_DIR, num_images=4, exclude=["nope"],
                      calibrate_method="minmax")
    with pytest.raises(ValueError, match="channel_multiple"):
        quantize_onnx(src, tmp_path / "q.onnx", SAMPLE_DIR, channel_multiple=-16)
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "q.onnx", SAMPLE_DIR)
    assert src.read_bytes() == before and not (tmp_path / "q.onnx").exists()
    gray = mobilenets.create_model("mobilenet_v2_035", num_classes=10, in_chans=1,
                                   resolution=RES).eval()
    with pytest.raises(ValueError, match="1-channel inputs"):
        quantize_onnx(gray, tmp_path / "g.onnx", SAMPLE_DIR, num_images=4)
    with pytest.raises(ValueError, match="1-channel inputs"):
        mobilenets.evaluate(gray, SAMPLE_DIR)


def test_quantize_takes_a_saved_model_folder(model, tmp_path):
    folder = mobilenets.save(model, tmp_path / "saved")
    out = quantize_onnx(folder, tmp_path / "q.onnx", SAMPLE_DIR, num_images=8,
                        calibrate_method="minmax")
    om = OnnxModel(out)
    assert om.config["class_names"] == model.config["class_names"]
    x = torch.randn(1, 3, RES, RES)
    with torch.no_grad():
        ref = model(x)
    assert np.corrcoef(om(x).ravel(), ref.ravel())[0, 1] > 0.9


def test_complete_qdq_refuses_a_float_file(fp32, tmp_path):
    from mobilenets.deploy.runtimes.onnxruntime.qdq_complete import complete_qdq
    src = tmp_path / "f.onnx"
    shutil.copy(fp32, src)
    before = src.read_bytes()
    with pytest.raises(ValueError, match="no quantized operators"):
        complete_qdq(src, SAMPLE_DIR, OnnxModel(src).preprocess, num_images=4)
    assert src.read_bytes() == before


def test_weights_and_backbone_arguments_say_what_to_give(tmp_path):
    """Values a timm or torchvision user may pass name what the library takes instead."""
    model = mobilenets.create_model("mobilenet_v3_small_100")
    with pytest.raises(TypeError, match="weights=True is not taken: give weights='torchvision'"):
        mobilenets.create_model("mobilenet_v3_small_100", weights=True)
    with pytest.raises(TypeError, match="not the state dict itself"):
        mobilenets.create_model("mobilenet_v3_small_100", weights=model.state_dict())
    with pytest.raises(CheckpointError, match="DEFAULT does not exist; weights='torchvision'"):
        mobilenets.create_model("mobilenet_v3_small_100", weights="DEFAULT")
    with pytest.raises(TypeError, match="takes its backbone by name"):
        mobilenets.create_model("lraspp", backbone=model)
    with pytest.raises(TypeError, match="not a MobileNet: create_model builds a model"):
        mobilenets.create_model(model)
    with pytest.raises(CheckpointError, match="Weights.DEFAULT does not exist; weights="):
        mobilenets.create_model("mobilenet_v3_small_100",
                                weights="MobileNet_V3_Small_Weights.DEFAULT")
    # a file of the registered model, built with options that change its shapes
    torch.save(model.state_dict(), tmp_path / "v3s.pth")
    with pytest.raises(CheckpointError, match=r"the file is mobilenet_v3_small_100 as "
                       r"registered, built here with width_mult=0\.75: leave that out"):
        mobilenets.create_model("mobilenet_v3_small_100", weights=tmp_path / "v3s.pth",
                                width_mult=0.75)
    with pytest.raises(CheckpointError, match="built here with in_chans=1"):
        mobilenets.create_model("mobilenet_v3_small_100", weights=tmp_path / "v3s.pth",
                                in_chans=1)
    # act changes no shape: not named among the causes
    with pytest.raises(CheckpointError, match=r"built here with width_mult=0\.5: leave that"):
        mobilenets.create_model("mobilenet_v3_small_100", weights=tmp_path / "v3s.pth",
                                width_mult=0.5, act="relu")
