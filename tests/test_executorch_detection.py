"""Detectors as ExecuTorch ``.pte`` files: the program is the network and box decoding
(decoded boxes and class scores), NMS runs after it with the same ``postprocess`` as the ONNX
graph, as the ``detection`` metadata entry says; ``PteDetector`` / ``open_model`` / the CLI
(predict, eval, bench) use the file in torchvision's convention.

The model: SSDLite on MobileNetV1 0.25 at 128 px (few graph nodes: lowering time grows with
them, and the int8 lowering is this file's slowest step), 2 classes, convolutions
re-initialised He-normal and BatchNorm statistics from noise images, so that scores depend
on the image and are peaked (with the library's N(0, 0.03) initialisation nearly equal
scores tie and flip between runtimes). The fp32 file is built once.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import mobilenets
from mobilenets.cli.main import main
from conftest import assert_same_detections, peaked_ssdlite

pytest.importorskip("executorch")
from mobilenets.deploy import PteDetector, open_model  # noqa: E402
from mobilenets.deploy.detection_export import (DetectorNetwork, detection_options,  # noqa: E402
                                                postprocess)
from mobilenets.deploy.runtimes.executorch import export_pte  # noqa: E402
from mobilenets.deploy.runtimes.executorch.quantize import quantize_xnnpack  # noqa: E402

RES, MAX_DET = 128, 20
NAMES = ["red", "green"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def peaked_detector() -> nn.Module:
    """The test detector (module docstring)."""
    model = peaked_ssdlite("mobilenet_v1_025", RES, len(NAMES) + 1,
                           detections_per_img=MAX_DET, score_thresh=0.2)
    model.config["class_names"] = ["__background__", *NAMES]    # one per label
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, its .pte file, two noise images of other sizes, decoded from PNG files)."""
    tmp = tmp_path_factory.mktemp("ptedet")
    model = peaked_detector()
    path = export_pte(model, tmp / "det.pte")
    g = torch.Generator().manual_seed(1)
    images = []
    for i, (h, w) in enumerate([(96, 150), (200, 120)]):
        pixels = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp / f"{i}.png")
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    return model, path, images, tmp


def test_pte_gives_the_pytorch_detections(exported):
    model, path, images, _ = exported
    detector = open_model(path)
    assert isinstance(detector, PteDetector) and detector.task == "detection"
    assert detector.runtime == "executorch" and detector.output_names == ["boxes", "scores"]
    with torch.no_grad():
        want = model(images)
    got = detector(images)
    for g, w in zip(got, want):
        assert len(w["boxes"]) == MAX_DET
        # boxes in the images' pixels (up to 200): float differences of XNNPACK's kernels
        assert_same_detections(g, w, rtol=1e-4, box_atol=0.05, score_atol=1e-3,
                               score_rtol=1e-3)
    assert sum(len(w["labels"].unique()) for w in want) == 4        # both classes, twice
    # the program's outputs are DetectorNetwork's: every default box, decoded
    batch, _ = detector.transform(images[:1])
    decoded = detector.decoded(batch.tensors)
    with torch.no_grad():
        boxes, scores = DetectorNetwork(model)(batch.tensors)
    assert decoded["boxes"].shape == boxes.shape and boxes.shape[1] > 500
    assert scores.shape == (1, boxes.shape[1], len(NAMES))            # no background column
    torch.testing.assert_close(decoded["boxes"], boxes, rtol=1e-4, atol=0.02)
    torch.testing.assert_close(decoded["scores"], scores, rtol=1e-3, atol=1e-3)
    # NMS after the program: the ONNX graph's postprocess, with the knobs set on the detector
    detector.nms_thresh, detector.score_thresh, detector.detections_per_img = 0.3, 0.5, 7
    padded = detector.detect(batch.tensors)
    ref = postprocess(decoded["boxes"], decoded["scores"], 0.5, 0.3, 7, 300)
    for got_, want_ in zip(padded.values(), ref):
        assert torch.equal(got_, want_)
    n = int(padded["num_detections"][0])
    assert 0 < n <= 7 and (padded["labels"][0, n:] == -1).all()


def test_metadata_round_trip(exported):
    model, path, _, _ = exported
    detector = PteDetector(path)
    meta = detector.session.metadata                     # the JSON the method returns
    assert meta["detection"] == {"score_thresh": 0.2, "nms_thresh": 0.55, "max_det": MAX_DET,
                                 "topk_candidates": 300, "topk_per_class": True,
                                 "pad_label": -1, "resize": "stretch", "postprocess": "after",
                                 "label_offset": 1}
    assert meta["task"] == "detection" and meta["format"] == "pte"
    assert [o["name"] for o in meta["outputs"]] == ["boxes", "scores"]
    assert meta["preprocess"]["in_model"] is False
    assert meta["preprocess"]["mean"] == list(model.preprocess["mean"])
    assert detector.config["class_names"] == ["__background__", *NAMES] and detector.num_classes == 3
    assert detector.config["name"] == model.config["name"]
    assert (detector.score_thresh, detector.nms_thresh, detector.detections_per_img) == (
        0.2, 0.55, MAX_DET)
    assert detector.input_shape == [1, 3, RES, RES]


def test_cli_predict_eval_bench_take_the_pte(exported, capsys):
    model, path, images, tmp = exported
    image = tmp / "1.png"

    def predict(*options):
        assert main(["predict", str(path), str(image), "--out", str(tmp / "pred"), "--json",
                     *options]) == 0
        return json.loads(capsys.readouterr().out)["predictions"][0]["detections"]
    # a lower NMS IoU than the file's needs no new export: NMS runs after the program
    model.nms_thresh = 0.3
    with torch.no_grad():
        want = model(images[1:])[0]
    model.nms_thresh = 0.55
    found = predict("--iou", "0.3")
    assert [d["label"] for d in found] == [NAMES[k - 1] for k in want["labels"].tolist()]
    np.testing.assert_allclose([d["box"] for d in found], want["boxes"].numpy(), atol=0.1)
    assert (tmp / "pred" / "1.png").is_file()
    # eval: labels are the PyTorch detector's own detections, so its mAP is 1 and the file's
    # (the same detections within 0.05 px) too
    data = tmp / "data"
    (data / "images" / "val").mkdir(parents=True)
    (data / "labels" / "val").mkdir(parents=True)
    (data / "config.yaml").write_text("names: [red, green]\n")
    with torch.no_grad():
        detections = model(images)
    for i, (img, found) in enumerate(zip(images, detections)):
        (data / "images" / "val" / f"{i}.png").write_bytes((tmp / f"{i}.png").read_bytes())
        h, w = img.shape[1:]
        rows = [f"{k - 1} {(x1 + x2) / 2 / w:.7f} {(y1 + y2) / 2 / h:.7f} {(x2 - x1) / w:.7f} "
                f"{(y2 - y1) / h:.7f}" for k, (x1, y1, x2, y2) in
                zip(found["labels"].tolist(), found["boxes"].tolist())]
        (data / "labels" / "val" / f"{i}.txt").write_text("\n".join(rows) + "\n")
    assert main(["eval", str(path), "--data", str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["task"] == "detection" and metrics["count"] == 2
    assert metrics["map"] == pytest.approx(1.0, abs=1e-6)
    assert set(metrics["per_class"]) == set(NAMES)
    assert main(["bench", str(path), "--warmup", "0", "--iters", "2", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["backend"] == "executorch" and bench["resolution"] == RES


def test_detector_errors_say_what_to_do(exported, tmp_path):
    model, path, images, _ = exported
    classifier = mobilenets.create_model("mobilenet_v2_035", num_classes=3, resolution=32)
    with pytest.raises(ValueError, match="no export_forward"):
        export_pte(classifier, tmp_path / "d.pte", task="detection")
    with pytest.raises(TypeError, match="export options of detectors"):
        export_pte(classifier, tmp_path / "d.pte", max_det=10)
    with pytest.raises(TypeError, match="unknown detection export option"):
        export_pte(model, tmp_path / "d.pte", max_dets=10)
    with pytest.raises(ValueError, match="score_thresh"):
        export_pte(model, tmp_path / "d.pte", score_thresh=2.0)
    assert not (tmp_path / "d.pte").exists()
    detector = open_model(path)
    detector.nms_thresh = 1.5
    with pytest.raises(ValueError, match="nms_thresh=1.5"):
        detector(images[:1])
    with pytest.raises(ValueError, match="float 3 x H x W images"):
        detector([(images[0] * 255).to(torch.uint8)])
    assert detection_options(model, {})["max_det"] == MAX_DET


def test_int8_detector_quantizes_the_network_only(exported, tmp_path):
    """quantize_xnnpack on a detector: every convolution takes int8 (dequantized) inputs and
    weights, while nothing outside the backbone and head (box decoding, default boxes) is
    quantized; the fake-quantized model keeps most float detections; its .pte stores int8
    weights (not folded back to float) and computes the fake-quantized model's outputs."""
    model = peaked_detector()
    images = [torch.rand(3, RES, RES, generator=torch.Generator().manual_seed(i))
              for i in range(4)]
    qmodel = quantize_xnnpack(model, [model.transform(images)[0].tensors], num_images=4)
    assert qmodel.detection_defaults["resize"] == "stretch"
    assert qmodel.detection_defaults["topk_per_class"] is True      # the float SSD's
    graph = qmodel.graph.graph
    quant = {"quantize_per_tensor", "dequantize_per_tensor", "dequantize_per_channel",
             "quantize_per_channel"}

    def kind(node):
        return getattr(node.target, "__name__", "").split(".")[0]
    convs = [n for n in graph.nodes if kind(n) == "conv2d"]
    assert len(convs) > 50
    for conv in convs:
        assert all(kind(arg) in quant for arg in conv.args[:2]), conv
    # the ops of the detector's own code (box decoding, default boxes, softmax): nodes with a
    # module stack outside backbone and head (convert_pt2e's quantize nodes carry none)
    decoding = [n for n in graph.nodes if n.op == "call_function"
                and n.meta.get("nn_module_stack") and kind(n) not in quant
                and not any(path.split(".")[:2] in (["model", "backbone"], ["model", "head"])
                            for path, _ in n.meta["nn_module_stack"].values())]
    assert any(kind(n) == "exp" for n in decoding)                   # the box decoding
    assert not [u for n in decoding for u in n.users if kind(u) in quant]
    with torch.no_grad():
        batch = model.transform(images[:2])[0].tensors
        want_boxes, want_scores = DetectorNetwork(model)(batch)
        boxes, scores = qmodel(batch)
    assert boxes.shape == want_boxes.shape and scores.shape == want_scores.shape
    # the best class of the 50 best-scoring default boxes mostly survives int8
    top = want_scores.amax(2).topk(50, dim=1).indices
    same = (scores.argmax(2).gather(1, top) == want_scores.argmax(2).gather(1, top))
    assert same.float().mean() > 0.8
    # the .pte: int8 weights (under 40% of the fp32 file) and the fake-quantized outputs
    path = export_pte(qmodel, tmp_path / "det-int8.pte")
    assert path.stat().st_size < 0.4 * exported[1].stat().st_size
    out = open_model(path).decoded(batch[:1])
    # XNNPACK's int8 kernels round otherwise than the fake-quantized graph: with these random
    # weights a few boxes move by tens of pixels (as between float and fake-quantized), most
    # by under a pixel of the 128 px input
    assert (out["boxes"] - boxes[:1]).abs().median() < 1.0
    top = scores[:1].amax(2).topk(50, dim=1).indices
    same = out["scores"].argmax(2).gather(1, top) == scores[:1].argmax(2).gather(1, top)
    assert same.float().mean() > 0.9
