"""Depth losses, each over valid pixels only.

Tensors are B x 1 x H x W (or B x H x W). ``target`` is depth in metres with 0 where there is
none; :func:`valid_mask` says which pixels count. A batch without a valid pixel gives a zero
loss that still depends on the prediction (so backward runs).

- :func:`masked_l1`: mean |d - d*| over the batch's valid pixels (FastDepth's training loss).
- :func:`silog_loss`: Eigen et al. 2014 (arXiv 1406.2283) eq. 4, per image, averaged over
  images: (1/n) sum e^2 - (lambda/n^2) (sum e)^2 with e = log d - log d*. lambda = 0.5 is the
  paper's training value (between the elementwise L2 at 0 and the fully scale-invariant error
  at 1); BTS and AdaBins use 0.85 inside a square root (times 10). Default here: 0.5.
- :func:`ssi_loss`: MiDaS (Ranftl et al., arXiv 1907.01341) eq. 4 + alpha eq. 11 for
  predictions of relative inverse depth: per image, the least-squares scale and shift that
  best map the prediction onto the ground truth's inverse depth (closed form, eq. 2-4), then
  1/(2M) sum of squared residuals plus alpha (0.5) times the gradient-matching term on the
  residual R at 4 scales (the map subsampled by 2^k), with sums over the batch divided by
  the batch's valid pixel count M (the MiDaS authors' published reference loss does this).
"""

from __future__ import annotations

import torch


def valid_mask(target: torch.Tensor, min_depth: float = 1e-3,
               max_depth: float | None = None) -> torch.Tensor:
    """Pixels with a finite ground-truth depth in ``(min_depth, max_depth]`` (no limit above
    when ``max_depth`` is None); invalid codes decode to 0 and never count."""
    mask = torch.isfinite(target) & (target > min_depth)
    if max_depth is not None:
        mask &= target <= max_depth
    return mask


def _flat(x: torch.Tensor) -> torch.Tensor:
    """B x ... -> B x N."""
    return x.reshape(x.shape[0], -1)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all valid pixels of the batch."""
    diff = torch.where(mask, (pred - target).abs(), 0.0)
    return diff.sum() / mask.sum().clamp(min=1)


def silog_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               lam: float = 0.5, min_depth: float = 1e-3) -> torch.Tensor:
    """Eigen et al.'s scale-invariant log loss per image (predictions below ``min_depth``
    are clamped to it before the log), averaged over the images that have valid pixels."""
    safe_target = torch.where(mask, target, 1.0)
    e = _flat(torch.where(mask, pred.clamp(min=min_depth).log() - safe_target.log(), 0.0))
    n = _flat(mask).sum(1)
    keep = n > 0
    if not keep.any():
        return pred.sum() * 0.0
    n, e = n[keep].to(e.dtype), e[keep]
    per_image = (e * e).sum(1) / n - lam * e.sum(1).square() / n.square()
    return per_image.mean()


def align_scale_shift(pred: torch.Tensor, target: torch.Tensor,
                      mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, ``(s, t)`` minimising sum over valid pixels of (s * pred + t - target)^2
    (closed form, in its centred form: s = cov(pred, target) / var(pred), t = mean(target) -
    s * mean(pred)). An image whose valid predictions are constant gets s = 0, t = the mean
    target; one without valid pixels s = t = 0. Returns two tensors of shape (B,)."""
    p, y, m = _flat(pred), _flat(target), _flat(mask).to(pred.dtype)
    n = m.sum(1)
    safe_n = n.clamp(min=1)
    p_mean = (m * p).sum(1) / safe_n
    y_mean = (m * y).sum(1) / safe_n
    pc, yc = (p - p_mean[:, None]) * m, (y - y_mean[:, None]) * m
    var = (pc * pc).sum(1)
    cov = (pc * yc).sum(1)
    # constant predictions: var is rounding noise relative to the values' magnitude
    tiny = var <= 1e-12 * ((m * p * p).sum(1) + torch.finfo(p.dtype).tiny)
    s = torch.where(tiny, 0.0, cov / torch.where(tiny, 1.0, var))
    t = torch.where(n > 0, y_mean - s * p_mean, 0.0)
    return s, t


def _gradient_matching(residual: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of |d/dx R| + |d/dy R| over pixel pairs that are both valid (B x H x W inputs)."""
    r = residual * mask
    mx = mask[:, :, 1:] & mask[:, :, :-1]
    my = mask[:, 1:, :] & mask[:, :-1, :]
    gx = torch.where(mx, (r[:, :, 1:] - r[:, :, :-1]).abs(), 0.0)
    gy = torch.where(my, (r[:, 1:, :] - r[:, :-1, :]).abs(), 0.0)
    return gx.sum() + gy.sum()


def ssi_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, alpha: float = 0.5,
             scales: int = 4) -> torch.Tensor:
    """MiDaS's scale-and-shift-invariant loss with gradient matching, for ``pred`` = relative
    inverse depth and ``target`` = depth in metres (its inverse is the disparity the
    prediction is aligned to). See the module docstring for the formula."""
    pred, target, mask = (x.reshape(x.shape[0], *x.shape[-2:]) for x in (pred, target, mask))
    disparity = torch.where(mask, 1.0 / torch.where(mask, target, 1.0), 0.0).to(pred.dtype)
    s, t = align_scale_shift(pred, disparity, mask)
    residual = s[:, None, None] * pred + t[:, None, None] - disparity
    count = mask.sum()
    if count == 0:
        return pred.sum() * 0.0
    data = torch.where(mask, residual.square(), 0.0).sum() / (2 * count)
    if alpha <= 0:
        return data
    reg = residual.new_zeros(())
    for k in range(scales):
        step = 2 ** k
        m = mask[:, ::step, ::step]
        if m.any():
            reg = reg + _gradient_matching(residual[:, ::step, ::step], m) / m.sum()
    return data + alpha * reg


LOSSES = ("l1", "silog", "ssi")

__all__ = ["LOSSES", "align_scale_shift", "masked_l1", "silog_loss", "ssi_loss", "valid_mask"]
