"""Image folders: the built-in sample, train/val resolution with checks, robust loading."""

from __future__ import annotations

import logging
import warnings
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import default_collate
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

logger = logging.getLogger("mobilenets.data")

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
"""The shipped sample: 10 Imagenette classes at 64x64, ``train/`` and ``val/`` (see SOURCE.md)."""

_LAYOUT = "expected <folder>/train/<class>/<images> and <folder>/val/<class>/<images>"


class DataError(ValueError):
    """A data folder or image that cannot be used; the message says what to change."""


# Folders that are never classes: macOS's archive metadata (beside hidden ones)
NOT_CLASSES = ("__MACOSX",)


def class_folders(root: Path) -> list[str]:
    """Sorted names of the class folders in ``root`` (hidden folders and macOS's
    ``__MACOSX`` are skipped)."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
                  and e.name not in NOT_CLASSES)


def is_image_name(name: str) -> bool:
    """An image file by its name: an image extension, and not a macOS AppleDouble stub
    (``._photo.jpg``, metadata that archives and network drives leave beside each file)."""
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith("._")


def _has_image(folder: Path) -> bool:
    for _, _, files in os.walk(folder, followlinks=True):
        if any(is_image_name(f) for f in files):
            return True
    return False


def _check_split(root: Path, name: str) -> list[str]:
    """Class folders of one split; raise DataError if it has none, or an empty one."""
    classes = class_folders(root)
    if not classes:
        loose = _has_image(root)
        raise DataError(f"{name} folder {root} has no class folders" + (
            "; put its images into one sub-folder per class" if loose else
            f" and no image files ({_LAYOUT})"))
    loose = [e.name for e in os.scandir(root) if e.is_file() and is_image_name(e.name)]
    if loose:
        logger.warning("%d image(s) directly in %s (e.g. %s) are in no class folder and are "
                       "not used; move them into their class's folder", len(loose), root,
                       sorted(loose)[0])
    empty = [c for c in classes if not _has_image(root / c)]
    if len(empty) == len(classes):
        raise DataError(f"{name} folder {root} has no image files (extensions "
                        f"{', '.join(IMG_EXTENSIONS)}); {_LAYOUT}")
    if empty:
        raise DataError(f"{name} class folder(s) with no image files: "
                        f"{', '.join(str(root / c) for c in empty)}; add images or remove "
                        f"them{_dense_hint(root)}")
    return classes


def split_folders(root: Path, val: str | Path | None = None) -> tuple[Path, Path]:
    """Where :func:`resolve_split` looks, unchecked: ``root/train`` (or ``root`` itself when
    it holds the class folders and ``val`` is given) and ``val`` or ``root/val``."""
    train_dir = root / "train"
    if not train_dir.is_dir() and val is not None and class_folders(root):
        train_dir = root                      # DATA holds the class folders, --val the rest
    return train_dir, Path(val) if val is not None else root / "val"


def _dense_hint(root: Path) -> str:
    """A hint when ``root`` looks like a dense task's data, given to a classifier."""
    if not (root / "images").is_dir():
        return ""
    if (root / "labels").is_dir():
        return ("; it looks like YOLO detection data (images/, labels/): train a detector, "
                "e.g. --model ssdlite_mobilenet_v3_large_100 or yolov4_mobilenet_v3_large_100")
    if (root / "masks").is_dir():
        return ("; it looks like segmentation data (images/, masks/): train a segmentation "
                "model, e.g. --model lraspp_mobilenet_v3_large_100")
    return ""


def resolve_split(data: str | Path | None, val: str | Path | None = None) -> tuple[Path, Path]:
    """``(train_dir, val_dir)`` for ``data`` (None: the built-in sample), a folder with
    ``train/`` and ``val/`` class folders; ``val``, when given, replaces ``data/val``, and
    then ``data`` may be the training class folders themselves (torchvision's ImageFolder
    layout). Checks the layout and raises DataError with what to fix."""
    root = SAMPLE_DIR if data is None else Path(data)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist ({_LAYOUT})")
    train_dir = split_folders(root, val)[0]
    if not train_dir.is_dir():
        raise DataError(f"data folder {root} has no train/ folder ({_LAYOUT}); a folder of "
                        f"class folders trains with --val FOLDER (the validation class "
                        f"folders, which must be other images){_dense_hint(root)}")
    if val is not None:
        val_dir = Path(val)
        if not val_dir.is_dir():
            raise DataError(f"validation folder {val_dir} does not exist")
    else:
        val_dir = root / "val"
        if not val_dir.is_dir():
            raise DataError(f"data folder {root} has no val/ folder; add one, or pass "
                            "--val FOLDER (a folder of class folders)")
    if train_dir.resolve() == val_dir.resolve():
        warnings.warn(f"the validation folder {val_dir} is the training folder: the "
                      f"validation figures are on the training images (give --val other "
                      f"images)")
    train_classes = _check_split(train_dir, "train")
    missing = sorted(set(_check_split(val_dir, "val")) - set(train_classes))
    if missing:
        raise DataError(f"val class(es) not in train ({train_dir}): {', '.join(missing)}; "
                        "every val class needs a train folder of the same name")
    return train_dir, val_dir


def load_rgb(path: str) -> Image.Image:
    """Open and fully decode an image as RGB (grayscale, CMYK, RGBA and palette included);
    a truncated file raises OSError."""
    with Image.open(path) as img:
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")   # PIL's advice for palette images with transparency
        return img.convert("RGB")       # convert() runs load(): the whole file is decoded


def is_value_map(path: str | Path) -> bool:
    """True for a single-channel 16- or 32-bit integer image (PIL modes ``I;16*``, ``I``):
    a depth or label map stored next to its photo (7-Scenes' ``frame-N.depth.png``), not a
    picture. Reads the header only; an unreadable file is not one."""
    try:
        with Image.open(path) as img:
            return img.mode == "I" or img.mode.startswith("I;16")
    except (OSError, ValueError, SyntaxError):
        return False


def read_rgb(path: str | Path) -> torch.Tensor:
    """An image file as a uint8 3 x H x W RGB tensor: the library's decoder (JPEG, PNG, WEBP,
    GIF; :mod:`~mobilenets.data.image_io`), else PIL's (BMP, TIFF and the other formats the
    classification loader reads), as stored (no EXIF orientation applied); a 16-bit colour
    PNG is brought to 8 bits. OSError naming the file when it is missing, unreadable, or a
    single-channel 16- or 32-bit image (a depth or label map, not a photo)."""
    from .image_io import decode_rgb
    path = Path(path)
    if not path.is_file():
        raise OSError(f"{path} {'is not a file' if path.exists() else 'does not exist'}")
    if is_value_map(path):
        raise OSError(f"{path} is a single-channel 16- or 32-bit image (a depth or label "
                      f"map), not a photo")
    try:
        image = decode_rgb(path)
    except RuntimeError:          # a format the decoder does not read, or a broken file
        try:
            image = torch.from_numpy(np.asarray(load_rgb(str(path))).copy()).permute(2, 0, 1)
        except (OSError, ValueError, SyntaxError) as e:
            raise OSError(f"{path} is not an image the decoder or PIL can read: {e}") from None
    return image.contiguous()


class ImageFolderDataset(ImageFolder):
    """torchvision ImageFolder whose items are ``(RGB image, label)`` (transformed if
    ``transform``). ``classes`` fixes the class list and label indices (give val the train
    classes; its folders may be a subset). An unreadable or truncated image gives None (with
    a warning on the ``mobilenets.data`` logger), or DataError when ``strict``."""

    def __init__(self, root: str | Path, transform=None, classes: list[str] | None = None,
                 strict: bool = False):
        self._given = list(classes) if classes is not None else None
        self.strict = strict
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist")
        super().__init__(str(root), transform=transform, loader=load_rgb, allow_empty=True,
                         is_valid_file=lambda path: is_image_name(os.path.basename(path)))
        if not self.samples:
            raise DataError(f"no image files in the class folders of {root}")

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        found = class_folders(Path(directory))
        if self._given is None:
            if not found:
                raise DataError(f"{directory} has no class folders")
            return found, {c: i for i, c in enumerate(found)}
        extra = sorted(set(found) - set(self._given))
        if extra:
            raise DataError(f"class folder(s) in {directory} not in the given class list "
                            f"(the model's or train's): {', '.join(extra)}")
        return self._given, {c: i for i, c in enumerate(self._given)}

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            image = self.loader(path)
        except (OSError, ValueError, SyntaxError) as e:
            if self.strict:
                raise DataError(f"cannot read image {path}: {e}") from e
            logger.warning("skipping unreadable image %s: %s", path, e)
            return None
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


def collate_skip_bad(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Collate ``(image, label)`` items, dropping None (unreadable) ones: returns
    ``(images, labels, n_bad)``. If every item is bad, ``images`` and ``labels`` are empty
    (``len(labels) == 0``) and ``n_bad == len(batch)``: skip such a batch."""
    good = [item for item in batch if item is not None]
    n_bad = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), n_bad
    images, labels = default_collate(good)
    return images, labels, n_bad
