"""Data: the shipped sample, train/val resolution errors, robust loading, transforms, MixUp."""

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from mobilenets.data import (SAMPLE_DIR, DataError, ImageFolderDataset, collate_skip_bad,
                             eval_transform, load_rgb, mixup_cutmix, resolve_split,
                             train_transform)

PRE = {"resolution": 32, "resize": 37, "crop_pct": 0.875, "interpolation": "bilinear",
       "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def write_image(path: Path, mode: str = "RGB", size=(24, 20), seed: int = 0) -> Path:
    """A small noise image in ``mode``, saved in the format of ``path``'s extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8)
    image = Image.fromarray(rgb.numpy())
    image = image.quantize(16) if mode == "P" else image.convert(mode)
    image.save(path)
    return path


def make_tree(root: Path, train=("a", "b", "c"), val=("a", "b", "c"), n=2) -> Path:
    for split, classes in (("train", train), ("val", val)):
        for c in classes:
            for i in range(n):
                write_image(root / split / c / f"{i}.jpg", seed=i)
    return root


# --- the shipped sample ---------------------------------------------------------------------

def test_sample_is_shipped_complete_and_small():
    train_dir, val_dir = resolve_split(None)
    assert (train_dir, val_dir) == (SAMPLE_DIR / "train", SAMPLE_DIR / "val")
    assert (SAMPLE_DIR / "SOURCE.md").is_file()
    files = {s: sorted((SAMPLE_DIR / s).glob("*/*.jpg")) for s in ("train", "val")}
    for split, folder in (("train", train_dir), ("val", val_dir)):
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        assert len(classes) == 10 and "tench" in classes and "english_springer" in classes
        counts = {c: len(list((folder / c).glob("*.jpg"))) for c in classes}
        assert min(counts.values()) >= (50 if split == "train" else 20), counts
    names = {s: {p.name for p in files[s]} for s in files}
    assert not names["train"] & names["val"]
    digests = {s: {hashlib.md5(p.read_bytes()).hexdigest() for p in files[s]} for s in files}
    assert not digests["train"] & digests["val"]
    size = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*") if p.is_file())
    assert size < 5e6
    dataset = ImageFolderDataset(train_dir)
    image, label = dataset[0]
    assert image.mode == "RGB" and image.size == (64, 64)
    assert dataset.classes[label] == "cassette_player"


# --- resolve_split ----------------------------------------------------------------------------

def test_resolve_split_finds_train_and_val(tmp_path):
    root = make_tree(tmp_path / "d")
    assert resolve_split(root) == (root / "train", root / "val")
    other = make_tree(tmp_path / "o", train=(), val=("b",))
    assert resolve_split(str(root), other / "val") == (root / "train", other / "val")


def test_macos_archive_metadata_is_neither_a_class_nor_an_image(tmp_path):
    """A zip made on a Mac holds __MACOSX/<class>/._<photo> stubs and ._<photo> files beside
    the photos: not a class (it became one, of unreadable files), not images."""
    root = make_tree(tmp_path / "d")
    for split in ("train", "val"):
        stub = root / split / "__MACOSX" / "a" / "._0.png"
        stub.parent.mkdir(parents=True)
        stub.write_bytes(b"\x00\x05\x16\x07 AppleDouble")
        (root / split / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    train, _ = resolve_split(root)
    data = ImageFolderDataset(train)
    assert data.classes == ["a", "b", "c"] and len(data) == 6
    assert not any(Path(p).name.startswith("._") for p, _ in data.samples)


def test_loose_images_beside_the_class_folders_are_named(tmp_path, caplog):
    root = make_tree(tmp_path / "d")
    write_image(root / "train" / "stray.jpg")
    with caplog.at_level(logging.WARNING, logger="mobilenets.data"):
        resolve_split(root)
    assert any("1 image(s) directly in" in r.getMessage() and "stray.jpg" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("no_train", "no train/ folder"),
    ("no_val", "--val"),
    ("missing_val_arg", "validation folder"),
    ("empty_class", "b"),
    ("val_class_not_in_train", "zebra"),
    ("no_images", "no image files"),
    ("loose_images", "one sub-folder per class"),
])
def test_resolve_split_errors(tmp_path, case, message):
    root, val = tmp_path / "d", None
    if case == "no_train":
        make_tree(root, train=())
    elif case == "no_val":
        make_tree(root, val=())
    elif case == "missing_val_arg":
        make_tree(root)
        val = tmp_path / "nowhere"
    elif case == "empty_class":
        make_tree(root)
        (root / "train" / "b" / "0.jpg").unlink()
        (root / "train" / "b" / "1.jpg").rename(root / "train" / "b" / "notes.txt")
    elif case == "val_class_not_in_train":
        make_tree(root, val=("a", "zebra"))
    elif case == "no_images":
        for c in ("a", "b"):
            (root / "train" / c).mkdir(parents=True)
            (root / "train" / c / "readme.txt").write_text("x")
        make_tree(root, train=())
    elif case == "loose_images":
        write_image(root / "train" / "0.jpg")
        make_tree(root, train=())
    with pytest.raises(DataError, match=message) as err:
        resolve_split(root, val)
    if case == "empty_class":
        assert str(root / "train" / "b") in str(err.value)


# --- loading ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, ext", [("L", "jpg"), ("RGBA", "png"), ("CMYK", "jpg"),
                                        ("P", "png"), ("LA", "png"), ("RGB", "webp")])
def test_any_mode_comes_out_rgb(tmp_path, mode, ext):
    write_image(tmp_path / "a" / f"x.{ext}", mode)
    with Image.open(tmp_path / "a" / f"x.{ext}") as img:
        assert img.mode == mode
    dataset = ImageFolderDataset(tmp_path, transform=eval_transform(PRE))
    x, label = dataset[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and label == 0


def truncated_tree(root: Path) -> Path:
    for i in range(3):
        write_image(root / "a" / f"{i}.jpg", size=(64, 64), seed=i)
    good = (root / "a" / "0.jpg").read_bytes()
    (root / "a" / "1.jpg").write_bytes(good[: len(good) // 2])
    return root / "a" / "1.jpg"


def test_truncated_jpeg_is_skipped_and_counted(tmp_path, caplog):
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    bad = truncated_tree(tmp_path)
    dataset = ImageFolderDataset(tmp_path, transform=eval_transform(PRE))
    with caplog.at_level(logging.WARNING, logger="mobilenets.data"):
        assert dataset[1] is None
    assert str(bad) in caplog.text
    loader = DataLoader(dataset, batch_size=3, num_workers=1, collate_fn=collate_skip_bad)
    (x, y, n_bad), = list(loader)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [0, 0] and n_bad == 1
    x, y, n_bad = collate_skip_bad([None, None])
    assert len(x) == len(y) == 0 and y.dtype == torch.long and n_bad == 2


def test_truncated_jpeg_raises_in_strict_mode(tmp_path):
    bad = truncated_tree(tmp_path)
    dataset = ImageFolderDataset(tmp_path, strict=True)
    assert dataset[0][0].mode == "RGB"
    with pytest.raises(DataError, match=str(bad)):
        dataset[1]


def test_val_uses_train_class_indices(tmp_path):
    root = make_tree(tmp_path, val=("c",))
    train = ImageFolderDataset(root / "train")
    val = ImageFolderDataset(root / "val", classes=train.classes)
    assert val.classes == ["a", "b", "c"] and val.class_to_idx["c"] == 2
    assert {label for _, label in val.samples} == {2} and val[0][1] == 2
    assert ImageFolderDataset(root / "val").class_to_idx == {"c": 0}
    with pytest.raises(DataError, match="b"):
        ImageFolderDataset(root / "train", classes=["a", "c"])


# --- transforms -------------------------------------------------------------------------------

@pytest.mark.parametrize("auto_augment", [None, "randaugment", "trivialaugment", "autoaugment"])
def test_train_transform_shapes(tmp_path, auto_augment):
    image = Image.open(write_image(tmp_path / "x.png", "L", size=(50, 40))).convert("RGB")
    t = train_transform(32, PRE, auto_augment=auto_augment, color_jitter=0.4,
                        random_erasing=0.5, scale=(0.25, 1.0))
    x = t(image)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert eval_transform(PRE)(image).shape == (3, 32, 32)


def test_dense_data_given_to_a_classifier_says_which_model_to_train(tmp_path):
    for sub in ("images/train2017", "labels/train2017"):
        (tmp_path / "det" / sub).mkdir(parents=True)
    with pytest.raises(DataError, match="looks like YOLO detection data .* --model ssdlite"):
        resolve_split(tmp_path / "det")
    for sub in ("images/train", "masks/train"):
        (tmp_path / "seg" / sub).mkdir(parents=True)
    with pytest.raises(DataError, match="looks like segmentation data .* --model lraspp"):
        resolve_split(tmp_path / "seg")
    # Roboflow's export: train/images and train/labels, read as two "classes"
    for split in ("train", "val"):
        (tmp_path / "rf" / split / "labels").mkdir(parents=True)
        write_image(tmp_path / "rf" / split / "images" / "x.jpg")
        (tmp_path / "rf" / split / "labels" / "x.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match="labels; add images .* looks like YOLO detection"):
        resolve_split(tmp_path / "rf")


def test_transforms_take_images_of_any_mode_as_the_loader_reads_them(tmp_path):
    """An RGBA PNG (torchvision's v2.RGB alone refuses 4 channels), a palette with
    transparency, grayscale and CMYK give what the folder loader's RGB conversion gives."""
    rgba = Image.open(write_image(tmp_path / "x.png", "RGBA", size=(50, 40)))
    assert rgba.mode == "RGBA"
    expected = eval_transform(PRE)(rgba.convert("RGB"))
    assert torch.equal(eval_transform(PRE)(rgba), expected)
    tensor = torch.from_numpy(np.asarray(rgba)).permute(2, 0, 1)
    assert torch.equal(eval_transform(PRE)(tensor), expected)            # alpha dropped
    assert torch.equal(eval_transform(PRE)(np.asarray(rgba)), expected)
    palette = rgba.convert("P")
    palette.info["transparency"] = 0
    for image in (palette, rgba.convert("L"), rgba.convert("CMYK")):
        path = tmp_path / f"y.{'jpg' if image.mode == 'CMYK' else 'png'}"
        image.save(path)
        with Image.open(path) as opened:
            assert torch.equal(eval_transform(PRE)(opened), eval_transform(PRE)(load_rgb(path)))
            assert train_transform(32, PRE)(opened).shape == (3, 32, 32)


def test_train_transform_crop_min_scale(tmp_path):
    """Crops of >= 90% of the area always span the middle of a half-black, half-white image;
    crops of 2% of it mostly fall on one side."""
    pixels = torch.zeros(3, 64, 64, dtype=torch.uint8)
    pixels[:, :, 32:] = 255
    image = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    pre = dict(PRE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def two_sided(scale):
        t = train_transform(16, pre, hflip=0.0, scale=scale)
        return [bool(x.min() < 0.1 and x.max() > 0.9) for x in (t(image) for _ in range(20))]
    torch.manual_seed(0)
    assert all(two_sided((0.9, 1.0)))
    assert sum(two_sided((0.02, 0.02))) < 10
    with pytest.raises(ValueError, match="crop scale"):
        train_transform(16, PRE, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="crop scale"):
        train_transform(16, PRE, scale=(0.5, 0.4))


def test_train_transform_rejects_unknown_auto_augment():
    with pytest.raises(ValueError, match="randaugment"):
        train_transform(32, PRE, auto_augment="augmix")


@pytest.mark.parametrize("mixup, cutmix", [(1.0, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_cutmix_gives_soft_targets(mixup, cutmix):
    assert mixup_cutmix(5) is None
    mix = mixup_cutmix(5, mixup, cutmix)
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 5
    mixed, target = mix(x, y)
    assert mixed.shape == x.shape and target.shape == (8, 5)
    torch.testing.assert_close(target.sum(1), torch.ones(8))
    assert (target.max(1).values < 1).all()
    with pytest.raises(ValueError):
        mixup_cutmix(5, -1.0)
