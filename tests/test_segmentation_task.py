"""The segmentation task: metrics and losses against values computed by hand, the three data
layouts and the COCO panoptic adapter (on the real COCO128 archive, skipped when ../shared
is absent), transforms that keep image and mask aligned, and short runs on the training
engine (a tiny stand-in model, a registered head, torchvision's LR-ASPP)."""

import json
import math
import tarfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from conftest import SHARED_DATASETS
from mobilenets.data import DataError
from mobilenets.models.heads import HEADS, HeadEntry, register_head
from mobilenets.tasks import TASKS
from mobilenets.tasks.segmentation import (
    COCO_VOC_IDS, VOC_CLASSES, MaskPairs, SegmentationTask, coco_label_map, collate_masks,
    confusion_matrix, evaluate, evaluate_model, find_split, scores, segmentation_eval_transform,
    segmentation_config, segmentation_loss, segmentation_train_transform, train)
from mobilenets.training import fit, make_config
from mobilenets.training.sampling import SeededView

ARCHIVE = SHARED_DATASETS / "coco128-lightly.tar.gz"
PLAIN = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "interpolation": "bilinear"}


@pytest.fixture(autouse=True)
def one_thread():
    """torch on one thread: on 2 cores shared with other jobs, small models ran several
    times slower on two contended threads (as in test_docs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- metrics and losses against hand computations ------------------------------------------

# 3 x 3 target with one ignored pixel; pairs (target, prediction) over the 8 scored pixels:
# (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (2,2) (0,2); class 3 appears nowhere.
TARGET = [[0, 0, 1], [1, 255, 2], [2, 2, 0]]
PRED = [[0, 1, 1], [1, 0, 2], [0, 2, 2]]


def test_confusion_matrix_and_scores_by_hand():
    conf = confusion_matrix(torch.tensor(PRED), torch.tensor(TARGET), 4)
    assert conf.tolist() == [[1, 1, 1, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    s = scores(conf, ["a", "b", "c", "d"])
    # IoU = TP / (TP + FP + FN): a 1/(1+1+2), b 2/(2+1+0), c 2/(2+1+1); d absent: None
    iou = {"a": 1 / 4, "b": 2 / 3, "c": 2 / 4, "d": None}
    assert s["per_class_iou"].keys() == iou.keys()
    for k, v in iou.items():
        assert s["per_class_iou"][k] == (None if v is None else pytest.approx(v))
    assert s["miou"] == pytest.approx((1 / 4 + 2 / 3 + 2 / 4) / 3)     # absent d left out
    assert s["pixel_acc"] == pytest.approx(5 / 8)


def test_class_only_predicted_counts_as_zero_and_sums_add_up():
    pred = torch.tensor(PRED)
    pred[0, 0] = 3                  # a class absent from the target, predicted once
    conf = confusion_matrix(pred, torch.tensor(TARGET), 4)
    s = scores(conf)
    # a: TP 0 -> 0; b 2/3; c 2/4; d: TP 0, FP 1 -> 0 (present in the prediction)
    assert s["per_class_iou"] == pytest.approx([0.0, 2 / 3, 0.5, 0.0])
    assert s["miou"] == pytest.approx((2 / 3 + 0.5) / 4)
    assert s["pixel_acc"] == pytest.approx(4 / 8)
    halves = (confusion_matrix(pred[:1], torch.tensor(TARGET)[:1], 4)
              + confusion_matrix(pred[1:], torch.tensor(TARGET)[1:], 4))
    assert torch.equal(halves, conf)          # batches (and processes) add up
    with pytest.raises(ValueError, match="target labels must be in 0..3"):
        confusion_matrix(pred, torch.full((3, 3), 4), 4)
    assert math.isnan(scores(torch.zeros(2, 2, dtype=torch.long))["miou"])


def _hand_ce(logits, target):
    """Per-pixel -log softmax over the scored pixels (python floats), and their number."""
    total, n = 0.0, 0
    for b in range(logits.shape[0]):
        for i in range(logits.shape[2]):
            for j in range(logits.shape[3]):
                t = int(target[b, i, j])
                if t == 255:
                    continue
                z = [float(v) for v in logits[b, :, i, j]]
                total += math.log(sum(math.exp(v) for v in z)) - z[t]
                n += 1
    return total, n


def test_loss_ignores_255_and_adds_half_the_aux_loss():
    g = torch.Generator().manual_seed(1)
    out, aux = torch.randn(1, 4, 3, 3, generator=g), torch.randn(1, 4, 3, 3, generator=g)
    target = torch.tensor([TARGET])
    s_out, n = _hand_ce(out, target)
    s_aux, _ = _hand_ce(aux, target)
    assert n == 8
    assert segmentation_loss(out, target).item() == pytest.approx(s_out / n, rel=1e-5)
    both = segmentation_loss(OrderedDict(out=out, aux=aux), target)
    assert both.item() == pytest.approx(s_out / n + 0.5 * s_aux / n, rel=1e-5)
    assert segmentation_loss({"out": out}, torch.full_like(target, 255)).item() == 0.0
    with pytest.raises(ValueError, match="at its input's size"):
        segmentation_loss(out, torch.zeros(1, 6, 6, dtype=torch.long))


# ---- data layouts, transforms ----------------------------------------------------------------

# label k is drawn in colour COLOURS[k] (uint8 RGB), so a pixel's colour names its label
COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10)]


def _scene(h=48, w=64, seed=0):
    """A label map of coloured rectangles (asymmetric, so flips show) and its image."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    mask[:, : w // 4] = 1
    for k in (2, 3):
        y, x = rng.integers(0, h - 12), rng.integers(w // 4, w - 16)
        mask[y:y + 12, x:x + 16] = k
    image = np.array(COLOURS, np.uint8)[mask]
    return image, mask


def _folder_data(root, n_train=4, n_val=2, size=(48, 64)):
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(["ground", "left", "box", "other"]) + "\n")
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            image, mask = _scene(*size, seed=i + 10 * (split == "val"))
            Image.fromarray(image).save(root / "images" / split / f"{i:03d}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"{i:03d}.png")
    Image.fromarray(_scene()[0]).save(root / "images" / "train" / "nomask.png")
    return root


def _decode(image: torch.Tensor) -> torch.Tensor:
    """Labels from colours (nearest of COLOURS) of a [0, 1] float image, -1 for black."""
    colours = torch.tensor(COLOURS, dtype=torch.float32) / 255
    d = ((image[None] - colours[:, :, None, None]) ** 2).sum(1)          # K x H x W
    labels = d.argmin(0)
    labels[(image == 0).all(0)] = -1
    return labels


def _interior(mask: torch.Tensor, r: int = 2) -> torch.Tensor:
    """Pixels whose (2r+1)^2 neighbourhood in ``mask`` holds one value."""
    m = mask[None, None].float()
    hi = F.max_pool2d(m, 2 * r + 1, 1, r)
    lo = -F.max_pool2d(-m, 2 * r + 1, 1, r)
    return (hi == lo)[0, 0]


def test_train_transform_keeps_image_and_mask_aligned(tmp_path):
    ds = MaskPairs(find_split(_folder_data(tmp_path), "train"))
    assert ds.skipped == 1 and len(ds) == 4                 # the image without a mask
    view = SeededView(ds, segmentation_train_transform(40, PLAIN, (0.5, 2.0), 0.5), seed=3)
    padded = 0
    for epoch in range(6):
        for i in range(len(ds)):
            (x, m), _ = view[(epoch, i)]
            assert x.shape == (3, 40, 40) and m.shape == (1, 40, 40) and m.dtype == torch.uint8
            m = m[0].long()
            pad = m == 255
            padded += int(pad.any())
            assert torch.equal(pad, (x == 0).all(0))       # padding: black image, ignored mask
            inner = _interior(m) & ~pad
            assert inner.sum() > 100
            assert torch.equal(_decode(x)[inner], m[inner])
    assert padded > 0                                     # some draws scaled below the crop
    # the same key gives the same sample (exact resume); another epoch another crop
    (a, am), _ = view[(1, 2)]
    (b, bm), _ = view[(1, 2)]
    (c, _), _ = view[(2, 2)]
    assert torch.equal(a, b) and torch.equal(am, bm) and not torch.equal(a, c)


def test_flip_and_photometric_follow_the_rules(tmp_path):
    ds = MaskPairs(find_split(_folder_data(tmp_path), "train"))

    def sample(**kw):
        view = SeededView(ds, segmentation_train_transform(40, PLAIN, **kw), seed=0)
        (x, m), _ = view[(0, 1)]
        return x, m

    x0, m0 = sample(hflip=0.0)
    x1, m1 = sample(hflip=1.0)                   # the flip is the last geometric draw
    assert torch.equal(x1, x0.flip(-1)) and torch.equal(m1, m0.flip(-1))
    xj, mj = sample(hflip=0.0, color_jitter=0.4)
    assert torch.equal(mj, m0) and not torch.allclose(xj, x0)     # colour: image only


def test_eval_transform_resizes_mask_by_nearest(tmp_path):
    ds = MaskPairs(find_split(_folder_data(tmp_path), "val"))
    view = SeededView(ds, segmentation_eval_transform(32, PLAIN), 0)
    (x, m), _ = view[0]
    assert x.shape == (3, 32, 32) and m.shape == (1, 32, 32)
    raw = ds[0][0][1]
    assert set(m.unique().tolist()) <= set(raw.unique().tolist())       # no blended labels
    # nearest: output pixel (i, j) is the source pixel (floor(i * 48/32), floor(j * 64/32))
    assert torch.equal(m[0], raw[0][(torch.arange(32) * 48 // 32)[:, None],
                                    (torch.arange(32) * 64 // 32)[None]])


def _flat_folder(root, classes: str):
    """An empty flat-layout folder: images/, masks/ and classes.txt."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text(classes)
    return root


def test_binary_masks_saved_as_0_and_255_are_named(tmp_path, caplog):
    """255 is "ignore": masks of 0 / 255 (a common binary export) label no foreground pixel;
    reading the data says so. Masks of 0 / 1 (and 255 beside labels, VOC's border) do not."""
    import logging
    root = _flat_folder(tmp_path / "flat", "background\nsquare\n")
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(root / "images" / f"{i}.jpg")
    for scale, warned in ((255, True), (1, False)):
        for i in range(3):
            mask = np.zeros((8, 8), np.uint8)
            mask[2:6, 2:6] = scale
            Image.fromarray(mask).save(root / "masks" / f"{i}.png")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mobilenets.data"):
            MaskPairs(find_split(root, "train", whole=True)).check_first()
        assert any("hold only 0 and 255" in r.getMessage() and "square" in r.getMessage()
                   for r in caplog.records) == warned


def test_flat_folder_splits_80_20_or_is_used_whole(tmp_path):
    root = _flat_folder(tmp_path / "flat", "a\nb\n")
    for i in range(7):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(root / "images" / f"{i}.jpg")
        if i != 3:                                   # an image without a mask
            Image.fromarray(np.full((8, 8), i % 2, np.uint8)).save(root / "masks" / f"{i}.png")
    train, val = find_split(root, "train"), find_split(root, "val")
    whole = find_split(root, "val", whole=True)
    assert [p[0].name for p in train.pairs] == ["0.jpg", "1.jpg", "2.jpg", "4.jpg", "5.jpg"]
    assert [p[0].name for p in val.pairs] == ["6.jpg"]            # 6 pairs: 5 train, 1 val
    assert [p[0].name for p in whole.pairs] == [f"{i}.jpg" for i in (0, 1, 2, 4, 5, 6)]
    assert (train.skipped, val.skipped, whole.skipped) == (1, 0, 1)
    assert train.classes == ["a", "b"] and train.layout == "folder"
    with pytest.raises(DataError, match="there is no split 'test'"):
        find_split(root, "test")
    # line k names label k: trailing blank lines are nothing, a blank one between shifts all
    (root / "classes.txt").write_text("a\nb\n\n\n")
    assert find_split(root, "train").classes == ["a", "b"]
    (root / "classes.txt").write_text("a\n\nb\n")
    with pytest.raises(DataError, match=r"classes.txt line 2 is blank.*label 1"):
        find_split(root, "train")


def test_bad_data_gets_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not a segmentation data folder"):
        find_split(tmp_path, "train")
    root = _folder_data(tmp_path / "d")
    with pytest.raises(DataError, match="no image folder .*test"):
        find_split(root, "test")
    with pytest.raises(ValueError, match="remap COCO panoptic ids"):
        find_split(root, "train", label_set="voc")
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    (flat / "masks" / "train").mkdir(parents=True)
    (flat / "classes.txt").write_text("a\nb\n")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "images" / "0.png")
    with pytest.raises(DataError, match="holds the files directly: split them into "
                                        "images/train/ and images/val/"):
        find_split(flat, "train")                # images flat, masks split: not flat
    (flat / "masks" / "train").rmdir()
    with pytest.raises(DataError, match="has no image with a mask: 1 images in"):
        find_split(flat, "train")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / "masks" / "0.png")
    with pytest.raises(DataError, match="has 1 image with a mask; a flat folder splits"):
        find_split(flat, "train")
    (flat / "images" / "train").mkdir()          # images split, masks flat
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "images" / "train" / "0.png")
    with pytest.raises(DataError, match="holds the files directly: split them into "
                                        "masks/train/ and masks/val/"):
        find_split(flat, "train")
    (root / "classes.txt").rename(root / "names.txt")
    with pytest.raises(DataError, match="has images/ and masks/ but no classes.txt"):
        find_split(root, "train")
    (root / "names.txt").rename(root / "classes.txt")
    Image.fromarray(np.full((48, 64), 7, np.uint8)).save(root / "masks" / "train" / "000.png")
    with pytest.raises(DataError, match=r"value\(s\) \[7\] outside labels 0..3"):
        MaskPairs(find_split(root, "train"))[0]
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(root / "masks" / "train" / "001.png")
    with pytest.raises(DataError, match="3 channels"):
        MaskPairs(find_split(root, "train"))[1]
    (root / "images" / "train" / "002.png").write_bytes(b"not a png")
    assert MaskPairs(find_split(root, "train"))[2] is None                     # skipped
    images, masks, bad = collate_masks([None, None])
    assert bad == 2 and len(masks) == 0
    with pytest.raises(ValueError, match="label_set must be one of coco, voc"):
        segmentation_config(segmentation={"label_set": "ade"})
    with pytest.raises(ValueError, match="unknown segmentation option.*labelset"):
        segmentation_config(segmentation={"labelset": "voc"})
    with pytest.raises(ValueError, match="train_limit must be an integer >= 0"):
        segmentation_config(segmentation={"train_limit": -1})


def test_voc_layout(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    labels = np.zeros((20, 30), np.uint8)
    labels[5:10, 5:20], labels[4, :] = 15, 255                 # a person and a boundary
    mask = Image.fromarray(labels, "P")
    mask.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    mask.save(root / "SegmentationClass" / "2007_000001.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "JPEGImages" / "2007_000001.jpg")
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000001\n2007_000002\n")
    files = find_split(tmp_path, "val")                  # VOCdevkit/VOC2012 is followed
    assert files.layout == "voc" and files.classes == VOC_CLASSES and files.skipped == 1
    (_, m), _ = MaskPairs(files)[0]
    assert torch.equal(m[0], torch.from_numpy(labels))   # palette indices, 255 kept


# ---- the COCO panoptic adapter on real COCO128 ---------------------------------------------

@pytest.fixture(scope="module")
def coco128(tmp_path_factory):
    if not ARCHIVE.exists():
        pytest.skip("../shared/datasets is absent")
    root = tmp_path_factory.mktemp("coco128")
    with tarfile.open(ARCHIVE) as tar:
        members = [m for m in tar if m.name.startswith(
            ("coco128-lightly/images/", "coco128-lightly/semantic_segmentation/"))]
        tar.extractall(root, members=members, filter="data")
    return root / "coco128-lightly"


def _raw_mask(files, i):
    return torch.from_numpy(np.array(Image.open(files.pairs[i][1])))


def test_coco_adapter_coco_label_set(coco128):
    files = find_split(coco128, "train")
    assert files.layout == "coco" and len(files.pairs) == 100 and files.skipped == 28
    ids = sorted(k for k in _config_ids(coco128) if k != 0)
    assert len(files.classes) == len(ids) == 129 and files.classes[0] == "person"
    ds = MaskPairs(files)
    for i in range(3):
        raw = _raw_mask(files, i)
        (_, m), _ = ds[i]
        m = m[0].long()
        assert torch.equal(m == 255, raw == 0)                  # unlabeled: ignored
        for cat in np.flatnonzero(np.bincount(raw.numpy().ravel())).tolist():
            if cat:
                assert (m[raw == cat] == ids.index(cat)).all()   # contiguous, in id order
    task = SegmentationTask()
    train_set, val_set = task.datasets(segmentation_config(
        data=str(coco128), segmentation={"train_limit": 3, "val_limit": 2}))
    assert len(train_set) == 3 and len(val_set) == 2 and len(task.classes) == 129
    assert "28 train image(s) without a mask skipped" in task.summary(train_set, val_set)
    assert ", weights random;" in task.summary(train_set, val_set)
    started = SegmentationTask()
    sets = started.datasets(segmentation_config(data=str(coco128), segmentation={
        "train_limit": 1, "val_limit": 1, "model_options": {"backbone_weights": "v2.pth"}}))
    assert ", backbone weights v2.pth;" in started.summary(*sets)
    classes, lut = coco_label_map(_config_names(coco128), "coco", unlabeled="background")
    assert classes[0] == "background" and lut[0] == 0 and lut[1] == 1


def _config_ids(root):
    return set(_config_names(root))


def _config_names(root):
    import yaml
    return yaml.safe_load((root / "semantic_segmentation" / "config.yaml").read_text())["classes"]


def test_coco_adapter_voc_label_set(coco128):
    files = find_split(coco128, "train", label_set="voc")
    assert files.classes == VOC_CLASSES
    ds = MaskPairs(files)
    person = next(i for i in range(len(ds)) if (_raw_mask(files, i) == 1).any())
    raw = _raw_mask(files, person)
    (_, m), _ = ds[person]
    m = m[0].long()
    assert (m[raw == 1] == 15).all()                        # COCO person -> VOC 15
    kept = torch.zeros_like(raw, dtype=torch.bool)
    for label, cat in enumerate(COCO_VOC_IDS[1:], start=1):
        assert (m[raw == cat] == label).all()
        kept |= raw == cat
    assert (m[~kept] == 0).all()       # other categories and unlabeled: background
    # with the VOC set some classes barely occur (issue 22): tvmonitor (COCO tv, 72) is in
    # no train and 7 val images, cow (21) in none
    val = find_split(coco128, "val", label_set="voc")
    count = {s: [0] * 21 for s in ("train", "val")}
    for split, f in (("train", files), ("val", val)):
        for i in range(len(f.pairs)):
            ids = np.flatnonzero(np.bincount(np.asarray(Image.open(f.pairs[i][1])).ravel()))
            for label in set(f.lut[torch.from_numpy(ids)].tolist()):
                count[split][label] += 1
    assert count["train"][20] == 0 and count["val"][20] == 7
    assert count["train"][10] == count["val"][10] == 0
    assert count["train"][15] == 51 and count["val"][15] == 58    # person


# ---- runs on the training engine -----------------------------------------------------------


class TinySeg(nn.Module):
    """A stand-in segmentation model with torchvision's output convention."""

    task = "segmentation"

    def __init__(self, num_classes=4, aux=True, name="tiny_seg", options=None):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, num_classes, 1)
        self.aux = nn.Conv2d(8, num_classes, 1) if aux else None
        self.config = {"name": name, "task": "segmentation", "num_classes": num_classes,
                       "options": dict(options or {}, num_classes=num_classes, aux=aux)}
        self.preprocess = dict(PLAIN, resolution=32)

    def forward(self, x):
        f = self.body(x)
        up = lambda y: F.interpolate(y, size=x.shape[-2:], mode="bilinear",  # noqa: E731
                                     align_corners=False)
        out = OrderedDict(out=up(self.head(f)))
        if self.aux is not None:
            out["aux"] = up(self.aux(f))
        return out


def _build_tiny(backbone, num_classes=4, aux=True, resolution=None):
    return TinySeg(num_classes, aux, f"tinyseg_{backbone}", {"resolution": resolution})


if "tinyseg" not in HEADS:
    register_head(HeadEntry("tinyseg", "segmentation", _build_tiny, "mobilenet_v2_035"))

RUN = dict(resolution=32, batch_size=2, epochs=2, lr=0.05, workers=0, tensorboard=False,
           seed=0)


UNEQUAL = ("images_per_s", "epoch_time_s", "train_loss")


class Stopped(Exception):
    pass


class StopAtLoss(SegmentationTask):
    """Raises at the n-th training loss: a run killed mid-epoch."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def loss(self, outputs, target):
        self.n -= 1
        if self.n == 0:
            raise Stopped
        return super().loss(outputs, target)


def _lines(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_training_run_writes_miou_and_resumes_exactly(tmp_path):
    data = _folder_data(tmp_path / "data")
    assert TASKS["segmentation"] is SegmentationTask
    metrics = train(model="tinyseg_mobilenet_v2_035", data=str(data), out=str(tmp_path / "a"),
                    progress=False, **RUN)
    lines = _lines(tmp_path / "a")
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        assert 0 <= r["miou"] <= 1 and 0 <= r["pixel_acc"] <= 1 and math.isfinite(r["val_loss"])
        assert list(r["per_class_iou"]) == ["ground", "left", "box", "other"]
    assert metrics["miou"] == lines[-1]["miou"]
    saved = json.loads((tmp_path / "a" / "best" / "config.json").read_text())
    assert saved["class_names"] == ["ground", "left", "box", "other"]
    assert saved["architecture"] == "tinyseg_mobilenet_v2_035"
    # stopped mid-way through epoch 2 (after a step checkpoint), then resumed: the same
    # weights and metrics as the straight run
    cfg = segmentation_config(model="tinyseg_mobilenet_v2_035", data=str(data),
                              out=str(tmp_path / "b"), checkpoint_every_steps=1, **RUN)
    with pytest.raises(Stopped):
        fit(StopAtLoss(4), cfg, progress=False)
    fit(SegmentationTask(), cfg, resume=tmp_path / "b" / "last.pt", progress=False)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)
    # (the resumed epoch's train_loss averages the steps after the resume only)
    resumed = _lines(tmp_path / "b")
    assert resumed == [{**r, **{k: resumed[i][k] for k in UNEQUAL}} for i, r in enumerate(lines)]
    # and the model scores the same through the Python evaluate
    model = TinySeg()
    model.load_state_dict(a)
    model.config["class_names"] = ["ground", "left", "box", "other"]
    result = evaluate(model.eval(), data, "val", resolution=32)
    assert result["miou"] == pytest.approx(lines[-1]["miou"])
    assert result["pixel_acc"] == pytest.approx(lines[-1]["pixel_acc"])


def test_evaluate_model_matches_hand_confusion():
    """Predictions fixed by a model that returns given logits: the confusion matrix, mIoU and
    loss equal the hand values of the first tests."""
    target = torch.tensor([TARGET])
    logits = F.one_hot(torch.tensor([PRED]), 4).permute(0, 3, 1, 2).float() * 5

    class Fixed(nn.Module):
        def forward(self, x):
            return {"out": logits}

    result = evaluate_model(Fixed(), [(torch.zeros(1, 3, 3, 3), target, 1)], 4)
    assert result["confusion"].tolist() == [[1, 1, 1, 0], [0, 2, 0, 0], [1, 0, 2, 0],
                                            [0, 0, 0, 0]]
    assert result["miou"] == pytest.approx((1 / 4 + 2 / 3 + 2 / 4) / 3)
    assert result["loss"] == pytest.approx(_hand_ce(logits, target)[0] / 8, rel=1e-5)
    assert result["bad_images"] == 1 and result["pixels"] == 8


def test_torchvision_lraspp_trains_through_the_task(tmp_path):
    data = _folder_data(tmp_path / "data", n_train=4, n_val=2)
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=4)
    task = SegmentationTask()
    fit(task, make_config(data=str(data), out=str(tmp_path / "run"),
                          **dict(RUN, epochs=1)), progress=False, model=model)
    assert "miou" in _lines(tmp_path / "run")[0]
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert config["class"].endswith("LRASPP") and config["class_names"][0] == "ground"
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert task.outputs(model) == [("out", "N x C x H x W class scores per pixel (logits) at "
                                           "the input size")]
    # the folder does not load as a saved model; the error says what does, and it works
    import mobilenets
    from mobilenets.deploy import open_model
    best = tmp_path / "run" / "best"
    for opening in (lambda: mobilenets.load(best), lambda: open_model(str(best))):
        with pytest.raises(ValueError, match="holds the state dict of a torchvision.*LRASPP.*"
                                             "lraspp_mobilenet_v3_large --weights"):
            opening()
    twin = mobilenets.create_model("lraspp_mobilenet_v3_large", weights=str(best))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(twin.eval()(x)["out"], model.eval()(x)["out"])


def test_training_on_shards_scores_as_on_the_folder(tmp_path):
    """The folder in shards (one pair per shard, so the stream reorders them): a run on the
    shards reads the same training pairs, and its validation mIoU is the folder's evaluation
    of the same weights (the confusion matrix does not depend on the order)."""
    from mobilenets.tasks.shards import write_task_shards
    data = _folder_data(tmp_path / "data")
    index = write_task_shards(data, tmp_path / "shards", samples_per_shard=1, progress=False)
    assert index["task"] == "segmentation" and index["splits"]["train"]["total"] == 4
    run = dict(RUN, epochs=1)
    metrics = train(model="tinyseg_mobilenet_v2_035", data=str(tmp_path / "shards"),
                    out=str(tmp_path / "run"), progress=False, **run)
    weights = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["model"]
    model = TinySeg()
    model.load_state_dict(weights)
    model.config["class_names"] = ["ground", "left", "box", "other"]
    result = evaluate(model.eval(), data, "val", resolution=32)
    assert result["miou"] == pytest.approx(metrics["miou"])
    assert result["pixel_acc"] == pytest.approx(metrics["pixel_acc"])
    with pytest.raises(ValueError, match="write the shards with those options"):
        train(model="tinyseg_mobilenet_v2_035", data=str(tmp_path / "shards"),
              out=str(tmp_path / "run2"), progress=False, segmentation={"label_set": "voc"},
              **run)
