"""Object detection heads on any registered backbone: SSDLite.

SSDLite (MobileNetV2 paper §6.2, MobileNetV3 paper §6.3) is built on torchvision's detection
machinery: :class:`SSDLite` is a ``torchvision.models.detection.SSD`` (default boxes, box
coding, IoU matching, hard-negative mining, smooth-L1 + cross-entropy, resize and
normalisation by ``GeneralizedRCNNTransform``, class-wise batched NMS), with torchvision's
``SSDLiteHead`` (depthwise-separable prediction layers) and extra layers, on our backbone:

- **C4**, the first map, is the expansion output of the last strided block (the one taking
  /16 to /32: MobileNetV2's "layer 15", MobileNetV3-Large's 13th bottleneck), computed by
  running that block's 1x1 expansion only; the rest of the block then continues from it (a
  block without a 1x1 expansion before its stride gives its /16 input instead).
- **C5** is the /32 map before pooling (the 1x1 head conv; the last block where there is none).
- four extra blocks (1x1 -> 3x3 depthwise stride 2 -> 1x1, ReLU6) give 512, 256, 256 and 128
  channels at /64 ... /320 (1x1 at 320 px).

Two heads are registered:

- ``ssdlite320``: torchvision's ``ssdlite320_mobilenet_v3_large`` configuration on any
  backbone: reduced tail (``reduced_tail=True``, the MobileNetV3 paper's "†" backbone that
  torchvision builds without backbone weights), inputs normalised to [-1, 1] (mean = std =
  0.5). ``ssdlite320_mobilenet_v3_large`` is torchvision's model (3,440,060 parameters at 91
  classes; its checkpoints load through ``mobilenets.create_model(..., weights=PATH)``).
- ``ssdlite``: the same detector with the backbone's full tail and its own ImageNet
  normalisation, so a classification checkpoint of the backbone fits it.

Both: BatchNorm eps 1e-3, momentum 0.03, every convolution initialised N(0, 0.03) with zero
bias (torchvision's choice for SSDLite trained from scratch), 91 classes (torchvision's COCO
category ids, 0 = background), and torchvision's post-processing defaults (score > 0.001, top
300 per class, class-wise NMS at IoU 0.55, 300 detections).

The convention is torchvision's: in eval mode ``model(images)`` takes a list of 3 x H x W float
images in [0, 1] of any size (or a B x 3 x H x W batch) and returns one dict per image with
``boxes`` (x1, y1, x2, y2 in that image's pixels), ``scores`` and ``labels``; in train mode
``model(images, targets)`` (targets: dicts with ``boxes`` and ``labels``) returns the dict of
losses ``{"bbox_regression", "classification"}``.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.models.detection.ssdlite import _extra_block as extra_block
from torchvision.ops import box_iou, clip_boxes_to_image

from ...layers.blocks import InvertedResidual, UniversalInvertedBottleneck
from ..backbones import convert_norm
from ..network import check_input
from .registry import HeadEntry, register_head

# the backbone options a detector passes on (the head picks the taps, classes and resolution)
BACKBONE_OPTIONS = ("width_mult", "depth_mult", "act", "drop_path_rate", "bn_eps",
                    "bn_momentum", "padding", "norm_layer", "block_widths", "reduced_tail")
HEAD_OPTIONS = ("num_classes", "resolution", "image_mean", "image_std", "score_thresh",
                "nms_thresh", "detections_per_img", "topk_candidates", "iou_thresh",
                "positive_fraction")
EXTRA_WIDTHS = (512, 256, 256, 128)
ASPECT_RATIOS = ((2, 3),) * 6
MEAN_HALF = (0.5, 0.5, 0.5)
# torchvision's ssdlite320_mobilenet_v3_large post-processing
POSTPROCESS = {"score_thresh": 0.001, "nms_thresh": 0.55, "detections_per_img": 300,
               "topk_candidates": 300}


def normal_init(module: nn.Module, std: float = 0.03) -> None:
    """Every convolution N(0, ``std``), biases 0 (torchvision's SSDLite ``_normal_init``)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def c4_block(body: nn.Module) -> tuple[int, int]:
    """``(row, index)`` of the last strided block: its expansion output is SSDLite's C4."""
    last = None
    for r, row in enumerate(body.plan.rows):
        for i, spec in enumerate(row):
            if spec.table_stride > 1:
                last = (r, i)
    if last is None:
        raise ValueError("SSDLite needs a backbone with strided blocks")
    return last


def _split(block: nn.Module):
    """``(before, after)``: the part of a strided block that runs at /16 and ends in its
    expansion (C4), and the rest; ``before`` is None when the block has no 1x1 expansion ahead
    of its stride (C4 is then the block's input)."""
    if isinstance(block, InvertedResidual) and not isinstance(block.expand, nn.Identity):
        return block.expand, lambda y: block.project(block.se(block.dw(y)))
    if (isinstance(block, UniversalInvertedBottleneck)
            and not isinstance(block.dw, nn.Identity)):
        return (lambda x: block.expand(block.dw_start(x)),
                lambda y: block.project(block.dw(y)))
    return None, block


class SSDLiteFeatures(nn.Module):
    """The detector's feature extractor: ``body`` (a ``features_only`` backbone with our
    module names: ``stem``, ``blocks``, ``head``) giving C4 and C5, then ``extra`` (four
    torchvision SSDLite extra blocks). ``forward`` returns an ordered dict ``"0"`` .. ``"5"``
    of the six maps, as torchvision's ``SSDLiteFeatureExtractorMobileNet``."""

    def __init__(self, body: nn.Module, norm_layer):
        super().__init__()
        self.body = body
        self.c4 = c4_block(body)
        spec = body.plan.rows[self.c4[0]][self.c4[1]]
        block = body.blocks[self.c4[0]][self.c4[1]]
        if getattr(block, "has_residual", False):
            raise ValueError("the block holding C4 must not have a shortcut")
        before, _ = _split(block)
        c4 = spec.mid if before is not None else spec.in_ch
        c5 = body.plan.feature_channels
        widths = [c5, *EXTRA_WIDTHS]
        self.extra = nn.ModuleList(extra_block(a, b, norm_layer)
                                   for a, b in zip(widths[:-1], widths[1:]))
        self.out_channels = [c4, *widths]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        body = self.body
        check_input(x, 3, 32)
        x = body.stem(x)
        maps = []
        for r, row in enumerate(body.blocks):
            for i, block in enumerate(row):
                if (r, i) == self.c4:
                    before, after = _split(block)
                    if before is not None:
                        x = before(x)
                    maps.append(x)
                    x = after(x)
                else:
                    x = block(x)
        x = body.head(x)
        maps.append(x)
        for block in self.extra:
            x = block(x)
            maps.append(x)
        return OrderedDict((str(k), m) for k, m in enumerate(maps))


def check_image_range(images, where: str = "the detector") -> None:
    """ValueError when float ``images`` (a list or a batch) reach far above 1: images in
    0..255 as floats, which give a detector no boxes without a word."""
    peak = max((float(img.max()) for img in images
                if isinstance(img, torch.Tensor) and img.is_floating_point() and img.numel()),
               default=0.0)
    if peak > 2:
        raise ValueError(f"{where} takes float images in [0, 1]; these reach {peak:g} (pixel "
                         f"values 0..255?): divide them by 255")


def check_targets(targets, num_classes: int) -> None:
    """ValueError unless ``targets`` is one dict per image with ``boxes`` and ``labels`` in
    1 .. num_classes - 1 (0 is the background; the detectors' losses would fail on a larger
    label, or take a box labelled 0 as background without a word)."""
    for t in targets:
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError("targets must be one dict per image with 'boxes' (N x 4, x1 y1 "
                             "x2 y2 in pixels) and 'labels'")
        labels = torch.as_tensor(t["labels"])
        if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) >= num_classes):
            raise ValueError(f"labels must be in 1 .. {num_classes - 1} (0 is the "
                             f"background, which a box cannot have); got "
                             f"{labels.min().item()} .. {labels.max().item()}")


class SSDLite(SSD):
    """SSDLite on one of our backbones (see the module docstring). ``backbone`` is the
    :class:`SSDLiteFeatures` (``backbone.body`` the classification network's trunk), ``head``
    torchvision's ``SSDLiteHead``; ``config`` and ``preprocess`` as every model of the
    library."""

    task = "detection"

    def __init__(self, features: SSDLiteFeatures, num_classes: int, size: int,
                 image_mean, image_std, norm_layer, config: dict, preprocess: dict, **kwargs):
        anchors = DefaultBoxGenerator([list(r) for r in ASPECT_RATIOS], min_ratio=0.2,
                                      max_ratio=0.95)
        head = SSDLiteHead(features.out_channels, anchors.num_anchors_per_location(),
                           num_classes, norm_layer)
        super().__init__(features, anchors, (size, size), num_classes,
                         image_mean=list(image_mean), image_std=list(image_std), head=head,
                         **kwargs)
        self.num_classes = num_classes
        self.config = dict(config)
        self.preprocess = dict(preprocess)

    def forward(self, images, targets=None):
        """torchvision's ``SSD.forward``; ``images`` may also be the pair ``(images,
        targets)``, the one input the training engine passes."""
        if (targets is None and isinstance(images, tuple) and len(images) == 2
                and isinstance(images[1], (list, tuple))
                and all(isinstance(t, dict) for t in images[1])):
            images, targets = images
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            raise ValueError(f"expected a list of 3 x H x W images or a B x 3 x H x W batch, "
                             f"got one image of shape {tuple(images.shape)}; pass [image]")
        if self.training and targets is None:
            raise ValueError("in train mode the detector takes targets (one dict per image "
                             "with 'boxes' x1 y1 x2 y2 in pixels and 'labels'); call "
                             "model.eval() to detect")
        if targets is not None:
            check_targets(targets, self.num_classes)
        check_image_range(images)
        if self.training and len(images) < 2 and any(
                isinstance(m, nn.BatchNorm2d) for m in self.backbone.extra.modules()):
            raise ValueError("train mode needs batches of at least 2 images: the last extra "
                             "map is 1 x 1, where BatchNorm has one value per channel")
        return super().forward(images, targets)

    def head_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network alone on a resized, normalised B x 3 x H x W batch: torchvision's head
        dict (``bbox_regression`` B x N x 4, ``cls_logits`` B x N x num_classes), before the
        default boxes, decoding and NMS (what ``mobilenets.profile`` counts)."""
        return self.head(list(self.backbone(x).values()))

    def export_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The detector's dense output for export, with no data-dependent control flow:
        ``x`` is a B x 3 x H x W batch already resized and normalised (what ``self.transform``
        makes of the images); returns ``(boxes, scores)``: B x N x 4 boxes decoded from every
        default box (x1, y1, x2, y2 in ``x``'s pixels, clipped to it) and B x N x
        (num_classes - 1) softmax scores without the background column (column ``k`` is
        label ``k + 1``). These are what ``postprocess_detections`` starts from, before its
        score threshold, top-k and NMS (:mod:`mobilenets.deploy.detection_export` does those
        in the graph)."""
        features = list(self.backbone(x).values())
        head = self.head(features)               # head_outputs(x), with the features kept
        h, w = int(x.shape[-2]), int(x.shape[-1])
        # the default boxes depend on the shapes only: one set, shared by every image
        anchors = self.anchor_generator(ImageList(x, [(h, w)]), features)[0]
        codes = head["bbox_regression"]
        b, n = codes.shape[0], codes.shape[1]
        boxes = self.box_coder.decode_single(codes.reshape(b * n, 4), anchors.repeat(b, 1))
        boxes = clip_boxes_to_image(boxes.reshape(b, n, 4), (h, w))
        scores = torch.softmax(head["cls_logits"], dim=-1)[..., 1:]
        return boxes, scores

    def losses_and_detections(self, images, targets):
        """Both outputs of one pass, whatever the mode: the training losses against
        ``targets`` and the detections (validation loss and mAP from one forward; the
        BatchNorm layers run in the mode the model is in). The steps are
        ``SSD.forward``'s."""
        check_targets(targets, self.num_classes)
        original = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, targets = self.transform(list(images), [dict(t) for t in targets])
        features = list(self.backbone(batch.tensors).values())
        head_outputs = self.head(features)
        anchors = self.anchor_generator(batch, features)
        matched = []
        for anchors_i, target in zip(anchors, targets):
            if target["boxes"].numel() == 0:
                matched.append(torch.full((anchors_i.size(0),), -1, dtype=torch.int64,
                                          device=anchors_i.device))
            else:
                matched.append(self.proposal_matcher(box_iou(target["boxes"], anchors_i)))
        losses = self.compute_loss(targets, head_outputs, anchors, matched)
        detections = self.postprocess_detections(head_outputs, anchors, batch.image_sizes)
        return losses, self.transform.postprocess(detections, batch.image_sizes, original)


def _check_options(options: dict) -> None:
    unknown = sorted(set(options) - set(BACKBONE_OPTIONS) - set(HEAD_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for SSDLite; it takes "
                        f"{', '.join(HEAD_OPTIONS)} and the backbone's "
                        f"{', '.join(BACKBONE_OPTIONS)}")


def _build(head: str, backbone: str, defaults: dict, **options) -> SSDLite:
    from ..registry import create_model   # here: the registry imports the heads package
    _check_options(options)
    given = dict(options)
    options = {**POSTPROCESS, **defaults, **options}
    num_classes = options.pop("num_classes", 91)
    size = options.pop("resolution", 320)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} is not allowed: num_classes counts the "
                         f"background too (91 for torchvision's COCO ids), so at least 2")
    if isinstance(size, bool) or not isinstance(size, int) or size < 64:
        raise ValueError(f"resolution={size!r} is not allowed: resolution must be an integer "
                         f">= 64 (pixels; the last extra block is at /320 for 320)")
    head_kw = {k: options.pop(k) for k in HEAD_OPTIONS if k in options}
    mean = tuple(head_kw.pop("image_mean", None) or ())
    std = tuple(head_kw.pop("image_std", None) or ())
    options.setdefault("bn_eps", 1e-3)
    options.setdefault("bn_momentum", 0.03)
    norm_layer_name = options.pop("norm_layer", "batchnorm")
    # the last tap is the /32 map before pooling (the head conv, or the last block)
    body = create_model(backbone, features_only=True, out_indices=[-1], **options)
    if not mean:
        mean, std = tuple(body.preprocess["mean"]), tuple(body.preprocess["std"])
    for name, v in (("image_mean", mean), ("image_std", std)):
        if len(v) != 3:
            raise ValueError(f"{name}={v!r} is not allowed: give three values (R, G, B)")
    norm_layer = partial(nn.BatchNorm2d, eps=options["bn_eps"], momentum=options["bn_momentum"])
    features = SSDLiteFeatures(body, norm_layer)
    config = {"name": f"{head}_{backbone}", "head": head, "backbone": backbone,
              "task": "detection", "num_classes": num_classes, "resolution": size,
              "options": given}
    preprocess = {"resolution": size, "resize": size, "crop_pct": 1.0,
                  "interpolation": "bilinear", "mean": mean, "std": std,
                  # the model resizes and normalises [0, 1] images itself
                  "in_model": True}
    model = SSDLite(features, num_classes, size, mean, std, norm_layer, config, preprocess,
                    **head_kw)
    normal_init(model)
    if norm_layer_name != "batchnorm":
        model = convert_norm(model, norm_layer_name)
    return model


def build_ssdlite(backbone: str, **options) -> SSDLite:
    """SSDLite with the backbone's full tail and normalisation (a classification checkpoint of
    ``backbone`` fits ``model.backbone.body``)."""
    return _build("ssdlite", backbone, {}, **options)


def build_ssdlite320(backbone: str, **options) -> SSDLite:
    """torchvision's ``ssdlite320_mobilenet_v3_large`` configuration on ``backbone``."""
    return _build("ssdlite320", backbone, {"reduced_tail": True, "image_mean": MEAN_HALF,
                                           "image_std": MEAN_HALF}, **options)


register_head(HeadEntry("ssdlite", "detection", build_ssdlite, "mobilenet_v2_100",
                        listed=("ssdlite320_mobilenet_v3_large",)))
# the default backbone is torchvision's alias, so the listing shows torchvision's name
register_head(HeadEntry("ssdlite320", "detection", build_ssdlite320, "mobilenet_v3_large"))

__all__ = ["SSDLite", "SSDLiteFeatures", "build_ssdlite", "build_ssdlite320", "normal_init"]
