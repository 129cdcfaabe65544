"""OpenVINO as a second runtime for our ONNX files: ``OnnxModel(path, runtime="openvino")``,
``eval|predict --runtime openvino`` and ``bench --backend openvino``.

Real computations: mobilenet_v2_035 with random weights and randomised BatchNorm statistics at
64 px, exported fp32 and quantized to int8 (32 calibration images of the built-in sample),
run on the sample's 250 val images in both runtimes.

Not collected by itself: ``test_openvino.py`` runs this file in a pytest process of its own,
so OpenVINO is never loaded into the main test process (see there why).
"""

import json
import platform
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from mobilenets.cli.main import main
from mobilenets.data import SAMPLE_DIR
from conftest import sample_classifier, sample_val_images

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
from mobilenets.deploy import OnnxModel, export_onnx, quantize_onnx  # noqa: E402

CLASSES = sorted(p.name for p in (SAMPLE_DIR / "train").iterdir() if p.is_dir())
# which kernels OpenVINO picks depends on the CPU: the precision checks are for x86
X86 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.fixture(scope="module")
def model():
    return sample_classifier()


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openvino")
    fp32 = export_onnx(model, tmp / "fp32.onnx", dynamic_batch=True)
    int8 = quantize_onnx(fp32, tmp / "int8.onnx", SAMPLE_DIR, num_images=32)
    return fp32, int8


@pytest.fixture(scope="module")
def val_images(model):
    return sample_val_images(model.preprocess)


def test_fp32_file_matches_pytorch_and_onnxruntime(model, files, val_images):
    fp32, _ = files
    ov, ort = OnnxModel(fp32, threads=2, runtime="openvino"), OnnxModel(fp32, threads=2)
    with torch.no_grad():
        ref = model(val_images)
    got = ov(val_images)
    tol = 2e-5 * ref.abs().max().item() + 1e-6            # the export's tolerance
    assert (got - ref).abs().max().item() <= tol
    assert torch.equal(got.argmax(1), ort(val_images).argmax(1))
    layers = ov.session.executed_layers()
    assert ("Convolution", "bf16") not in layers          # f32, not OpenVINO's bf16 default
    if X86:
        assert layers[("Convolution", "f32")] == 52
    # the same metadata as in onnxruntime: name, classes, preprocessing, shapes
    assert ov.config == ort.config and ov.preprocess == ort.preprocess
    assert ov.input_shape == ort.input_shape and ov.output_names == ort.output_names
    assert ov.num_classes == 10 and ov.config["class_names"] == CLASSES
    assert "openvino" in repr(ov) and not ov.rewritten


def test_int8_file_runs_in_int8_as_faithfully_as_in_onnxruntime(model, files, val_images):
    fp32, int8 = files
    ov = OnnxModel(int8, threads=2, runtime="openvino")
    layers = ov.session.executed_layers()
    # every convolution runs on uint8 activations, none falls back to float
    if X86:
        assert layers[("Convolution", "u8")] == 52 and ("Convolution", "f32") not in layers
    ref = OnnxModel(fp32)(val_images)
    errors = {}
    for name, out in {"openvino": ov(val_images), "onnxruntime": OnnxModel(int8)(val_images)
                      }.items():
        cos = torch.nn.functional.cosine_similarity(out, ref).mean().item()
        agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
        errors[name] = (cos, agree)
        assert cos > 0.98 and agree > 0.9, (name, cos, agree)
    # both runtimes compute the same int8 graph: OpenVINO loses no more than onnxruntime
    assert errors["openvino"][0] > errors["onnxruntime"][0] - 0.005, errors


def test_fixed_batch_file_runs_other_batch_sizes(model, tmp_path, val_images):
    path = export_onnx(model, tmp_path / "b1.onnx")                  # batch 1
    ov = OnnxModel(path, runtime="openvino")
    assert ov.batch_size == 1
    with torch.no_grad():
        ref = model(val_images[:5])
    assert (ov(val_images[:5]) - ref).abs().max().item() <= 2e-5 * ref.abs().max().item() + 1e-6


def test_threads_and_several_inputs(files, tmp_path, val_images):
    """As in onnxruntime: one model may be called from several threads at once, and a graph
    with two inputs takes both by name."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    fp32, _ = files
    ov, ort = OnnxModel(fp32, runtime="openvino"), OnnxModel(fp32)
    chunks = [val_images[i:i + 4] for i in range(0, 64, 4)]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(ov, chunks))
    for chunk, out in zip(chunks, outs):
        assert torch.equal(out.argmax(1), ort(chunk).argmax(1))
    graph = helper.make_graph(
        [helper.make_node("Sub", ["a", "b"], ["y"])], "sub",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    session = OnnxModel(path, runtime="openvino").session
    a, b = np.ones((1, 3), np.float32), np.arange(3, dtype=np.float32)[None]
    (y,) = session.run(None, {"b": b, "a": a})
    assert np.array_equal(y, a - b)
    with pytest.raises(ValueError, match="inputs are"):
        session.run(None, {"a": a})


def test_cli_eval_predict_and_bench_in_openvino(files, capsys, tmp_path, monkeypatch):
    fp32, int8 = files
    monkeypatch.chdir(tmp_path)
    scores = {}
    for runtime in ("onnxruntime", "openvino"):
        assert main(["eval", str(int8), "--data", str(SAMPLE_DIR), "--runtime", runtime,
                     "--json"]) == 0
        scores[runtime] = json.loads(capsys.readouterr().out)
    assert scores["openvino"]["images"] == scores["onnxruntime"]["images"] == 250
    assert abs(scores["openvino"]["top1"] - scores["onnxruntime"]["top1"]) <= 0.02
    assert not list(tmp_path.iterdir())        # no confusion PNG unless --confusion-png is given
    image = str(next((SAMPLE_DIR / "val").glob("*/*.jpg")))
    out = {}
    for runtime in ("onnxruntime", "openvino"):
        assert main(["predict", str(fp32), image, "--runtime", runtime, "--json"]) == 0
        out[runtime] = json.loads(capsys.readouterr().out)["predictions"][0]
    assert out["openvino"]["classes"] == out["onnxruntime"]["classes"]
    for path in (fp32, int8):
        assert main(["bench", str(path), "--backend", "openvino", "--threads", "1",
                     "--warmup", "1", "--iters", "3", "--json"]) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["backend"] == "openvino" and r["calls"] == 3 and r["median_ms"] > 0
    # --profile: OpenVINO's performance counters by layer type and kernel; the int8 file's
    # convolutions run int8 kernels, and the shares add up
    assert main(["bench", str(int8), "--backend", "openvino", "--iters", "3", "--warmup", "1",
                 "--profile", "--json"]) == 0
    profile = json.loads(capsys.readouterr().out)["profile"]
    assert profile["runtime"] == "openvino"
    assert abs(sum(o["share"] for o in profile["ops"]) - 1) < 1e-6
    convs = [o for o in profile["ops"] if "Convolution" in o["op"]]
    assert sum(o["nodes"] for o in convs) == 52
    assert all("I8" in o["op"] for o in convs) or not X86
    # a PyTorch model is exported, then compiled by OpenVINO
    assert main(["bench", "mobilenet_v2_035", "--backend", "openvino", "--resolution", "64",
                 "--warmup", "1", "--iters", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resolution"] == 64


def test_openvino_misuse_is_a_clear_error(files, monkeypatch, capsys):
    fp32, _ = files
    assert main(["eval", "mobilenet_v2_035", "--data", str(SAMPLE_DIR), "--runtime",
                 "openvino"]) != 0
    assert "export it first" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown runtime"):
        OnnxModel(fp32, runtime="tensorrt")
    monkeypatch.setitem(sys.modules, "openvino", None)          # as if not installed
    with pytest.raises(ImportError, match=r"mobilenets\[openvino\]"):
        OnnxModel(fp32, runtime="openvino")
    capsys.readouterr()
    assert main(["predict", str(fp32), str(next((SAMPLE_DIR / "val").glob("*/*.jpg"))),
                 "--runtime", "openvino"]) == 2                 # a one-line error
    assert "pip install 'mobilenets[openvino]'" in capsys.readouterr().err
