"""int8 post-training quantization of dense models, end to end on real images: an LR-ASPP
(MobileNetV3-Small) and a FastDepth (MobileNetV1 0.5) overfit 4 real images (COCO128,
7-Scenes) at a small resolution, are exported to ONNX, quantized with ``quantize_onnx``
(calibrated on the task's images: COCO128's train images; the 7-Scenes RGB + depth folder,
whose 16-bit depth maps calibration leaves out), and both files are scored in onnxruntime on
the same 4 images with the tasks' metrics: the int8 file's mIoU is within 1 point (0.01) of
the fp32 file's, its AbsRel at most 5% (relative) above (FastDepth with its two output
convolutions in float: ``exclude="output"``). Skipped when ../shared/datasets is
absent."""

import tarfile

import onnx

import pytest
import torch

from conftest import SHARED_DATASETS
from mobilenets import create_model
from mobilenets.data.calibration import LooseImages
from mobilenets.deploy import OnnxModel, export_onnx, quantize_onnx
from mobilenets.deploy.onnx_graph import is_quantized
from mobilenets.tasks.depth import DepthMetrics, depth_eval_transform, masked_l1, seven_scenes
from mobilenets.tasks.depth import valid_mask
from mobilenets.tasks.segmentation import (MaskPairs, confusion_matrix, find_split, scores,
                                           segmentation_eval_transform, segmentation_loss)
from test_dense_overfit import _batch, _overfit

COCO = SHARED_DATASETS / "coco128-lightly.tar.gz"
SCENES = SHARED_DATASETS / "7scenes-redkitchen-depth.tar.gz"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fp32_and_int8(model, tmp_path, resolution, calib, exclude=None):
    """The fp32 and int8 ONNX files of ``model`` in onnxruntime (one thread)."""
    fp32 = export_onnx(model, tmp_path / "fp32.onnx", resolution=resolution)
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", calib, num_images=16, exclude=exclude)
    assert is_quantized(int8) and not is_quantized(fp32)
    return OnnxModel(fp32, threads=1), OnnxModel(int8, threads=1)


def test_lraspp_int8_keeps_miou_on_coco128_images(tmp_path):
    if not COCO.is_file():
        pytest.skip("../shared/datasets is absent")
    with tarfile.open(COCO) as tar:
        tar.extractall(tmp_path, filter="data", members=[m for m in tar if m.name.startswith(
            ("coco128-lightly/images/train2017/", "coco128-lightly/semantic_segmentation/"))])
    files = find_split(tmp_path / "coco128-lightly", "train")
    files.pairs = files.pairs[:4]
    classes = len(files.classes)
    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_small_100", num_classes=classes)
    x, y = _batch(MaskPairs(files), segmentation_eval_transform(96, model.preprocess))
    y = y[:, 0].long()
    _overfit(model, x, lambda out: segmentation_loss(out, y), steps=60, lr=1e-2)

    def miou(logits):
        return scores(confusion_matrix(logits.argmax(1), y, classes))["miou"]

    with torch.no_grad():
        eager = miou(model(x)["out"])
    fp32, int8 = _fp32_and_int8(model, tmp_path, 96,
                                tmp_path / "coco128-lightly" / "images" / "train2017")
    assert fp32.metadata["task"] == "segmentation" and fp32.output_names == ["out"]
    assert int8.config["num_classes"] == classes
    fp32_miou, int8_miou = miou(fp32(x)), miou(int8(x))
    assert fp32_miou >= 0.7 and abs(fp32_miou - eager) < 0.01      # it learnt; export agrees
    assert int8_miou >= fp32_miou - 0.01


def test_fastdepth_int8_keeps_absrel_on_7scenes_frames(tmp_path):
    if not SCENES.is_file():
        pytest.skip("../shared/datasets is absent")
    # 16 pairs (frames 0-30): the first 4 train and score, all 16 photos calibrate
    names = [f"7scenes-redkitchen/frame-{n:06d}.{s}" for n in range(0, 32, 2)
             for s in ("color.jpg", "depth.png")]
    with tarfile.open(SCENES) as tar:
        tar.extractall(tmp_path, filter="data", members=[m for m in tar if m.name in names])
    folder = tmp_path / "7scenes-redkitchen"
    assert [f.name for f in LooseImages(folder).files] == sorted(
        n.split("/")[1] for n in names if n.endswith(".jpg"))
    frames, _ = seven_scenes(folder, train_range=(0, 4), val_range=(0, 4))
    torch.manual_seed(0)
    model = create_model("fastdepth_mobilenet_v1_050")
    x, depth = _batch(frames, depth_eval_transform(64, model.preprocess))
    depth = depth.float()
    mask = valid_mask(depth, 1e-3, 10.0)
    _overfit(model, x, lambda pred: masked_l1(pred, depth, mask), steps=150, lr=6e-2)

    def abs_rel(pred):
        meter = DepthMetrics("metric", 1e-3, 10.0)
        meter.update(pred, depth)
        return meter.result()["abs_rel"]

    # all-int8, AbsRel rose 6.5% (0.0373 -> 0.0397; likewise with minmax or entropy ranges);
    # the last two convolutions in float (exclude="output") keep it within 3%
    fp32, int8 = _fp32_and_int8(model, tmp_path, 64, folder, exclude="output")
    graph = onnx.load(str(int8.path)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    float_convs = [n.name for n in convs if n.input[1] not in dequantized]
    assert float_convs == [n.name for n in convs[-2:]]       # the rest have int8 weights
    assert fp32.metadata["task"] == "depth" and fp32.config["depth_kind"] == "metric"
    fp32_rel, int8_rel = abs_rel(fp32(x)), abs_rel(int8(x))
    assert fp32_rel <= 0.15                                       # it learnt
    assert int8_rel <= 1.05 * fp32_rel


def test_calibration_folder_leaves_out_depth_maps(tmp_path):
    import numpy as np
    from PIL import Image
    from mobilenets.data import DataError
    from mobilenets.data.calibration import calibration_batches
    rgb = np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    for i in range(3):
        Image.fromarray(rgb).save(tmp_path / f"frame-{i}.color.png")
        Image.fromarray(np.full((20, 24), 1000 + i, np.uint16)).save(
            tmp_path / f"frame-{i}.depth.png")
    assert [f.name for f in LooseImages(tmp_path).files] == [
        f"frame-{i}.color.png" for i in range(3)]
    pre = {"resolution": 16, "resize": 16, "crop_pct": 1.0, "interpolation": "bilinear",
           "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    batches = calibration_batches(tmp_path, pre, num_images=6, batch_size=6)
    assert [tuple(b.shape) for b in batches] == [(3, 3, 16, 16)]
    for i in range(3):
        (tmp_path / f"frame-{i}.color.png").unlink()
    with pytest.raises(DataError, match="only 16-bit depth or label maps"):
        LooseImages(tmp_path)
