"""Semantic segmentation heads on any backbone: LR-ASPP and DeepLabV3, as torchvision builds
them for MobileNetV3-Large.

- ``lraspp`` (MobileNetV3 paper §6.4; torchvision ``LRASPP``): the high map through a 1x1 conv
  to ``inter_channels`` (BN, ReLU), gated by a global average pool -> 1x1 conv -> sigmoid
  branch, resized bilinearly to the low map's size and classified by a 1x1 conv; plus a 1x1
  classifier of the low map; the sum resized to the input.
- ``deeplabv3`` (torchvision ``DeepLabHead``): ASPP on the high map (a 1x1 branch, three 3x3
  atrous branches at rates 12, 24, 36 and image pooling, 256 channels each; concatenation
  projected to 256 with dropout 0.5), a 3x3 conv to 256 (BN, ReLU) and a 1x1 classifier;
  with ``aux_loss=True`` also torchvision's ``FCNHead`` on the low map (3x3 to in/4, BN,
  ReLU, dropout 0.1, 1x1 classifier).

The head modules are torchvision's own classes, so the parameter names (``classifier.cbr.*``,
``classifier.scale.*``, ``classifier.low_classifier.*``, ``classifier.high_classifier.*``;
``classifier.N.*``, ``aux_classifier.N.*``) are torchvision's, and torchvision's segmentation
checkpoints map onto them key for key (the backbone's keys are paired by the weights layer).

Taps (:func:`segmentation_taps`), for every backbone:

- low (/8): the first block whose output is at reduction 8 (MobileNetV3-Large: ``blocks.3.0``,
  torchvision's ``features[4]``, 40 channels; not the last block at /8);
- high: the last map, the 1x1 head conv where the family has one (MobileNetV3-Large's 960
  channels, torchvision's ``features[16]``; MobileNetV2's and EfficientNet's 1280), else the
  last block (MobileNetV1, FD-MobileNet).

The backbone runs at ``output_stride`` 16 by default (torchvision's ``dilated=True``), so the
high map is at /16. Where the paper and torchvision differ, torchvision is followed: a global
pool in LR-ASPP instead of the paper's 49x49 strided pool, the first block at /8 as the low
tap, DeepLabV3 on the last (960-channel) map with rates 12/24/36 at output stride 16.

Forward: ``OrderedDict`` ``{"out": B x C x H x W}`` (plus ``"aux"`` for DeepLabV3 with
``aux_loss``), logits at the input's size (bilinear, ``align_corners=False``).

BatchNorm: ``bn_eps`` and ``bn_momentum`` are the backbone's options (its registered values by
default); the head's BatchNorms are torchvision's (eps 1e-5, momentum 0.1).
``norm_layer="frozen_batchnorm"`` freezes the backbone's BatchNorm only (the head is trained
from scratch); ``"sync_batchnorm"`` synchronises every BatchNorm, the head's too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.deeplabv3 import DeepLabV3 as _DeepLabV3
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.models.segmentation.lraspp import LRASPP as _LRASPP

from .registry import HeadEntry, register_head

#: the eval input size of torchvision's segmentation weights (``SemanticSegmentation``'s
#: resize 520); the heads' default resolution
SEGMENTATION_RESOLUTION = 520

# options that choose what the backbone returns (the head picks its taps), and the classifier
# dropout, which a backbone without its classifier does not have
_NOT_BACKBONE = ("num_classes", "features_only", "out_indices", "return_layers", "dropout")


class _SegmentationModel:
    """What every segmentation head model adds to torchvision's module: ``task``, ``config``,
    ``preprocess``, ``num_classes`` and the eval-only guard ``mobilenets.fuse`` sets."""

    task = "segmentation"
    #: why this model cannot be trained or saved (``mobilenets.fuse`` sets it), else None
    eval_only: str | None = None
    #: the layers whose shape depends on ``num_classes`` (re-initialised for another count)
    class_layers: tuple[str, ...] = ()

    def train(self, mode: bool = True):
        if mode and self.eval_only:
            raise RuntimeError(f"this model is eval-only: {self.eval_only}")
        return super().train(mode)

    def _describe(self, num_classes: int, config: dict, preprocess: dict) -> None:
        self.num_classes = num_classes
        self.config = dict(config)
        self.preprocess = dict(preprocess)


class LRASPP(_SegmentationModel, _LRASPP):
    """torchvision's ``LRASPP`` on ``backbone``, a feature net returning ``{"low", "high"}``.
    See the module docstring."""

    class_layers = ("classifier.low_classifier", "classifier.high_classifier")

    def __init__(self, backbone: nn.Module, num_classes: int, inter_channels: int = 128,
                 config: dict | None = None, preprocess: dict | None = None):
        super().__init__(backbone, backbone.out_channels["low"], backbone.out_channels["high"],
                         num_classes, inter_channels)
        self._describe(num_classes, config or {}, preprocess or {})


class DeepLabV3(_SegmentationModel, _DeepLabV3):
    """torchvision's ``DeepLabV3`` on ``backbone``, a feature net returning ``{"out"}`` (and
    ``"aux"``, the low map, for the auxiliary ``FCNHead``). See the module docstring."""

    def __init__(self, backbone: nn.Module, num_classes: int, aux_loss: bool = False,
                 atrous_rates: Sequence[int] = (12, 24, 36), config: dict | None = None,
                 preprocess: dict | None = None):
        channels = backbone.out_channels
        classifier = DeepLabHead(channels["out"], num_classes, tuple(atrous_rates))
        aux = FCNHead(channels["aux"], num_classes) if aux_loss else None
        super().__init__(backbone, classifier, aux)
        last = str(len(classifier) - 1)
        self.class_layers = (f"classifier.{last}",) + (("aux_classifier.4",) if aux_loss else ())
        self._describe(num_classes, config or {}, preprocess or {})


def segmentation_taps(backbone: str, options: dict | None = None) -> tuple[str, str]:
    """``(low, high)`` module names of ``backbone`` (built with the backbone ``options``): the
    first block at reduction 8 and the last map (see the module docstring)."""
    from ..registry import create_model      # here: the registry imports the heads package
    options = {k: v for k, v in (options or {}).items() if k != "norm_layer"}
    with torch.device("meta"):
        plan = create_model(backbone, num_classes=0, **options).plan
    reduction = plan.stem.stride
    low = last = None
    for r, row in enumerate(plan.rows):
        for i, block in enumerate(row):
            reduction *= block.stride
            last = f"blocks.{r}.{i}"
            if low is None and reduction >= 8:
                low = last
    if low is None:
        raise ValueError(f"{backbone} has no block at reduction 8 for the low-level tap")
    return low, ("head" if plan.head is not None else last)


def backbone_option_names() -> tuple[str, ...]:
    """The backbone options a segmentation head takes besides its own."""
    from ..registry import MODEL_OPTIONS
    return tuple(o for o in MODEL_OPTIONS if o not in _NOT_BACKBONE)


def _split(head: str, backbone: str, options: dict, own: dict) -> tuple[dict, dict]:
    """(head options with defaults filled in, backbone options); a clear error for others."""
    chosen = sorted(set(options) & {"features_only", "out_indices", "return_layers"})
    if chosen:
        raise TypeError(f"{', '.join(chosen)}: the {head} head chooses the backbone's taps "
                        f"itself; leave {'it' if len(chosen) == 1 else 'them'} out")
    allowed = backbone_option_names()
    unknown = sorted(set(options) - set(own) - set(allowed))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for {head} on {backbone}; it "
                        f"takes {', '.join(own)} (the head) and "
                        f"{', '.join(k for k in allowed if k not in own)} (the "
                        f"backbone)")
    head_opts = {k: options.get(k, default) for k, default in own.items()}
    n = head_opts["num_classes"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_classes={n!r} is not allowed: num_classes must be an integer "
                         f">= 1 (background included; torchvision's VOC label set has 21)")
    return head_opts, {k: v for k, v in options.items() if k not in own}


def _backbone(head: str, backbone: str, head_opts: dict, bb_opts: dict,
              return_layers: dict) -> tuple[nn.Module, dict, dict]:
    """The feature net, the model's config (``options`` filled in) and its preprocessing."""
    from ..registry import create_model
    resolution = bb_opts.pop("resolution", SEGMENTATION_RESOLUTION)
    net = create_model(backbone, features_only=True, return_layers=return_layers,
                       output_stride=head_opts["output_stride"], resolution=resolution,
                       **bb_opts)
    # a dense target is resized with its image, pixel for pixel: no centre-crop margin
    preprocess = dict(net.preprocess, resolution=resolution, resize=resolution, crop_pct=1.0)
    taps = {name: module for module, name in net.return_layers.items()}
    config = {"name": f"{head}_{backbone}", "head": head, "backbone": backbone,
              "task": "segmentation", "num_classes": head_opts["num_classes"],
              "resolution": resolution, "in_chans": net.config.get("in_chans", 3),
              "output_stride": head_opts["output_stride"], "taps": taps,
              "options": dict(bb_opts, resolution=resolution, **head_opts)}
    return net, config, preprocess


def _sync_head(model: nn.Module, bb_opts: dict) -> nn.Module:
    """``norm_layer="sync_batchnorm"`` reaches the head's BatchNorms too."""
    if bb_opts.get("norm_layer") == "sync_batchnorm":
        for name in ("classifier", "aux_classifier"):
            part = getattr(model, name, None)
            if part is not None:
                setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(part))
    return model


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


LRASPP_OPTIONS = {"num_classes": 21, "output_stride": 16, "inter_channels": 128}


def build_lraspp(backbone: str, **options) -> LRASPP:
    """``lraspp`` on ``backbone``. Options: ``num_classes`` (21), ``output_stride`` (16),
    ``inter_channels`` (128, the paper's F) and the backbone's (``width_mult``,
    ``bn_momentum``, ``norm_layer``, ``resolution`` (520) ...)."""
    head_opts, bb_opts = _split("lraspp", backbone, options, LRASPP_OPTIONS)
    if not _positive_int(head_opts["inter_channels"]):
        raise ValueError(f"inter_channels={head_opts['inter_channels']!r} is not allowed: "
                         f"inter_channels must be an integer >= 1 (torchvision: 128)")
    low, high = segmentation_taps(backbone, dict(bb_opts, output_stride=head_opts[
        "output_stride"]))
    net, config, preprocess = _backbone("lraspp", backbone, head_opts, bb_opts,
                                        {low: "low", high: "high"})
    model = LRASPP(net, head_opts["num_classes"], head_opts["inter_channels"], config,
                   preprocess)
    return _sync_head(model, bb_opts)


DEEPLABV3_OPTIONS = {"num_classes": 21, "output_stride": 16, "aux_loss": False,
                     "atrous_rates": [12, 24, 36]}


def build_deeplabv3(backbone: str, **options) -> DeepLabV3:
    """``deeplabv3`` on ``backbone``. Options: ``num_classes`` (21), ``output_stride`` (16),
    ``aux_loss`` (False: True adds torchvision's ``FCNHead`` on the /8 map and an ``"aux"``
    output), ``atrous_rates`` (torchvision's 12, 24, 36; the DeepLabV3 paper's 6, 12, 18 at
    output stride 16) and the backbone's, as :func:`build_lraspp`."""
    head_opts, bb_opts = _split("deeplabv3", backbone, options, DEEPLABV3_OPTIONS)
    if not isinstance(head_opts["aux_loss"], bool):
        raise ValueError(f"aux_loss={head_opts['aux_loss']!r} is not allowed: use True or False")
    rates = head_opts["atrous_rates"]
    if (isinstance(rates, (str, bytes)) or not isinstance(rates, Sequence) or not rates
            or not all(_positive_int(r) for r in rates)):
        raise ValueError(f"atrous_rates={rates!r} is not allowed: give one or more positive "
                         f"integers (torchvision: [12, 24, 36])")
    head_opts["atrous_rates"] = list(rates)
    low, high = segmentation_taps(backbone, dict(bb_opts, output_stride=head_opts[
        "output_stride"]))
    taps = {low: "aux", high: "out"} if head_opts["aux_loss"] else {high: "out"}
    net, config, preprocess = _backbone("deeplabv3", backbone, head_opts, bb_opts, taps)
    model = DeepLabV3(net, head_opts["num_classes"], head_opts["aux_loss"], rates, config,
                      preprocess)
    return _sync_head(model, bb_opts)


register_head(HeadEntry("lraspp", "segmentation", build_lraspp, "mobilenet_v3_large_100",
                        listed=("lraspp_mobilenet_v3_large",)))
register_head(HeadEntry("deeplabv3", "segmentation", build_deeplabv3, "mobilenet_v3_large_100",
                        listed=("deeplabv3_mobilenet_v3_large",)))

__all__ = ["DEEPLABV3_OPTIONS", "LRASPP_OPTIONS", "SEGMENTATION_RESOLUTION", "DeepLabV3",
           "LRASPP", "build_deeplabv3", "build_lraspp", "segmentation_taps"]
