"""Encoders for the dense heads: any registered backbone as a ``features_only`` model, plus
torchvision's ResNet-18 (an encoder option of the depth heads, not a registered classifier:
FastDepth and the depth-on-mobile comparisons measure MobileNets against it).

:func:`create_encoder` returns a module whose ``forward`` gives the list of maps at
``out_indices`` (timm's indexing: 0 is /2, 1 /4, 2 /8, 3 /16, 4 /32), with ``feature_info``,
``preprocess`` and ``config``, whichever kind of backbone it is.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..architecture import FeatureTap
from ..network import FeatureInfo, check_input

#: encoder names the heads take besides the registered backbones
EXTRA_ENCODERS = ("resnet18",)

# options that choose what the backbone returns: the head sets them itself
HEAD_CHOSEN = ("num_classes", "features_only", "out_indices", "return_layers")
_RESNET_OPTIONS = ("resolution", "bn_eps", "bn_momentum")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def backbone_option_names(backbone: str) -> tuple[str, ...]:
    """The options ``backbone`` takes inside a head (the head's own options come on top)."""
    if backbone in EXTRA_ENCODERS:
        return _RESNET_OPTIONS
    from ..registry import MODEL_OPTIONS       # here: registry imports the heads package
    return tuple(o for o in MODEL_OPTIONS if o not in HEAD_CHOSEN)


def check_not_head_chosen(options: dict) -> None:
    """TypeError for options that pick the backbone's outputs (the head picks them)."""
    chosen = sorted(set(options) & set(HEAD_CHOSEN))
    if chosen:
        raise TypeError(f"{', '.join(chosen)}: the head chooses the backbone's outputs "
                        f"itself; leave {'it' if len(chosen) == 1 else 'them'} out")


def create_encoder(backbone: str, out_indices: tuple[int, ...], options: dict) -> nn.Module:
    """``backbone`` (a registered name, or ``"resnet18"``) returning the maps at
    ``out_indices``; ``options`` are backbone options (:func:`backbone_option_names`)."""
    check_not_head_chosen(options)
    unknown = sorted(set(options) - set(backbone_option_names(backbone)))
    if unknown:
        raise TypeError(f"unknown backbone option(s) {', '.join(unknown)} for {backbone!r}; "
                        f"it takes {', '.join(backbone_option_names(backbone))}")
    if backbone == "resnet18":
        return ResNetEncoder(out_indices, **options)
    from ..registry import create_model
    return create_model(backbone, features_only=True, out_indices=out_indices, **options)


class ResNetEncoder(nn.Module):
    """torchvision's ``resnet18(weights=None)`` without its pooling and classifier, returning
    the maps at ``out_indices`` of its five taps: the stem's ReLU (64 @ /2) and ``layer1`` ..
    ``layer4`` (64 @ /4, 128 @ /8, 256 @ /16, 512 @ /32), as FastDepth's ``ResNetSkipAdd``
    taps it. Submodule names are torchvision's (``conv1``, ``bn1``, ``layer1`` ...), so a
    torchvision ResNet-18 state dict loads once its ``fc.*`` keys are dropped."""

    TAPS = (("relu", 64, 2), ("layer1", 64, 4), ("layer2", 128, 8), ("layer3", 256, 16),
            ("layer4", 512, 32))

    def __init__(self, out_indices=(0, 1, 2, 3, 4), resolution: int = 224,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        from torchvision.models import resnet18
        taps = [FeatureTap(*t) for t in self.TAPS]
        out_indices = tuple(sorted({i % len(taps) for i in out_indices}))
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 32:
            raise ValueError(f"resolution={resolution!r} is not allowed: resolution must be an "
                             f"integer >= 32 (pixels; ResNet-18's total stride is 32)")
        for name, v in (("bn_eps", bn_eps), ("bn_momentum", bn_momentum)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
                raise ValueError(f"{name}={v!r} is not allowed: {name} must be in (0, 1)")
        net = resnet18(weights=None, norm_layer=partial(nn.BatchNorm2d, eps=bn_eps,
                                                        momentum=bn_momentum))
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                     "layer4"):
            setattr(self, name, getattr(net, name))
        self.out_indices = out_indices
        self.feature_info = FeatureInfo(taps[i] for i in out_indices)
        self.total_stride = 32
        self.config = {"name": "resnet18", "family": "resnet", "source": "torchvision",
                       "resolution": resolution, "in_chans": 3, "bn_eps": bn_eps,
                       "bn_momentum": bn_momentum, "features_only": True,
                       "out_indices": list(out_indices)}
        # torchvision's ResNet-18 ImageNet eval transforms: resize 256, crop 224, bilinear
        self.preprocess = {"resolution": resolution, "resize": int(round(resolution / 0.875)),
                           "crop_pct": 0.875, "interpolation": "bilinear",
                           "mean": _IMAGENET_MEAN, "std": _IMAGENET_STD}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input(x, 3, self.total_stride)
        x = self.relu(self.bn1(self.conv1(x)))
        maps = [x]
        x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            maps.append(x)
        return [maps[i] for i in self.out_indices]


__all__ = ["EXTRA_ENCODERS", "HEAD_CHOSEN", "ResNetEncoder", "backbone_option_names",
           "check_not_head_chosen", "create_encoder"]
