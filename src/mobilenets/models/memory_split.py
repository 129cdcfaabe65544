"""Memory-efficient inference of inverted residuals (MobileNetV2 §5.1).

An inverted residual F(x) = project(dw(expand(x))) is a sum over its expansion channels: the
expansion conv, its BatchNorm and activation, the depthwise conv and its BatchNorm and
activation all work channel by channel on the expanded tensor, and the projection is linear,
so splitting the ``mid`` expansion channels into ``t`` chunks gives

    F(x) = BN_project( sum over chunks c of  W_project[:, c] @ dw_c(expand_c(x)) )

and only one chunk's expanded tensor (``mid / t`` channels) exists at a time, instead of the
whole expansion: the peak memory of a block falls towards its input plus output as ``t``
grows, at the price of ``t`` smaller (less efficient) convolutions. The projection's
BatchNorm is per output channel and sees the summed projection, so it runs once after the sum.

Squeeze-excite (MobileNetV3, EfficientNet) scales every expansion channel by a gate computed
from the global average of *all* of them. A split block handles it in two passes: the first
runs each chunk up to the depthwise output and keeps only its pooled means (``mid`` numbers per
image), the gate is computed from the whole pooled vector as in the unsplit block, and the
second pass recomputes each chunk, scales it by its slice of the gate and projects it. The
expansion and depthwise are computed twice: memory bought with compute.

This is an inference-time transform: in eval mode the chunks' BatchNorms use their running
statistics (applied per chunk as the per-channel affine map they are), and the block equals
the unsplit one to float rounding. In training mode a split block runs whole (the same modules
and parameters), so a split model still trains, and saves and loads with the same state dict.
Only :class:`~mobilenets.layers.InvertedResidual` blocks are split (MobileNetV2, V3,
EfficientNet; EfficientNetV2's MBConv stages); other blocks run as before.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import InvertedResidual
from ..layers.squeeze_excite import SqueezeExcite


def chunk_bounds(channels: int, t: int) -> list[tuple[int, int]]:
    """``min(t, channels)`` contiguous ``(start, stop)`` ranges covering ``channels``, sizes
    differing by at most one (the first ``channels % t`` one larger, as ``torch.tensor_split``)."""
    n = min(t, channels)
    size, extra = divmod(channels, n)
    bounds, start = [], 0
    for i in range(n):
        stop = start + size + (i < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def _norm_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm (``nn.BatchNorm2d``, ``SyncBatchNorm`` or torchvision's
    ``FrozenBatchNorm2d``) as the per-channel ``scale``, ``shift`` it is."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _conv_chunk(x: torch.Tensor, cna: nn.Module, a: int, b: int, depthwise: bool) -> torch.Tensor:
    """Output channels ``a:b`` of a ``ConvNormAct`` (conv -> eval BN -> act); a depthwise conv
    takes the matching input channels ``x``. The BatchNorm is applied in place as its
    per-channel affine map, so a chunk holds one buffer. In a fused model
    (``mobilenets.fuse``) the BatchNorm is in the conv's bias, and identities are gone."""
    conv = cna.conv
    if hasattr(cna, "pad"):              # TF "SAME" padding of a strided conv
        x = cna.pad(x)
    bias = conv.bias[a:b] if conv.bias is not None else None
    y = F.conv2d(x, conv.weight[a:b], bias, conv.stride, conv.padding, conv.dilation,
                 b - a if depthwise else 1)
    if hasattr(cna, "bn"):
        scale, shift = _norm_affine(cna.bn)
        y = y.mul_(scale[a:b].reshape(-1, 1, 1)).add_(shift[a:b].reshape(-1, 1, 1))
    return _act(cna, y)


def _act(cna: nn.Module, y: torch.Tensor) -> torch.Tensor:
    act = getattr(cna, "act", None)
    return y if act is None else act(y)


class SplitInvertedResidual(nn.Module):
    """An :class:`~mobilenets.layers.InvertedResidual` evaluated in chunks of its expansion
    channels (see the module docstring). It holds the block's own modules under the same names,
    so its state dict is the block's."""

    def __init__(self, block: InvertedResidual, t: int):
        super().__init__()
        for name in ("expand", "dw", "project"):
            conv = getattr(block, name)
            if not isinstance(conv, nn.Identity) and type(getattr(conv, "conv", None)) \
                    is not nn.Conv2d:
                raise ValueError(f"cannot split an inverted residual whose {name} is not a "
                                 f"plain Conv2d (a low-rank factorised one): memory_split "
                                 f"and low_rank do not combine; use one or the other")
        if not isinstance(block.se, (nn.Identity, SqueezeExcite)):
            raise ValueError(f"cannot split a block with squeeze-excite "
                             f"{type(block.se).__name__}; only SqueezeExcite is supported")
        self.has_residual = block.has_residual
        self.expand, self.dw, self.se = block.expand, block.dw, block.se
        self.project, self.drop_path = block.project, block.drop_path
        self.t = t
        self.whole = False                   # run_whole(): the unsplit path in eval mode too
        self.bounds = chunk_bounds(self.dw.conv.in_channels, t)
        self.train(block.training)          # a block of an eval-mode model runs split

    def extra_repr(self) -> str:
        return f"t={self.t}, chunks={len(self.bounds)}"

    def _hidden(self, x: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """Depthwise output of expansion channels ``a:b``."""
        h = (x[:, a:b] if isinstance(self.expand, nn.Identity)
             else _conv_chunk(x, self.expand, a, b, depthwise=False))
        return _conv_chunk(h, self.dw, a, b, depthwise=True)

    def _whole(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.dw(self.expand(x))))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        gate = None
        if isinstance(self.se, SqueezeExcite):      # first pass: the pooled expansion only
            pooled = torch.cat([self._hidden(x, a, b).mean((2, 3), keepdim=True)
                                for a, b in self.bounds], 1)
            se = self.se
            gate = se.gate(se.expand(se.act(se.reduce(pooled))))
        project = self.project
        w = project.conv.weight
        y = None
        for a, b in self.bounds:
            h = self._hidden(x, a, b)
            if gate is not None:
                h = h * gate[:, a:b]
            p = F.conv2d(h, w[:, a:b])
            y = p if y is None else y.add_(p)
        if hasattr(project, "bn"):          # once, on the summed projection
            y = project.bn(y)
        elif project.conv.bias is not None:  # fused: the BatchNorm is the bias
            y = y.add_(project.conv.bias.reshape(-1, 1, 1))
        return _act(project, y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._whole(x) if self.training or self.whole else self._split(x)
        if self.has_residual:
            y = x + self.drop_path(y)
        return y


def is_split(model: nn.Module) -> bool:
    """True when ``model`` has split inverted residuals (``memory_split``)."""
    return any(isinstance(m, SplitInvertedResidual) for m in model.modules())


@contextmanager
def run_whole(model: nn.Module):
    """Within the block, every split inverted residual of ``model`` runs whole (its modules
    called as the unsplit block calls them) in eval mode too: for code that watches modules
    with hooks (cost counting) or needs their BatchNorms called (statistics re-estimation)."""
    blocks = [m for m in model.modules() if isinstance(m, SplitInvertedResidual)]
    before = [b.whole for b in blocks]
    for b in blocks:
        b.whole = True
    try:
        yield blocks
    finally:
        for b, whole in zip(blocks, before):
            b.whole = whole


def split_inverted_residuals(model: nn.Module, t: int) -> nn.Module:
    """Replace, in place, every :class:`~mobilenets.layers.InvertedResidual` of ``model`` (a
    classifier, a ``features_only`` backbone or a head model on one) by a
    :class:`SplitInvertedResidual` of ``t`` chunks (a block with fewer than ``t`` expansion
    channels uses one chunk per channel); ``t=1`` gives the same computation in one chunk.
    Records ``memory_split=t`` in ``model.config`` when it is a classifier's or backbone's
    (``create_model(..., memory_split=t)`` rebuilds it). Returns ``model``.

    Raises ValueError for a ``t`` that is not a positive integer, for a model that is split
    already, and for one with no inverted residual (MobileNetV1, FD-MobileNet, MobileNetV4:
    its universal inverted bottlenecks are not split)."""
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ValueError(f"memory_split t must be an integer >= 1 (the number of chunks of "
                         f"each expansion), got {t!r}")
    if is_split(model):
        raise ValueError("this model's inverted residuals are split already; split a fresh "
                         "model (create_model(..., memory_split=t))")
    found = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is InvertedResidual:
                setattr(parent, name, SplitInvertedResidual(child, t))
                found += 1
    if not found:
        raise ValueError(f"{getattr(model, 'config', {}).get('name', type(model).__name__)} "
                         f"has no inverted residual blocks to split (memory_split applies to "
                         f"MobileNetV2, MobileNetV3 and EfficientNet models)")
    config = getattr(model, "config", None)
    if isinstance(config, dict) and "name" in config and "options" not in config:
        config["memory_split"] = t
    return model


__all__ = ["SplitInvertedResidual", "chunk_bounds", "is_split", "run_whole",
           "split_inverted_residuals"]
