"""The building blocks of the family, built from a resolved :class:`BlockSpec`.

- :class:`DepthwiseSeparable`: MobileNetV1 Fig. 3 (3x3 depthwise -> BN -> ReLU, 1x1 pointwise ->
  BN -> ReLU); also FD-MobileNet's block.
- :class:`InvertedResidual`: MobileNetV2 Table 1 (1x1 expand -> kxk depthwise -> linear 1x1
  project, shortcut when stride 1 and channels match), with the optional squeeze-excite of
  MobileNetV3's bneck (after the depthwise) and EfficientNet's MBConv, and stochastic depth.
- :class:`UniversalInvertedBottleneck`: MobileNetV4 §4 Fig. 4 (optional start depthwise ->
  1x1 expand -> optional middle depthwise -> linear 1x1 project; IB, ExtraDW, ConvNext-like and
  FFN are its four settings).
- :class:`FusedMBConv`: EfficientNetV2 Table 4's Fused-MBConv and MobileNetV4's FusedIB (kxk conv expanding -> BN -> act,
  then linear 1x1 project -> BN; with expansion 1 the kxk conv maps to the output itself and
  there is no projection); shortcut and stochastic depth as the inverted residual.
- a plain ``conv2d`` row in the body (``"cn"``: conv -> BN -> act, no shortcut) is a
  :class:`ConvNormAct` itself (MobileNetV4-Conv-S's first two stages, as the reference code).
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

    ``kind`` is ``"ds"`` (depthwise separable), ``"ir"`` (inverted residual), ``"uib"``
    (universal inverted bottleneck), ``"fused"`` (Fused-MBConv / FusedIB; with no
    expansion, ``mid == in_ch``, no projection) or ``"cn"`` (conv -> BN -> act);
    ``mid`` is the expanded width (equal to ``in_ch`` when there is no expansion conv; ``out``
    for ``"cn"``); ``se`` is the squeeze width (0 for no squeeze-excite). ``kernel`` is the
    depthwise kernel (``"uib"``: the middle one, 0 for none; ``"fused"`` and ``"cn"``: the full
    conv's); ``start_kernel`` is the UIB's start depthwise kernel (0 for none).

    ``dilation`` > 1 dilates the block's spatial convolutions (``output_stride`` below 32);
    a block whose stride was traded for dilation has ``stride`` 1 and keeps the table's
    stride in ``nominal_stride``, which still decides the shortcut (torchvision's MobileNetV3
    ``dilated=True`` rule: no shortcut appears where the table has none).
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
    start_kernel: int = 0
    dilation: int = 1
    nominal_stride: int = 0     # the table's stride where dilation replaced it, else 0

    @property
    def table_stride(self) -> int:
        return self.nominal_stride or self.stride

    @property
    def has_residual(self) -> bool:
        return self.kind in RESIDUAL_KINDS and self.table_stride == 1 and self.in_ch == self.out


RESIDUAL_KINDS = ("ir", "uib", "fused")


class DepthwiseSeparable(nn.Module):
    def __init__(self, spec: BlockSpec, norm: NormConfig, padding: str = "symmetric"):
        super().__init__()
        self.dw = ConvNormAct(spec.in_ch, spec.in_ch, spec.kernel, spec.stride, groups=spec.in_ch,
                              act=spec.act, norm=norm, padding=padding, dilation=spec.dilation)
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
                              act=spec.act, norm=norm, padding=padding, dilation=spec.dilation)
        self.se = (SqueezeExcite(spec.mid, spec.se, spec.se_act, spec.se_gate)
                   if spec.se else nn.Identity())
        self.project = ConvNormAct(spec.mid, spec.out, 1, act=None, norm=norm)
        self.drop_path = DropPath(spec.drop_path) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        if self.has_residual:
            y = x + self.drop_path(y)
        return y


class UniversalInvertedBottleneck(nn.Module):
    """MobileNetV4 UIB (timm ``UniversalInvertedResidual``; TF-models
    ``UniversalInvertedBottleneckBlock``): ``dw_start`` (kxk depthwise -> BN, no activation;
    ``spec.start_kernel``), ``expand`` (1x1, BN, act), ``dw`` (kxk depthwise, BN, act;
    ``spec.kernel``), ``project`` (1x1, BN, linear). A missing depthwise is an ``nn.Identity``. The stride is on the middle depthwise, or
    on the start one when there is no middle one. Shortcut (with stochastic depth) when stride 1
    and channels match; no layer scale (the conv models have none)."""

    def __init__(self, spec: BlockSpec, norm: NormConfig, padding: str = "symmetric"):
        super().__init__()
        self.has_residual = spec.has_residual
        k1, k2 = spec.start_kernel, spec.kernel
        if spec.stride > 1 and not (k1 or k2):
            raise ValueError("a strided UIB needs a depthwise conv (FFN blocks have stride 1)")
        self.dw_start = (ConvNormAct(spec.in_ch, spec.in_ch, k1, 1 if k2 else spec.stride,
                                     groups=spec.in_ch, act=None, norm=norm, padding=padding,
                                     dilation=spec.dilation)
                         if k1 else nn.Identity())
        self.expand = ConvNormAct(spec.in_ch, spec.mid, 1, act=spec.act, norm=norm)
        self.dw = (ConvNormAct(spec.mid, spec.mid, k2, spec.stride, groups=spec.mid,
                               act=spec.act, norm=norm, padding=padding, dilation=spec.dilation)
                   if k2 else nn.Identity())
        self.project = ConvNormAct(spec.mid, spec.out, 1, act=None, norm=norm)
        self.drop_path = DropPath(spec.drop_path) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(self.dw_start(x))))
        if self.has_residual:
            y = x + self.drop_path(y)
        return y


class FusedMBConv(nn.Module):
    """EfficientNetV2's Fused-MBConv and MobileNetV4's FusedIB (timm ``EdgeResidual``):
    ``fused`` (kxk full conv to ``mid``, BN, act, with the stride) then ``project`` (1x1, BN,
    linear); with ``mid == in_ch`` (expansion 1, EfficientNetV2's first stage) ``fused`` maps to
    ``out`` and ``project`` is an identity. Shortcut (with stochastic depth) when stride 1 and
    channels match."""

    def __init__(self, spec: BlockSpec, norm: NormConfig, padding: str = "symmetric"):
        super().__init__()
        self.has_residual = spec.has_residual
        expands = spec.mid != spec.in_ch
        self.fused = ConvNormAct(spec.in_ch, spec.mid if expands else spec.out, spec.kernel,
                                 spec.stride, act=spec.act, norm=norm, padding=padding,
                                 dilation=spec.dilation)
        self.project = (ConvNormAct(spec.mid, spec.out, 1, act=None, norm=norm) if expands
                        else nn.Identity())
        self.drop_path = DropPath(spec.drop_path) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.fused(x))
        if self.has_residual:
            y = x + self.drop_path(y)
        return y


def _conv_block(spec: BlockSpec, norm: NormConfig, padding: str = "symmetric") -> ConvNormAct:
    return ConvNormAct(spec.in_ch, spec.out, spec.kernel, spec.stride, act=spec.act, norm=norm,
                       padding=padding, dilation=spec.dilation)


BLOCKS = {"ds": DepthwiseSeparable, "ir": InvertedResidual, "uib": UniversalInvertedBottleneck,
          "fused": FusedMBConv, "cn": _conv_block}


def make_block(spec: BlockSpec, norm: NormConfig, padding: str = "symmetric") -> nn.Module:
    return BLOCKS[spec.kind](spec, norm, padding)
