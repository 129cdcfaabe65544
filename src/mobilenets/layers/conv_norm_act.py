"""Convolution -> BatchNorm -> activation, the unit every table row is made of."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .activations import make_activation


@dataclass(frozen=True)
class NormConfig:
    """BatchNorm settings. ``momentum`` uses PyTorch's convention (1 - TF's decay)."""

    eps: float = 1e-5
    momentum: float = 0.1


class ConvNormAct(nn.Sequential):
    """``conv`` (no bias) -> ``bn`` -> ``act``; ``act=None`` gives the linear projection of
    MobileNetV2 Table 1. ``groups=channels`` makes it a depthwise convolution."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: str | None = "relu", norm: NormConfig = NormConfig()):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=norm.eps, momentum=norm.momentum)
        # in place: the BatchNorm output is a fresh tensor only the activation reads
        self.act = make_activation(act, inplace=True) if act else nn.Identity()
