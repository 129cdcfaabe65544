"""YOLOv4 with a MobileNet backbone (the seed's "MobileNetV1, V2, V3 and YOLOv4"; the layout of
bubbliiiing/mobilenet-yolov4-pytorch, ``../shared/reference/dense-and-families.md`` §4.3).

Architecture (``neck_width=1`` gives the reference's widths; every block Conv-BN-ReLU6, "DW"
is a depthwise-separable pair: 3x3 depthwise -> BN -> ReLU6 -> 1x1 -> BN -> ReLU6):

- **taps** C3, C4, C5 at strides 8, 16 and 32: the last ``feature_info`` tap at /8 and at /16
  and the **last block** at /32 (the 1x1 head conv of MobileNetV2/V3 is dropped, as the
  reference drops it): MobileNetV2 32 / 96 / 320 channels, MobileNetV3-Large 40 / 112 / 160,
  MobileNetV1 256 / 512 / 1024.
- **SPP** on C5: 1x1 -> 512, DW -> 1024, 1x1 -> 512, then max pools 13, 9 and 5 (stride 1,
  same size) concatenated with their input (2048), then 1x1 -> 512, DW -> 1024, 1x1 -> 512.
- **PANet**: top-down (P5 -> 1x1 -> x2 nearest, concatenated with 1x1(C4) -> five convs
  [256, 512]; again down to /8 with [128, 256]), then bottom-up (DW stride 2 and five convs
  [256, 512], [512, 1024]); five convs = 1x1, DW, 1x1, DW, 1x1 with alternating widths.
- **heads** at /8, /16, /32: DW -> 256 / 512 / 1024, then a 1x1 conv with bias to
  ``3 * (5 + K)`` channels (3 anchors, box, objectness, ``K = num_classes - 1`` classes).

At ``num_classes=81`` (80 classes) on ``mobilenet_v2_100`` it has the reference's 10,801,149
parameters (derived in the reference notes from its layer table).

**Labels** follow the library's detectors (``tasks.detection``): ``num_classes`` counts a
background label 0 that YOLO never predicts (objectness plays its part); class channel ``k``
is label ``k + 1``, so COCO128 trains on torchvision's 91 COCO ids and any other data set on
``1 .. K``.

**Letterbox** (in the model, as torchvision's detectors resize in theirs): each [0, 1] image is
resized bilinearly so that its longer side is ``resolution`` (aspect kept), centred on a grey
canvas (114 / 255, YOLO's fill), then normalised with the backbone's mean and std; boxes go
through the same scale and offset, and output boxes are mapped back and clipped to each image.
The canvas is ``resolution`` x ``resolution`` (``canvas="square"``, the default: an image's
detections do not depend on the other images of its batch, and an exported graph takes the
same input), or with ``canvas="rect"`` the batch's largest resized image rounded up to a
multiple of 32 (YOLOv5's rectangular inference: less padding, fewer pixels).

**Anchors**: YOLOv4's COCO anchors (pixels at 416) scaled by ``resolution / 416``: stride 8
(12, 16) (19, 36) (40, 28); stride 16 (36, 75) (76, 55) (72, 146); stride 32 (142, 110)
(192, 243) (459, 401).

**Decoding** (YOLOv4): centre = (sigmoid(t_xy) + cell) * stride, size = exp(t_wh) * anchor
(t_wh clamped at log(1000 / 16), torchvision's box-coder clamp; in training the gradient
passes the clamp), objectness and class probabilities by sigmoid; a box's score for a class
is objectness * class probability.

**Target assignment by anchor-shape ratio** (YOLOv5 / Scaled-YOLOv4): a ground-truth box of
size (w, h) is a positive of anchor (a_w, a_h) when ``max(w / a_w, a_w / w, h / a_h, a_h / h)
< anchor_t`` (4.0), on every level and anchor where that holds, in the grid cell holding its
centre; a box that no anchor fits within the ratio goes to the single anchor of the nine with
the smallest ratio, so every box has at least one positive. Negatives whose decoded box has
IoU > ``ignore_thresh`` (0.5) with a ground-truth box are left out of the objectness loss
(YOLOv4's ignore rule).

**Loss** (train mode returns it as a dict): ``box`` = 0.05 * mean(1 - CIoU) over positives
(``torchvision.ops.complete_box_iou_loss``), ``objectness`` = sum over levels of balance
(4.0, 1.0, 0.4 for strides 8, 16, 32) * mean BCE over the non-ignored cells (target 0 at
negatives and, at a positive, ``1 - r + r * iou`` with ``iou`` its box's CIoU with the
ground truth clamped at 0, detached, and ``r = objectness_iou``, default 1.0: YOLOv5's
IoU-aware target (its ``gr``), which goes with its assignment; ``objectness_iou=0`` is
YOLOv4's own target 1, which teaches positives whose box is still far off full confidence,
so that their boxes come out as confident false detections), ``classification`` = 0.5 *
mean BCE over positives and classes (one-hot targets).

**Post-processing** (eval mode): every (box, class) pair scoring above ``score_thresh`` (at
most ``topk_candidates``, the highest), class-wise ``torchvision.ops.batched_nms`` at
``nms_thresh``, the best ``detections_per_img`` kept, mapped back to the image; those wholly
in the letterbox padding (empty once clipped to the image) are dropped.

**Export**: eval mode is :meth:`YOLOv4.letterbox`, then :meth:`YOLOv4.export_forward` (the
network and the decoding, no data-dependent control flow: boxes B x N x 4 and per-label
scores B x N x num_classes), then the post-processing; an exporter letterboxes to
``model.fixed_size`` with ``letterbox(images, size=model.fixed_size)`` and maps boxes back
with :meth:`YOLOv4.unletterbox`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou, complete_box_iou_loss

from .detection import check_image_range, check_targets
from .registry import HeadEntry, register_head

#: the backbone options a detector passes on (the head picks the taps)
BACKBONE_OPTIONS = ("width_mult", "depth_mult", "act", "drop_path_rate", "bn_eps",
                    "bn_momentum", "padding", "norm_layer", "block_widths")
HEAD_OPTIONS = ("num_classes", "resolution", "image_mean", "image_std", "score_thresh",
                "nms_thresh", "detections_per_img", "topk_candidates", "neck_width",
                "anchor_t", "ignore_thresh", "objectness_iou", "canvas")
#: YOLOv4's COCO anchors, pixels at 416 x 416, per level (strides 8, 16, 32)
ANCHORS_416 = (((12, 16), (19, 36), (40, 28)),
               ((36, 75), (76, 55), (72, 146)),
               ((142, 110), (192, 243), (459, 401)))
STRIDES = (8, 16, 32)
ANCHORS_PER_LEVEL = 3
PAD_VALUE = 114 / 255
BALANCE = (4.0, 1.0, 0.4)
BOX_GAIN, OBJ_GAIN, CLS_GAIN = 0.05, 1.0, 0.5
WH_CLAMP = math.log(1000.0 / 16)
POSTPROCESS = {"score_thresh": 0.001, "nms_thresh": 0.6, "detections_per_img": 300,
               "topk_candidates": 10000}


def conv(c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU6."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


def dw(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """Depthwise-separable: 3x3 depthwise (stride ``stride``) and 1x1, each BN + ReLU6."""
    return nn.Sequential(conv(c_in, c_in, 3, stride, groups=c_in), conv(c_in, c_out))


def three_convs(c_in: int, a: int, b: int) -> nn.Sequential:
    return nn.Sequential(conv(c_in, a), dw(a, b), conv(b, a))


def five_convs(c_in: int, a: int, b: int) -> nn.Sequential:
    return nn.Sequential(conv(c_in, a), dw(a, b), conv(b, a), dw(a, b), conv(b, a))


class SPP(nn.Module):
    """Max pools 13, 9 and 5 (stride 1, padded to keep the size) concatenated with the input."""

    def __init__(self, sizes=(5, 9, 13)):
        super().__init__()
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([pool(x) for pool in self.pools[::-1]] + [x], 1)


class PANet(nn.Module):
    """SPP on C5 and the PANet neck (module docstring); returns P3, P4, P5."""

    def __init__(self, channels: tuple[int, int, int], width: float = 1.0):
        super().__init__()
        c3, c4, c5 = channels
        w = [max(8, int(round(v * width))) for v in (128, 256, 512, 1024)]
        self.spp_in = three_convs(c5, w[2], w[3])
        self.spp = SPP()
        self.spp_out = three_convs(4 * w[2], w[2], w[3])
        self.up5 = conv(w[2], w[1])
        self.lat4 = conv(c4, w[1])
        self.td4 = five_convs(2 * w[1], w[1], w[2])
        self.up4 = conv(w[1], w[0])
        self.lat3 = conv(c3, w[0])
        self.td3 = five_convs(2 * w[0], w[0], w[1])
        self.down3 = dw(w[0], w[1], 2)
        self.bu4 = five_convs(2 * w[1], w[1], w[2])
        self.down4 = dw(w[1], w[2], 2)
        self.bu5 = five_convs(2 * w[2], w[2], w[3])
        self.out_channels = (w[0], w[1], w[2])
        self.head_channels = (w[1], w[2], w[3])

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        c3, c4, c5 = feats
        p5 = self.spp_out(self.spp(self.spp_in(c5)))
        up = F.interpolate(self.up5(p5), size=c4.shape[-2:], mode="nearest")
        p4 = self.td4(torch.cat([self.lat4(c4), up], 1))
        up = F.interpolate(self.up4(p4), size=c3.shape[-2:], mode="nearest")
        p3 = self.td3(torch.cat([self.lat3(c3), up], 1))
        p4 = self.bu4(torch.cat([self.down3(p3), p4], 1))
        p5 = self.bu5(torch.cat([self.down4(p4), p5], 1))
        return [p3, p4, p5]


class YOLOHead(nn.Module):
    """Per level: DW to the head width, then a 1x1 conv with bias to ``3 * (5 + K)``."""

    def __init__(self, in_channels, widths, num_outputs: int):
        super().__init__()
        self.convs = nn.ModuleList(dw(c, w) for c, w in zip(in_channels, widths))
        self.pred = nn.ModuleList(nn.Conv2d(w, ANCHORS_PER_LEVEL * num_outputs, 1)
                                  for w in widths)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [p(c(x)) for x, c, p in zip(feats, self.convs, self.pred)]


class YOLOBackbone(nn.Module):
    """``body``: the ``features_only`` backbone returning C3, C4, C5; ``neck``: SPP + PANet."""

    def __init__(self, body: nn.Module, neck: PANet):
        super().__init__()
        self.body = body
        self.neck = neck

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.neck(list(self.body(x).values()))


def yolo_taps(backbone: str, options: dict) -> dict[str, str]:
    """``{module: name}`` of the C3 / C4 / C5 taps (module docstring) for ``return_layers``."""
    from ..registry import create_model   # here: the registry imports the heads package
    options = {k: v for k, v in options.items() if k != "norm_layer"}
    with torch.device("meta"):
        net = create_model(backbone, num_classes=0, **options)
    taps = list(net.feature_info)
    found = {}
    for reduction, name in ((8, "c3"), (16, "c4")):
        at = [t for t in taps if t.reduction == reduction and t.module != "head"]
        if not at:
            raise ValueError(f"{backbone} has no feature tap at stride {reduction}; YOLOv4 "
                             f"needs maps at strides 8, 16 and 32")
        found[at[-1].module] = name
    rows = net.plan.rows
    last = f"blocks.{len(rows) - 1}.{len(rows[-1]) - 1}"
    if max(t.reduction for t in taps) != 32:
        raise ValueError(f"{backbone} does not reach stride 32; YOLOv4 needs maps at strides "
                         f"8, 16 and 32")
    found[last] = "c5"
    return found


def make_anchors(resolution: int) -> torch.Tensor:
    """3 x 3 x 2 anchor sizes in pixels: YOLOv4's COCO anchors scaled to ``resolution``."""
    return torch.tensor(ANCHORS_416, dtype=torch.float32) * (resolution / 416)


def assign_targets(targets: list[dict], grids: list[tuple[int, int]], anchors: torch.Tensor,
                   strides=STRIDES, anchor_t: float = 4.0) -> list[dict]:
    """The positives of each level by the anchor-shape ratio rule (module docstring).

    ``targets``: per image ``boxes`` (xyxy pixels of the network's input) and ``labels``;
    ``grids``: per level (height, width) in cells; ``anchors``: levels x 3 x 2 pixels.
    Returns per level a dict of 1-D tensors ``image``, ``anchor``, ``gy``, ``gx`` (the cell),
    ``boxes`` (N x 4 xyxy) and ``labels``."""
    device = anchors.device
    flat = anchors.reshape(-1, 2)                              # 9 x 2
    per_level = [{"image": [], "anchor": [], "gy": [], "gx": [], "boxes": [], "labels": []}
                 for _ in grids]
    for i, t in enumerate(targets):
        boxes = t["boxes"].to(device, torch.float32).reshape(-1, 4)
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh > 1e-3).all(1)
        boxes, wh, labels = boxes[keep], wh[keep], t["labels"].to(device)[keep]
        if not len(boxes):
            continue
        r = wh[:, None, :] / flat[None]                       # G x 9 x 2
        ratio = torch.max(r, 1 / r).amax(2)                   # G x 9
        match = ratio < anchor_t
        best = ratio.argmin(1)
        match[torch.arange(len(boxes), device=device), best] = True
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        for g, k in match.nonzero().tolist():
            level, a = divmod(k, ANCHORS_PER_LEVEL)
            h, w = grids[level]
            s = strides[level]
            gx = min(max(int(centre[g, 0] // s), 0), w - 1)
            gy = min(max(int(centre[g, 1] // s), 0), h - 1)
            out = per_level[level]
            out["image"].append(i)
            out["anchor"].append(a)
            out["gy"].append(gy)
            out["gx"].append(gx)
            out["boxes"].append(boxes[g])
            out["labels"].append(labels[g])
    result = []
    for out in per_level:
        n = len(out["image"])
        result.append({
            **{k: torch.tensor(out[k], dtype=torch.int64, device=device)
               for k in ("image", "anchor", "gy", "gx")},
            "boxes": torch.stack(out["boxes"]) if n else torch.zeros(0, 4, device=device),
            "labels": (torch.stack(out["labels"]) if n
                       else torch.zeros(0, dtype=torch.int64, device=device))})
    return result


def _letterbox_one(image: torch.Tensor, canvas_limit: tuple[int, int]):
    h, w = image.shape[-2:]
    r = min(canvas_limit[0] / h, canvas_limit[1] / w)
    nh, nw = max(1, int(round(h * r))), max(1, int(round(w * r)))
    if (nh, nw) != (h, w):
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear",
                              align_corners=False)[0]
    return image, (nw / w, nh / h)


class YOLOv4(nn.Module):
    """MobileNet-YOLOv4 (module docstring). ``backbone`` is a :class:`YOLOBackbone` (its
    ``body`` the classification network's trunk), ``head`` a :class:`YOLOHead`; ``config``
    and ``preprocess`` as every model of the library. torchvision's detector convention: eval
    ``model(images)`` -> one dict per image (``boxes``, ``scores``, ``labels``); train
    ``model(images, targets)`` -> ``{"box", "objectness", "classification"}``."""

    task = "detection"

    def __init__(self, backbone: YOLOBackbone, head: YOLOHead, num_classes: int,
                 resolution: int, image_mean, image_std, config: dict, preprocess: dict,
                 score_thresh: float = 0.001, nms_thresh: float = 0.6,
                 detections_per_img: int = 300, topk_candidates: int = 10000,
                 anchor_t: float = 4.0, ignore_thresh: float = 0.5,
                 objectness_iou: float = 1.0, canvas: str = "square"):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes
        self.resolution = resolution
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates
        self.anchor_t = anchor_t
        self.ignore_thresh = ignore_thresh
        self.objectness_iou = objectness_iou
        self.canvas = canvas
        self.register_buffer("anchors", make_anchors(resolution), persistent=False)
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, 3, 1, 1),
                             persistent=False)
        self.config = dict(config)
        self.preprocess = dict(preprocess)

    # --- preprocessing ------------------------------------------------------------------

    @property
    def fixed_size(self) -> tuple[int, int]:
        """The canvas (H, W) of a fixed-size input: ``letterbox(images, size=fixed_size)``
        gives what :meth:`export_forward` and an exported graph take."""
        return (self.resolution, self.resolution)

    def letterbox(self, images, targets=None, size: tuple[int, int] | None = None):
        """``(batch, transforms, targets)``: [0, 1] images (a list of 3 x H x W or a batch)
        letterboxed and normalised into one B x 3 x H' x W' tensor (module docstring; ``size``
        fixes H' x W', else the model's ``canvas`` rule gives it);
        ``transforms`` is a B x 4 tensor (scale x, scale y, offset x, offset y) per image
        mapping its pixels to the batch's (:meth:`unletterbox` undoes it); ``targets`` with
        their boxes mapped the same way (None when not given)."""
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            raise ValueError(f"expected a list of 3 x H x W images or a B x 3 x H x W batch, "
                             f"got one image of shape {tuple(images.shape)}; pass [image]")
        if len(images) == 0:
            raise ValueError("no images given")
        for img in images:
            if img.ndim != 3 or img.shape[0] != 3:
                raise ValueError(f"expected 3 x H x W images, got shape {tuple(img.shape)}")
            if not img.is_floating_point():
                raise ValueError(f"expected float images in [0, 1], got {img.dtype}; divide "
                                 f"uint8 images by 255")
        check_image_range(images)
        if size is None and self.canvas == "square":
            size = (self.resolution, self.resolution)
        limit = size or (self.resolution, self.resolution)
        resized = [_letterbox_one(img, limit) for img in images]
        if size is None:
            hmax = max(r[0].shape[-2] for r in resized)
            wmax = max(r[0].shape[-1] for r in resized)
            size = (math.ceil(hmax / 32) * 32, math.ceil(wmax / 32) * 32)
        first = resized[0][0]
        batch = first.new_full((len(images), 3, *size), PAD_VALUE)
        transforms = []
        for k, (img, (sx, sy)) in enumerate(resized):
            h, w = img.shape[-2:]
            top, left = (size[0] - h) // 2, (size[1] - w) // 2
            batch[k, :, top:top + h, left:left + w] = img
            transforms.append([sx, sy, float(left), float(top)])
        transforms = torch.tensor(transforms, dtype=batch.dtype, device=batch.device)
        batch = (batch - self.image_mean) / self.image_std
        if targets is not None:
            moved = []
            for t, (sx, sy, ox, oy) in zip(targets, transforms.tolist()):
                boxes = t["boxes"].to(batch.device, batch.dtype).reshape(-1, 4)
                scale = boxes.new_tensor([sx, sy, sx, sy])
                offset = boxes.new_tensor([ox, oy, ox, oy])
                moved.append(dict(t, boxes=boxes * scale + offset))
            targets = moved
        return batch, transforms, targets

    @staticmethod
    def unletterbox(boxes: torch.Tensor, transform: torch.Tensor,
                    image_size: tuple[int, int]) -> torch.Tensor:
        """Boxes (N x 4 xyxy, the letterboxed batch's pixels) back into an image of
        ``image_size`` (H, W), clipped to it; ``transform`` is that image's row of
        :meth:`letterbox`'s transforms."""
        sx, sy, ox, oy = transform.unbind()
        out = (boxes - torch.stack([ox, oy, ox, oy])) / torch.stack([sx, sy, sx, sy])
        h, w = image_size
        return torch.stack([out[:, 0].clamp(0, w), out[:, 1].clamp(0, h),
                            out[:, 2].clamp(0, w), out[:, 3].clamp(0, h)], 1)

    @classmethod
    def image_detections(cls, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                         transform: torch.Tensor, image_size: tuple[int, int]) -> dict:
        """One image's detections (boxes in the letterboxed batch's pixels) as its dict:
        boxes mapped back by :meth:`unletterbox`; a box that lies wholly in the letterbox
        padding, empty once clipped to the image, is dropped (the eager model and the
        exported files alike)."""
        boxes = cls.unletterbox(boxes, transform, image_size)
        seen = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return {"boxes": boxes[seen], "scores": scores[seen], "labels": labels[seen]}

    # --- the network and decoding --------------------------------------------------------

    def head_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Raw predictions per level: B x 3 x h x w x (5 + K) (box, objectness, classes)."""
        outs = self.head(self.backbone(x))
        n = 5 + self.num_classes - 1
        return [o.view(o.shape[0], ANCHORS_PER_LEVEL, n, o.shape[-2], o.shape[-1])
                .permute(0, 1, 3, 4, 2) for o in outs]

    def decode_boxes(self, raw: torch.Tensor, level: int) -> torch.Tensor:
        """xyxy boxes (pixels of the input) of one level's raw predictions (B x 3 x h x w x .)."""
        h, w = raw.shape[2], raw.shape[3]
        stride = STRIDES[level]
        ys = torch.arange(h, device=raw.device, dtype=raw.dtype).view(1, 1, h, 1)
        xs = torch.arange(w, device=raw.device, dtype=raw.dtype).view(1, 1, 1, w)
        cx = (raw[..., 0].sigmoid() + xs) * stride
        cy = (raw[..., 1].sigmoid() + ys) * stride
        anchors = self.anchors[level].to(raw.dtype)
        twh = raw[..., 2:4]
        clamped = twh.clamp(max=WH_CLAMP)
        if self.training:     # the clamped value with the unclamped gradient, so that a box
            clamped = twh + (clamped - twh).detach()   # grown past the clamp can shrink back
        bw = clamped[..., 0].exp() * anchors[:, 0].view(1, 3, 1, 1)
        bh = clamped[..., 1].exp() * anchors[:, 1].view(1, 3, 1, 1)
        return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)

    def decode(self, raws: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = [], []
        for level, raw in enumerate(raws):
            b = raw.shape[0]
            boxes.append(self.decode_boxes(raw, level).reshape(b, -1, 4))
            conf = raw[..., 4:5].sigmoid() * raw[..., 5:].sigmoid()
            scores.append(conf.reshape(b, -1, conf.shape[-1]))
        scores = torch.cat(scores, 1)
        # column 0 is the background label, which YOLO never predicts
        scores = torch.cat([scores.new_zeros(scores.shape[0], scores.shape[1], 1), scores], 2)
        return torch.cat(boxes, 1), scores

    def export_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The detector before NMS, for export: ``x`` is a letterboxed, normalised B x 3 x H x
        W batch (:meth:`letterbox` with ``size``; H, W multiples of 32). Returns ``boxes`` (B x
        N x 4, xyxy in ``x``'s pixels) and ``scores`` (B x N x num_classes: objectness * class
        probability, column = label; column 0, the background, is 0). N = 3 * (H W / 64 + H W
        / 256 + H W / 1024), levels from stride 8 to 32, then anchors, rows, columns. No
        data-dependent control flow."""
        return self.decode(self.head_outputs(x))

    # --- post-processing ----------------------------------------------------------------

    def postprocess(self, boxes: torch.Tensor, scores: torch.Tensor, transforms: torch.Tensor,
                    sizes: list[tuple[int, int]]) -> list[dict]:
        """One dict per image from :meth:`export_forward`'s output (module docstring)."""
        out = []
        for b, s, t, size in zip(boxes, scores, transforms, sizes):
            s = s[:, 1:]                             # not the background column
            idx, cls = (s > self.score_thresh).nonzero(as_tuple=True)
            sc = s[idx, cls]
            if sc.numel() > self.topk_candidates:
                sc, top = sc.topk(self.topk_candidates)
                idx, cls = idx[top], cls[top]
            bx = b[idx]
            keep = batched_nms(bx, sc, cls, self.nms_thresh)[:self.detections_per_img]
            out.append(self.image_detections(bx[keep], sc[keep], cls[keep] + 1, t, size))
        return out

    # --- loss -----------------------------------------------------------------------------

    def compute_loss(self, raws: list[torch.Tensor], targets: list[dict]) -> dict:
        """The training losses (module docstring) of raw predictions against ``targets``
        (boxes in the letterboxed batch's pixels, labels 1 .. num_classes - 1)."""
        grids = [(r.shape[2], r.shape[3]) for r in raws]
        assigned = assign_targets(targets, grids, self.anchors, STRIDES, self.anchor_t)
        device = raws[0].device
        zero = raws[0].sum() * 0
        box_terms, cls_terms, obj = [], [], zero
        for level, (raw, pos) in enumerate(zip(raws, assigned)):
            decoded = self.decode_boxes(raw, level)
            obj_target = torch.zeros_like(raw[..., 4])
            weight = torch.ones_like(obj_target)
            with torch.no_grad():                    # YOLOv4's ignore rule
                for i, t in enumerate(targets):
                    gt = t["boxes"].to(device, raw.dtype).reshape(-1, 4)
                    if len(gt):
                        best = box_iou(decoded[i].reshape(-1, 4), gt).amax(1)
                        weight[i].view(-1)[best > self.ignore_thresh] = 0
            if len(pos["image"]):
                where = (pos["image"], pos["anchor"], pos["gy"], pos["gx"])
                ciou_loss = complete_box_iou_loss(decoded[where], pos["boxes"],
                                                  reduction="none")
                box_terms.append(ciou_loss)
                # IoU-aware objectness (YOLOv5 / Scaled-YOLOv4, whose assignment this is): a
                # positive whose box does not fit yet is not taught full confidence
                iou = (1 - ciou_loss).detach().clamp(min=0).to(obj_target.dtype)
                r = self.objectness_iou
                obj_target[where] = (1 - r) + r * iou
                weight[where] = 1.0
                logits = raw[where][:, 5:]
                onehot = torch.zeros_like(logits)
                onehot[torch.arange(len(logits), device=device), pos["labels"] - 1] = 1.0
                cls_terms.append(F.binary_cross_entropy_with_logits(logits, onehot,
                                                                    reduction="none").mean(1))
            bce = F.binary_cross_entropy_with_logits(raw[..., 4], obj_target, reduction="none")
            obj = obj + BALANCE[level] * (bce * weight).sum() / weight.sum().clamp(min=1)
        box = torch.cat(box_terms).mean() if box_terms else zero
        cls = torch.cat(cls_terms).mean() if cls_terms else zero
        return {"box": BOX_GAIN * box, "objectness": OBJ_GAIN * obj,
                "classification": CLS_GAIN * cls}

    def _check_targets(self, targets) -> None:
        check_targets(targets, self.num_classes)

    # --- forward ------------------------------------------------------------------------

    def forward(self, images, targets=None):
        """Eval: detections per image; train: the dict of losses (``images`` may also be the
        pair ``(images, targets)``, the one input the training engine passes)."""
        if (targets is None and isinstance(images, tuple) and len(images) == 2
                and isinstance(images[1], (list, tuple))
                and all(isinstance(t, dict) for t in images[1])):
            images, targets = images
        if self.training:
            if targets is None:
                raise ValueError("in train mode the detector takes targets (one dict per image "
                                 "with 'boxes' x1 y1 x2 y2 in pixels and 'labels'); call "
                                 "model.eval() to detect")
            self._check_targets(targets)
            batch, _, moved = self.letterbox(images, targets)
            return self.compute_loss(self.head_outputs(batch), moved)
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, transforms, _ = self.letterbox(images)
        boxes, scores = self.export_forward(batch)
        return self.postprocess(boxes, scores, transforms, sizes)

    def losses_and_detections(self, images, targets):
        """Both outputs of one pass, whatever the mode (validation loss and mAP from one
        forward; BatchNorm runs in the mode the model is in)."""
        self._check_targets(targets)
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, transforms, moved = self.letterbox(images, targets)
        raws = self.head_outputs(batch)
        losses = self.compute_loss(raws, moved)
        boxes, scores = self.decode(raws)
        return losses, self.postprocess(boxes, scores, transforms, sizes)


def init_yolo(model: YOLOv4, bn_momentum: float = 0.03) -> None:
    """BatchNorm eps 1e-3 and momentum ``bn_momentum`` (YOLOv5's 0.03 unless the
    ``bn_momentum`` option is given) in the neck and head; prediction biases as YOLOv5 starts
    them: objectness log(8 / (640 / stride)^2) (about 8 objects per 640 image), classes
    log(0.6 / (K - 0.99))."""
    for m in (*model.backbone.neck.modules(), *model.head.modules()):
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, bn_momentum
    k = model.num_classes - 1
    with torch.no_grad():
        for pred, stride in zip(model.head.pred, STRIDES):
            bias = pred.bias.view(ANCHORS_PER_LEVEL, -1)
            bias[:, 4] = math.log(8 / (640 / stride) ** 2)
            bias[:, 5:] = math.log(0.6 / max(k - 0.99, 0.01))


def _check_options(options: dict) -> None:
    unknown = sorted(set(options) - set(BACKBONE_OPTIONS) - set(HEAD_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for YOLOv4; it takes "
                        f"{', '.join(HEAD_OPTIONS)} and the backbone's "
                        f"{', '.join(BACKBONE_OPTIONS)}")


def build_yolov4(backbone: str, **options) -> YOLOv4:
    """MobileNet-YOLOv4 on ``backbone`` (module docstring); ``num_classes`` counts the
    background (default 91: torchvision's COCO ids), ``resolution`` the letterbox size (a
    multiple of 32, default 416), ``neck_width`` scales the neck's and heads' widths."""
    from ..registry import create_model   # here: the registry imports the heads package
    from ..backbones import convert_norm
    _check_options(options)
    given = dict(options)
    options = {**POSTPROCESS, **options}
    num_classes = options.pop("num_classes", 91)
    size = options.pop("resolution", 416)
    width = options.pop("neck_width", 1.0)
    if options.get("canvas", "square") not in ("square", "rect"):
        raise ValueError(f"canvas={options['canvas']!r} is not allowed: give 'square' (every "
                         f"image on a resolution x resolution canvas) or 'rect' (the batch's "
                         f"largest image, rounded up to a multiple of 32)")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} is not allowed: num_classes counts the "
                         f"background too (91 for torchvision's COCO ids), so at least 2")
    if isinstance(size, bool) or not isinstance(size, int) or size < 64 or size % 32:
        raise ValueError(f"resolution={size!r} is not allowed: resolution must be a multiple "
                         f"of 32, at least 64 (pixels of the letterboxed input)")
    r = options.get("objectness_iou", 1.0)
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1:
        raise ValueError(f"objectness_iou={r!r} is not allowed: give a number in [0, 1] (the "
                         f"share of a positive's objectness target taken from its box's IoU; "
                         f"1.0 is YOLOv5's, 0 YOLOv4's target 1)")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"neck_width={width!r} is not allowed: give a positive multiplier of "
                         f"the neck's widths (1.0 is the reference's)")
    head_kw = {k: options.pop(k) for k in HEAD_OPTIONS if k in options}
    mean = tuple(head_kw.pop("image_mean", None) or ())
    std = tuple(head_kw.pop("image_std", None) or ())
    norm_layer_name = options.pop("norm_layer", "batchnorm")
    taps = yolo_taps(backbone, options)
    body = create_model(backbone, features_only=True, return_layers=taps, **options)
    if not mean:
        mean, std = tuple(body.preprocess["mean"]), tuple(body.preprocess["std"])
    for name, v in (("image_mean", mean), ("image_std", std)):
        if len(v) != 3:
            raise ValueError(f"{name}={v!r} is not allowed: give three values (R, G, B)")
    channels = tuple(body.out_channels[k] for k in ("c3", "c4", "c5"))
    neck = PANet(channels, width)
    head = YOLOHead(neck.out_channels, neck.head_channels, 5 + num_classes - 1)
    config = {"name": f"yolov4_{backbone}", "head": "yolov4", "backbone": backbone,
              "task": "detection", "num_classes": num_classes, "resolution": size,
              "options": given}
    preprocess = {"resolution": size, "resize": size, "crop_pct": 1.0,
                  "interpolation": "bilinear", "mean": mean, "std": std,
                  # the model letterboxes and normalises [0, 1] images itself
                  "in_model": True, "letterbox": True, "pad_value": PAD_VALUE}
    model = YOLOv4(YOLOBackbone(body, neck), head, num_classes, size, mean, std, config,
                   preprocess, **head_kw)
    init_yolo(model, options.get("bn_momentum", 0.03))
    if norm_layer_name != "batchnorm":
        model = convert_norm(model, norm_layer_name)
    return model


register_head(HeadEntry("yolov4", "detection", build_yolov4, "mobilenet_v2_100"))

__all__ = ["ANCHORS_416", "PANet", "SPP", "YOLOBackbone", "YOLOHead", "YOLOv4",
           "assign_targets", "build_yolov4", "make_anchors", "yolo_taps"]
