"""Transforms built from a model's ``preprocess`` dict."""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2


def eval_transform(preprocess: dict) -> v2.Compose:
    """Eval preprocessing: RGB, resize the short side to ``resize``, centre-crop
    ``resolution``, scale to [0, 1], normalise with ``mean``/``std``."""
    return v2.Compose([
        v2.ToImage(),
        v2.RGB(),
        v2.Resize(preprocess["resize"], interpolation=InterpolationMode(
            preprocess["interpolation"]), antialias=True),
        v2.CenterCrop(preprocess["resolution"]),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(preprocess["mean"]), list(preprocess["std"])),
    ])
