"""One way in for a MODEL argument (``mobilenets.open_model``), the task's description of an
exported file's outputs, and the prune -> fine-tune workflow from Python."""

import json

import pytest
import torch

import mobilenets
from mobilenets.data import SAMPLE_DIR
from mobilenets.deploy import OnnxModel
from mobilenets.tasks.classification import prune_and_finetune

RES = 64


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = mobilenets.create_model("mobilenet_v2_035", num_classes=10, resolution=RES).eval()
    folder = mobilenets.save(model, tmp_path_factory.mktemp("saved") / "best")
    return model, folder, mobilenets.export_onnx(model, folder.parent / "model.onnx")


def test_open_model_takes_every_kind_of_model_argument(saved):
    model, folder, onnx_file = saved
    x = torch.randn(2, 3, RES, RES)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(mobilenets.open_model(folder).eval()(x), ref)
        torch.testing.assert_close(mobilenets.open_model(str(onnx_file))(x), ref,
                                   rtol=1e-4, atol=1e-4)
    assert mobilenets.open_model(model) is model
    fresh = mobilenets.open_model("mobilenet_v2_035", num_classes=3)
    assert fresh.num_classes == 3 and fresh.config["name"] == "mobilenet_v2_035"
    assert isinstance(mobilenets.open_model(onnx_file, runtime="onnxruntime"), OnnxModel)


@pytest.mark.parametrize("call, error, words", [
    (lambda f, o: mobilenets.open_model(o, runtime="eager"), ValueError, "not eager"),
    (lambda f, o: mobilenets.open_model(f, runtime="onnxruntime"), ValueError, "export it"),
    (lambda f, o: mobilenets.open_model(f, weights="x.pth"), ValueError, "holds its own"),
    (lambda f, o: mobilenets.open_model(o, weights="x.pth"), ValueError, "exported file"),
    (lambda f, o: mobilenets.open_model(f.parent), ValueError, "its model is"),
    (lambda f, o: mobilenets.open_model(f / "config.json"), ValueError, "is a file"),
    (lambda f, o: mobilenets.open_model(f.parent / "missing" / "best"), FileNotFoundError,
     "no model folder"),
    (lambda f, o: mobilenets.open_model("mobilenet_v9"), ValueError, "unknown model"),
    (lambda f, o: OnnxModel(f), IsADirectoryError, "opens with mobilenets.load"),
    (lambda f, o: mobilenets.open_model(o, runtime="tflite"), ValueError, "unknown runtime"),
    (lambda f, o: mobilenets.open_model("best"), ValueError, "nor is best an existing file"),
    (lambda f, o: mobilenets.open_model(mobilenets.load(f), runtime="openvino"), ValueError,
     "export it first"),
])
def test_open_model_says_what_to_give_instead(saved, call, error, words):
    _, folder, onnx_file = saved
    with pytest.raises(error, match=words):
        call(folder, onnx_file)


def test_exported_files_describe_their_outputs(saved, tmp_path):
    _, _, onnx_file = saved
    meta = OnnxModel(onnx_file).metadata
    assert meta["task"] == "classification"
    assert json.loads(meta["outputs"]) == [
        {"name": "logits", "meaning": "N x 10 class scores before softmax"}]
    backbone = mobilenets.create_model("mobilenet_v2_035", features_only=True,
                                       out_indices=(2, 4), resolution=RES)
    opened = OnnxModel(mobilenets.export_onnx(backbone, tmp_path / "b.onnx"))
    outputs = json.loads(opened.metadata["outputs"])
    assert [o["name"] for o in outputs] == opened.output_names == ["feature_0", "feature_1"]
    tap = backbone.feature_info[1]
    assert outputs[1]["meaning"].startswith(f"N x {tap.channels} x H/{tap.reduction} ")
    with pytest.raises(ValueError, match="unknown task"):
        mobilenets.export_onnx(backbone, tmp_path / "c.onnx", task="haiku")


def test_prune_refuses_only_an_output_holding_its_source(saved, tmp_path, monkeypatch):
    """A model built in memory has no source folder: any output folder is fine for it, the
    current folder's parent included."""
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    model = mobilenets.create_model("mobilenet_v2_035", num_classes=10, resolution=RES)
    pruned, metrics = prune_and_finetune(model, tmp_path, ratio=0.3, epochs=0,
                                         recalibrate_images=0, log=lambda line: None)
    assert metrics is None and (tmp_path / "pruned" / "config.json").is_file()


def test_random_weights_for_results_are_warned_about():
    with pytest.warns(UserWarning, match="random weights"):
        with pytest.raises(Exception):          # the warning comes before the data is read
            mobilenets.evaluate("mobilenet_v2_035", "/no/such/data")


def test_prune_and_finetune_from_python(saved, tmp_path):
    model, folder, _ = saved
    source = mobilenets.load(folder)
    with pytest.raises(ValueError, match="contains the model to prune"):
        prune_and_finetune(source, folder.parent, ratio=0.3, epochs=0)
    lines = []
    pruned, metrics = prune_and_finetune(
        source, tmp_path / "run", ratio=0.3, data=SAMPLE_DIR, recalibrate_images=16,
        epochs=1, max_steps_per_epoch=1, batch_size=8, resolution=RES, tensorboard=False,
        progress=False, log=lines.append)
    assert metrics["epoch"] == 1 and 0 <= metrics["top1"] <= 1
    assert any("re-estimated on 16 images" in line for line in lines)
    assert pruned.config["block_widths"] == mobilenets.load(tmp_path / "run" / "pruned") \
        .config["block_widths"]
    assert mobilenets.profile(pruned).macs < mobilenets.profile(model).macs
