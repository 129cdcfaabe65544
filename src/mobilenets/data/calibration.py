"""Calibration images: a seeded random draw from an image folder, eval-transformed, used to
calibrate int8 quantization and to re-estimate BatchNorm statistics after pruning."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from .folder import DataError, ImageFolderDataset, class_folders, is_value_map, load_rgb
from .transforms import eval_transform, to_rgb

logger = logging.getLogger("mobilenets.data")


class LooseImages:
    """The image files directly in a folder, in name order: calibration needs no labels, so
    a flat folder of images serves as well as class folders. 16-bit depth or label maps
    beside the photos (RGB + depth folders such as 7-Scenes) are left out
    (:func:`is_value_map`). Items are ``(image, 0)``, or None for an unreadable file
    (logged), like :class:`ImageFolderDataset`'s."""

    def __init__(self, root: Path | list, transform=None):
        if isinstance(root, (list, tuple)):          # the files themselves
            files, root = [Path(f) for f in root], f"the {len(root)} files given"
        else:
            files = sorted(root / e.name for e in os.scandir(root)
                           if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS))
        self.files = [f for f in files if not is_value_map(f)]
        if not self.files:
            what = " (only 16-bit depth or label maps)" if files else ""
            raise DataError(f"no image files in {root}{what} (extensions "
                            f"{', '.join(IMG_EXTENSIONS)})")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        try:
            image = load_rgb(str(self.files[index]))
        except (OSError, ValueError, SyntaxError) as e:
            logger.warning("skipping unreadable image %s: %s", self.files[index], e)
            return None
        return (self.transform(image) if self.transform else image), 0


# Sub-folders that hold a data set's annotations: a folder with images/ and one of them is a
# data set's root, not a folder of calibration photos (a class may be called "masks")
ANNOTATION_FOLDERS = {"masks", "labels", "annotations", "depth", "semantic_segmentation",
                      "panoptic_segmentation", "instance_segmentation", "object_detection"}


def calibration_batches(calib_dir, preprocess: dict | None, num_images: int = 128,
                        batch_size: int = 1, seed: int = 0,
                        prepare: Callable[[list[torch.Tensor]], torch.Tensor] | None = None
                        ) -> list[torch.Tensor]:
    """``num_images`` images of ``calib_dir`` (its ``train/`` if it has one; class folders
    or a flat folder of images, e.g. an RGB + depth folder, whose depth maps are left out;
    or a list of image files),
    drawn at random (``seed``), with the eval transform of ``preprocess``; a list of
    (batch_size, C, H, W) tensors. ``prepare`` replaces the eval transform: it takes a list
    of float 3 x H x W images in [0, 1], each at its own size, and returns their batch (a
    detector's resize and normalisation). Unreadable images are skipped; a folder with fewer
    readable images gives them all, with a warning, and one with none raises DataError."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be an int >= 1, not {num_images!r}")
    listed = isinstance(calib_dir, (list, tuple))
    root = calib_dir if listed else Path(calib_dir)
    if not listed:
        root = root / "train" if (root / "train").is_dir() else root
    where = f"the {len(root)} image files given" if listed else root
    if not listed and not root.is_dir():
        raise DataError(f"calibration folder {root} "
                        f"{'is a file' if root.is_file() else 'does not exist'}: give a folder "
                        f"of images (class folders or loose images)")
    folders = set(class_folders(root)) if not listed else set()
    found = folders & ANNOTATION_FOLDERS if "images" in folders else set()
    if found:
        raise DataError(f"calibration folder {root} has {', '.join(sorted(found))}/ beside its "
                        f"images, a data set's annotations (masks or labels are not photos to "
                        f"calibrate on): give the data set in the layout the model's task "
                        f"reads (a segmentation folder, a YOLO data YAML), or the folder of "
                        f"its photos (e.g. {root / 'images'})")
    transform = (eval_transform(preprocess) if prepare is None else
                 v2.Compose([*to_rgb(), v2.ToDtype(torch.float32, scale=True)]))
    dataset = (ImageFolderDataset(root, transform=transform)
               if not listed and class_folders(root) else LooseImages(root, transform))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    images, unreadable = [], 0
    for i in order.tolist():
        item = dataset[i]
        if item is None:
            unreadable += 1
        else:
            images.append(item[0])
        if len(images) == num_images:
            break
    if not images:
        raise DataError(f"no readable images in {where} ({unreadable} unreadable skipped); "
                        f"calibrate on a folder of real images")
    if len(images) < num_images:
        logger.warning("calibrating on %d images of %s, fewer than the %d asked for%s",
                       len(images), where, num_images,
                       f" ({unreadable} unreadable skipped)" if unreadable else "")
    batch = torch.stack if prepare is None else prepare
    return [batch(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]


__all__ = ["LooseImages", "calibration_batches", "is_value_map"]
