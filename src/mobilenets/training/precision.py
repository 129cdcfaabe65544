"""Precision policy for training: which convolutions stay in float32 under CPU autocast.

Under CPU bf16 autocast, oneDNN's bf16 kernels for strided and 5x5 depthwise convolutions are
slow. Measured on a 2-core AVX-512 CPU, batch 64, forward + backward, channels_last: 3x3 stride 2
over 96 channels at 64x64, 224 ms in bf16 against 60 ms in float32; 576 channels at 8x8, 83
against 2.1 ms; 5x5 stride 1 over 672 channels at 8x8, 41 against 17 ms. 3x3 stride-1 depthwise
convolutions are as fast in bf16 (43 against 53 ms at 144 channels, 32x32) and stay in it.

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

    ``float32_depthwise_under_cpu_autocast`` switches an existing unit's class to this one: the
    same submodules, parameters and ``state_dict`` keys, and it deep-copies and pickles like the
    plain unit (a bound forward stored on the instance would not pickle)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled("cpu") and x.is_cpu:
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def slow_in_bf16(module: nn.Module) -> bool:
    """A depthwise ConvNormAct with stride > 1 or a kernel larger than 3 (see module docstring)."""
    if not isinstance(module, ConvNormAct):
        return False
    conv = module.conv
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    return depthwise and (max(conv.stride) > 1 or max(conv.kernel_size) > 3)


def float32_depthwise_under_cpu_autocast(model: nn.Module) -> nn.Module:
    """Make the model's strided and 5x5 depthwise units run in float32 under CPU autocast.

    Changes ``model`` in place (and returns it); parameters, buffers and ``state_dict`` keys are
    untouched, so optimisers, EMA copies, checkpoints and DDP see the same model. Idempotent.
    """
    for m in model.modules():
        if type(m) is ConvNormAct and slow_in_bf16(m):
            m.__class__ = Float32UnderCpuAutocast
    return model


__all__ = ["Float32UnderCpuAutocast", "float32_depthwise_under_cpu_autocast", "slow_in_bf16"]
