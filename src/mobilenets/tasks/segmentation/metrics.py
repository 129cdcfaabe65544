"""Segmentation metrics from a confusion matrix (torchvision's reference definitions).

``confusion[t, p]`` counts the pixels of true label t predicted as p; pixels whose target is
255 are left out. From it:

- IoU of class c = TP / (TP + FP + FN) = ``C[c, c] / (row c + column c - C[c, c])``;
- **mIoU** = the mean IoU over the classes *present*: those with a pixel in the target or
  the prediction (row + column > 0). A class absent from both has no defined IoU (0 / 0):
  it is left out of the mean and reported as None. A class only predicted counts with IoU 0.
  (torchvision's reference averages over all classes and so gives NaN when one is absent;
  on a full validation set with every class present the two agree.)
- **pixel accuracy** = trace / total: the share of scored pixels labelled correctly.

Confusion matrices of several batches or processes add up (``dist.sum``), so the metrics of
a whole set come from summed matrices.
"""

from __future__ import annotations

import math

import torch

from .data import IGNORE


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE) -> torch.Tensor:
    """``num_classes`` x ``num_classes`` int64 counts (rows: target, columns: prediction) of
    the pixels whose target is not ``ignore_index``; ``pred`` and ``target`` hold labels and
    have the same shape."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} "
                         f"differ in shape; score label maps of the same size")
    valid = target != ignore_index
    t, p = target[valid].long(), pred[valid].long()
    if t.numel() and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"target labels must be in 0..{num_classes - 1} or {ignore_index}, "
                         f"found {t.min().item()}..{t.max().item()}")
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).view(
        num_classes, num_classes)


def scores(confusion: torch.Tensor, classes: list[str] | None = None) -> dict:
    """``miou``, ``pixel_acc`` and ``per_class_iou`` (a list, or a dict by name when
    ``classes`` is given; None for a class absent from target and prediction) of a
    confusion matrix; NaN metrics when it counts no pixel."""
    c = confusion.double().cpu()
    tp = c.diag()
    union = c.sum(0) + c.sum(1) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    total = c.sum().item()
    per_class = [v if ok else None for v, ok in zip(iou.tolist(), present.tolist())]
    if classes is not None:
        if len(classes) != len(per_class):
            raise ValueError(f"{len(classes)} class names for a {len(per_class)}-class "
                             f"confusion matrix")
        per_class = dict(zip(classes, per_class))
    return {"miou": iou[present].mean().item() if present.any() else math.nan,
            "pixel_acc": tp.sum().item() / total if total else math.nan,
            "per_class_iou": per_class}


__all__ = ["confusion_matrix", "scores"]
