"""Evaluation: loss, top-1, top-5, per-class accuracy and the confusion matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data import collate_skip_bad


@torch.no_grad()
def evaluate_model(model, dataset, batch_size: int = 64, workers: int = 0,
                   device: torch.device | str = "cpu", num_classes: int | None = None) -> dict:
    """Metrics of ``model`` on ``dataset`` (items (image tensor, label), or None if unreadable)."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_skip_bad)
    n = num_classes or model.num_classes
    confusion = torch.zeros(n, n, dtype=torch.long)
    loss_sum, top5, count, bad = 0.0, 0, 0, 0
    for x, y, n_bad in loader:
        bad += n_bad
        if len(y) == 0:
            continue
        logits = model(x.to(device)).float().cpu()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, n)
        top5 += (logits.topk(k, 1).indices == y[:, None]).any(1).sum().item()
        confusion += torch.bincount(y * n + logits.argmax(1), minlength=n * n).view(n, n)
        count += len(y)
    model.train(was_training)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1)).tolist()
    return {"loss": loss_sum / max(count, 1), "top1": confusion.diag().sum().item() / max(count, 1),
            "top5": top5 / max(count, 1), "per_class": per_class,
            "confusion": confusion.tolist(), "count": count, "bad_images": bad}


def evaluate(model, data, resolution: int | None = None, batch_size: int = 64,
             workers: int = 0) -> dict:
    """Evaluate ``model`` on the image folder ``data`` (its ``val/`` if it has one) with the
    model's eval preprocessing. Classes are matched by name when the model knows its class
    names. Returns top1, top5, loss, per-class accuracy (by name), confusion, counts."""
    from pathlib import Path

    from ..data import ImageFolderDataset, eval_transform
    from .sampling import SeededView
    root = Path(data)
    root = root / "val" if (root / "val").is_dir() else root
    names = model.config.get("class_names")
    dataset = ImageFolderDataset(root, classes=names)
    pre = dict(model.preprocess)
    if resolution:
        pre.update(resolution=resolution, resize=int(round(resolution / pre["crop_pct"])))
    result = evaluate_model(model, SeededView(dataset, eval_transform(pre), 0), batch_size,
                            workers)
    classes = list(names or dataset.classes)
    result["classes"] = classes
    result["per_class"] = dict(zip(classes, result["per_class"]))
    return result
