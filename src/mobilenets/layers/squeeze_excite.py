"""Squeeze-and-excitation (MobileNetV3 §5.3, EfficientNet's MBConv).

global average pool -> 1x1 conv (bias) -> inner activation -> 1x1 conv (bias) -> gate -> scale.
MobileNetV3 uses ReLU inside and a hard-sigmoid gate; EfficientNet uses swish and sigmoid.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import make_activation


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze_channels: int, act: str = "relu",
                 gate: str = "hard_sigmoid"):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1, bias=True)
        self.act = make_activation(act, inplace=True)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1, bias=True)
        self.gate = make_activation(gate, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.gate(self.expand(self.act(self.reduce(s))))
        return x * s
