"""A detector as one ONNX graph that gives final detections: box decoding, score threshold,
per-class non-maximum suppression (the ONNX ``NonMaxSuppression`` operator) and the top
``max_det``, with fixed-size padded outputs.

The contract with a detector (SSDLite, YOLOv4): ``model.export_forward(x)`` takes the B x 3
x S x S batch already resized (SSDLite) or letterboxed (YOLOv4) and normalised, and returns
``(boxes, scores)``: B x N x 4 boxes (x1, y1, x2, y2 in ``x``'s pixels) and the class scores,
with no data-dependent control flow. The scores are B x N x (num_classes - 1) without the
background (SSDLite: column ``k`` is label ``k + 1``) or B x N x num_classes with column =
label (YOLOv4: column 0, the background, is 0 and is dropped); label 0 is never given. The
post-processing knobs are the model's own attributes (torchvision's: ``score_thresh``,
``nms_thresh``, ``detections_per_img`` and, optionally, ``topk_candidates``), or given to
the export.

The graph (:func:`postprocess`), as the models' own post-processing does it:

1. the ``topk_candidates`` highest scores, per class for torchvision's SSD (its
   ``postprocess_detections``), over all (box, class) pairs otherwise (YOLOv4's); the others
   are set to -1, below any threshold;
2. ``NonMaxSuppression`` on scores B x K x N (per image and per class natively) keeps boxes
   scoring above ``score_thresh`` whose IoU with a higher-scoring kept box of their class
   is at most ``nms_thresh``, at most ``max_det`` per class;
3. the kept scores are scattered into a B x (K * N) table (-1 elsewhere) whose ``TopK``
   gives the ``max_det`` best per image, best first.

Outputs: ``boxes`` B x max_det x 4 (float, the input's pixels), ``scores`` B x max_det,
``labels`` B x max_det (int64, the model's labels), ``num_detections`` B (int64): the first
``num_detections[i]`` rows of image ``i`` are its detections, the rest padding (boxes and
scores 0, label -1).

Preprocessing stays outside the graph, as for every exported file: the input is the resized
and normalised batch (the metadata's ``resize``: ``stretch`` to S x S, bilinear, as
torchvision's ``GeneralizedRCNNTransform``; ``letterbox`` for a model with ``letterbox`` /
``unletterbox`` methods, YOLOv4's), and the boxes are in its pixels;
:class:`~mobilenets.deploy.OnnxDetector` does both steps around the session (images of any
size in, boxes in their pixels out).

torch's exporter cannot trace torchvision's ``batched_nms`` (a data-dependent branch and a
loop over the classes), so NMS is the custom operator ``mobilenets::nms`` here (ONNX
``NonMaxSuppression``'s semantics in PyTorch, a data-dependent number of rows) with a
translation to the ONNX operator (:data:`TRANSLATIONS`, given to ``torch.onnx.export``).

An ExecuTorch ``.pte`` detector stops before step 1 (XNNPACK has no NMS kernels): its
program is :class:`DetectorNetwork` (network and box decoding, the part that the ONNX graph
runs first), its outputs the decoded ``boxes`` and ``scores`` (:data:`NETWORK_OUTPUTS`), and
its ``detection`` metadata says ``postprocess: "after"``; the same :func:`postprocess`, with
the metadata's settings, runs on them after the program (:func:`postprocess_outputs`), so both
files give the same detections.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection.ssd import SSD
from torchvision.ops import batched_nms

# the post-processing options an export takes, and the model attribute each defaults to
OPTIONS = {"score_thresh": "score_thresh", "nms_thresh": "nms_thresh",
           "max_det": "detections_per_img", "topk_candidates": "topk_candidates"}
PAD_LABEL = -1           # the label of a padding row
LABEL_OFFSET = 1         # export_forward's score column k is label k + 1 (0: background)
OUTPUTS = [("boxes", "B x max_det x 4 boxes x1 y1 x2 y2 in the input's pixels, best first; "
                     "rows from num_detections on are padding (0)"),
           ("scores", "B x max_det class scores of the boxes (padding 0)"),
           ("labels", "B x max_det int64 class labels of the boxes (padding -1)"),
           ("num_detections", "B int64: how many rows of each image are detections")]
# the outputs of DetectorNetwork, a .pte detector's program
NETWORK_OUTPUTS = [("boxes", "B x N x 4 decoded boxes x1 y1 x2 y2 in the input's pixels, one "
                             "per default box, before score threshold and NMS"),
                   ("scores", "B x N x K class scores of the boxes without the background: "
                              "column k is label k + 1")]


@torch.library.custom_op("mobilenets::nms", mutates_args=())
def nms(boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float,
        score_threshold: float) -> Tensor:
    """ONNX ``NonMaxSuppression`` in PyTorch: ``boxes`` B x N x 4 (x1 y1 x2 y2), ``scores``
    B x C x N; per image and class, the boxes scoring above ``score_threshold`` that survive
    NMS at IoU ``iou_threshold``, at most ``max_per_class``; returns their K x 3 (image,
    class, box) indices."""
    rows = []
    for b in range(scores.shape[0]):
        cls, idx = torch.nonzero(scores[b] > score_threshold, as_tuple=True)
        score = scores[b, cls, idx]
        keep = batched_nms(boxes[b, idx], score, cls, iou_threshold)   # best first
        cls, idx = cls[keep], idx[keep]
        # rank of each kept box within its class, to keep max_per_class of each
        same = cls[:, None] == cls[None, :]
        rank = torch.tril(same, diagonal=-1).sum(1)
        first = rank < max_per_class
        cls, idx = cls[first], idx[first]
        rows.append(torch.stack([torch.full_like(idx, b), cls, idx], 1))
    return (torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.int64,
                                                     device=boxes.device))


@nms.register_fake
def _nms_fake(boxes, scores, max_per_class, iou_threshold, score_threshold):
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count, 3), dtype=torch.int64)


def _nms_onnx(boxes, scores, max_per_class: int, iou_threshold: float,
              score_threshold: float):
    """``mobilenets::nms`` as the ONNX operator (corner boxes: ``center_point_box`` 0)."""
    from onnxscript import opset18 as op
    return op.NonMaxSuppression(boxes, scores, op.Constant(value_ints=[max_per_class]),
                                op.Constant(value_floats=[iou_threshold]),
                                op.Constant(value_floats=[score_threshold]))


# torch.onnx.export's custom_translation_table for detector graphs
TRANSLATIONS = {torch.ops.mobilenets.nms.default: _nms_onnx}


def postprocess(boxes: Tensor, scores: Tensor, score_thresh: float, nms_thresh: float,
                max_det: int, topk_candidates: int | None = None,
                topk_per_class: bool = True) -> tuple[Tensor, ...]:
    """``export_forward``'s boxes (B x N x 4) and scores without the background (B x N x K;
    column k is label k + 1) to the padded outputs ``(boxes, scores, labels,
    num_detections)`` (module docstring), with no data-dependent control flow: the same in
    eager PyTorch and in the exported graph."""
    b, n, k = scores.shape
    per_class = scores.transpose(1, 2)                             # B x K x N
    if topk_candidates is not None and topk_per_class and topk_candidates < n:
        top, index = per_class.topk(topk_candidates, dim=2)
        per_class = torch.full_like(per_class, -1.0).scatter(2, index, top)
    elif topk_candidates is not None and not topk_per_class and topk_candidates < k * n:
        flat = per_class.reshape(b, k * n)
        top, index = flat.topk(topk_candidates, dim=1)
        per_class = torch.full_like(flat, -1.0).scatter(1, index, top).reshape(b, k, n)
    kept = torch.ops.mobilenets.nms(boxes, per_class, max_det, nms_thresh, score_thresh)
    image, cls, box = kept[:, 0], kept[:, 1], kept[:, 2]
    # kept scores at (image, class * N + box), -1 elsewhere (a flat scatter: ScatterElements)
    table = scores.new_full((b * k * n,), -1.0).scatter(
        0, (image * k + cls) * n + box, per_class[image, cls, box]).view(b, k * n)
    best, flat = table.topk(min(max_det, k * n), dim=1)
    found = best >= 0
    labels = torch.where(found, flat // n + LABEL_OFFSET, PAD_LABEL)
    out_boxes = boxes.gather(1, (flat % n)[..., None].expand(-1, -1, 4))
    return (torch.where(found[..., None], out_boxes, 0.0), torch.where(found, best, 0.0),
            labels, found.sum(1))


class DetectorNetwork(nn.Module):
    """The part of a detector before its post-processing: the network and box decoding
    (``model.export_forward``), with a background score column dropped. Returns ``(boxes,
    scores)``: B x N x 4 boxes (x1 y1 x2 y2 in the input's pixels) and B x N x K scores,
    column ``k`` label ``k + 1``: what :func:`postprocess` takes. The ONNX graph runs it
    before NMS (:class:`DetectionGraph`); it is the whole program of a ``.pte`` detector,
    whose NMS runs after it (:func:`postprocess_outputs`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_classes = int(model.num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        boxes, scores = self.model.export_forward(x)
        if scores.shape[-1] == self.num_classes:       # column = label: drop the background
            scores = scores[..., 1:]
        return boxes, scores


class DetectionGraph(nn.Module):
    """:class:`DetectorNetwork` followed by :func:`postprocess`: what the ONNX file
    computes."""

    def __init__(self, model: nn.Module, score_thresh: float, nms_thresh: float, max_det: int,
                 topk_candidates: int | None, topk_per_class: bool = True):
        super().__init__()
        self.network = DetectorNetwork(model)
        self.score_thresh, self.nms_thresh = float(score_thresh), float(nms_thresh)
        self.max_det, self.topk_candidates = max_det, topk_candidates
        self.topk_per_class = topk_per_class

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        boxes, scores = self.network(x)
        return postprocess(boxes, scores, self.score_thresh, self.nms_thresh, self.max_det,
                           self.topk_candidates, self.topk_per_class)


# the options of postprocess that a file's "detection" metadata entry records
POSTPROCESS_KEYS = ("score_thresh", "nms_thresh", "max_det", "topk_candidates",
                    "topk_per_class")


def postprocess_outputs(boxes: Tensor, scores: Tensor, entry: dict,
                        **overrides) -> tuple[Tensor, ...]:
    """:func:`postprocess` with the settings of a file's ``detection`` metadata ``entry``
    (:func:`detection_metadata`), some replaced by ``overrides`` (e.g. ``score_thresh``):
    the step after the program of a ``.pte`` detector, on its ``boxes`` and ``scores``."""
    options = {key: entry.get(key) for key in POSTPROCESS_KEYS}
    options.update(overrides)
    if options["topk_per_class"] is None:
        options["topk_per_class"] = True
    with torch.no_grad():
        return postprocess(torch.as_tensor(boxes), torch.as_tensor(scores), **options)


def detection_metadata(model: nn.Module, options: dict, after: bool = False) -> dict:
    """The ``detection`` metadata entry of a file: the post-processing ``options``
    (:func:`detection_options`), the padding label and how images are resized
    (:func:`input_resize`). ``after``: the file's program stops before NMS (a ``.pte``), so
    the entry also says ``postprocess: "after"`` and the ``label_offset`` of its score
    columns (column ``k`` is label ``k + label_offset``)."""
    entry = dict(options, pad_label=PAD_LABEL, resize=input_resize(model))
    if after:
        entry.update(postprocess="after", label_offset=LABEL_OFFSET)
    return entry


def is_detector(model: nn.Module, task: str | None = None) -> bool:
    """Whether ``model`` exports as a detector: task detection and an ``export_forward``."""
    return (task or getattr(model, "task", None)) == "detection" and hasattr(
        model, "export_forward")


def detection_defaults(model: nn.Module) -> dict:
    """What a detector's exports start from: its post-processing attributes (keys of
    :data:`OPTIONS`), ``topk_per_class`` (torchvision's SSD keeps its top-k candidates per
    class, YOLOv4 over all pairs) and ``resize`` (:func:`input_resize`). An int8 model of a
    detector (its network quantized, no longer an SSD) carries its float detector's as the
    attribute ``detection_defaults``."""
    saved = getattr(model, "detection_defaults", None)
    if saved is not None:
        return dict(saved)
    out = {key: getattr(model, attr, None) for key, attr in OPTIONS.items()}
    return dict(out, topk_per_class=isinstance(model, SSD), resize=input_resize(model))


def detection_options(model: nn.Module, options: dict) -> dict:
    """The post-processing of the file: ``options`` (keys of :data:`OPTIONS`), else the
    model's (:func:`detection_defaults`); checked, with errors naming the option."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown detection export option(s) {', '.join(unknown)}; the "
                        f"options are {', '.join(OPTIONS)}")
    defaults = detection_defaults(model)
    out = {}
    for key in OPTIONS:
        value = options.get(key)
        out[key] = defaults[key] if value is None else value
    for key in ("score_thresh", "nms_thresh"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ValueError(f"{key}={v!r} is not allowed: give a number in [0, 1]")
        out[key] = float(v)
    for key in ("max_det", "topk_candidates"):
        v = out[key]
        if v is None and key == "topk_candidates":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{key}={v!r} is not allowed: give a positive int")
    out["topk_per_class"] = defaults["topk_per_class"]
    return out


def input_resize(model: nn.Module) -> str:
    """How images become the graph's input: ``letterbox`` for a model with ``letterbox`` and
    ``unletterbox`` methods (YOLOv4's), else ``stretch`` (torchvision's detection
    transform)."""
    saved = getattr(model, "detection_defaults", None)
    if saved is not None:
        return saved["resize"]
    return ("letterbox" if hasattr(model, "letterbox") and hasattr(model, "unletterbox")
            else "stretch")


def detection_graph(net: nn.Module, options: dict) -> DetectionGraph:
    """``net`` (the eval-mode detector) with the post-processing ``options``
    (:func:`detection_options`) as one module for ``torch.onnx.export``."""
    return DetectionGraph(net, **options).eval()


def postprocess_nodes(proto) -> list[str]:
    """Names of the nodes after the network in a detector graph, which int8 quantization
    keeps in float: every node from which no convolution is reached (box decoding, softmax,
    NMS, top-k, the gathers)."""
    nodes = list(proto.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    network, stack = set(), [n for n in nodes if n.op_type in ("Conv", "ConvTranspose")]
    while stack:             # walk back from the convolutions: all of it is the network
        node = stack.pop()
        if node.name in network:
            continue
        network.add(node.name)
        stack += [producer[i] for i in node.input if i in producer]
    return [n.name for n in nodes if n.name not in network]


__all__ = ["DetectionGraph", "DetectorNetwork", "NETWORK_OUTPUTS", "OPTIONS", "OUTPUTS",
           "PAD_LABEL", "POSTPROCESS_KEYS", "TRANSLATIONS", "detection_defaults",
           "detection_graph", "detection_metadata", "detection_options", "input_resize",
           "is_detector", "nms", "postprocess", "postprocess_nodes", "postprocess_outputs"]
