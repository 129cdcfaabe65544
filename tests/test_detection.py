"""Detection: SSDLite on our backbones against torchvision's, the eval/train conventions,
COCO's label mapping, and the COCO128 loader."""

import logging
import shutil
import tarfile
import warnings

import pytest
import torch
import torchvision
from mobilenets.data.image_io import decode_rgb, write_png
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

import mobilenets
from mobilenets.data import DataError
from mobilenets.data.coco import COCO80_TO_91, coco91_names, to_coco80, to_coco91
from mobilenets.tasks.detection import (YoloDetection, coco_map, detection_train_transform,
                                        read_names)
from mobilenets.tasks.detection import evaluate as evaluate_detections
from mobilenets.tasks.detection import train as train_detector
from mobilenets.tasks.detection.task import (DetectionOptions, DetectionTask, label_space,
                                             load_backbone_weights)
from mobilenets.training.config import make_config
from mobilenets.training.sampling import SeededView
from conftest import SHARED_DATASETS, randomize_bn

COCO128 = SHARED_DATASETS / "coco128-lightly.tar.gz"


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def spread_class_biases(model, seed: int = 1, scale: float = 3.0):
    """Random classification biases, so that scores are peaked: random weights give every
    class a score of about 1 / num_classes, and the top-k then has ties that flip."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.head.classification_head.module_list:
            block[1].bias.copy_(torch.randn(block[1].bias.shape, generator=g) * scale)
    return model


@pytest.fixture(scope="module")
def coco128(tmp_path_factory):
    """COCO128's detection folder (``object_detection/``: images, labels, config.yaml),
    unpacked from the shared archive into a temporary folder."""
    if not COCO128.exists():
        pytest.skip("../shared/datasets is absent")
    dest = tmp_path_factory.mktemp("coco128")
    with tarfile.open(COCO128) as tar:
        members = [m for m in tar if m.name.startswith(("coco128-lightly/images/",
                                                        "coco128-lightly/object_detection/"))]
        tar.extractall(dest, members=members, filter="data")
    return dest / "coco128-lightly" / "object_detection"


def coco128_pairs(root, split: str, n: int):
    """The first ``n`` labelled (image in [0, 1], YOLO label text) pairs of a split."""
    out = []
    for path in sorted((root / "images" / split).glob("*.jpg")):
        label = root / "labels" / split / f"{path.stem}.txt"
        if label.exists():
            image = decode_rgb(path).float() / 255
            out.append((image, label.read_text()))
        if len(out) == n:
            break
    return out


def yolo_target(image: torch.Tensor, text: str) -> dict:
    """A torchvision detection target (xyxy pixels, COCO ids) from YOLO label text."""
    rows = torch.tensor([[float(v) for v in line.split()] for line in text.splitlines()
                         if line.strip()]).reshape(-1, 5)
    h, w = image.shape[1:]
    cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    return {"boxes": boxes, "labels": to_coco91(rows[:, 0].long())}


# --- SSDLite against torchvision ----------------------------------------------------------

def test_ssdlite320_mobilenet_v3_large_has_torchvision_parameters():
    tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    ours = mobilenets.create_model("ssdlite320_mobilenet_v3_large")
    assert n_params(ours) == n_params(tv) == 3_440_060
    # part by part: backbone (reduced tail), extra layers, classification and box heads
    assert n_params(ours.backbone.body) == n_params(tv.backbone.features) == 1_620_512
    assert n_params(ours.backbone.extra) == n_params(tv.backbone.extra) == 452_160
    assert n_params(ours.head.classification_head) == 1_286_604
    assert n_params(ours.head.regression_head) == 80_784
    assert ours.backbone.out_channels == [672, 480, 512, 256, 256, 128]
    bn = [m for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in bn} == {(1e-3, 0.03)}
    assert (ours.score_thresh, ours.nms_thresh, ours.detections_per_img,
            ours.topk_candidates) == (0.001, 0.55, 300, 300)
    assert ours.config["name"] == "ssdlite320_mobilenet_v3_large_100"
    assert "ssdlite320_mobilenet_v3_large" in mobilenets.list_models(task="detection")


def test_reduced_tail_backbone_equals_torchvision(tmp_path):
    """``reduced_tail=True`` is torchvision's ``mobilenet_v3_large(reduced_tail=True)``: its
    checkpoint loads and computes the same logits."""
    tv = randomize_bn(torchvision.models.mobilenet_v3_large(reduced_tail=True)).eval()
    torch.save(tv.state_dict(), tmp_path / "rt.pth")
    with pytest.warns(mobilenets.weights.WeightsNote):
        ours = mobilenets.create_model("mobilenet_v3_large_100", weights=tmp_path / "rt.pth",
                                       reduced_tail=True).eval()
    assert n_params(ours) == n_params(tv)
    assert ours.config["reduced_tail"] is True
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def tv_ssdlite(tmp_path_factory):
    """torchvision's SSDLite with random weights and BatchNorm statistics, classification
    biases spread so that scores are peaked (random weights give every class about 1/91, and
    the top-k then has ties that flip), in eval mode, and its state dict's path."""
    torch.manual_seed(0)
    tv = randomize_bn(ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None))
    spread_class_biases(tv)
    path = tmp_path_factory.mktemp("tv") / "ssdlite.pth"
    torch.save(tv.state_dict(), path)
    return tv.eval(), path


def test_torchvision_checkpoint_gives_torchvision_head_outputs(tv_ssdlite):
    tv, path = tv_ssdlite
    ours = mobilenets.create_model("ssdlite320_mobilenet_v3_large", weights=path).eval()
    assert ours.config["weights"] == str(path) and ours.num_classes == 91
    x = torch.rand(2, 3, 320, 320) * 2 - 1
    with torch.no_grad():
        mine, theirs = ours.backbone(x), tv.backbone(x)
        assert [m.shape for m in mine.values()] == [t.shape for t in theirs.values()]
        for a, b in zip(mine.values(), theirs.values()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        head_a, head_b = ours.head(list(mine.values())), tv.head(list(theirs.values()))
    for key in ("cls_logits", "bbox_regression"):
        torch.testing.assert_close(head_a[key], head_b[key], rtol=1e-5, atol=1e-6)


def test_torchvision_checkpoint_gives_torchvision_detections_on_coco128(tv_ssdlite, coco128):
    tv, path = tv_ssdlite
    ours = mobilenets.create_model("ssdlite320_mobilenet_v3_large", weights=path).eval()
    images = [img for img, _ in coco128_pairs(coco128, "val2017", 2)]
    assert images[0].shape != images[1].shape
    with torch.no_grad():
        got, want = ours(images), tv(images)
    for g, w in zip(got, want):
        assert len(g["boxes"]) == len(w["boxes"]) == 300
        torch.testing.assert_close(g["boxes"], w["boxes"], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(g["scores"], w["scores"], rtol=1e-5, atol=1e-6)
        assert torch.equal(g["labels"], w["labels"])
        assert len(g["labels"].unique()) > 5          # peaked scores, many classes


def test_checkpoint_with_other_classes_reinitialises_the_classifier(tv_ssdlite):
    tv, path = tv_ssdlite
    ours = mobilenets.create_model("ssdlite320_mobilenet_v3_large", weights=path, num_classes=3)
    assert ours.num_classes == 3
    torch.testing.assert_close(ours.head.regression_head.module_list[0][1].weight,
                               tv.head.regression_head.module_list[0][1].weight)
    with pytest.raises(mobilenets.CheckpointError, match="backbone has"):
        mobilenets.create_model("ssdlite_mobilenet_v2_100", weights=path)


# --- the conventions -----------------------------------------------------------------------

def test_eval_takes_images_of_any_size_and_returns_boxes_in_their_pixels():
    torch.manual_seed(0)
    model = mobilenets.create_model("ssdlite", backbone="mobilenet_v3_small_100",
                                    resolution=128, num_classes=11,
                                    detections_per_img=20).eval()
    spread_class_biases(model)
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
        assert (det["boxes"][:, 2:] >= det["boxes"][:, :2]).all()
        assert det["labels"].dtype == torch.int64
        assert ((det["labels"] >= 1) & (det["labels"] <= 10)).all()
        assert (det["scores"] > 0.001).all()
    # a B x 3 x H x W batch gives what a list of its images gives
    for det in batch:
        torch.testing.assert_close(det["boxes"], out[0]["boxes"])
        torch.testing.assert_close(det["scores"], out[0]["scores"])
    # the knobs: a score threshold keeps only higher scores
    scores = out[0]["scores"]
    assert scores.max() > scores.min()
    model.score_thresh = float(scores.max() + scores.min()) / 2
    with torch.no_grad():
        strict = model(images[:1])[0]
    assert 0 < len(strict["scores"]) < len(out[0]["scores"])
    assert (strict["scores"] > model.score_thresh).all()


def test_train_mode_returns_losses_and_an_optimiser_step_lowers_them(coco128):
    pairs = coco128_pairs(coco128, "train2017", 2)
    images = [img for img, _ in pairs]
    targets = [yolo_target(img, text) for img, text in pairs]
    torch.manual_seed(0)
    # torchvision's configuration at 160 px (320 costs four times as much, same code path)
    model = mobilenets.create_model("ssdlite320_mobilenet_v3_large", resolution=160).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    totals = []
    for _ in range(2):
        losses = model(images, targets)
        assert set(losses) == {"bbox_regression", "classification"}
        assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    assert model.backbone.body.stem.conv.weight.grad.abs().sum() > 0
    assert totals[-1] < totals[0]


@pytest.mark.parametrize("backbone,c4,c5", [
    ("mobilenet_v2_100", 576, 1280),      # V2 paper: layer 15's expansion (96 x 6), 1x1 conv
    ("mobilenet_v1_100", 512, 1024),      # no expansion before the stride: its /16 input
    ("mobilenet_v4_conv_small_100", 576, 960)])   # a UIB: start DW and expansion
def test_ssdlite_on_other_backbones(backbone, c4, c5):
    model = mobilenets.create_model(f"ssdlite_{backbone}", resolution=128, num_classes=5)
    assert model.backbone.out_channels == [c4, c5, 512, 256, 256, 128]
    assert model.preprocess["mean"] == (0.485, 0.456, 0.406)     # the backbone's own
    with torch.no_grad():
        maps = model.eval().backbone(torch.rand(1, 3, 128, 128))
    assert [tuple(m.shape[1:]) for m in maps.values()] == [
        (c4, 8, 8), (c5, 4, 4), (512, 2, 2), (256, 1, 1), (256, 1, 1), (128, 1, 1)]


def test_config_rebuilds_and_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = mobilenets.create_model("ssdlite", backbone="mobilenet_v3_small_100",
                                    resolution=128, num_classes=4, nms_thresh=0.5).eval()
    cfg = model.config
    assert (cfg["name"], cfg["head"], cfg["backbone"], cfg["task"], cfg["num_classes"]) == (
        "ssdlite_mobilenet_v3_small_100", "ssdlite", "mobilenet_v3_small_100", "detection", 4)
    rebuilt = mobilenets.create_model(cfg["name"], **cfg["options"])
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    assert rebuilt.nms_thresh == 0.5
    mobilenets.save(model, tmp_path / "det")
    loaded = mobilenets.load(tmp_path / "det").eval()
    x = [torch.rand(3, 128, 160)]
    with torch.no_grad():
        a, b = model(x)[0], loaded(x)[0]
    torch.testing.assert_close(a["boxes"], b["boxes"])
    assert torch.equal(a["labels"], b["labels"]) and loaded.nms_thresh == 0.5


def test_bad_inputs_say_what_to_do():
    model = mobilenets.create_model("ssdlite", backbone="mobilenet_v3_small_100",
                                    resolution=128)
    with pytest.raises(ValueError, match="takes targets"):
        model.train()([torch.rand(3, 128, 128)] * 2)
    target = {"boxes": torch.tensor([[10.0, 20, 60, 90]]), "labels": torch.tensor([3])}
    with pytest.raises(ValueError, match="at least 2 images"):
        model.train()([torch.rand(3, 128, 128)], [target])
    with pytest.raises(ValueError, match=r"pass \[image\]"):
        model.eval()(torch.rand(3, 128, 128))
    with pytest.raises(ValueError, match="these reach 25.* divide them by 255"):   # no boxes
        model.eval()([torch.rand(3, 128, 128) * 255])
    # a label past the classes failed deep in the loss; 0 (the background) was taken silently
    for label, given in ((91, "91 .. 91"), (0, "0 .. 0")):
        bad = [target, dict(target, labels=torch.tensor([label]))]
        with pytest.raises(ValueError, match=rf"labels must be in 1 \.\. 90 .* got {given}"):
            model.train()([torch.rand(3, 128, 128)] * 2, bad)
        with pytest.raises(ValueError, match="labels must be in 1 .. 90"):
            model.losses_and_detections([torch.rand(3, 128, 128)] * 2, bad)
    with pytest.raises(TypeError, match="unknown option"):
        mobilenets.create_model("ssdlite", backbone="mobilenet_v3_small_100", out_indices=(1,))
    with pytest.raises(ValueError, match="num_classes"):
        mobilenets.create_model("ssdlite", num_classes=1)


# --- labels --------------------------------------------------------------------------------

def test_coco80_to_coco91_mapping():
    names = coco91_names()
    assert len(names) == 91 and names[0] == "__background__"
    assert len(COCO80_TO_91) == 80 and len(set(COCO80_TO_91)) == 80
    # the ten ids COCO never annotated are exactly the ones left out
    assert sorted(set(range(1, 91)) - set(COCO80_TO_91)) == [12, 26, 29, 30, 45, 66, 68, 69,
                                                             71, 83]
    assert all(names[i] == "N/A" for i in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
    assert to_coco91(torch.tensor([0, 11, 79])).tolist() == [1, 13, 90]
    assert to_coco80(to_coco91(torch.arange(80))).tolist() == list(range(80))
    assert to_coco80(torch.tensor([0, 12])).tolist() == [-1, -1]


def test_coco128_names_are_coco80_in_coco_order(coco128):
    names = read_names(coco128 / "config.yaml")
    assert names == [coco91_names()[i] for i in COCO80_TO_91]
    assert label_space(names) == "coco91" and label_space(names, "contiguous") == "contiguous"
    assert label_space(["cat", "dog"]) == "contiguous"
    with pytest.raises(ValueError, match="COCO's 80"):
        label_space(["cat", "dog"], "coco91")


# --- data ----------------------------------------------------------------------------------

def test_yolo_loader_background_images_and_orphan_labels(coco128, caplog):
    with caplog.at_level(logging.WARNING, logger="mobilenets.data"):
        ds = YoloDetection(coco128, "train2017")
    # COCO128's train split: 2 images without labels, 2 label files without images
    assert len(ds) == 128 and len(ds.names) == 80
    assert ds.background == ["000000000250", "000000000508"]
    assert [p.rsplit("/", 1)[1] for p in ds.orphan_labels] == ["000000000656.txt",
                                                               "000000000659.txt"]
    assert "have no image" in caplog.text and "000000000656.txt" in caplog.text
    k = [p.stem for p in ds.images].index("000000000250")
    (image, target), index = ds[k]
    assert index == k and target["boxes"].shape == (0, 4) and len(target["labels"]) == 0
    # a labelled image: the boxes are the label file's, in pixels, labels 0-79
    (image, target), _ = ds[0]
    text = (coco128 / "labels" / "train2017" / f"{ds.images[0].stem}.txt").read_text()
    want = yolo_target(image.float() / 255, text)
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), want["boxes"])
    assert to_coco91(target["labels"]).tolist() == want["labels"].tolist()
    assert target["boxes"].canvas_size == tuple(image.shape[1:])


def test_yolo_loader_rejects_bad_label_lines(tmp_path, caplog):
    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "labels" / "a").mkdir(parents=True)
    write_png(torch.zeros(3, 8, 8, dtype=torch.uint8),
              str(tmp_path / "images" / "a" / "x.png"))
    (tmp_path / "config.yaml").write_text("names: [cat, dog]\n")
    # a class out of range, a malformed line, pixel coordinates and an empty box (the last
    # two were dropped by the augmentation and gave an infinite validation loss)
    for text, match in [("1 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n",
                         r"x.txt:2: class 2 is not in 0 .. 1"),
                        ("1 0.5 0.5 0.2\n", r"x.txt:1: expected 'class cx cy w h'"),
                        ("1 0.5 0.5 0.2 0.2\n0 320 200 50 80\n",
                         r"x.txt:2: box 320 200 50 80 is not normalised"),
                        ("1 0.5 0.5 0 0.2\n", r"x.txt:1: box 0.5 0.5 0 0.2 has no area")]:
        (tmp_path / "labels" / "a" / "x.txt").write_text(text)
        with pytest.raises(DataError, match=match):
            YoloDetection(tmp_path, "a")
    # a shard written before these lines were refused: the box is dropped with a warning
    from mobilenets.tasks.detection.data import decode_shard
    png = (tmp_path / "images" / "a" / "x.png").read_bytes()
    with caplog.at_level(logging.WARNING, logger="mobilenets.data"):
        (_, target), _ = decode_shard({"__key__": "k", "png": png, "idx": b"0",
                                       "txt": b"1 0.5 0.5 0.2 0.2\n0 320 200 50 80\n"}, 2)
    assert target["labels"].tolist() == [1] and "k.txt:2: box 320 200 50 80 dropped" in \
        caplog.text
    with pytest.raises(DataError, match="does not exist"):
        YoloDetection(tmp_path, "b")


def test_names_counts_and_options_mistakes_are_named(tmp_path):
    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "labels" / "a").mkdir(parents=True)
    for stem in ("x", "y", "z"):
        write_png(torch.zeros(3, 8, 8, dtype=torch.uint8),
                  str(tmp_path / "images" / "a" / f"{stem}.png"))
    (tmp_path / "labels" / "a" / "x.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "a" / "y.txt").write_text("")          # z.png: no label file
    (tmp_path / "config.yaml").write_text("names: [cat, dog]\n")
    assert YoloDetection(tmp_path, "a").background == ["y", "z"]   # both without boxes
    (tmp_path / "config.yaml").write_text("names: {0: cat, 1: , 2: dog}\n")
    with pytest.raises(DataError, match="class 1 has no name"):    # was the class "None"
        read_names(tmp_path / "config.yaml")
    (tmp_path / "config.yaml").write_text("names: [cat, dog, cow]\nval: a\n")
    model = mobilenets.create_model("ssdlite", backbone="mobilenet_v3_small_100",
                                    resolution=96, num_classes=3)
    with pytest.raises(ValueError, match=r"the model has 2 classes \(and the background: 3 "
                                         r"outputs\), .* has 3 names"):
        evaluate_detections(model, tmp_path)
    # mobilenets.evaluate scores a detector as `mobilenets eval` does (it ran the classifier's)
    model = mobilenets.create_model("ssdlite", backbone="mobilenet_v3_small_100",
                                    resolution=96, num_classes=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # the model's own settings: no mAP warning
        result = mobilenets.evaluate(model, tmp_path)
    assert result["count"] == 3 and {"map", "map50", "per_class"} <= set(result)
    direct = evaluate_detections(model, tmp_path)
    model.score_thresh = 0.25                    # as a file exported with --conf 0.25
    with pytest.warns(UserWarning, match="keeps scores above 0.25 .* this mAP is below"):
        evaluate_detections(model, tmp_path)
    assert result["map"] == direct["map"]
    assert set(result["per_class"]) == {"cat", "dog", "cow"}      # by name, NaN: no boxes
    task = DetectionTask()
    task.options = DetectionOptions(model_options={"num_classes": 10})
    task.space, task.names = "contiguous", ["a", "b"]
    with pytest.raises(ValueError, match="num_classes not taken: the class count comes from"):
        task.build_model(make_config(model="ssdlite_mobilenet_v3_small_100", resolution=96))


def test_box_aware_augmentation(coco128):
    ds = YoloDetection(coco128, "train2017")
    (image, target), _ = ds[0]
    h, w = image.shape[1:]
    # a sure flip at 160 px: x -> 160 - x, boxes scaled with the image
    flipped, flipped_target = detection_train_transform(160, "flip", hflip=1.0)(
        (image, target))
    b = target["boxes"].as_subclass(torch.Tensor) * torch.tensor([160 / w, 160 / h] * 2)
    want = torch.stack([160 - b[:, 2], b[:, 1], 160 - b[:, 0], b[:, 3]], 1)
    assert flipped.shape == (3, 160, 160) and flipped.dtype == torch.float32
    assert 0 <= flipped.min() and flipped.max() <= 1
    torch.testing.assert_close(flipped_target["boxes"].as_subclass(torch.Tensor), want,
                               rtol=1e-5, atol=1e-3)
    # the full preset: boxes stay inside the image, labels stay with their boxes
    view = SeededView(ds, detection_train_transform(160, "ssd"), seed=0)
    dropped = 0
    for i in range(12):
        (img, t), _ = view[i]
        boxes = t["boxes"].as_subclass(torch.Tensor)
        assert img.shape == (3, 160, 160) and len(boxes) == len(t["labels"])
        assert (boxes >= 0).all() and (boxes <= 160).all()
        assert (boxes[:, 2:] - boxes[:, :2] >= 1).all()
        assert set(t["labels"].tolist()) <= set(ds.labels[i][1].tolist())
        dropped += len(ds.labels[i][1]) - len(boxes)
    assert dropped > 0              # IoU crops cut boxes away, and their labels with them
    # the same (seed, epoch, index) gives the same sample
    (a, ta), _ = view[(3, 5)]
    (b2, tb), _ = view[(3, 5)]
    assert torch.equal(a, b2) and torch.equal(ta["boxes"], tb["boxes"])


def test_coco_map_matches_hand_computed_values():
    """Class 1: a false positive ranked above a true positive of IoU 0.72: precision 1/2 at
    full recall, so AP 0.5 at the IoU thresholds 0.50-0.70 (5 of 10) and 0 above: AP 0.25,
    AP50 0.5. Class 2: an exact box, AP 1. Class 3: no ground truth, left out (NaN)."""
    gt = [{"boxes": torch.tensor([[0.0, 0, 100, 100], [200, 200, 250, 260]]),
           "labels": torch.tensor([1, 2])}]
    det = [{"boxes": torch.tensor([[300.0, 300, 350, 350], [0, 0, 100, 72],
                                   [200, 200, 250, 260]]),
            "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 2])}]
    r = coco_map(gt, det, categories=[1, 2, 3])
    assert r["map"] == pytest.approx((0.25 + 1.0) / 2)
    assert r["map50"] == pytest.approx((0.5 + 1.0) / 2)
    assert r["map75"] == pytest.approx((0.0 + 1.0) / 2)
    assert r["per_class"][1] == pytest.approx(0.25) and r["per_class"][2] == pytest.approx(1)
    assert r["per_class"][3] != r["per_class"][3]          # NaN
    none = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
             "labels": torch.zeros(0, dtype=torch.int64)}]
    assert coco_map(gt, none, [1, 2])["map"] == 0.0


def _tiny_yolo_copy(root, dest, n_train=4, n_val=2):
    """A YOLO folder with the first labelled images of COCO128's splits."""
    for split, n in (("train2017", n_train), ("val2017", n_val)):
        (dest / "images" / split).mkdir(parents=True)
        (dest / "labels" / split).mkdir(parents=True)
        for label in sorted((root / "labels" / split).glob("*.txt"))[:n]:
            shutil.copy(label, dest / "labels" / split)
            shutil.copy(root / "images" / split / f"{label.stem}.jpg", dest / "images" / split)
    shutil.copy(root / "config.yaml", dest / "config.yaml")
    return dest


def test_detection_task_trains_one_epoch_on_the_engine(coco128, tmp_path):
    data = _tiny_yolo_copy(coco128, tmp_path / "tiny")
    out = tmp_path / "run"
    metrics = train_detector(data=str(data), model="ssdlite_mobilenet_v3_small_100",
                             resolution=128, epochs=1, batch_size=2, lr=0.01, out=str(out),
                             progress=False, tensorboard=False,
                             detection={"augment": "ssdlite",
                                        "model_options": {"detections_per_img": 50}})
    assert metrics["epoch"] == 1 and metrics["train_loss"] > 0
    assert 0 <= metrics["map"] <= metrics["map50"] <= 1 and metrics["val_loss"] > 0
    assert (out / "last.pt").exists() and (out / "metrics.jsonl").exists()
    best = mobilenets.load(out / "best")
    assert best.num_classes == 91 and best.config["class_names"][1] == "person"
    assert best.config["resolution"] == 128 and best.detections_per_img == 50
    result = evaluate_detections(best, data)
    assert result["count"] == 2 and set(result["per_class"]) <= set(read_names(data /
                                                                              "config.yaml"))
    last = mobilenets.create_model("ssdlite_mobilenet_v3_small_100", resolution=128,
                                   weights=out / "last.pt")     # the names come with it
    assert last.config["class_names"] == best.config["class_names"]


def test_backbone_starts_from_a_classification_checkpoint(tmp_path):
    tv = randomize_bn(torchvision.models.mobilenet_v3_large()).eval()
    torch.save(tv.state_dict(), tmp_path / "v3l.pth")
    model = mobilenets.create_model("ssdlite_mobilenet_v3_large_100", resolution=128)
    with pytest.warns(mobilenets.weights.WeightsNote):
        load_backbone_weights(model, tmp_path / "v3l.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().backbone.body(x)[0], tv.features(x),
                                   rtol=1e-4, atol=1e-5)
    # the reduced tail does not fit an ImageNet checkpoint: said so, nothing half-loaded
    reduced = mobilenets.create_model("ssdlite320_mobilenet_v3_large")
    with pytest.raises(mobilenets.CheckpointError, match="has shape"):
        load_backbone_weights(reduced, tmp_path / "v3l.pth")


def test_backbone_checkpoint_settings_build_the_detector(tmp_path):
    # a classifier trained with TensorFlow 'SAME' padding and eps 1e-3 (as the pip Lite files):
    # the detector's backbone is built with both, so it computes what the classifier did
    classifier = randomize_bn(mobilenets.create_model(
        "efficientnet_lite0", padding="same", bn_eps=1e-3, num_classes=10)).eval()
    mobilenets.weights.save(classifier, tmp_path / "lite0")
    task = DetectionTask()
    task.options = DetectionOptions(backbone_weights=str(tmp_path / "lite0"))
    task.space, task.names = "contiguous", ["a", "b"]
    model = task.build_model(make_config(model="ssdlite_efficientnet_lite0", resolution=96))
    body = model.backbone.body.config
    assert body["padding"] == "same" and body["bn_eps"] == 1e-3
    x = torch.randn(1, 3, 75, 75)                    # odd size: 'SAME' pads asymmetrically
    with torch.no_grad():
        got = model.eval().backbone.body(x)[-1]
    feats = mobilenets.create_model("efficientnet_lite0", weights=tmp_path / "lite0",
                                    features_only=True, out_indices=[-1]).eval()
    with torch.no_grad():
        torch.testing.assert_close(got, feats(x)[-1], rtol=1e-4, atol=1e-5)
    # the same from create_model, as the segmentation and depth heads take it
    direct = mobilenets.create_model("ssdlite", backbone="efficientnet_lite0", resolution=96,
                                     num_classes=3, backbone_weights=tmp_path / "lite0")
    assert direct.backbone.body.config["padding"] == "same"
    assert direct.config["backbone_weights"] == str(tmp_path / "lite0")
    with torch.no_grad():
        torch.testing.assert_close(direct.eval().backbone.body(x)[-1], got)
    # a classifier of another width: the detector's backbone is built at that width
    narrow = randomize_bn(mobilenets.create_model("mobilenet_v3_small_100", width_mult=0.75))
    torch.save(narrow.state_dict(), tmp_path / "v3s075.pth")
    det = mobilenets.create_model("ssdlite", backbone="mobilenet_v3_small_100", width_mult=0.75,
                                  resolution=96, num_classes=3,
                                  backbone_weights=tmp_path / "v3s075.pth")
    with torch.no_grad():
        torch.testing.assert_close(det.eval().backbone.body.blocks(det.backbone.body.stem(x)),
                                   narrow.eval().blocks(narrow.stem(x)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        mobilenets.create_model("ssdlite_efficientnet_lite0", weights=tmp_path / "x.pth",
                                backbone_weights=tmp_path / "lite0")
