"""Segmentation losses: pixel-wise cross-entropy that skips the ignore value, plus the
auxiliary head's loss weighted 0.5 (torchvision's reference ``criterion``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import IGNORE

AUX_WEIGHT = 0.5


def main_output(outputs) -> torch.Tensor:
    """The logits of a segmentation model's output: ``outputs["out"]`` of torchvision's
    dict convention, or the tensor itself."""
    if isinstance(outputs, dict):
        if "out" not in outputs:
            raise ValueError(f"the model's output dict has {sorted(outputs)}, no 'out': a "
                             f"segmentation model returns {{'out': logits, 'aux': ...}}")
        return outputs["out"]
    return outputs


def cross_entropy_sum(logits: torch.Tensor, target: torch.Tensor,
                      ignore_index: int = IGNORE) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the per-pixel cross-entropy, number of pixels) over the pixels of ``target``
    (B x H x W) that are not ``ignore_index``; ``logits`` is B x C x H x W."""
    if logits.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"the model outputs {tuple(logits.shape[-2:])} logits for "
                         f"{tuple(target.shape[-2:])} masks: a segmentation model returns "
                         f"logits at its input's size")
    total = F.cross_entropy(logits.float(), target, ignore_index=ignore_index,
                            reduction="sum")
    return total, (target != ignore_index).sum()


def segmentation_loss(outputs, target: torch.Tensor, aux_weight: float = AUX_WEIGHT,
                      ignore_index: int = IGNORE) -> torch.Tensor:
    """Mean cross-entropy of ``out`` over the scored pixels, plus ``aux_weight`` x that of
    ``aux`` when the output dict has one. A batch without a scored pixel gives 0 (not the
    NaN of ``F.cross_entropy``'s mean), so a crop of padding only does not stop a run."""
    total, count = cross_entropy_sum(main_output(outputs), target, ignore_index)
    if isinstance(outputs, dict) and outputs.get("aux") is not None and aux_weight:
        total = total + aux_weight * cross_entropy_sum(outputs["aux"], target, ignore_index)[0]
    return total / count.clamp(min=1)


__all__ = ["AUX_WEIGHT", "cross_entropy_sum", "main_output", "segmentation_loss"]
