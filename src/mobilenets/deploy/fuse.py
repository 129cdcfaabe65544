"""Fold every BatchNorm into the convolution before it, for inference.

An eval-mode BatchNorm is a per-channel affine map y = (x - mean) * g / sqrt(var + eps) + b, so
after a convolution it can be merged into the convolution's weight and bias. The fused model
computes the same function with one op per ``ConvNormAct`` instead of two.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..models.low_rank import LowRank

# why a fused model refuses train() and save() (the network's ``eval_only``)
FUSED = ("it is fused (BatchNorm folded into the convolutions by mobilenets.fuse), so it "
         "cannot be trained or saved; train or save the unfused model and fuse it again "
         "(export_onnx fuses by itself)")


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv (with bias) equal to ``bn(conv(x))`` in eval mode; computed in float64."""
    fused = copy.deepcopy(conv)
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(
        conv.out_channels, dtype=torch.float64, device=w.device)
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach().double()
    bias = (b - bn.running_mean.double()) * scale
    if bn.affine:
        bias = bias + bn.bias.detach().double()
    fused.weight = nn.Parameter((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype),
                                requires_grad=False)
    fused.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    return fused


def _fold_sequential(seq: nn.Sequential) -> None:
    """Fold each (Conv2d, BatchNorm2d) pair of adjacent children, dropping the BN; in a
    sequence that had a fold (a ``ConvNormAct``), also drop ``nn.Identity`` children. A
    low-rank factorised conv (``LowRank``) takes the BN into its second conv."""
    names, folded = list(seq._modules), False
    for a, b in zip(names, names[1:]):
        conv, bn = seq._modules.get(a), seq._modules.get(b)
        last = conv[-1] if isinstance(conv, LowRank) else conv
        if (type(last) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d)
                and bn.track_running_stats and bn.num_features == last.out_channels):
            if last is conv:
                seq._modules[a] = fold_conv_bn(conv, bn)
            else:
                conv[-1] = fold_conv_bn(last, bn)
            del seq._modules[b]
            folded = True
    if folded:
        for name in [n for n, m in seq._modules.items() if type(m) is nn.Identity]:
            del seq._modules[name]


def fuse(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with every BatchNorm folded into its conv.

    Keeps ``config`` and ``preprocess``; parameters do not require grad; ``train()`` and
    ``mobilenets.save`` raise (``eval_only`` says why).
    Raises ValueError if a BatchNorm does not directly follow a convolution.
    """
    fused = copy.deepcopy(model).eval()
    for m in list(fused.modules()):
        if isinstance(m, nn.Sequential):
            _fold_sequential(m)
    left = [n for n, m in fused.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"cannot fold BatchNorm layers that do not follow a Conv2d: {left}")
    for p in fused.parameters():
        p.requires_grad_(False)
    fused.eval_only = FUSED
    return fused


__all__ = ["FUSED", "fold_conv_bn", "fuse"]
