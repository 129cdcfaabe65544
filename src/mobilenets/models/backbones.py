"""Backbones in the forms torchvision's detection and segmentation heads take.

- A dict of named maps: ``create_model(NAME, features_only=True, return_layers={"blocks.3.0":
  "low", "head": "high"})`` (torchvision's ``LRASPP(backbone, low_channels, high_channels,
  num_classes)`` and ``DeepLabV3`` take it as it is; ``out_channels`` gives the channels).
- One ``out_channels`` for every level: :class:`FPNBackbone` (torchvision's
  ``FeaturePyramidNetwork`` on the taps, as its ``BackboneWithFPN``), what ``FasterRCNN``,
  ``MaskRCNN`` and ``RetinaNet`` take.
- BatchNorm frozen or synchronised: ``norm_layer="frozen_batchnorm"`` (torchvision's
  ``FrozenBatchNorm2d``: statistics and affine parameters fixed, as detection fine-tuning
  usually has them) or ``"sync_batchnorm"`` (statistics over every DDP process), for any model.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

NORM_LAYERS = ("batchnorm", "frozen_batchnorm", "sync_batchnorm")


def convert_norm(model: nn.Module, norm_layer: str) -> nn.Module:
    """``model`` with every ``BatchNorm2d`` turned into ``norm_layer`` (see module docstring),
    statistics and affine parameters kept."""
    if norm_layer not in NORM_LAYERS:
        raise ValueError(f"norm_layer must be one of {', '.join(NORM_LAYERS)}, got "
                         f"{norm_layer!r}")
    if norm_layer == "sync_batchnorm":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if norm_layer == "frozen_batchnorm":
        return _freeze(model)
    return model


def _freeze(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            frozen.weight.copy_(module.weight)
            frozen.bias.copy_(module.bias)
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = _freeze(child)
        if new is not child:
            setattr(module, name, new)
    return module


class FPNBackbone(nn.Module):
    """A feature net (``features_only`` with ``return_layers``) under torchvision's
    ``FeaturePyramidNetwork``: an ordered dict of maps, all with ``out_channels`` channels
    (plus ``"pool"``, a stride-2 max-pool of the last level, with ``extra_blocks=True``, as
    torchvision's ``BackboneWithFPN``)."""

    def __init__(self, body: nn.Module, out_channels: int = 256, extra_blocks: bool = True):
        super().__init__()
        if not isinstance(getattr(body, "out_channels", None), dict):
            raise ValueError("FPNBackbone takes a feature net built with return_layers= (a dict "
                             "of named maps); use mobilenets.fpn_backbone(NAME) to build "
                             "one")
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.out_channels.values()), out_channels,
                                         extra_blocks=LastLevelMaxPool() if extra_blocks
                                         else None)
        self.out_channels = out_channels
        self.config = dict(getattr(body, "config", {}), fpn_channels=out_channels)
        self.preprocess = getattr(body, "preprocess", {})

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def fpn_return_layers(out_indices) -> dict:
    """``{tap: "0", tap: "1", ...}``: torchvision's level names for an FPN."""
    return {k: str(i) for i, k in enumerate(out_indices)}


__all__ = ["FPNBackbone", "NORM_LAYERS", "convert_norm", "fpn_return_layers"]
