"""Scoring a depth model on a data set, and the predict-the-mean baseline."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from ...training.engine import eval_loader
from ...training.sampling import SeededView
from .data import DepthPairs, collate_depth, depth_eval_transform
from .losses import valid_mask
from .metrics import DepthMetrics


def model_depth_kind(model) -> str:
    """``model.depth_kind`` ("metric" or "inverse_relative"); "metric" when it has none."""
    return getattr(model, "depth_kind", "metric")


def depth_output(outputs) -> torch.Tensor:
    """The depth map of a model's outputs: the tensor itself, or ``outputs["out"]``."""
    if isinstance(outputs, dict):
        outputs = outputs["out"]
    return outputs


@torch.no_grad()
def evaluate_model(model, data, loss: Callable | None = None, batch_size: int = 16,
                   workers: int = 0, device: torch.device | str = "cpu", dist=None,
                   set_eval: bool = True, kind: str | None = None, min_depth: float = 1e-3,
                   max_depth: float = 10.0) -> dict:
    """Depth metrics of ``model`` on ``data``: a dataset of transformed items (see
    :func:`~.data.depth_eval_transform`) or an iterable of batches ``(images, depth,
    n_unreadable)``. ``loss(outputs, depth)``: also report its mean per image. ``kind``:
    the depth kind (default the model's ``depth_kind``), which decides the scoring (see
    :mod:`.metrics`). Under ``dist`` each process scores its share and the sums are added.

    Returns every metric of :data:`~.metrics.METRICS`, ``loss`` (when given), ``depth_kind``,
    ``scoring`` (how predictions were scored), ``images``, ``skipped_images`` (no valid
    pixel) and ``bad_images`` (unreadable)."""
    kind = kind or model_depth_kind(model)
    meter = DepthMetrics(kind, min_depth, max_depth)
    was_training = getattr(model, "training", False)
    if set_eval and hasattr(model, "eval"):
        model.eval()
    loader = (eval_loader(data, collate_depth, batch_size, workers, device, dist)
              if isinstance(data, Dataset) else data)
    extra = torch.zeros(3, dtype=torch.float64)            # loss sum, items, unreadable
    for images, depth, n_bad in loader:
        extra[2] += n_bad
        if len(depth) == 0:
            continue
        depth = depth.to(device, non_blocking=True)
        outputs = model(images.to(device, non_blocking=True))
        pred = depth_output(outputs).float()
        if loss is not None:
            extra[0] += loss(outputs, depth).item() * len(depth)
        extra[1] += len(depth)
        meter.update(pred, depth)
    if set_eval and hasattr(model, "train"):
        model.train(was_training)
    sums = meter.sums
    if dist is not None:
        sums, extra = dist.sum(sums), dist.sum(extra)
    result = meter.result(sums)
    if loss is not None:
        result["loss"] = extra[0].item() / max(extra[1].item(), 1)
    result.update(depth_kind=kind, scoring=meter.scoring, bad_images=int(extra[2].item()))
    return result


def mean_depth(pairs: DepthPairs, min_depth: float = 1e-3, max_depth: float = 10.0) -> float:
    """The mean of every valid ground-truth depth pixel of ``pairs`` (metres, pooled over
    pixels, at the files' own resolution)."""
    total, count = 0.0, 0
    for i in range(len(pairs)):
        item = pairs[i]
        if item is None:
            continue
        depth = item[0][1].as_subclass(torch.Tensor).double()
        mask = valid_mask(depth, min_depth, max_depth)
        total += depth[mask].sum().item()
        count += int(mask.sum())
    if count == 0:
        raise ValueError("the training pairs have no valid depth pixel; check the depth scale "
                         "and the invalid codes")
    return total / count


class _Constant(torch.nn.Module):
    depth_kind = "metric"

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_full((x.shape[0], 1, *x.shape[-2:]), self.value)


def mean_depth_baseline(train: DepthPairs, val: DepthPairs, resolution: int | None = None,
                        min_depth: float = 1e-3, max_depth: float = 10.0,
                        batch_size: int = 16) -> dict:
    """The trivial baseline: predict the training set's mean depth (:func:`mean_depth`) at
    every pixel of every validation image, scored raw like a metric-depth model, at
    ``resolution`` x ``resolution`` as the depth task evaluates (None: each file's own size;
    the ground truth is resized with nearest neighbours either way). Returns the metrics and
    ``mean_depth``."""
    value = mean_depth(train, min_depth, max_depth)
    if resolution is None:
        data = SeededView(val, lambda pair: pair, 0)
    else:
        data = SeededView(val, depth_eval_transform(resolution, {}), 0)
    result = evaluate_model(_Constant(value), data, batch_size=batch_size, min_depth=min_depth,
                            max_depth=max_depth)
    result["mean_depth"] = value
    return result


__all__ = ["depth_output", "evaluate_model", "mean_depth", "mean_depth_baseline",
           "model_depth_kind"]
