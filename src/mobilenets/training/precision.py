"""Precision policy for training: which convolutions stay in float32 under CPU autocast.

Under CPU bf16 autocast, oneDNN's bf16 kernels for strided and 5x5 depthwise convolutions are
several times slower than its float32 ones, while 3x3 stride-1 depthwise convolutions are as
fast in bf16 and stay in it (the timings: docs/results/2026-11-24-bench-vs-timm.md).

The layers in :mod:`mobilenets.layers` stay plain (portable to ``torch.export``,
``torch.compile(fullgraph=True)``, FX and ONNX); the training engine applies this policy to the
model it trains, once, after building it and before wrapping it in DDP or compiling it::

    model = float32_depthwise_under_cpu_autocast(model)

Outside CPU autocast (float32 training, GPU autocast) the modules compute exactly as before.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ConvNormAct


class Float32UnderCpuAutocast(ConvNormAct):
    """A :class:`ConvNormAct` that computes in float32 while CPU autocast is on.

    ``float32_depthwise_under_cpu_autocast`` puts one in place of an existing unit, holding
    the same submodules: the same parameters and ``state_dict`` keys, and it deep-copies and
    pickles like the plain unit (a bound forward stored on the instance would not pickle)."""

    @classmethod
    def holding(cls, unit: ConvNormAct) -> "Float32UnderCpuAutocast":
        """A new unit of this class with ``unit``'s submodules (not copies)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for name, child in unit.named_children():
            new.add_module(name, child)
        new.train(unit.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled("cpu") and x.is_cpu:
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def slow_in_bf16(module: nn.Module) -> bool:
    """A depthwise ConvNormAct with stride > 1 or a kernel larger than 3 (see module docstring).
    A unit whose convolution is not an ``nn.Conv2d`` (a low-rank pair of 1x1s) is not one."""
    if not isinstance(module, ConvNormAct) or not isinstance(module.conv, nn.Conv2d):
        return False
    conv = module.conv
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    return depthwise and (max(conv.stride) > 1 or max(conv.kernel_size) > 3)


def float32_depthwise_under_cpu_autocast(model: nn.Module) -> nn.Module:
    """Make the model's strided and 5x5 depthwise units run in float32 under CPU autocast.

    Replaces those units in ``model`` (and returns it; ``model`` itself such a unit: the unit
    that replaces it) by ones holding the same submodules, so parameters, buffers and
    ``state_dict`` keys are untouched: optimisers, EMA copies, checkpoints and DDP see the
    same model. Idempotent.
    """
    if type(model) is ConvNormAct and slow_in_bf16(model):
        return Float32UnderCpuAutocast.holding(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is ConvNormAct and slow_in_bf16(child):
                setattr(parent, name, Float32UnderCpuAutocast.holding(child))
    return model


__all__ = ["Float32UnderCpuAutocast", "float32_depthwise_under_cpu_autocast", "slow_in_bf16"]
