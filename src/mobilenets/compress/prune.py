"""Structured channel pruning into a smaller dense model (no masks).

Channels are ranked by the magnitude of their BatchNorm scale |gamma| (network slimming, Liu et
al. 2017, arXiv 1708.06519) or by the L1 norm of their conv filter (Li et al. 2017, arXiv
1608.08710), and the lowest are cut out of every weight that touches them:

- :class:`InvertedResidual` with an expansion conv (MobileNetV2 Table 1): the hidden channels,
  ranked on the expansion conv / BN; they are sliced from the expansion conv's outputs and BN,
  the depthwise conv and BN, the squeeze-excite convs (reduce inputs, expand outputs; the
  squeeze width stays) and the projection conv's inputs. Block outputs stay (residuals).
- :class:`FusedMBConv` with a projection (EfficientNetV2 Fused-MBConv, expansion > 1): the
  hidden channels, ranked on the fused kxk conv / BN; sliced from its outputs and BN and the
  projection conv's inputs. Block outputs stay, and expansion-1 blocks are left whole.
- :class:`UniversalInvertedBottleneck` (MobileNetV4): the hidden channels as the inverted
  residual's (expansion conv / BN, the middle depthwise when the block has one, the projection
  inputs); the start depthwise works on the block input and stays whole, as do ``Conv`` rows
  in the body (MobileNetV4-Conv-S's first stages).
- :class:`DepthwiseSeparable` (MobileNetV1 Fig. 3): the pointwise outputs, ranked on the
  pointwise conv / BN; sliced from it, from the next block's depthwise conv, BN and pointwise
  inputs, or from the head / classifier inputs after the last block.

Kept counts are rounded to a multiple of 8 (vector width; see :func:`keep_count`). The pruned
model is a :class:`MobileNet` rebuilt from its plan with the new widths: its ``block_widths``
option (see ``models/widths.py``), so ``mobilenets.save`` / ``mobilenets.load`` round-trip it
like any model; ``model.config["pruned"]`` records how it was pruned.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models import MobileNet
from ..models.memory_split import is_split
from ..models.widths import BlockWidths, block_widths, with_block_widths

CRITERIA = ("bn", "l1")
DIVISOR = 8
MAX_RATIO = 0.95


def keep_count(n: int, ratio: float, divisor: int = DIVISOR) -> int:
    """Channels kept of ``n`` when pruning ``ratio``: ``n * (1 - ratio)`` rounded to the nearest
    multiple of ``divisor``, at least ``divisor`` and at most ``n`` (``n`` when ``ratio`` is 0;
    below ``divisor`` channels, plain rounding, at least 1)."""
    if not 0 <= ratio < 1:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    if ratio == 0:
        return n
    target = n * (1 - ratio)
    if n < divisor:
        return max(1, int(round(target)))
    return min(n, max(divisor, int(round(target / divisor)) * divisor))


def pruned_widths(model: MobileNet, ratio: float) -> BlockWidths:
    """``[in, mid, out]`` of every block (nested by row) after pruning ``ratio`` of the prunable
    channels. An expansion width that would equal the block input is moved by 8 (the builder
    drops the expansion conv when ``mid == in``)."""
    kinds = sorted({spec.kind for row in model.plan.rows for spec in row}
                   - {"ir", "ds", "fused", "uib", "cn"})
    if kinds:
        raise ValueError(f"pruning covers inverted residual, universal inverted bottleneck, "
                         f"fused, conv and depthwise separable blocks; "
                         f"{model.config.get('name', 'this model')} also has {', '.join(kinds)} "
                         f"blocks, which it does not prune")
    widths, prev = [], model.plan.stem.out
    for row in model.plan.rows:
        out_row = []
        for spec in row:
            if spec.kind == "cn":
                if prev != spec.in_ch:
                    raise ValueError("a conv row after a pruned block is not supported")
                out_row.append([spec.in_ch, spec.mid, spec.out])
                prev = spec.out
            elif spec.kind in ("ir", "fused", "uib"):
                if prev != spec.in_ch:
                    raise ValueError("an inverted residual after a pruned block is not supported")
                mid = spec.mid
                if spec.mid != spec.in_ch:
                    mid = keep_count(spec.mid, ratio)
                    if mid == spec.in_ch:
                        mid = next((m for m in (mid + DIVISOR, mid - DIVISOR) if
                                    1 <= m <= spec.mid and m != spec.in_ch), spec.mid)
                out_row.append([spec.in_ch, mid, spec.out])
                prev = spec.out
            else:
                out = keep_count(spec.out, ratio)
                out_row.append([prev, prev, out])
                prev = out
        widths.append(out_row)
    return widths


def rebuild(model: MobileNet, widths: BlockWidths) -> MobileNet:
    """A fresh (randomly initialised) :class:`MobileNet` like ``model`` with block widths
    ``widths`` (as :func:`pruned_widths` gives), recorded as its ``block_widths`` option."""
    new_plan = with_block_widths(model.plan, widths)
    config = dict(model.config, block_widths=block_widths(new_plan))
    return MobileNet(new_plan, model.num_classes, model.dropout.p, config, model.preprocess)


def _scores(block: nn.Module, criterion: str) -> torch.Tensor:
    layer = (block.expand if hasattr(block, "expand") else
             block.fused if hasattr(block, "fused") else block.pw)
    if criterion == "bn":
        return layer.bn.weight.detach().abs().float()
    return layer.conv.weight.detach().abs().float().sum((1, 2, 3))


def _keep(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, in channel order (ties keep the lower index)."""
    return torch.argsort(scores, descending=True, stable=True)[:k].sort().values


def _slices(model: MobileNet, widths, criterion: str) -> dict[str, dict[int, torch.Tensor]]:
    """{module name: {dim: kept indices}} for every tensor that pruning slices."""
    idx: dict[str, dict[int, torch.Tensor]] = {}
    pending = None                                  # kept outputs of the previous DS block
    for r, (row, wrow) in enumerate(zip(model.blocks, widths)):
        for i, (block, (_, mid, out)) in enumerate(zip(row, wrow)):
            p = f"blocks.{r}.{i}"
            if hasattr(block, "fused"):             # FusedMBConv
                if isinstance(block.project, nn.Identity):
                    continue
                k = _keep(_scores(block, criterion), mid)
                idx[f"{p}.fused.conv"] = {0: k}
                idx[f"{p}.fused.bn"] = {0: k}
                idx[f"{p}.project.conv"] = {1: k}
            elif hasattr(block, "expand"):          # InvertedResidual, UIB
                if isinstance(block.expand, nn.Identity):
                    continue
                k = _keep(_scores(block, criterion), mid)
                for name in ("expand.conv", "expand.bn", "dw.conv", "dw.bn", "se.expand"):
                    idx[f"{p}.{name}"] = {0: k}
                idx[f"{p}.se.reduce"] = {1: k}
                idx[f"{p}.project.conv"] = {1: k}
            elif not hasattr(block, "pw"):          # a Conv row: left whole
                continue
            else:                                   # DepthwiseSeparable
                if pending is not None:
                    idx[f"{p}.dw.conv"] = {0: pending}
                    idx[f"{p}.dw.bn"] = {0: pending}
                k = _keep(_scores(block, criterion), out)
                idx[f"{p}.pw.conv"] = {0: k, **({1: pending} if pending is not None else {})}
                idx[f"{p}.pw.bn"] = {0: k}
                pending = k
    if pending is not None:                         # last DS block feeds the head or classifier
        consumer = _consumer(model)
        if consumer:
            idx[consumer] = {1: pending}
    return idx


def _spatial(model: MobileNet) -> dict[str, int]:
    """Output positions (H*W, 1 for Linear) of every conv / linear layer at the model's
    resolution, batch 1."""
    hw, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(
                lambda mod, i, o, name=name: hw.__setitem__(name, o[0, 0].numel())))
    res = model.config.get("resolution", 224)
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, model.plan.stem.in_ch, res, res, dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return hw


def count_macs(model: nn.Module, hw: dict[str, int]) -> int:
    """Multiply-adds as ``mobilenets.profile`` counts them, from layer shapes and the output
    positions ``hw`` of :func:`_spatial`."""
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total += hw[name] * m.out_channels * (m.in_channels // m.groups) * k
        elif isinstance(m, nn.Linear):
            total += m.out_features * m.in_features
    return total


def _consumer(model: MobileNet) -> str | None:
    """The layer that reads the last block's output channels."""
    return ("head.conv" if isinstance(model.head, nn.Sequential) else
            "pre_logits.0" if isinstance(model.pre_logits, nn.Sequential) else
            "classifier" if isinstance(model.classifier, nn.Linear) else None)


def _macs_for_widths(model: MobileNet, widths, hw: dict[str, int]) -> int:
    """:func:`count_macs` of ``rebuild(model, widths)`` without building it."""
    shapes = {n: [m.in_features, m.out_features, 1, 1] if isinstance(m, nn.Linear) else
              [m.in_channels, m.out_channels, m.groups, m.kernel_size[0] * m.kernel_size[1]]
              for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for r, wrow in enumerate(widths):
        for i, (cin, mid, out) in enumerate(wrow):
            p = f"blocks.{r}.{i}"
            if f"{p}.fused.conv" in shapes:
                projects = f"{p}.project.conv" in shapes
                shapes[f"{p}.fused.conv"][:2] = cin, mid if projects else out
                if projects:
                    shapes[f"{p}.project.conv"][:2] = mid, out
            elif f"{p}.project.conv" in shapes:
                if f"{p}.expand.conv" in shapes:
                    shapes[f"{p}.expand.conv"][:2] = cin, mid
                if f"{p}.dw.conv" in shapes:
                    shapes[f"{p}.dw.conv"][:3] = mid, mid, mid
                if f"{p}.se.reduce" in shapes:
                    shapes[f"{p}.se.reduce"][0] = mid
                    shapes[f"{p}.se.expand"][1] = mid
                shapes[f"{p}.project.conv"][:2] = mid, out
            elif f"{p}.pw.conv" in shapes:
                shapes[f"{p}.dw.conv"][:3] = cin, cin, cin
                shapes[f"{p}.pw.conv"][:2] = cin, out
    consumer = _consumer(model)
    if consumer:
        shapes[consumer][0] = widths[-1][-1][2]
    return sum(hw[n] * o * (i // g) * k for n, (i, o, g, k) in shapes.items())


def _ratio_for_macs(model: MobileNet, macs_ratio: float, hw: dict[str, int], base: int) -> float:
    """Bisection on the per-layer ratio for the removed MACs share closest to ``macs_ratio``."""
    def removed(r: float) -> float:
        return 1 - _macs_for_widths(model, pruned_widths(model, r), hw) / base

    most = removed(MAX_RATIO)
    if most < macs_ratio:
        raise ValueError(f"macs_ratio={macs_ratio} cannot be reached: pruning at most "
                         f"{MAX_RATIO:.0%} of the prunable channels removes {most:.1%} of MACs")
    lo, hi = 0.0, MAX_RATIO
    best = (abs(most - macs_ratio), MAX_RATIO)
    for _ in range(30):
        mid = (lo + hi) / 2
        share = removed(mid)
        best = min(best, (abs(share - macs_ratio), mid))
        lo, hi = (mid, hi) if share < macs_ratio else (lo, mid)
    return best[1]


def prune(model: MobileNet, ratio: float | None = None, macs_ratio: float | None = None,
          criterion: str = "bn") -> MobileNet:
    """A smaller dense copy of ``model`` with ``ratio`` of the prunable channels of every layer
    removed, or, with ``macs_ratio``, the per-layer ratio that removes that share of the total
    MACs (bisection; the share is met to within the multiple-of-8 steps). ``criterion``: ``"bn"``
    (|gamma|) or ``"l1"`` (filter L1 norm). ``model`` is left unchanged."""
    if not isinstance(model, MobileNet):
        raise TypeError("prune() takes a MobileNet classifier (not a features_only backbone)")
    if model.config.get("low_rank"):
        raise ValueError("prune() takes a model whose 1x1 convolutions are whole; prune the "
                         "model first, then factorise the pruned one")
    if is_split(model):
        raise ValueError("prune a model without memory_split (an inference-time rewrite of "
                         "its blocks), then load the pruned one with memory_split=t")
    if (ratio is None) == (macs_ratio is None):
        raise ValueError("give exactly one of ratio and macs_ratio")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    if macs_ratio is not None and not 0 <= macs_ratio < 1:
        raise ValueError(f"macs_ratio must be in [0, 1), got {macs_ratio}")
    hw = _spatial(model)
    before = count_macs(model, hw)
    if macs_ratio is not None:
        ratio = _ratio_for_macs(model, macs_ratio, hw, before) if macs_ratio > 0 else 0.0
    widths = pruned_widths(model, ratio)
    p = next(model.parameters())
    new = rebuild(model, widths)
    idx = _slices(model, widths, criterion)
    old_state = model.state_dict()
    state = {}
    for key, ref in new.state_dict().items():
        t = old_state[key]
        for dim, keep in idx.get(key.rsplit(".", 1)[0], {}).items():
            if t.ndim > dim:
                t = t.index_select(dim, keep.to(t.device))
        if t.shape != ref.shape:       # would be a bug in _slices
            raise RuntimeError(f"pruning {key}: {tuple(t.shape)} != {tuple(ref.shape)}")
        state[key] = t
    new.load_state_dict(state)
    new = new.to(device=p.device, dtype=p.dtype).train(model.training)
    new.config["pruned"] = {"criterion": criterion, "ratio": ratio, "macs_ratio": macs_ratio,
                            "macs_before": before, "macs_after": count_macs(new, hw)}
    return new


__all__ = ["CRITERIA", "count_macs", "keep_count", "prune", "pruned_widths", "rebuild"]
