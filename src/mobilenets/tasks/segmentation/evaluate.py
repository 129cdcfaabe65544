"""Scoring a segmentation model on a split: loss, mIoU, pixel accuracy, per-class IoU."""

from __future__ import annotations

from pathlib import Path

import torch

from ...data import DataError
from ...data.shards import is_shard_source, open_shards, val_shard_loader
from ...training.engine import eval_loader
from ...training.sampling import SeededView
from .data import (MaskPairs, collate_masks, detect_layout, find_split,
                   segmentation_eval_transform, shard_decoder)
from .losses import AUX_WEIGHT, cross_entropy_sum, main_output
from .metrics import confusion_matrix, scores

DEFAULT_PREPROCESS = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                      "interpolation": "bilinear"}
"""Eval preprocessing for a model without its own (torchvision's segmentation models)."""


@torch.no_grad()
def evaluate_model(model, loader, num_classes: int, device: torch.device | str = "cpu",
                   dist=None, set_eval: bool = True, aux_weight: float = AUX_WEIGHT,
                   classes: list[str] | None = None) -> dict:
    """Metrics of ``model`` over ``loader``'s batches ``(images, masks, n_unreadable)``:
    ``loss`` (the training loss, per scored pixel of the whole set: cross-entropy of ``out``
    plus ``aux_weight`` x that of ``aux`` when present), ``miou``, ``pixel_acc``,
    ``per_class_iou`` (see :mod:`.metrics`), ``confusion`` (a tensor), ``pixels`` (scored),
    ``images`` and ``bad_images``. Under ``dist`` each process scores its share and the sums
    are added, so every process gets the full-set values."""
    was_training = getattr(model, "training", False)
    if set_eval:
        model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    sums = torch.zeros(4, dtype=torch.float64)      # loss sum, scored pixels, images, bad
    for x, y, n_bad in loader:
        sums[3] += n_bad
        if len(y) == 0:
            continue
        y = y.to(device, non_blocking=True)
        outputs = model(x.to(device, non_blocking=True))
        logits = main_output(outputs)
        total, count = cross_entropy_sum(logits, y)
        if isinstance(outputs, dict) and outputs.get("aux") is not None and aux_weight:
            total = total + aux_weight * cross_entropy_sum(outputs["aux"], y)[0]
        sums[0] += total.item()
        sums[1] += count.item()
        sums[2] += len(y)
        confusion += confusion_matrix(logits.argmax(1), y, num_classes)
    if set_eval:
        model.train(was_training)
    confusion = confusion.cpu()
    if dist is not None:
        confusion, sums = dist.sum(confusion), dist.sum(sums)
    loss_sum, pixels, images, bad = sums.tolist()
    return {"loss": loss_sum / max(pixels, 1), **scores(confusion, classes),
            "confusion": confusion, "pixels": int(pixels), "images": int(images),
            "bad_images": int(bad)}


def evaluate(model, data, split: str = "val", resolution: int | None = None,
             batch_size: int = 16, workers: int = 0, label_set: str | None = None,
             unlabeled: str | None = None, device: torch.device | str = "cpu",
             whole: bool = False) -> dict:
    """Score ``model`` on split ``split`` of the data folder ``data`` (any layout of
    :mod:`.data`) at ``resolution`` (default: the model's preprocessing's) with the eval
    transform. The data's classes must be the model's (``config["class_names"]`` when it
    has them, else their number). Returns :func:`evaluate_model`'s values, ``per_class_iou``
    by class name, and ``classes``. ``whole``: every pair of a folder without split folders
    (else its ``split`` of the 80 / 20 split). ``label_set`` and ``unlabeled`` (COCO
    panoptic masks) default to those the model was trained with (its preprocessing records
    them)."""
    if is_shard_source(data):
        if split != "val":
            raise ValueError(f"split picks a folder of a data set; the shards {data} hold the "
                             f"splits they were written from, and evaluation reads their val "
                             f"shards: leave split out")
        return _evaluate_shards(model, data, resolution, batch_size, workers, label_set,
                                unlabeled, device)
    saved = getattr(model, "preprocess", None) or {}
    try:
        coco = detect_layout(Path(data))[0] == "coco"
    except DataError:
        coco = False                  # find_split says what is wrong with the folder
    if coco:                          # other layouts take neither
        label_set = label_set or saved.get("label_set")
        unlabeled = unlabeled or saved.get("unlabeled")
    files = find_split(data, split, label_set, unlabeled, whole)
    classes = files.classes
    _check_classes(model, classes, f"{data} split {split!r}")
    pre, resolution = _eval_preprocess(model, resolution)
    pairs = MaskPairs(files)
    pairs.check_first()
    dataset = SeededView(pairs, segmentation_eval_transform(resolution, pre), 0)
    loader = eval_loader(dataset, collate_masks, batch_size, workers, device)
    result = evaluate_model(model.to(device) if hasattr(model, "to") else model, loader,
                            len(classes), device, classes=classes)
    result["classes"] = classes
    result["skipped_without_mask"] = files.skipped
    return result


def _check_classes(model, classes: list[str], where: str) -> None:
    config = getattr(model, "config", None) or {}
    names = config.get("class_names")
    if names is not None and list(names) != classes:
        raise ValueError(f"the model was trained on the classes {list(names)[:6]}..., but "
                         f"{where} has {classes[:6]}...; score it on data with its classes "
                         f"(the same layout and label_set)")
    num = config.get("num_classes")
    if num is not None and num != len(classes):
        raise ValueError(f"the model predicts {num} classes but {where} has {len(classes)}")


def _eval_preprocess(model, resolution: int | None) -> tuple[dict, int]:
    pre = dict(DEFAULT_PREPROCESS, **(getattr(model, "preprocess", None) or {}))
    resolution = resolution or pre.get("resolution")
    if not resolution:
        raise ValueError("the model has no preprocess resolution: give resolution=")
    return pre, resolution


def _evaluate_shards(model, data, resolution: int | None, batch_size: int, workers: int,
                     label_set: str | None, unlabeled: str | None, device) -> dict:
    """:func:`evaluate` on the validation shards of the shard source ``data``: their masks
    were read (and COCO's remapped) when `mobilenets shard` wrote them."""
    if label_set is not None or unlabeled is not None:
        raise ValueError(f"label_set and unlabeled remap the masks of a data folder; the shards "
                         f"{data} hold the labels they were written with: leave them out")
    pre, resolution = _eval_preprocess(model, resolution)
    index = open_shards(data, task="segmentation")
    classes = list(index.classes)
    loader = val_shard_loader(index, batch_size, workers, decode=shard_decoder(index),
                              transform=segmentation_eval_transform(resolution, pre),
                              collate=collate_masks)
    _check_classes(model, classes, f"the shards {data}")
    result = evaluate_model(model.to(device) if hasattr(model, "to") else model, loader,
                            len(classes), device, classes=classes)
    result["classes"] = classes
    result["skipped_without_mask"] = 0
    return result


__all__ = ["DEFAULT_PREPROCESS", "evaluate", "evaluate_model"]
