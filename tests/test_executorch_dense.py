"""Dense models as ExecuTorch ``.pte`` files: segmentation (LR-ASPP, fp32) and depth
(FastDepth, int8), their metadata (task, named outputs), and ``eval`` / ``predict`` on them
as on the PyTorch models.

Real computations at 64 px, random weights with randomised BatchNorm statistics, on tiny
synthetic data sets (coloured rectangles with their label maps; random images with depth
ramps). Lowering takes 10-20 s per model here, so one fp32 segmentation file (written by
``mobilenets export``) and one int8 depth file are built, once per module.
"""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from mobilenets.data.image_io import decode_unchanged

import mobilenets
from mobilenets.cli.main import main
from mobilenets.data import SAMPLE_DIR
from conftest import randomize_bn

pytest.importorskip("executorch")
pytest.importorskip("torchao")
from mobilenets.deploy import PteModel, open_model  # noqa: E402
from mobilenets.deploy.runtimes.executorch import export_pte  # noqa: E402
from mobilenets.deploy.runtimes.executorch.quantize import quantize_xnnpack  # noqa: E402

RES = 64
CLASSES = ["ground", "left", "box", "other"]
COLOURS = [(20, 20, 20), (200, 40, 40), (40, 200, 40), (40, 40, 200)]


def assert_close(got, ref):
    """The export's rule: max |difference| <= 2e-5 x max|ref| + 1e-6."""
    assert got.shape == ref.shape
    tol = 2e-5 * ref.abs().max().item() + 1e-6
    assert (got - ref).abs().max().item() <= tol, ((got - ref).abs().max().item(), tol)


def segmentation_data(root):
    """Two val images of coloured rectangles and their label maps (classes.txt layout)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for sub in ("images", "masks"):
        (root / sub / "val").mkdir(parents=True)
    for i in range(2):
        mask = np.zeros((48, 64), np.uint8)
        mask[:, :16] = 1
        for k in (2, 3):
            y, x = rng.integers(0, 36), rng.integers(16, 48)
            mask[y:y + 12, x:x + 16] = k
        Image.fromarray(np.array(COLOURS, np.uint8)[mask]).save(root / "images" / "val" /
                                                                 f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / "val" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    """LR-ASPP on MobileNetV3-Small, saved and written by ``mobilenets export --format pte``."""
    tmp = tmp_path_factory.mktemp("seg")
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model("lraspp_mobilenet_v3_small_100",
                                                 num_classes=4, resolution=RES)).eval()
    mobilenets.save(model, tmp / "seg", class_names=CLASSES)
    assert main(["export", str(tmp / "seg"), "--format", "pte"]) == 0
    return model, tmp / "seg" / "model.pte", segmentation_data(tmp / "data")


def test_segmentation_pte_matches_pytorch_and_names_its_outputs(seg):
    model, path, _ = seg
    pte = open_model(path)
    x = torch.randn(3, 3, RES, RES)                  # a batch-1 file: run in chunks
    with torch.no_grad():
        ref = model(x)
    assert list(ref) == ["out"] and pte.output_names == ["out"]
    assert_close(pte(x), ref["out"])
    meta = pte.session.metadata
    assert meta["task"] == "segmentation" and meta["config"]["class_names"] == CLASSES
    assert meta["outputs"] == [{"name": "out", "meaning": "N x 4 x H x W class scores per "
                                "pixel (logits) at the input size"}]


def test_cli_eval_and_predict_take_a_segmentation_pte(seg, tmp_path, capsys):
    from mobilenets.tasks.segmentation import evaluate
    model, path, data = seg
    assert main(["eval", str(path), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    direct = evaluate(model, data)                     # the PyTorch model, scored directly
    assert result["task"] == "segmentation" and result["images"] == 2
    assert result["miou"] == pytest.approx(direct["miou"], abs=1e-6)
    assert result["pixel_acc"] == pytest.approx(direct["pixel_acc"], abs=1e-6)
    assert set(result["per_class_iou"]) == set(CLASSES)
    image = data / "images" / "val" / "001.png"
    assert main(["predict", str(path), str(image), "--out", str(tmp_path / "p"),
                 "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    picture = decode_unchanged(tmp_path / "p" / "001.png")
    assert answer["task"] == "segmentation" and picture.shape == (3, 48, 128)
    assert torch.equal(picture[:, :, :64], decode_unchanged(image))
    assert sum(answer["predictions"][0]["class_fractions"].values()) == \
        pytest.approx(1, abs=1e-3)


@pytest.fixture(scope="module")
def depth_int8(tmp_path_factory):
    """FastDepth on MobileNetV1 0.5, quantized for XNNPACK (8 calibration images of the
    built-in sample), as the fake-quantized PyTorch model and its int8 ``.pte``."""
    tmp = tmp_path_factory.mktemp("depth")
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model("fastdepth_mobilenet_v1_050",
                                                 resolution=RES)).eval()
    fake = quantize_xnnpack(model, SAMPLE_DIR, num_images=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_pte(fake, tmp / "depth-int8.pte")
    return model, fake, path, [str(w.message) for w in caught]


def test_int8_depth_pte_computes_the_fake_quantized_model(depth_int8, tmp_path, capsys):
    model, fake, path, caught = depth_int8
    # FastDepth's decoder upsamples by nearest neighbour, which XNNPACK does not run
    assert any("upsample_nearest2d" in m and "portable kernels" in m for m in caught), caught
    pte = PteModel(path)
    meta = pte.session.metadata
    assert meta["task"] == "depth" and pte.output_names == ["depth"]
    assert meta["outputs"] == [{"name": "depth", "meaning": "N x 1 x H x W depth in metres"}]
    assert meta["quantization"]["method"] == "ptq" and meta["config"]["depth_kind"] == "metric"
    assert pte.num_classes == 0          # a depth map's width is not a class count
    x = torch.randn(4, 3, RES, RES, generator=torch.Generator().manual_seed(1))
    out = pte(x)
    with torch.no_grad():
        ref, fp32 = fake(x), model(x)
    assert out.shape == ref.shape == (4, 1, RES, RES)
    cos = torch.nn.functional.cosine_similarity(out.flatten(1), ref.flatten(1)).mean().item()
    fp32_cos = torch.nn.functional.cosine_similarity(fp32.flatten(1), ref.flatten(1))
    err, fp32_err = (out - ref).abs().mean().item(), (fp32 - ref).abs().mean().item()
    # the file computes the int8 graph: closer to the fake-quantized model than the float
    # model is (measured: cosine 0.996 against 0.986, mean |error| 0.011 against 0.022; 88%
    # of the pixels equal; single pixels differ by up to 0.5 of a 3.5 range, as rounding
    # differences grow through 20 random-weight layers)
    assert cos > 0.99 and cos > fp32_cos.mean().item() and err < fp32_err, \
        (cos, fp32_cos.mean().item(), err, fp32_err)

    # eval and predict run the file as the depth task runs a model
    rng = np.random.default_rng(0)
    data = tmp_path / "pairs"
    data.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            data / f"frame-{i:03d}.color.png")
        codes = np.linspace(500, 4000, 48 * 64).reshape(48, 64) + 100 * i
        Image.fromarray(codes.astype(np.uint16)).save(data / f"frame-{i:03d}.depth.png")
    assert main(["eval", str(path), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    from mobilenets.tasks.depth import DepthPairs, depth_eval_transform, evaluate_model, \
        find_pairs
    from mobilenets.training.sampling import SeededView
    pairs = SeededView(DepthPairs(find_pairs(data)), depth_eval_transform(RES, pte.preprocess),
                       0)
    direct = evaluate_model(pte, pairs)
    assert result["task"] == "depth" and result["images"] == 3
    assert result["depth_kind"] == "metric"
    assert result["abs_rel"] == pytest.approx(direct["abs_rel"], rel=1e-6)
    assert main(["predict", str(path), str(data / "frame-000.color.png"), "--out",
                 str(tmp_path / "p")]) == 0
    picture = decode_unchanged(tmp_path / "p" / "frame-000.color.png")
    assert picture.shape == (3, 48, 128)
    assert picture[:, :, 64:].flatten(1).unique(dim=1).shape[1] > 1


def test_a_detection_model_without_export_forward_is_refused(tmp_path):
    """Detectors with an ``export_forward`` are written (tests/test_executorch_detection.py);
    a model without one is refused with what it lacks."""
    model = mobilenets.create_model("mobilenet_v2_035", num_classes=10, resolution=RES)
    with pytest.raises(ValueError, match="no export_forward"):
        export_pte(model, tmp_path / "d.pte", task="detection")
