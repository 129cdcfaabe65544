"""Data: image folders (the built-in sample included), robust loading and transforms
(torchvision.transforms.v2)."""

from .calibration import calibration_batches
from .folder import (SAMPLE_DIR, DataError, ImageFolderDataset, collate_skip_bad, load_rgb,
                     read_rgb, resolve_split)
from .transforms import at_resolution, eval_transform, mixup_cutmix, train_transform

__all__ = ["SAMPLE_DIR", "DataError", "ImageFolderDataset", "at_resolution",
           "calibration_batches", "collate_skip_bad", "eval_transform", "load_rgb",
           "mixup_cutmix", "read_rgb", "resolve_split", "train_transform"]
