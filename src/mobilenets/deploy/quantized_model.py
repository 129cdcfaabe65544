"""The model a PT2E quantization returns (see :mod:`mobilenets.deploy.quantize_pt2e`)."""

from __future__ import annotations

import torch
from torch import nn


class QuantizedModel(nn.Module):
    """A converted PT2E graph with our model's ``config``, ``preprocess`` and ``num_classes``,
    so ``evaluate``, ``bench`` and ``torch.compile`` take it. Eval-only."""

    def __init__(self, graph: nn.Module, like: nn.Module, resolution: int):
        super().__init__()
        self.graph = graph
        self.config = dict(like.config)
        self.preprocess = dict(like.preprocess)
        self.resolution = resolution
        self.num_classes = getattr(like, "num_classes", self.config.get("num_classes", 0))
        self.training = False

    eval_only = ("a PT2E int8 model cannot be trained or saved; write it as an int8 ONNX file "
                 "with mobilenets.deploy.quantize_pt2e.export_pt2e_onnx")

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError(f"this model is eval-only: {self.eval_only}")
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


__all__ = ["QuantizedModel"]
