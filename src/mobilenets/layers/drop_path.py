"""Stochastic depth ("drop connect" in the EfficientNet reference code).

Drops the residual branch per sample with probability ``rate`` during training and rescales the
kept ones by 1 / (1 - rate); identity at inference.
"""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    def __init__(self, rate: float = 0.0):
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"
