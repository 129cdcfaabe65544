"""Convolution -> BatchNorm -> activation, the unit every table row is made of.

The layers are portable: plain ``forward`` methods that ``torch.export``, ``torch.compile``
(``fullgraph=True``), FX and the ONNX exporter trace without graph breaks. Training policies such
as running some convolutions in float32 under autocast live on the training side
(:mod:`mobilenets.training.precision`). TorchScript (deprecated in torch 2.14) is not a target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .activations import make_activation

PADDINGS = ("symmetric", "same")


@dataclass(frozen=True)
class NormConfig:
    """BatchNorm settings. ``momentum`` uses PyTorch's convention (1 - TF's decay)."""

    eps: float = 1e-5
    momentum: float = 0.1


@torch.fx.wrap
def pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's "SAME" padding: output size ceil(in / stride), the odd pixel at the end."""
    ih, iw = x.shape[-2], x.shape[-1]
    ph = max((-(-ih // stride) - 1) * stride + kernel - ih, 0)
    pw = max((-(-iw // stride) - 1) * stride + kernel - iw, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


class PadSame(nn.Module):
    """TF "SAME" padding in front of a strided convolution (timm's ``tf_`` ports need it; for
    stride 1 and odd kernels it equals symmetric padding, so it is only used for stride > 1)."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad_same(x, self.kernel, self.stride)


class ConvNormAct(nn.Sequential):
    """``conv`` (no bias) -> ``bn`` -> ``act``; ``act=None`` gives the linear projection of
    MobileNetV2 Table 1. ``groups=channels`` makes it a depthwise convolution. ``padding`` is
    ``"symmetric"`` (k // 2 on each side, PyTorch's usual) or ``"same"`` (TensorFlow's).
    ``dilation`` > 1 (a stride traded for dilation, ``output_stride``) pads
    ``dilation * (k // 2)``: for stride 1 and odd kernels symmetric and SAME padding agree."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: str | None = "relu", norm: NormConfig = NormConfig(),
                 padding: str = "symmetric", dilation: int = 1):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        if dilation > 1 and stride > 1:
            raise ValueError("a dilated convolution has stride 1 (dilation replaces the stride)")
        dynamic = padding == "same" and stride > 1
        if dynamic:
            self.pad = PadSame(kernel, stride)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride,
                              padding=0 if dynamic else dilation * (kernel // 2),
                              dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=norm.eps, momentum=norm.momentum)
        # in place: the BatchNorm output is a fresh tensor only the activation reads
        self.act = make_activation(act, inplace=True) if act else nn.Identity()


class PooledConvNormAct(ConvNormAct):
    """A 1x1 ``ConvNormAct`` on pooled features ``(batch, channels)``: MobileNetV4's head after
    pooling (1x1 conv without bias -> BN -> act; timm ``head_norm``). It holds the same modules
    as any ``ConvNormAct``, so fusing folds its BatchNorm like the others."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x[:, :, None, None]).flatten(1)
