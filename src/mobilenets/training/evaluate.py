"""Evaluation: loss, top-1, top-5, per-class accuracy and the confusion matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from ..data import collate_skip_bad


def eval_loader(dataset, batch_size: int = 64, workers: int = 0,
                device: torch.device | str = "cpu", dist=None,
                persistent: bool = False) -> DataLoader:
    """The loader :func:`evaluate_model` reads: in order, this process's share of the images
    under ``dist``; ``persistent`` keeps its worker processes between passes (training's
    per-epoch validation)."""
    if dist is not None and dist.enabled:
        dataset = Subset(dataset, range(dist.rank, len(dataset), dist.world))
    # its own generator: a loader without one draws its workers' base seed from the global
    # RNG at every pass, so dropout in the next epoch would depend on the worker count
    return DataLoader(dataset, batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_skip_bad, persistent_workers=persistent and workers > 0,
                      pin_memory=torch.device(device).type == "cuda",
                      generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def evaluate_model(model, dataset, batch_size: int = 64, workers: int = 0,
                   device: torch.device | str = "cpu", num_classes: int | None = None,
                   dist=None) -> dict:
    """Metrics of ``model`` on ``dataset`` (items (image tensor, label), or None if unreadable;
    or a loader of such batches from :func:`eval_loader`).

    ``dist`` (a :class:`~mobilenets.training.distributed.Dist`): each process evaluates every
    world-th image and the counts are summed, so every process gets the full-set metrics."""
    was_training = model.training
    model.eval()
    loader = (dataset if isinstance(dataset, DataLoader)
              else eval_loader(dataset, batch_size, workers, device, dist))
    n = num_classes or model.num_classes
    confusion = torch.zeros(n, n, dtype=torch.long)
    sums = torch.zeros(4, dtype=torch.float64)         # loss, top-5 hits, count, unreadable
    for x, y, n_bad in loader:
        sums[3] += n_bad
        if len(y) == 0:
            continue
        logits = model(x.to(device, non_blocking=True)).float().cpu()
        sums[0] += F.cross_entropy(logits, y, reduction="sum").item()
        sums[1] += (logits.topk(min(5, n), 1).indices == y[:, None]).any(1).sum().item()
        sums[2] += len(y)
        confusion += torch.bincount(y * n + logits.argmax(1), minlength=n * n).view(n, n)
    model.train(was_training)
    if dist is not None:
        confusion, sums = dist.sum(confusion), dist.sum(sums)
    loss_sum, top5, count, bad = sums.tolist()
    count = int(count)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1)).tolist()
    return {"loss": loss_sum / max(count, 1), "top1": confusion.diag().sum().item() / max(count, 1),
            "top5": top5 / max(count, 1), "per_class": per_class,
            "confusion": confusion.tolist(), "count": count, "bad_images": int(bad)}


def _open(path):
    """The model at ``path``: an ONNX file (in onnxruntime) or a saved-model folder."""
    from ..weights import load
    if path.is_file() and path.suffix.lower() == ".onnx":
        from ..deploy import OnnxModel
        return OnnxModel(path)
    if path.is_dir():
        return load(path)
    raise ValueError(f"{path} is neither an .onnx file nor a saved-model folder")


def evaluate(model, data, resolution: int | None = None, batch_size: int = 64,
             workers: int = 0) -> dict:
    """Evaluate ``model`` (a model, an OnnxModel, or the path of an ``.onnx`` file or
    saved-model folder) on the image folder ``data`` (its ``val/`` if it has one) with the
    model's eval preprocessing. Classes are matched by name when the model knows its class
    names. Returns top1, top5, loss, per-class accuracy (by name), confusion, counts."""
    from pathlib import Path

    from ..data import ImageFolderDataset, at_resolution, eval_transform
    from ..data.transforms import check_rgb_model
    from .sampling import SeededView
    if isinstance(model, (str, Path)):          # an .onnx file or a saved-model folder
        model = _open(Path(model))
    check_rgb_model(model.config.get("in_chans", 3), "evaluate()")
    root = Path(data)
    root = root / "val" if (root / "val").is_dir() else root
    fixed = getattr(model, "fixed_resolution", None)             # an ONNX file's input size
    if resolution and fixed and resolution != fixed:
        raise ValueError(f"{model.path} takes {fixed} px inputs, not {resolution}; evaluate it "
                         f"at its own size (no resolution), or export the model again at "
                         f"{resolution} px")
    names = model.config.get("class_names")
    dataset = ImageFolderDataset(root, classes=names)
    if not names and model.num_classes != len(dataset.classes):
        raise ValueError(f"the model predicts {model.num_classes} classes and has no class "
                         f"names, but {root} has {len(dataset.classes)} class folders; evaluate "
                         f"a model trained on these classes (e.g. the best/ folder of "
                         f"mobilenets train)")
    pre = at_resolution(model.preprocess, resolution) if resolution else dict(model.preprocess)
    result = evaluate_model(model, SeededView(dataset, eval_transform(pre), 0), batch_size,
                            workers)
    classes = list(names or dataset.classes)
    result["classes"] = classes
    result["per_class"] = dict(zip(classes, result["per_class"]))
    return result
