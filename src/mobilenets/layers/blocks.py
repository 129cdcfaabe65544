"""The building blocks of the family, built from a resolved :class:`BlockSpec`.

- :class:`DepthwiseSeparable`: MobileNetV1 Fig. 3 (3x3 depthwise -> BN -> ReLU, 1x1 pointwise ->
  BN -> ReLU); also FD-MobileNet's block.
- :class:`InvertedResidual`: MobileNetV2 Table 1 (1x1 expand -> kxk depthwise -> linear 1x1
  project, shortcut when stride 1 and channels match), with the optional squeeze-excite of
  MobileNetV3's bneck (after the depthwise) and EfficientNet's MBConv, and stochastic depth.
- :class:`FusedMBConv`: EfficientNetV2 Table 4's Fused-MBConv (kxk conv expanding -> BN -> act,
  then linear 1x1 project -> BN; with expansion 1 the kxk conv maps to the output itself and
  there is no projection); shortcut and stochastic depth as the inverted residual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .conv_norm_act import ConvNormAct, NormConfig
from .drop_path import DropPath
from .squeeze_excite import SqueezeExcite


@dataclass(frozen=True)
class BlockSpec:
    """One block with every width resolved to a channel count.

    ``kind`` is ``"ds"`` (depthwise separable), ``"ir"`` (inverted residual) or ``"fused"``
    (fused inverted residual); ``mid`` is the expanded width (equal to ``in_ch`` when there is
    no expansion conv, or for ``"fused"`` no projection); ``se`` is the squeeze width (0 for no
    squeeze-excite).
    """

    kind: str
    in_ch: int
    mid: int
    out: int
    kernel: int
    stride: int
    act: str
    se: int = 0
    se_act: str = "relu"
    se_gate: str = "hard_sigmoid"
    drop_path: float = 0.0

    @property
    def has_residual(self) -> bool:
        return self.kind in ("ir", "fused") and self.stride == 1 and self.in_ch == self.out


class DepthwiseSeparable(nn.Module):
    def __init__(self, spec: BlockSpec, norm: NormConfig, padding: str = "symmetric"):
        super().__init__()
        self.dw = ConvNormAct(spec.in_ch, spec.in_ch, spec.kernel, spec.stride, groups=spec.in_ch,
                              act=spec.act, norm=norm, padding=padding)
        self.pw = ConvNormAct(spec.in_ch, spec.out, 1, act=spec.act, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class InvertedResidual(nn.Module):
    def __init__(self, spec: BlockSpec, norm: NormConfig, padding: str = "symmetric"):
        super().__init__()
        self.has_residual = spec.has_residual
        self.expand = (ConvNormAct(spec.in_ch, spec.mid, 1, act=spec.act, norm=norm)
                       if spec.mid != spec.in_ch else nn.Identity())
        self.dw = ConvNormAct(spec.mid, spec.mid, spec.kernel, spec.stride, groups=spec.mid,
                              act=spec.act, norm=norm, padding=padding)
        self.se = (SqueezeExcite(spec.mid, spec.se, spec.se_act, spec.se_gate)
                   if spec.se else nn.Identity())
        self.project = ConvNormAct(spec.mid, spec.out, 1, act=None, norm=norm)
        self.drop_path = DropPath(spec.drop_path) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        if self.has_residual:
            y = x + self.drop_path(y)
        return y


class FusedMBConv(nn.Module):
    """``fused`` (kxk conv, stride s, to ``mid``) -> ``project`` (linear 1x1 to ``out``); with
    ``mid == in_ch`` (expansion 1) ``fused`` maps to ``out`` and ``project`` is an identity."""

    def __init__(self, spec: BlockSpec, norm: NormConfig, padding: str = "symmetric"):
        super().__init__()
        self.has_residual = spec.has_residual
        expands = spec.mid != spec.in_ch
        self.fused = ConvNormAct(spec.in_ch, spec.mid if expands else spec.out, spec.kernel,
                                 spec.stride, act=spec.act, norm=norm, padding=padding)
        self.project = (ConvNormAct(spec.mid, spec.out, 1, act=None, norm=norm) if expands
                        else nn.Identity())
        self.drop_path = DropPath(spec.drop_path) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.fused(x))
        if self.has_residual:
            y = x + self.drop_path(y)
        return y


BLOCKS: dict[str, type[nn.Module]] = {"ds": DepthwiseSeparable, "ir": InvertedResidual,
                                      "fused": FusedMBConv}


def make_block(spec: BlockSpec, norm: NormConfig, padding: str = "symmetric") -> nn.Module:
    return BLOCKS[spec.kind](spec, norm, padding)
