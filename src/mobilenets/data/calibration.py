"""Calibration images: a seeded random draw from an image folder, eval-transformed, used to
calibrate int8 quantization and to re-estimate BatchNorm statistics after pruning."""

from __future__ import annotations

from pathlib import Path

import torch

from .folder import ImageFolderDataset
from .transforms import eval_transform


def calibration_batches(calib_dir, preprocess: dict, num_images: int = 128,
                        batch_size: int = 1, seed: int = 0) -> list[torch.Tensor]:
    """``num_images`` images of ``calib_dir`` (its ``train/`` if it has one), drawn at random
    (``seed``) over all classes, with the eval transform of ``preprocess``; a list of
    (batch_size, C, H, W) tensors. Unreadable images are skipped."""
    root = Path(calib_dir)
    root = root / "train" if (root / "train").is_dir() else root
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, not {num_images}")
    dataset = ImageFolderDataset(root, transform=eval_transform(preprocess))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    images = []
    for i in order.tolist():
        item = dataset[i]
        if item is not None:
            images.append(item[0])
        if len(images) == num_images:
            break
    return [torch.stack(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]


__all__ = ["calibration_batches"]
