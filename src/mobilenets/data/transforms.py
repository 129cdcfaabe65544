"""Eval and training transforms built from a model's ``preprocess`` dict, and MixUp/CutMix."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2


def rgb_image(image):
    """``image`` as RGB: a PIL image of any mode converted by PIL (alpha dropped, a palette
    with transparency through RGBA, as PIL advises), a 4-channel tensor (C x H x W) or array
    (H x W x C) without its alpha channel; anything else as it is (``v2.RGB`` then makes
    grayscale RGB). The PIL rule is ``folder.load_rgb``'s."""
    if isinstance(image, Image.Image):
        if image.mode == "RGB":
            return image
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        return image.convert("RGB")
    if isinstance(image, torch.Tensor) and image.ndim >= 3 and image.shape[-3] == 4:
        return image[..., :3, :, :]
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 4:
        return image[..., :3]                     # H x W x C, as v2.ToImage reads arrays
    return image


def to_rgb() -> list:
    """The first steps of every transform here: RGB (grayscale, palette, RGBA, CMYK in) as a
    tv_tensors image; torchvision's ``v2.RGB`` alone refuses 4 channels."""
    return [v2.Lambda(rgb_image), v2.ToImage(), v2.RGB()]


def at_resolution(preprocess: dict, resolution: int) -> dict:
    """``preprocess`` for another input size, keeping its crop ratio (resize = res / crop_pct)."""
    return dict(preprocess, resolution=resolution,
                resize=int(round(resolution / preprocess["crop_pct"])))


def check_rgb_model(in_chans: int, reader: str) -> None:
    """Raise ValueError if a model of ``in_chans`` input channels cannot take the 3-channel
    images :func:`eval_transform` makes (``reader``: who reads them, for the message)."""
    if in_chans != 3:
        raise ValueError(f"the model takes {in_chans}-channel inputs, but {reader} reads images "
                         f"as RGB (3 channels): use 3-channel models, or your own loader")


def eval_transform(preprocess: dict, normalize: bool = True) -> v2.Compose:
    """Eval preprocessing: RGB, resize the short side to ``resize``, centre-crop
    ``resolution``, scale to [0, 1], normalise with ``mean``/``std`` (without ``normalize``:
    the uint8 image after the crop)."""
    ops = [*to_rgb(),
           v2.Resize(preprocess["resize"], interpolation=InterpolationMode(
               preprocess["interpolation"]), antialias=True),
           v2.CenterCrop(preprocess["resolution"])]
    if normalize:
        ops += [v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(preprocess["mean"]), list(preprocess["std"]))]
    return v2.Compose(ops)


AUTO_AUGMENT = {"randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide,
                "autoaugment": v2.AutoAugment}


def train_transform(resolution: int, preprocess: dict, auto_augment: str | None = None,
                    color_jitter: float = 0.0, hflip: float = 0.5, random_erasing: float = 0.0,
                    scale: tuple[float, float] = (0.08, 1.0)) -> v2.Compose:
    """Training augmentation: RandomResizedCrop to ``resolution`` (``scale`` of the area, the
    model's interpolation), horizontal flip with probability ``hflip``, optional colour jitter
    (brightness, contrast, saturation) and ``auto_augment`` (None, 'randaugment',
    'trivialaugment' or 'autoaugment'), scale to [0, 1], normalise, optional RandomErasing
    with probability ``random_erasing``."""
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1 (fractions of the "
                         f"image area), not {tuple(scale)}")
    if auto_augment is not None and auto_augment not in AUTO_AUGMENT:
        raise ValueError(f"auto_augment must be None or one of {', '.join(AUTO_AUGMENT)}, "
                         f"not {auto_augment!r}")
    interpolation = InterpolationMode(preprocess["interpolation"])
    ops = [*to_rgb(),
           v2.RandomResizedCrop(resolution, scale=tuple(scale), interpolation=interpolation,
                                antialias=True)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if color_jitter > 0:
        ops.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    if auto_augment is not None:
        ops.append(AUTO_AUGMENT[auto_augment](interpolation=interpolation))
    ops += [v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(preprocess["mean"]), list(preprocess["std"]))]
    if random_erasing > 0:
        ops.append(v2.RandomErasing(random_erasing))
    return v2.Compose(ops)


def mixup_cutmix(num_classes: int, mixup_alpha: float = 0.0,
                 cutmix_alpha: float = 0.0) -> v2.Transform | None:
    """Batch-level MixUp and/or CutMix (one picked at random per batch when both alphas are
    > 0), called as ``images, soft_targets = mix(images, labels)``; None when both are 0."""
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"mixup and cutmix alphas must be >= 0, not {mixup_alpha}, "
                         f"{cutmix_alpha}")
    mixes = []
    if mixup_alpha > 0:
        mixes.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        mixes.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)
