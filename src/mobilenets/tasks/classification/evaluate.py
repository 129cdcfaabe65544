"""Classification metrics: loss, top-1, top-5, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ...data import ImageFolderDataset, at_resolution, collate_skip_bad, eval_transform
from ...data.shards import is_shard_source, open_shards, val_shard_loader
from ...data.transforms import check_rgb_model
from ...training.engine import eval_loader
from ...training.sampling import SeededView


@torch.no_grad()
def evaluate_model(model, dataset, batch_size: int = 64, workers: int = 0,
                   device: torch.device | str = "cpu", num_classes: int | None = None,
                   dist=None, set_eval: bool = True) -> dict:
    """Metrics of ``model`` on ``dataset`` (items (image tensor, label), or None if unreadable;
    or an iterable of batches (images, labels, n_unreadable), such as a loader from
    :func:`~mobilenets.training.engine.eval_loader`).

    ``dist`` (a :class:`~mobilenets.training.distributed.Dist`): each process evaluates every
    world-th image and the counts are summed, so every process gets the full-set metrics."""
    was_training = model.training
    if set_eval:           # False: the caller has set the mode (the engine, via its task)
        model.eval()
    loader = (eval_loader(dataset, collate_skip_bad, batch_size, workers, device, dist)
              if isinstance(dataset, Dataset) else dataset)
    n = num_classes or model.num_classes
    confusion = torch.zeros(n, n, dtype=torch.long)
    sums = torch.zeros(4, dtype=torch.float64)         # loss, top-5 hits, count, unreadable
    for x, y, n_bad in loader:
        sums[3] += n_bad
        if len(y) == 0:
            continue
        logits = model(x.to(device, non_blocking=True)).float().cpu()
        sums[0] += F.cross_entropy(logits, y, reduction="sum").item()
        if n > 5:
            sums[1] += (logits.topk(5, 1).indices == y[:, None]).any(1).sum().item()
        sums[2] += len(y)
        confusion += torch.bincount(y * n + logits.argmax(1), minlength=n * n).view(n, n)
    if set_eval:
        model.train(was_training)
    if dist is not None:
        confusion, sums = dist.sum(confusion), dist.sum(sums)
    loss_sum, top5, count, bad = sums.tolist()
    count = int(count)
    seen = confusion.sum(1)
    # a class with no images in the data has no accuracy (None), not 0%
    per_class = [None if n == 0 else a for a, n in zip(
        (confusion.diag().float() / seen.clamp(min=1)).tolist(), seen.tolist())]
    # with 5 classes or fewer every image is in the top 5: no top-5 (None), not 100%
    return {"loss": loss_sum / max(count, 1), "top1": confusion.diag().sum().item() / max(count, 1),
            "top5": top5 / max(count, 1) if n > 5 else None, "per_class": per_class,
            "confusion": confusion.tolist(), "count": count, "bad_images": int(bad)}


def evaluate(model, data, resolution: int | None = None, batch_size: int = 64,
             workers: int = 0) -> dict:
    """Evaluate ``model`` (a model, or an exported file opened with
    ``mobilenets.open_model``; ``mobilenets.evaluate`` also takes its path) on the image
    folder ``data`` (its ``val/`` if it has one) with the model's eval preprocessing. Classes
    are matched by name when the model knows its class names. Returns top1, top5, loss,
    per-class accuracy (by name), confusion, counts."""
    check_rgb_model(model.config.get("in_chans", 3), "evaluate()")
    fixed = getattr(model, "fixed_resolution", None)             # an ONNX file's input size
    if resolution and fixed and resolution != fixed:
        raise ValueError(f"{model.path} takes {fixed} px inputs, not {resolution}; evaluate it "
                         f"at its own size (no resolution), or export the model again at "
                         f"{resolution} px")
    names = model.config.get("class_names")
    pre = at_resolution(model.preprocess, resolution) if resolution else dict(model.preprocess)
    if is_shard_source(data):
        return _evaluate_shards(model, data, names, pre, batch_size, workers)
    root = Path(data)
    root = root / "val" if (root / "val").is_dir() else root
    dataset = ImageFolderDataset(root, classes=names)
    if not names and model.num_classes != len(dataset.classes):
        raise ValueError(f"the model predicts {model.num_classes} classes and has no class "
                         f"names, but {root} has {len(dataset.classes)} class folders; evaluate "
                         f"a model trained on these classes (e.g. the best/ folder of "
                         f"mobilenets train)")
    result = evaluate_model(model, SeededView(dataset, eval_transform(pre), 0), batch_size,
                            workers)
    classes = list(names or dataset.classes)
    result["classes"] = classes
    result["per_class"] = dict(zip(classes, result["per_class"]))
    return result


def _evaluate_shards(model, data, names, pre: dict, batch_size: int, workers: int) -> dict:
    """:func:`evaluate` on the validation shards of the shard source ``data``."""
    index = open_shards(data)
    loader = val_shard_loader(index, batch_size, workers, transform=eval_transform(pre))
    classes = list(index.classes)
    if names and list(names) != classes:
        raise ValueError(f"the model was trained on the classes {list(names)[:6]}..., but the "
                         f"shards {data} hold {classes[:6]}...; evaluate it on shards or a "
                         f"folder of its own classes")
    if not names and model.num_classes != len(classes):
        raise ValueError(f"the model predicts {model.num_classes} classes and has no class "
                         f"names, but the shards {data} hold {len(classes)} classes; evaluate "
                         f"a model trained on these classes")
    result = evaluate_model(model, loader, num_classes=len(classes))
    result["classes"] = classes
    result["per_class"] = dict(zip(classes, result["per_class"]))
    return result
