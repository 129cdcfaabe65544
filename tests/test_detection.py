"""Detection: SSDLite on our backbones against torchvision's, the eval/train conventions,
COCO's label mapping, and the COCO128 loader."""

import io
import tarfile

import pytest
import torch
import torchvision
from torchvision.io import ImageReadMode, decode_image
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

import mobilenets
from mobilenets.data.coco import COCO80_TO_91, coco91_names, to_coco80, to_coco91
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


def coco128_members(split: str, n: int, with_labels: bool = True):
    """The first ``n`` (image, YOLO label text) pairs of a COCO128 split, from the archive."""
    if not COCO128.exists():
        pytest.skip("../shared/datasets is absent")
    out = []
    with tarfile.open(COCO128) as tar:
        files = {m.name: m for m in tar if m.isfile()}
        for name in sorted(files):
            if not name.startswith(f"coco128-lightly/images/{split}/"):
                continue
            stem = name.rsplit("/", 1)[1][:-4]
            label = files.get(f"coco128-lightly/object_detection/labels/{split}/{stem}.txt")
            if with_labels and label is None:
                continue
            data = torch.frombuffer(bytearray(tar.extractfile(files[name]).read()),
                                    dtype=torch.uint8)
            image = decode_image(data, mode=ImageReadMode.RGB).float() / 255
            text = tar.extractfile(label).read().decode() if label is not None else ""
            out.append((image, text))
            if len(out) == n:
                return out
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


def test_torchvision_checkpoint_gives_torchvision_detections_on_coco128(tv_ssdlite):
    tv, path = tv_ssdlite
    ours = mobilenets.create_model("ssdlite320_mobilenet_v3_large", weights=path).eval()
    images = [img for img, _ in coco128_members("val2017", 2)]
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


def test_train_mode_returns_losses_and_an_optimiser_step_lowers_them():
    pairs = coco128_members("train2017", 2)
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
