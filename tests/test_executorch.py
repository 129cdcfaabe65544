"""ExecuTorch with XNNPACK: ``.pte`` files (fp32 and int8), ``PteModel`` / ``open_model``,
``export|quantize --format pte`` and ``eval|predict|bench`` on ``.pte`` files.

Real computations at 64 px on mobilenet_v2_100, mobilenet_v3_large_100 and efficientnet_b0
(random weights with randomised BatchNorm statistics, 10 classes named as the built-in
sample's folders) and the sample's 250 val images. Lowering takes 10-20 s per model, so each
file is built once per module: the V2 file by ``mobilenets export``, the int8 V3-Large file by
``mobilenets quantize``, the EfficientNet file with a dynamic batch.

ExecuTorch's runtime only loads OpenVINO's C library when its OpenVINO backend is asked for,
which our XNNPACK files never do (checked below), so these tests share the main process.
"""

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets.cli.main import main
from mobilenets.data import SAMPLE_DIR
from conftest import randomize_bn, sample_val_images

pytest.importorskip("executorch")
pytest.importorskip("torchao")
from mobilenets.deploy import PteModel, open_model  # noqa: E402
from mobilenets.deploy.runtimes.executorch import export_pte, set_threads  # noqa: E402
from mobilenets.deploy.runtimes.executorch.quantize import quantize_xnnpack  # noqa: E402

RES = 64
CLASSES = sorted(p.name for p in (SAMPLE_DIR / "train").iterdir() if p.is_dir())
MODELS = ("mobilenet_v2_100", "mobilenet_v3_large_100", "efficientnet_b0")


def make(name):
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model(name, num_classes=10, resolution=RES)).eval()
    model.config["class_names"] = CLASSES
    return model


def assert_close(got, ref):
    """The export's rule: max |difference| <= 2e-5 x max|ref| + 1e-6."""
    assert got.shape == ref.shape
    tol = 2e-5 * ref.abs().max().item() + 1e-6
    assert (got - ref).abs().max().item() <= tol, ((got - ref).abs().max().item(), tol)


def openvino_c_loaded() -> bool:
    with open("/proc/self/maps") as maps:
        return any("libopenvino_c" in line for line in maps)


@pytest.fixture(scope="module")
def val_images():
    return sample_val_images(make("mobilenet_v2_100").preprocess)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (model, .pte path): V2 through the CLI from a saved-model folder, V3-Large
    and EfficientNet (dynamic batch, up to 4) from Python."""
    tmp = tmp_path_factory.mktemp("pte")
    out = {}
    v2 = make("mobilenet_v2_100")
    mobilenets.save(v2, tmp / "v2", class_names=CLASSES)
    assert main(["export", str(tmp / "v2"), "--format", "pte"]) == 0
    out["mobilenet_v2_100"] = (v2, tmp / "v2" / "model.pte")
    v3 = make("mobilenet_v3_large_100")
    out["mobilenet_v3_large_100"] = (v3, export_pte(v3, tmp / "v3.pte"))
    eff = make("efficientnet_b0")
    out["efficientnet_b0"] = (eff, export_pte(eff, tmp / "eff.pte", dynamic_batch=True,
                                              max_batch=4))
    return out


@pytest.mark.parametrize("name", MODELS)
def test_fp32_pte_matches_pytorch(built, name, val_images):
    model, path = built[name]
    pte = open_model(path)
    assert isinstance(pte, PteModel) and pte.runtime == "executorch"
    x = torch.cat([val_images[:6], torch.randn(3, 3, RES, RES)])   # 9: chunks of 1 or of 4
    with torch.no_grad():
        ref = model(x)
    assert_close(pte(x), ref)
    assert_close(pte(x.double().numpy()), ref)              # float64 arrays are converted


def test_metadata_round_trip(built):
    for name, (model, path) in built.items():
        pte = PteModel(path)
        assert pte.config["name"] == name and pte.config["class_names"] == CLASSES
        assert pte.num_classes == 10 and pte.output_names == ["logits"]
        assert pte.preprocess == json.loads(json.dumps(model.preprocess))   # tuples: lists
        meta = pte.session.metadata                          # the JSON the method returns
        assert meta["task"] == "classification" and meta["format"] == "pte"
        assert meta["outputs"] == [{"name": "logits",
                                    "meaning": "N x 10 class scores before softmax"}]
        assert meta["config"]["num_classes"] == 10 and meta["config"]["resolution"] == RES
        assert "quantization" not in meta
        dynamic = name == "efficientnet_b0"
        assert meta["batch"] == ({"dynamic": True, "max": 4} if dynamic
                                 else {"dynamic": False, "max": 1})
        assert pte.input_shape == (["batch", 3, RES, RES] if dynamic else [1, 3, RES, RES])
        assert pte.batch_size == (None if dynamic else 1) and pte.fixed_resolution == RES
        assert pte.session.max_batch == (4 if dynamic else 1)
        assert "PteModel" in repr(pte) and "executorch" in repr(pte)
        # the same entries as the ONNX export writes, JSON-encoded the same way
        assert json.loads(pte.metadata["preprocess"]) == pte.preprocess
        assert pte.metadata["model_name"] == name


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    """mobilenet_v3_large_100 quantized by ``mobilenets quantize --format pte`` (32 images),
    and the same fake-quantized PyTorch model (the calibration images are drawn with a fixed
    seed, so the same ranges)."""
    tmp = tmp_path_factory.mktemp("int8")
    model = make("mobilenet_v3_large_100")
    mobilenets.save(model, tmp / "v3", class_names=CLASSES)
    assert main(["quantize", str(tmp / "v3"), "--format", "pte", "--calib", str(SAMPLE_DIR),
                 "--num-images", "32", "--no-check-speed"]) == 0
    fake = quantize_xnnpack(model, SAMPLE_DIR, num_images=32)
    return model, fake, tmp / "v3" / "model-int8.pte"


def test_int8_pte_computes_the_fake_quantized_model(int8, val_images):
    model, fake, path = int8
    pte = open_model(path)
    out = pte(val_images)
    with torch.no_grad():
        ref, fp32 = fake(val_images), model(val_images)
    agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    cos = torch.nn.functional.cosine_similarity(out, ref).mean().item()
    # measured: agreement 1.0, cosine 0.9993. With random weights this model predicts one
    # class for most images (about 240 of 250), so the agreement alone says little; the
    # logits say more: the file is closer to the fake-quantized model than the float model
    # is (cosine 0.9978), i.e. it computes the int8 graph, not the float one.
    assert agree >= 0.97, agree
    fp32_cos = torch.nn.functional.cosine_similarity(fp32, ref).mean().item()
    assert cos > 0.999 and cos > fp32_cos, (cos, fp32_cos)
    meta = pte.session.metadata["quantization"]
    assert meta["method"] == "ptq" and meta["calibration_images"] == 32
    assert "XNNPACKQuantizer" in meta["source"]
    assert path.stat().st_size < 0.4 * (4 * sum(p.numel() for p in model.parameters()))
    with pytest.raises(ValueError, match="calibrated at 64 px"):
        export_pte(fake, path.with_name("other.pte"), resolution=96)


def test_cli_eval_predict_bench_take_pte(int8, built, val_images, capsys):
    _, _, path = int8
    out = open_model(path)(val_images)
    labels = torch.tensor([CLASSES.index(p.parent.name) for p in
                           sorted((SAMPLE_DIR / "val").glob("*/*.jpg"))])
    assert main(["eval", str(path), "--data", str(SAMPLE_DIR), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 250
    assert result["top1"] == pytest.approx((out.argmax(1) == labels).float().mean().item())
    image = sorted((SAMPLE_DIR / "val").glob("*/*.jpg"))[0]
    assert main(["predict", str(path), str(image), "--top-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["classes"] == \
        [CLASSES[out[0].argmax().item()]]
    assert main(["bench", str(path), "--threads", "1", "--warmup", "1", "--iters", "3",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["runtime"], r["precision"], r["calls"]) == ("executorch", "int8", 3)
    assert set_threads(None) == 1                  # --threads reached XNNPACK's pool
    fp32 = str(built["mobilenet_v3_large_100"][1])
    assert main(["bench", fp32, "--runtime", "executorch", "--threads", "2", "--iters", "2",
                 "--warmup", "0", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["precision"] == "fp32" and set_threads(None) == 2
    for argv, words in [(["bench", fp32, "--precision", "int8"], "not an int8"),
                        (["bench", fp32, "--runtime", "onnxruntime"], "runs with runtime "
                         "executorch"),
                        (["bench", fp32, "--profile"], "no event tracer"),
                        (["quantize", fp32, "--format", "pte", "--calib", str(SAMPLE_DIR)],
                         "exported file"),
                        (["quantize", "mobilenet_v2_035", "--format", "pte", "--calib",
                          str(SAMPLE_DIR), "--exclude", "se"], "apply to ONNX files"),
                        (["quantize", "mobilenet_v2_035", "--format", "pte", "--calib",
                          str(SAMPLE_DIR), "--percentile", "0"], "--percentile apply to"),
                        (["quantize", "mobilenet_v2_035", "--runtime", "executorch", "--calib",
                          str(SAMPLE_DIR)], "give --format pte"),
                        (["export", fp32, "--format", "pte"], "already an exported file"),
                        (["export", "mobilenet_v2_035", "--format", "pte", "--opset", "18"],
                         "--opset applies to ONNX")]:
        assert main(argv) == 2, argv
        assert words in capsys.readouterr().err, argv


def test_bad_inputs_and_files_get_clear_errors(built, tmp_path):
    _, path = built["mobilenet_v3_large_100"]
    pte = PteModel(path)
    with pytest.raises(ValueError, match=r"takes float images of shape N x 3 x 64 x 64; got "
                                         r"shape \(1, 3, 65, 64\)"):
        pte(torch.randn(1, 3, 65, 64))            # the runtime itself would accept this one
    with pytest.raises(ValueError, match="N x 3 x 64 x 64"):
        pte(torch.randn(3, RES, RES))
    with pytest.raises(TypeError, match="got dtype torch.uint8"):
        pte(torch.zeros(1, 3, RES, RES, dtype=torch.uint8))
    with pytest.raises(TypeError, match="float32 arrays"):   # the session takes float32 only
        pte.session.run(None, {"input": np.zeros((1, 3, RES, RES), np.float64)})
    with pytest.raises(ValueError, match="inputs are"):
        pte.session.run(None, {"x": np.zeros((1, 3, RES, RES), np.float32)})
    data = path.read_bytes()
    (tmp_path / "garbage.pte").write_bytes(b"not a program" * 100)
    (tmp_path / "cut.pte").write_bytes(data[:len(data) // 2])
    (tmp_path / "empty.pte").write_bytes(b"")
    with pytest.raises(ValueError,
                       match="not a readable ExecuTorch program.*identifier .* != expected"):
        PteModel(tmp_path / "garbage.pte")
    with pytest.raises(ValueError, match="not a readable ExecuTorch program.*too small"):
        open_model(tmp_path / "cut.pte")
    with pytest.raises(ValueError, match="is empty"):
        PteModel(tmp_path / "empty.pte")
    with pytest.raises(FileNotFoundError, match=r"no ExecuTorch \(.pte\) file"):
        PteModel(tmp_path / "missing.pte")
    with pytest.raises(ValueError, match="runs with runtime executorch, not openvino"):
        open_model(path, runtime="openvino")
    with pytest.raises(ValueError, match="export it with --format pte"):
        open_model(tmp_path / "x.onnx", runtime="executorch")
    with pytest.raises(ValueError, match="--format pte"):
        open_model("mobilenet_v2_035", runtime="executorch")
    with pytest.raises(RuntimeError, match="eval-only"):
        pte.train()


def test_threads_concurrent_calls_and_no_openvino(built, val_images):
    model, path = built["efficientnet_b0"]
    loaded_before = sys.platform == "linux" and openvino_c_loaded()
    pte = PteModel(path, threads=1)
    assert set_threads(None) == 1
    PteModel(path, threads=2)
    assert set_threads(None) == 2                 # one pool for the process
    chunks = [val_images[i:i + 3] for i in range(0, 24, 3)]
    with ThreadPoolExecutor(4) as pool:            # calls are serialised, results unmixed
        outs = list(pool.map(pte, chunks))
    with torch.no_grad():
        for chunk, out in zip(chunks, outs):
            assert_close(out, model(chunk))
    if sys.platform == "linux" and not loaded_before:
        assert not openvino_c_loaded()             # XNNPACK files never load OpenVINO
