"""Detector export: one ONNX file with decoding and per-class NMS (ONNX NonMaxSuppression) in
the graph, padded outputs, run by OnnxDetector / open_model / the CLI in torchvision's
convention, and its int8 quantization with the post-processing kept in float.

The model for the float file: SSDLite on MobileNetV3-Small at 160 px, 11 classes, whose
convolutions are re-initialised He-normal and whose BatchNorm statistics are those of real
COCO128 images, so that scores depend on the image and are peaked (the library's N(0, 0.03)
initialisation gives nearly equal scores that tie and flip between runtimes).

int8: a random network loses most of its input-dependent signal to int8 rounding over its
depth (measured on the He-normal model: the correlation of float and int8 activations falls
from 0.9997 after the first convolution to 0.56 at the last backbone map), so its detections
cannot survive quantization, while a trained detector's do. The int8 test therefore uses
test_detection's torchvision-style model (random weights and BatchNorm statistics,
classification biases spread so that scores are peaked): its detections come from the biases
and are about the same on every image, and the test checks that quantizing the network and
keeping the post-processing in float preserves them. Real-data tests skip when
../shared/datasets is absent."""

import json
import tarfile

import numpy as np
import pytest
import torch
from torch import nn
from mobilenets.data.image_io import decode_rgb
from torchvision.ops import box_iou

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import mobilenets  # noqa: E402
from mobilenets.cli.main import main  # noqa: E402
from mobilenets.deploy import OnnxDetector, export_onnx, open_model, quantize_onnx  # noqa: E402
from mobilenets.deploy.detection_export import (detection_graph, detection_options,  # noqa: E402
                                                nms, postprocess_nodes)
from conftest import (SHARED_DATASETS, assert_same_detections, needs_vnni,  # noqa: E402
                      peaked_ssdlite, randomize_bn)
from test_detection import spread_class_biases  # noqa: E402

COCO128 = SHARED_DATASETS / "coco128-lightly.tar.gz"
MAX_DET = 40


def peaked_detector(calib: list[torch.Tensor] | None = None, **options) -> nn.Module:
    """The test detector (module docstring); BatchNorm statistics from ``calib`` (images in
    [0, 1]), or from noise images without them."""
    return peaked_ssdlite("mobilenet_v3_small_100", 160, 11, calib,
                         detections_per_img=MAX_DET, **options)


@pytest.fixture(scope="module")
def coco128(tmp_path_factory):
    """A folder with COCO128's first 8 training and 4 validation images (``train2017/``,
    ``val2017/``), unpacked from the shared archive."""
    if not COCO128.exists():
        pytest.skip("../shared/datasets is absent")
    dest = tmp_path_factory.mktemp("coco128")
    with tarfile.open(COCO128) as tar:
        wanted = []
        for split, n in (("train2017", 8), ("val2017", 4)):
            prefix = f"coco128-lightly/images/{split}/"
            wanted += sorted((m for m in tar if m.name.startswith(prefix)
                              and m.name.endswith(".jpg")), key=lambda m: m.name)[:n]
        tar.extractall(dest, members=wanted, filter="data")
    return dest / "coco128-lightly" / "images"


def read_images(folder, n: int, skip: int = 0) -> list[torch.Tensor]:
    paths = sorted(folder.glob("*.jpg"))[skip:skip + n]
    return [decode_rgb(p).float() / 255 for p in paths]


@pytest.fixture(scope="module")
def exported(coco128, tmp_path_factory):
    """(model, its fp32 file, test images): BatchNorm statistics from 8 training images;
    the test images are val ones."""
    model = peaked_detector(read_images(coco128 / "train2017", 8), score_thresh=0.3)
    fp32 = export_onnx(model, tmp_path_factory.mktemp("detector") / "det.onnx")
    return model, fp32, read_images(coco128 / "val2017", 4)


@pytest.fixture(scope="module")
def int8_pair(coco128, tmp_path_factory):
    """fp32 and int8 files of the bias-peaked model (module docstring), int8 calibrated on 8
    COCO128 training images."""
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model(
        "ssdlite", backbone="mobilenet_v3_small_100", resolution=160, num_classes=91,
        score_thresh=0.3)).eval()
    spread_class_biases(model)
    tmp = tmp_path_factory.mktemp("int8")
    fp32 = export_onnx(model, tmp / "det.onnx")
    int8 = quantize_onnx(fp32, tmp / "det-int8.onnx", coco128 / "train2017",
                         num_images=8)
    return fp32, int8


# --- the NMS operator and the post-processing, without a file ------------------------------

def test_nms_op_matches_onnxruntime_nonmaxsuppression():
    """``mobilenets::nms`` in PyTorch selects what onnxruntime's operator selects, including
    the strict score threshold and the per-class cap."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 60, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 10 + torch.rand(2, 60, 2, generator=g) * 40], 2)
    scores = torch.rand(2, 3, 60, generator=g)
    scores[0, 1, :5] = 0.5                                # at the threshold: not kept
    node = onnx.helper.make_node("NonMaxSuppression", ["b", "s", "m", "i", "t"], ["out"])
    graph = onnx.helper.make_graph(
        [node], "nms",
        [onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [2, 60, 4]),
         onnx.helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, [2, 3, 60])],
        [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.INT64, None)],
        [onnx.numpy_helper.from_array(np.array([7], np.int64), "m"),
         onnx.numpy_helper.from_array(np.array([0.3], np.float32), "i"),
         onnx.numpy_helper.from_array(np.array([0.5], np.float32), "t")])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    want = ort.InferenceSession(proto.SerializeToString()).run(
        None, {"b": boxes.numpy(), "s": scores.numpy()})[0]
    got = nms(boxes, scores, 7, 0.3, 0.5)
    assert 10 < len(got) < 2 * 3 * 7 + 1
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, want.tolist()))
    counts = torch.bincount(got[:, 0] * 3 + got[:, 1])
    assert counts.max() == 7                           # the cap bites


def test_graph_postprocess_equals_torchvision_postprocess():
    """export_forward + the graph's post-processing in eager PyTorch give the detector's own
    detections (torchvision's postprocess_detections) on the resized batch."""
    model = peaked_detector()
    images = [torch.rand(3, 160, 160), torch.rand(3, 160, 160)]
    with torch.no_grad():
        want = model(images)
        batch, _ = model.transform(images)
        boxes, scores, labels, count = detection_graph(
            model, detection_options(model, {}))(batch.tensors)
    assert boxes.shape == (2, MAX_DET, 4) and labels.dtype == torch.int64
    for i, w in enumerate(want):
        n = int(count[i])
        assert n == len(w["boxes"]) > 10
        torch.testing.assert_close(boxes[i, :n], w["boxes"])
        torch.testing.assert_close(scores[i, :n], w["scores"])
        assert torch.equal(labels[i, :n], w["labels"])
        assert len(w["labels"].unique()) > 3


# --- the file ------------------------------------------------------------------------------

def test_file_gives_pytorch_detections_on_coco128(exported):
    model, fp32, images = exported
    detector = open_model(fp32)
    assert isinstance(detector, OnnxDetector) and detector.task == "detection"
    graph = onnx.load(str(fp32)).graph
    assert [n.op_type for n in graph.node].count("NonMaxSuppression") == 1
    assert len({tuple(img.shape) for img in images}) > 1          # images of several sizes
    with torch.no_grad():
        want = model(images)
    got = detector(images)
    for g, w in zip(got, want):
        assert len(w["boxes"]) > 0
        # boxes in the images' pixels (up to 640): float differences of ORT's kernels
        assert_same_detections(g, w, rtol=1e-4, box_atol=0.05, score_atol=1e-4)
    assert sum(len(w["labels"].unique()) for w in want) > 4


def test_padded_outputs_and_metadata(exported):
    model, fp32, images = exported
    detector = open_model(fp32)
    meta = json.loads(detector.metadata["detection"])
    assert meta == {"score_thresh": 0.3, "nms_thresh": 0.55, "max_det": MAX_DET,
                    "topk_candidates": 300, "topk_per_class": True, "pad_label": -1,
                    "resize": "stretch"}
    assert [o["name"] for o in json.loads(detector.metadata["outputs"])] == [
        "boxes", "scores", "labels", "num_detections"]
    assert json.loads(detector.metadata["preprocess"])["in_model"] is False
    batch, _ = detector.transform(images)
    out = detector.detect(batch.tensors)                  # a batch-1 file runs in chunks
    assert out["boxes"].shape == (4, MAX_DET, 4) and out["scores"].shape == (4, MAX_DET)
    assert out["labels"].shape == (4, MAX_DET) and out["labels"].dtype == torch.int64
    assert out["num_detections"].shape == (4,) and out["num_detections"].dtype == torch.int64
    counts = out["num_detections"].tolist()
    assert min(counts) < MAX_DET                          # some images have padding
    for i, n in enumerate(counts):
        assert (out["scores"][i, :n] > 0.3).all() and (out["labels"][i, :n] >= 1).all()
        assert (out["scores"][i, :n].diff() <= 0).all()  # best first
        assert (out["boxes"][i, n:] == 0).all() and (out["scores"][i, n:] == 0).all()
        assert (out["labels"][i, n:] == -1).all()
        assert (out["boxes"][i, :n] >= 0).all() and (out["boxes"][i, :n] <= 160).all()


@needs_vnni
def test_int8_file_keeps_float_detections(int8_pair, coco128):
    """int8 (the network's convolutions quantized; by default the prediction convolutions,
    decoding and NMS in float): at least 95% of the float file's detections are found by the
    int8 file at IoU >= 0.9 with the same label."""
    from mobilenets.deploy.quantize import excluded_nodes
    fp32, int8 = int8_pair
    predictions = set(excluded_nodes(onnx.load(str(fp32)), "predictions"))
    proto = onnx.load(str(int8))
    producers = {o: n for n in proto.graph.node for o in n.output}
    nms_node = next(n for n in proto.graph.node if n.op_type == "NonMaxSuppression")
    assert all(producers[i].op_type != "DequantizeLinear"
               for i in nms_node.input if i in producers)        # fed by float nodes
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    quantized = [n for n in convs if n.name not in predictions]
    assert len(predictions) == 12 and len(quantized) == len(convs) - 12  # 6 levels: box, class
    assert all(producers[n.input[1]].op_type == "DequantizeLinear" for n in quantized)
    assert all(producers[n.input[0]].op_type == "DequantizeLinear" for n in quantized)
    assert not any(n.input[1] in producers for n in convs if n.name in predictions)
    images = read_images(coco128 / "val2017", 2)
    matched = total = 0
    for f, q in zip(open_model(fp32)(images), open_model(int8)(images)):
        iou = box_iou(f["boxes"], q["boxes"])
        same = f["labels"][:, None] == q["labels"][None, :]
        matched += int(((iou >= 0.9) & same).any(1).sum())
        total += len(f["boxes"])
        assert len(f["labels"].unique()) > 5
    assert total > 200 and matched >= 0.95 * total, (matched, total)


def test_postprocess_nodes_are_after_the_network(exported):
    _, fp32, _ = exported
    proto = onnx.load(str(fp32))
    after = set(postprocess_nodes(proto))
    kinds = {n.op_type for n in proto.graph.node if n.name in after}
    assert {"NonMaxSuppression", "TopK", "Softmax", "Exp"} <= kinds
    assert not {"Conv", "HardSwish"} & kinds


def test_cli_predict_and_eval_on_the_file(exported, coco128, tmp_path, capsys):
    _, fp32, _ = exported
    image = sorted((coco128 / "val2017").glob("*.jpg"))[0]
    found = open_model(fp32)([read_images(coco128 / "val2017", 1)[0]])[0]
    conf = float(found["scores"].median())           # --conf filters the graph's detections
    assert main(["predict", str(fp32), str(image), "--out", str(tmp_path / "pred"), "--json",
                 "--conf", str(conf)]) == 0
    result = json.loads(capsys.readouterr().out)["predictions"][0]
    assert (tmp_path / "pred" / f"{image.stem}.png").is_file()
    keep = found["scores"] > conf
    assert 0 < len(result["detections"]) == int(keep.sum()) < len(found["scores"])
    assert [d["label"] for d in result["detections"]] == [str(k) for k in
                                                          found["labels"][keep].tolist()]
    # a two-image YOLO folder with the model's 10 classes
    data = tmp_path / "tiny"
    for split in ("val2017",):
        (data / "images" / split).mkdir(parents=True)
        (data / "labels" / split).mkdir(parents=True)
        for path in sorted((coco128 / split).glob("*.jpg"))[:2]:
            (data / "images" / split / path.name).write_bytes(path.read_bytes())
            (data / "labels" / split / f"{path.stem}.txt").write_text("3 0.5 0.5 0.4 0.4\n")
    (data / "config.yaml").write_text("path: .\ntrain: images/val2017\nval: images/val2017\n"
                                      "names:\n" + "".join(f"  {k}: c{k}\n" for k in range(10)))
    assert main(["eval", str(fp32), "--data", str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["task"] == "detection" and metrics["count"] == 2
    assert 0 <= metrics["map50"] <= 1


def test_bad_inputs_say_what_to_do(exported, tmp_path):
    model, fp32, images = exported
    detector = open_model(fp32)
    with pytest.raises(ValueError, match="float 3 x H x W images"):
        detector([(images[0] * 255).to(torch.uint8)])
    with pytest.raises(ValueError, match="in \[0, 1\]; these reach"):
        detector([images[0] * 255])
    with pytest.raises(ValueError, match="list of 3 x H x W"):
        detector(images[0])
    detector.score_thresh = 0.1
    with pytest.raises(ValueError, match="export the detector again"):
        detector(images[:1])
    detector.score_thresh, detector.nms_thresh = 0.3, 0.7
    with pytest.raises(ValueError, match="nms_thresh"):
        detector(images[:1])
    detector.nms_thresh, detector.detections_per_img = 0.55, MAX_DET + 1
    with pytest.raises(ValueError, match="max_det"):
        detector(images[:1])
    with pytest.raises(TypeError, match="unknown detection export option"):
        export_onnx(model, tmp_path / "x.onnx", max_dets=10)
    with pytest.raises(ValueError, match="score_thresh"):
        export_onnx(model, tmp_path / "x.onnx", score_thresh=1.5)
    classifier = mobilenets.create_model("mobilenet_v2_035", num_classes=3, resolution=32)
    with pytest.raises(TypeError, match="export options of detectors"):
        export_onnx(classifier, tmp_path / "x.onnx", max_det=10)
    assert not (tmp_path / "x.onnx").exists()
    # a file of another task (a one-node graph with a classifier's metadata)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["input"], ["logits"])], "g",
        [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 3, 8, 8])])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    proto.metadata_props.add(key="task", value="classification")
    onnx.save(proto, str(tmp_path / "c.onnx"))
    with pytest.raises(ValueError, match="not a detector file"):
        OnnxDetector(tmp_path / "c.onnx")


def test_yolov4_file_gives_its_detections():
    """The same export for YOLOv4 (scores with a background column, letterboxed input, top-k
    over all pairs): the file's detections are the model's on its square canvas."""
    from test_yolo import small_yolo, spread_scores
    torch.manual_seed(0)
    model = spread_scores(small_yolo(detections_per_img=30)).eval()
    images = [torch.rand(3, 100, 150), torch.rand(3, 240, 60)]    # the second: wide padding
    with torch.no_grad():
        want = []
        for image in images:
            batch, moves, _ = model.letterbox([image], size=model.fixed_size)
            boxes, scores = model.export_forward(batch)
            want += model.postprocess(boxes, scores, moves, [tuple(image.shape[1:])])
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        detector = open_model(export_onnx(model, f"{tmp}/yolo.onnx"))
        meta = json.loads(detector.metadata["detection"])
        got = detector(images)
    assert meta["resize"] == "letterbox" and meta["topk_per_class"] is False
    for g, w in zip(got, want):
        assert 0 < len(g["boxes"]) == len(w["boxes"]) <= 30
        assert (g["boxes"][:, 2:] > g["boxes"][:, :2]).all()    # those in padding dropped
        assert torch.equal(g["labels"], w["labels"]) and (g["labels"] >= 1).all()
        torch.testing.assert_close(g["boxes"], w["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(g["scores"], w["scores"], rtol=1e-4, atol=1e-5)


def test_open_model_takes_a_detector_name():
    """A head's registered name (what `mobilenets export NAME` passes) opens as the model."""
    model = open_model("ssdlite_mobilenet_v3_small_100", resolution=128, num_classes=3)
    assert model.task == "detection" and model.config["backbone"] == "mobilenet_v3_small_100"
    with pytest.raises(ValueError, match="unknown model"):
        open_model("ssdlite_no_such_backbone")


def test_yolo_int8_keeps_its_prediction_convs_in_float(tmp_path):
    """quantize_onnx's default for a YOLO file keeps each level's prediction conv (box
    offsets, objectness and class logits in one tensor) in float and quantizes every other
    convolution; ``exclude="none"`` quantizes them too; SSDLite files share the default, a
    classifier has none."""
    from test_yolo import small_yolo, spread_scores
    from mobilenets.data import SAMPLE_DIR
    from mobilenets.deploy.quantize import default_exclude, excluded_nodes
    torch.manual_seed(0)
    model = spread_scores(small_yolo(detections_per_img=30)).eval()
    fp32 = export_onnx(model, tmp_path / "yolo.onnx")
    proto = onnx.load(str(fp32))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert default_exclude(meta) == "predictions"
    for head in ("ssdlite", "ssdlite320"):
        assert default_exclude({**meta, "config": json.dumps({"head": head})}) == "predictions"
    assert default_exclude({**meta, "config": json.dumps({"head": "lraspp"})}) is None
    assert default_exclude({"task": "classification"}) is None
    preds = excluded_nodes(proto, "predictions")
    weights = {init.name: init for init in proto.graph.initializer}
    assert len(preds) == 3       # one per level, each with 3 anchors x (4 + 1 + 5 classes)
    for node in (n for n in proto.graph.node if n.name in preds):
        assert weights[node.input[1]].dims[0] == 3 * (5 + 5)

    def float_convs(path):
        q = onnx.load(str(path))
        producer = {o: n for n in q.graph.node for o in n.output}
        convs = [n for n in q.graph.node if n.op_type == "Conv"]
        assert len(convs) == len([n for n in proto.graph.node if n.op_type == "Conv"])
        return sum(producer.get(n.input[1]) is None
                   or producer[n.input[1]].op_type != "DequantizeLinear" for n in convs)

    calib = SAMPLE_DIR / "train"
    assert float_convs(quantize_onnx(fp32, tmp_path / "q.onnx", calib, num_images=4)) == 3
    assert float_convs(quantize_onnx(fp32, tmp_path / "all.onnx", calib, num_images=4,
                                     exclude="none")) == 0
    with pytest.raises(ValueError, match="detector"):
        excluded_nodes(onnx.load(str(export_onnx(
            mobilenets.create_model("mobilenet_v3_small_100", num_classes=3),
            tmp_path / "cls.onnx", resolution=64))), "predictions")
