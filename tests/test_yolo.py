"""MobileNet-YOLOv4: the reference's parameter counts, torchvision's detector convention,
letterboxing, target assignment, the loss, the export path, and overfitting real COCO128
images (skipped when ../shared/datasets is absent)."""

import tarfile
import time
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

import mobilenets
from mobilenets.data.coco import to_coco91
from mobilenets.models.heads.yolo import STRIDES, assign_targets, make_anchors
from mobilenets.tasks.detection import YoloDetection, coco_map
from conftest import SHARED_DATASETS, randomize_bn

COCO128 = SHARED_DATASETS / "coco128-lightly.tar.gz"
# two COCO128 train images whose boxes are all at least 32 px (two boxes each)
OVERFIT_STEMS = ("000000000025", "000000000030")
STEPS, FREEZE_AT = 200, 130


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def small_yolo(**options):
    options = {"backbone": "mobilenet_v3_small_100", "resolution": 128, "num_classes": 6,
               "neck_width": 0.25, **options}
    return mobilenets.create_model("yolov4", **options)


def spread_scores(model, seed: int = 0):
    """Random BatchNorm statistics and prediction biases, so that an untrained model's scores
    spread over (0, 1) (the start biases make every score about 1e-5)."""
    randomize_bn(model, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pred in model.head.pred:
            pred.weight.copy_(torch.randn(pred.weight.shape, generator=g) * 0.5)
            pred.bias.copy_(torch.randn(pred.bias.shape, generator=g))
    return model


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- architecture ------------------------------------------------------------------------

@pytest.mark.parametrize("backbone,params,taps", [
    # the reference's counts, derived from its layer table (80 classes + background)
    ("mobilenet_v2_100", 10_801_149, {"c3": 32, "c4": 96, "c5": 320}),
    ("mobilenet_v1_100", 12_692_029, {"c3": 256, "c4": 512, "c5": 1024})])
def test_yolov4_parameters_taps_and_output_shapes(backbone, params, taps):
    model = mobilenets.create_model(f"yolov4_{backbone}", num_classes=81)
    assert n_params(model) == params
    assert model.backbone.body.out_channels == taps
    if backbone == "mobilenet_v2_100":       # torchvision's features[:18], no 1280 conv
        assert n_params(model.backbone.body) == 1_811_712
    assert model.config["name"] == f"yolov4_{backbone}" and model.task == "detection"
    assert model.preprocess["letterbox"] and model.resolution == 416
    torch.testing.assert_close(model.anchors[0, 0], torch.tensor([12.0, 16.0]))
    x = torch.rand(2, 3, 96, 160)
    with torch.no_grad():
        raws = model.eval().head_outputs(x)
    assert [tuple(r.shape) for r in raws] == [(2, 3, 12, 20, 85), (2, 3, 6, 10, 85),
                                              (2, 3, 3, 5, 85)]
    assert "yolov4_mobilenet_v2_100" in mobilenets.list_models(task="detection")


def test_anchors_scale_with_the_resolution():
    a = make_anchors(320)
    torch.testing.assert_close(a[2, 2], torch.tensor([459.0, 401.0]) * 320 / 416)
    assert small_yolo(resolution=320).anchors.shape == (3, 3, 2)


# --- letterbox and the eval convention ----------------------------------------------------

def test_letterbox_keeps_aspect_pads_to_32_and_maps_boxes_back():
    model = small_yolo(canvas="rect").eval()
    images = [torch.rand(3, 100, 200), torch.rand(3, 300, 90)]
    boxes = [torch.tensor([[10.0, 20.0, 60.0, 90.0]]), torch.tensor([[5.0, 100.0, 80.0, 290.0]])]
    targets = [{"boxes": b, "labels": torch.tensor([1])} for b in boxes]
    batch, transforms, moved = model.letterbox(images, targets)
    # longer sides to 128: 128 x 64 and 38 x 128 (rounded); canvas 128 x 128
    assert batch.shape == (2, 3, 128, 128)
    torch.testing.assert_close(transforms[0], torch.tensor([0.64, 0.64, 0.0, 32.0]))
    sx, sy, ox, oy = transforms[1].tolist()
    assert (round(90 * sx), round(300 * sy)) == (38, 128) and (ox, oy) == (45.0, 0.0)
    # the padding is grey (114 / 255) after normalisation
    mean, std = model.image_mean.view(3), model.image_std.view(3)
    torch.testing.assert_close(batch[0, :, 0, 0], (114 / 255 - mean) / std)
    torch.testing.assert_close(moved[0]["boxes"], torch.tensor([[6.4, 44.8, 38.4, 89.6]]))
    for b, t, image in zip(boxes, transforms, images):
        mapped = b * t[:2].repeat(2) + t[2:].repeat(2)
        torch.testing.assert_close(model.unletterbox(mapped, t, image.shape[1:]), b)
    # "rect": a wide batch pads to a multiple of 32, not to a square; "square" (the default)
    # and a given size are fixed
    assert model.letterbox([torch.rand(3, 50, 200)])[0].shape == (1, 3, 32, 128)
    assert model.letterbox([torch.rand(3, 50, 200)], size=(96, 160))[0].shape == \
        (1, 3, 96, 160)
    assert small_yolo().letterbox([torch.rand(3, 50, 200)])[0].shape == (1, 3, 128, 128)


def test_eval_takes_images_of_any_size_and_returns_boxes_in_their_pixels():
    torch.manual_seed(0)
    model = spread_scores(small_yolo(detections_per_img=20)).eval()
    images = [torch.rand(3, 100, 150), torch.rand(3, 240, 90)]
    with torch.no_grad():
        out = model(images)
        batch = model(torch.stack([images[0], images[0]]))
    assert len(out) == 2
    for det, image in zip(out, images):
        assert set(det) == {"boxes", "scores", "labels"}
        h, w = image.shape[1:]
        assert 0 < len(det["boxes"]) <= 20
        assert det["boxes"].shape == (len(det["scores"]), 4)
        assert (det["boxes"][:, 0::2] >= 0).all() and (det["boxes"][:, 0::2] <= w).all()
        assert (det["boxes"][:, 1::2] >= 0).all() and (det["boxes"][:, 1::2] <= h).all()
        assert (det["boxes"][:, 2:] > det["boxes"][:, :2]).all()   # none empty: in padding
        assert det["labels"].dtype == torch.int64
        assert ((det["labels"] >= 1) & (det["labels"] <= 5)).all()
        assert (det["scores"] > 0.001).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
    for det in batch:                    # a batch gives what a list of its images gives
        torch.testing.assert_close(det["boxes"], out[0]["boxes"])
        torch.testing.assert_close(det["scores"], out[0]["scores"])
    # the knobs
    scores = out[0]["scores"]
    model.score_thresh = float(scores.max() + scores.min()) / 2
    with torch.no_grad():
        strict = model(images[:1])[0]
    assert 0 < len(strict["scores"]) < len(scores)
    assert (strict["scores"] > model.score_thresh).all()
    model.score_thresh, model.nms_thresh = 0.001, 0.3
    with torch.no_grad():
        kept = model(images[:1])[0]
    for label in kept["labels"].unique():       # class-wise NMS: no same-class pair > 0.3
        b = kept["boxes"][kept["labels"] == label]
        iou = box_iou(b, b)
        assert (iou.triu(1) <= 0.3 + 1e-6).all()


def test_export_forward_is_the_eval_path_before_nms():
    """``export_forward`` decodes the raw head outputs as YOLOv4 does (recomputed here), and
    eval mode's detections are its (box, class) pairs after NMS: with NMS off (IoU threshold
    1) and no score threshold, eval returns every pair."""
    torch.manual_seed(0)
    model = spread_scores(small_yolo(num_classes=3)).eval()
    x = model.letterbox([torch.rand(3, 128, 96)], size=(128, 128))[0]
    with torch.no_grad():
        boxes, scores = model.export_forward(x)
        raws = model.head_outputs(x)
    n = 3 * (16 * 16 + 8 * 8 + 4 * 4)
    assert boxes.shape == (1, n, 4) and scores.shape == (1, n, 3)
    assert (scores[..., 0] == 0).all()
    # by hand: level 1 (stride 16), anchor 2, row 3, column 5
    raw = raws[1][0, 2, 3, 5]
    anchor = torch.tensor([72.0, 146.0]) * 128 / 416
    cx, cy = (raw[0].sigmoid() + 5) * 16, (raw[1].sigmoid() + 3) * 16
    w, h = raw[2].exp() * anchor[0], raw[3].exp() * anchor[1]
    k = 3 * 16 * 16 + 2 * 8 * 8 + 3 * 8 + 5
    torch.testing.assert_close(boxes[0, k], torch.stack([cx - w / 2, cy - h / 2,
                                                         cx + w / 2, cy + h / 2]))
    torch.testing.assert_close(scores[0, k, 1:], raw[4].sigmoid() * raw[5:].sigmoid())
    # eval on the same 128 x 128 input (letterbox is the identity) without NMS or threshold
    model.score_thresh, model.nms_thresh, model.detections_per_img = -1.0, 1.0, 10 ** 6
    image = torch.rand(3, 128, 128)
    x = model.letterbox([image])[0]
    with torch.no_grad():
        boxes, scores = model.export_forward(x)
        det = model([image])[0]
    assert len(det["scores"]) == n * 2
    torch.testing.assert_close(det["scores"].sort().values,
                               scores[0, :, 1:].flatten().sort().values)
    best = scores[0, :, 1:].flatten().argmax()
    torch.testing.assert_close(det["boxes"][0], boxes[0, best // 2].clamp(0, 128))
    assert det["labels"][0] == best % 2 + 1
    # no data-dependent control flow: torch.export traces it
    exported = torch.export.export(ExportWrapper(model), (x,), strict=False)
    got = exported.module()(x)
    torch.testing.assert_close(got[0], boxes)
    torch.testing.assert_close(got[1], scores)


class ExportWrapper(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.export_forward(x)


# --- training -----------------------------------------------------------------------------

def test_target_assignment_by_anchor_shape_ratio():
    """Anchors at 416 are YOLOv4's own. A 20 x 30 box fits (ratio < 4) anchors (12, 16),
    (19, 36), (40, 28) at stride 8 and (36, 75), (76, 55) at stride 16 (76 / 20 = 3.8), not
    (72, 146) (146 / 30 = 4.9) nor any at stride 32. A 400 x 20 box fits none: it goes to
    the smallest ratio, (76, 55) (400 / 76 = 5.26; the next is (142, 110) at 110 / 20 =
    5.5)."""
    anchors = make_anchors(416)
    targets = [{"boxes": torch.tensor([[90.0, 45.0, 110.0, 75.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.tensor([[8.0, 300.0, 408.0, 320.0]]),
                "labels": torch.tensor([4])}]
    grids = [(416 // s, 416 // s) for s in STRIDES]
    out = assign_targets(targets, grids, anchors)

    def rows(level):
        a = out[level]
        return sorted(zip(a["image"].tolist(), a["anchor"].tolist(), a["gy"].tolist(),
                          a["gx"].tolist(), a["labels"].tolist()))

    # centre (100, 60): cell (7, 12) at stride 8, (3, 6) at 16; centre (208, 310): (19, 13)
    assert rows(0) == [(0, 0, 7, 12, 2), (0, 1, 7, 12, 2), (0, 2, 7, 12, 2)]
    assert rows(1) == [(0, 0, 3, 6, 2), (0, 1, 3, 6, 2), (1, 1, 19, 13, 4)]
    assert rows(2) == []
    torch.testing.assert_close(out[1]["boxes"][-1], targets[1]["boxes"][0])
    # a lower threshold keeps fewer anchors; empty images assign nothing
    strict = assign_targets(targets, grids, anchors, anchor_t=2.0)
    assert sorted(strict[0]["anchor"].tolist()) == [0, 1]    # 1.875 and 1.2; 40 / 20 = 2
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    assert all(len(a["image"]) == 0 for a in assign_targets(empty, grids, anchors))


def test_train_mode_losses_are_finite_and_decrease():
    torch.manual_seed(0)
    model = small_yolo().train()
    images = [torch.rand(3, 96, 128), torch.rand(3, 128, 100)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0], [70.0, 20.0, 120.0, 50.0]]),
                "labels": torch.tensor([1, 3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0)
    totals = []
    for _ in range(8):
        losses = model(images, targets)
        assert set(losses) == {"box", "objectness", "classification"}
        assert all(v.ndim == 0 and torch.isfinite(v) and v > 0 for v in losses.values())
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    assert model.backbone.body.stem.conv.weight.grad.abs().sum() > 0
    assert totals[-1] < 0.7 * totals[0]
    # the engine's input: the pair (images, targets); one pass gives losses and detections
    assert set(model((images, targets))) == {"box", "objectness", "classification"}
    losses, dets = model.eval().losses_and_detections(images, targets)
    assert len(dets) == 2 and torch.isfinite(sum(losses.values()))


def test_objectness_target_at_positives_is_the_clamped_ciou():
    """objectness_iou=1 (default): a positive's objectness target is its box's CIoU with the
    ground truth clamped at 0 (YOLOv5); 0: target 1 (YOLOv4). Checked through the loss: with
    the objectness logits of every cell set to a constant z, the objectness term is a known
    function of the targets; box and class terms do not depend on the option."""
    torch.manual_seed(0)
    images = [torch.rand(3, 128, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0]]), "labels": torch.tensor([2])}]
    out = {}
    for r in (0.0, 1.0, 0.5):
        torch.manual_seed(1)                    # the same weights for every option
        model = small_yolo(objectness_iou=r).train()
        z = 0.3
        with torch.no_grad():
            for pred in model.head.pred:
                pred.weight.view(3, -1, *pred.weight.shape[1:])[:, 4] = 0
                pred.bias.view(3, -1)[:, 4] = z
        out[r] = model(images, targets)
    assert out[0.0]["box"] == out[1.0]["box"]
    assert out[0.0]["classification"] == out[1.0]["classification"]
    assert out[0.0]["objectness"] != out[1.0]["objectness"]
    # the BCE is linear in the target: r = 0.5 lies halfway
    torch.testing.assert_close(out[0.5]["objectness"],
                               (out[0.0]["objectness"] + out[1.0]["objectness"]) / 2)
    # with target t at positives, BCE(z, t) = softplus(z) - t z: IoU < 1 raises the loss
    assert out[1.0]["objectness"] > out[0.0]["objectness"]
    with pytest.raises(ValueError, match="objectness_iou=1.5"):
        small_yolo(objectness_iou=1.5)


def test_config_rebuilds_and_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = spread_scores(small_yolo(nms_thresh=0.5)).eval()
    cfg = model.config
    assert (cfg["name"], cfg["head"], cfg["backbone"], cfg["num_classes"]) == (
        "yolov4_mobilenet_v3_small_100", "yolov4", "mobilenet_v3_small_100", 6)
    rebuilt = mobilenets.create_model(cfg["name"], **cfg["options"])
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    mobilenets.save(model, tmp_path / "det")
    loaded = mobilenets.load(tmp_path / "det").eval()
    x = [torch.rand(3, 100, 128)]
    with torch.no_grad():
        a, b = model(x)[0], loaded(x)[0]
    torch.testing.assert_close(a["boxes"], b["boxes"])
    assert torch.equal(a["labels"], b["labels"]) and loaded.nms_thresh == 0.5


def test_bad_inputs_say_what_to_do():
    model = small_yolo()
    with pytest.raises(ValueError, match=r"pass \[image\]"):
        model.eval()(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="takes targets"):
        model.train()([torch.rand(3, 64, 64)])
    with pytest.raises(ValueError, match="0 is the background"):
        model.train()([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[1.0, 1, 9, 9]]),
                                                 "labels": torch.tensor([0])}])
    with pytest.raises(ValueError, match="divide"):
        model.eval()([torch.zeros(3, 64, 64, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="divide them by 255"):
        model.eval()([torch.full((3, 64, 64), 200.0)])
    with pytest.raises(ValueError, match="multiple of 32"):
        small_yolo(resolution=100)
    with pytest.raises(TypeError, match="unknown option"):
        small_yolo(anchors=3)


# --- real data ----------------------------------------------------------------------------

def unpack_overfit_images(dest: Path) -> Path:
    """COCO128's detection folder under ``dest``: its train split's labels and the images of
    OVERFIT_STEMS, unpacked from the shared archive."""
    wanted = {f"coco128-lightly/images/train2017/{s}.jpg" for s in OVERFIT_STEMS}
    with tarfile.open(COCO128) as tar:
        members = [m for m in tar if m.name in wanted or m.name.startswith(
            ("coco128-lightly/object_detection/labels/train2017/",
             "coco128-lightly/object_detection/config.yaml",
             "coco128-lightly/object_detection/images"))]
        tar.extractall(dest, members=members, filter="data")
    return dest / "coco128-lightly" / "object_detection"


def overfit_data(folder: Path) -> tuple[list[torch.Tensor], list[dict]]:
    """The images of OVERFIT_STEMS in ``folder`` (floats in [0, 1]) and their targets with
    COCO's 91 ids."""
    data = YoloDetection(folder, "train2017")
    index = [p.stem for p in data.images]
    images, targets = [], []
    for stem in OVERFIT_STEMS:
        (image, target), _ = data[index.index(stem)]
        images.append(image.float() / 255)
        targets.append({"boxes": target["boxes"].as_subclass(torch.Tensor),
                        "labels": to_coco91(target["labels"])})
    return images, targets


@pytest.fixture(scope="module")
def coco128_train(tmp_path_factory):
    """COCO128's detection folder with its train split's labels and the images used here."""
    if not COCO128.exists():
        pytest.skip("../shared/datasets is absent")
    return unpack_overfit_images(tmp_path_factory.mktemp("coco128"))


def overfit_yolov4(images, targets, seed: int = 0, **options) -> list[dict]:
    """The overfit recipe (the test below): YOLOv4 on MobileNetV2 0.5 at 128 px (``options``
    go to ``create_model``), STEPS full-batch AdamW steps under one-cycle at lr 1e-2,
    BatchNorm frozen from FREEZE_AT; returns the eval-mode detections of ``images``.
    experiments/yolo_overfit_seeds.py runs it over seeds and options."""
    torch.manual_seed(seed)
    model = mobilenets.create_model("yolov4", backbone="mobilenet_v2_050", resolution=128,
                                    neck_width=0.25, bn_momentum=0.1, **options)
    steps, freeze_at, lr = STEPS, FREEZE_AT, 1e-2
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    model.train()
    flush = torch.set_flush_denormal(True)      # tiny gradients late in training: slow on CPU
    try:
        for step in range(steps):
            if step == freeze_at:
                for m in model.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.eval()
            loss = sum(model(images, targets).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    finally:
        if flush:
            torch.set_flush_denormal(False)
    with torch.no_grad():
        return model.eval()(images)


def test_yolov4_overfits_two_coco128_images_in_eval_mode(coco128_train):
    """Two real images whose boxes are all at least 32 px, letterboxed to 128 px, trained
    full-batch with AdamW under a one-cycle schedule, reach mAP@.5 >= 0.9 (pycocotools) in
    eval mode. The last steps train with BatchNorm frozen at its running statistics: with 2
    images the /32 maps hold 2 x 4 x 4 values per channel, and the running variance (unbiased,
    x 32/31) against the batch's, compounded over the ~30 BatchNorm layers at /32, moved the
    eval-mode boxes enough to give mAP@.5 0.67 where the batch statistics gave 1.0."""
    images, targets = overfit_data(coco128_train)
    for target in targets:
        boxes = target["boxes"]
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 32).all()
    start = time.perf_counter()
    found = overfit_yolov4(images, targets)
    result = coco_map(targets, found)
    print(f"yolov4 overfit: {STEPS} steps in {time.perf_counter() - start:.1f} s, "
          f"mAP@.5 {result['map50']:.3f}, mAP@[.5:.95] {result['map']:.3f}")
    assert result["map50"] >= 0.9


def test_mosaic_puts_four_images_and_their_boxes_on_one_canvas(tmp_path):
    """Four plain-coloured images of different sizes, each with one box (label k for colour
    k) over its middle: in the mosaic every kept box still covers its own image's colour."""
    from mobilenets.data.image_io import write_png
    from mobilenets.tasks.detection import Mosaic, detection_train_transform
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    sizes = [(60, 80), (80, 40), (50, 50), (90, 120)]
    for split in ("images/train", "labels/train"):
        (tmp_path / split).mkdir(parents=True)
    (tmp_path / "config.yaml").write_text("names: [red, green, blue, yellow]\n")
    for k, ((h, w), colour) in enumerate(zip(sizes, colours)):
        image = torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1).expand(3, h, w)
        write_png(image.contiguous(), str(tmp_path / f"images/train/{k}.png"))
        (tmp_path / f"labels/train/{k}.txt").write_text(f"{k} 0.5 0.5 0.5 0.5\n")
    data = YoloDetection(tmp_path, "train")
    transform = detection_train_transform(64, "none", keep_aspect=True,
                                          mosaic=Mosaic(data, 64, p=1.0))
    seen = set()
    for seed in range(6):
        torch.manual_seed(seed)
        image, target = transform(data[0][0])
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        boxes = target["boxes"]
        assert len(boxes) == len(target["labels"]) >= 1
        assert (boxes >= 0).all() and (boxes <= 64).all()
        for box, label in zip(boxes.round().long().tolist(), target["labels"].tolist()):
            x1, y1, x2, y2 = box
            centre = image[:, (y1 + y2) // 2, (x1 + x2) // 2] * 255
            torch.testing.assert_close(centre, torch.tensor(colours[label], dtype=torch.float32),
                                       atol=1, rtol=0)
            seen.add(label)
        torch.manual_seed(seed)                 # the global generator decides everything
        again = transform(data[0][0])[1]["boxes"]
        torch.testing.assert_close(again, boxes)
    assert 0 in seen and len(seen) >= 3
    unchanged = Mosaic(data, 64, p=0.0)(data[1][0])
    assert unchanged[0].shape == (3, 80, 40)


def test_backbone_starts_from_a_classification_checkpoint(tmp_path):
    from mobilenets.tasks.detection.task import load_backbone_weights
    classifier = randomize_bn(mobilenets.create_model("mobilenet_v3_small_100")).eval()
    torch.save(classifier.state_dict(), tmp_path / "v3s.pth")
    model = small_yolo()
    load_backbone_weights(model, tmp_path / "v3s.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        c5 = model.eval().backbone.body(x)["c5"]
        want = classifier.blocks(classifier.stem(x))     # the last block, before the head conv
    torch.testing.assert_close(c5, want, rtol=1e-4, atol=1e-5)
    direct = mobilenets.create_model("yolov4_mobilenet_v3_small_100", resolution=128,
                                     num_classes=5, backbone_weights=tmp_path / "v3s.pth")
    with torch.no_grad():
        torch.testing.assert_close(direct.eval().backbone.body(x)["c5"], want,
                                   rtol=1e-4, atol=1e-5)
