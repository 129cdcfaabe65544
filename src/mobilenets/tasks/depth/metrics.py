"""Depth metrics over valid pixels (docs/depth.md; definitions as in BTS's ``compute_errors``
and the Mobile AI 2021 challenge's si-RMSE).

With d the predicted and d* the true depth in metres over an image's n valid pixels:
AbsRel = mean |d - d*| / d*; SqRel = mean (d - d*)^2 / d*; RMSE = sqrt(mean (d - d*)^2);
RMSE log = sqrt(mean (ln d - ln d*)^2); log10 = mean |log10 d - log10 d*|; delta_k = share of
pixels with max(d / d*, d* / d) < 1.25^k; si-RMSE = sqrt(mean e^2 - (mean e)^2), e = ln d -
ln d* (no x100). Each is computed per image and then averaged over the images (BTS's
protocol; si-RMSE is scale-invariant only per image), so the state is a sum over images plus
an image count, which sums across DDP processes. Images without a valid pixel are skipped and
counted.

Predictions are clamped to ``[min_depth, max_depth]`` before scoring (as BTS does). Models of
relative inverse depth (``depth_kind == "inverse_relative"``, MiDaS-style) are first aligned
per image: the least-squares scale and shift that map the prediction onto the true inverse
depth over the valid pixels, then inverted (the aligned inverse depth clamped to
``[1 / max_depth, 1 / min_depth]``). Metric-depth models are scored raw.
"""

from __future__ import annotations

import math

import torch

from .losses import align_scale_shift, valid_mask

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3",
           "si_rmse")
DEPTH_KINDS = ("metric", "inverse_relative")


def scored_depth(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                 kind: str = "metric", min_depth: float = 1e-3,
                 max_depth: float = 10.0) -> torch.Tensor:
    """The metric depth that is scored for ``pred`` of depth kind ``kind``: raw depth clamped
    to [min_depth, max_depth], or relative inverse depth aligned per image to 1/target (scale
    and shift by least squares over ``mask``), clamped and inverted."""
    if kind == "metric":
        return pred.clamp(min_depth, max_depth)
    if kind != "inverse_relative":
        raise ValueError(f"depth_kind must be one of {', '.join(DEPTH_KINDS)}, not {kind!r}")
    disparity = torch.where(mask, 1.0 / torch.where(mask, target, 1.0), 0.0)
    s, t = align_scale_shift(pred, disparity, mask)
    shape = (-1,) + (1,) * (pred.dim() - 1)
    aligned = s.view(shape) * pred + t.view(shape)
    return 1.0 / aligned.clamp(1.0 / max_depth, 1.0 / min_depth)


def image_metrics(pred: torch.Tensor, target: torch.Tensor,
                  mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image metrics (B x len(METRICS), float64, in METRICS' order) of positive depth
    ``pred`` against ``target`` over ``mask``, and each image's valid pixel count (B,)."""
    d = pred.double().reshape(pred.shape[0], -1)
    g = target.double().reshape(target.shape[0], -1)
    m = mask.reshape(mask.shape[0], -1)
    d, g = torch.where(m, d, 1.0), torch.where(m, g, 1.0)      # neutral off the mask
    n = m.sum(1)
    safe_n = n.clamp(min=1).double()

    def mean(x):
        return torch.where(m, x, 0.0).sum(1) / safe_n

    diff = d - g
    e = d.log() - g.log()
    ratio = torch.maximum(d / g, g / d)
    sq_e = mean(e * e)
    values = [mean(diff.abs() / g), mean(diff * diff / g), mean(diff * diff).sqrt(),
              sq_e.sqrt(), mean((d.log10() - g.log10()).abs()),
              *(mean((ratio < 1.25 ** k).double()) for k in (1, 2, 3)),
              (sq_e - mean(e).square()).clamp(min=0).sqrt()]
    return torch.stack(values, 1), n


class DepthMetrics:
    """Accumulates the per-image metrics of batches; :meth:`result` averages them over
    images. ``sums`` (a float64 tensor: per-metric sums, images scored, images skipped) is
    what DDP processes add up (``dist.sum``)."""

    def __init__(self, kind: str = "metric", min_depth: float = 1e-3, max_depth: float = 10.0):
        if kind not in DEPTH_KINDS:
            raise ValueError(f"depth_kind must be one of {', '.join(DEPTH_KINDS)}, not {kind!r}")
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, not {min_depth}, {max_depth}")
        self.kind, self.min_depth, self.max_depth = kind, min_depth, max_depth
        self.sums = torch.zeros(len(METRICS) + 2, dtype=torch.float64)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` as the model outputs it, ``target`` depth in metres (0 =
        none), both B x 1 x H x W."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and ground truth "
                             f"{tuple(target.shape)} differ in shape; the model must output "
                             f"B x 1 x H x W at the input's size")
        pred, target = pred.detach().double(), target.detach().double()
        mask = valid_mask(target, self.min_depth, self.max_depth)
        depth = scored_depth(pred, target, mask, self.kind, self.min_depth, self.max_depth)
        values, n = image_metrics(depth, target, mask)
        scored = n > 0
        self.sums[:len(METRICS)] += values[scored].sum(0).cpu()
        self.sums[-2] += scored.sum().item()
        self.sums[-1] += (~scored).sum().item()

    def result(self, sums: torch.Tensor | None = None) -> dict:
        """Mean metrics over the scored images (NaN when none), plus ``images`` and
        ``skipped_images``; ``sums``: totals from several processes instead of this one's."""
        sums = self.sums if sums is None else sums
        images = int(sums[-2].item())
        out = {name: (sums[i].item() / images if images else math.nan)
               for i, name in enumerate(METRICS)}
        out["images"], out["skipped_images"] = images, int(sums[-1].item())
        return out

    @property
    def scoring(self) -> str:
        """How predictions were scored, for reports and the eval JSON."""
        return ("inverse depth aligned per image (least-squares scale and shift), inverted"
                if self.kind == "inverse_relative" else "raw metric depth")


__all__ = ["DEPTH_KINDS", "METRICS", "DepthMetrics", "image_metrics", "scored_depth"]
