"""An exported detector file (:mod:`.detection_export`) used like an eval-mode detector in
torchvision's convention: images of any size in, one dict of ``boxes`` (in the image's
pixels), ``scores`` and ``labels`` per image out."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from .onnx_model import OnnxModel, _meta

DETECTION_OUTPUTS = ("boxes", "scores", "labels", "num_detections")


class OnnxDetector(OnnxModel):
    """A detector file in a runtime (``OnnxDetector(path, runtime="onnxruntime")``; also what
    :func:`~mobilenets.deploy.open_model` gives for a detector file).

    ``model(images)`` takes a list of 3 x H x W float images in [0, 1] of any size (or a
    B x 3 x H x W batch) and returns one dict per image with ``boxes`` (x1 y1 x2 y2 in that
    image's pixels), ``scores`` and ``labels``, as the PyTorch detector does: each image is
    normalised and resized to the file's S x S input as its metadata's ``resize`` says
    (``stretch``: torchvision's ``GeneralizedRCNNTransform``, SSDLite's own; ``letterbox``:
    YOLOv4's ``letterbox`` onto the square canvas), the graph decodes and suppresses, and the
    boxes are mapped back to the image. :meth:`detect` runs the graph alone on a
    prepared batch and returns its padded outputs.

    ``score_thresh``, ``nms_thresh`` and ``detections_per_img`` are those in the file's
    graph; raising ``score_thresh`` or lowering ``detections_per_img`` filters the graph's
    detections (``predict --conf --max-det``), while a lower threshold, more detections or
    another NMS IoU need a new export (the error says so).
    """

    task = "detection"

    def __init__(self, path: str | Path, threads: int | None = None, rewrite: bool = True,
                 runtime: str = "onnxruntime"):
        super().__init__(path, threads, rewrite, runtime)
        self._init_detector()

    @classmethod
    def of(cls, model: OnnxModel) -> "OnnxDetector":
        """The detector view of an opened detector file (its session is shared)."""
        detector = cls.__new__(cls)
        detector.__dict__.update(model.__dict__)
        detector._init_detector()
        return detector

    def _init_detector(self) -> None:
        graph = _meta(self.metadata, "detection")
        if self.metadata.get("task") != "detection" or not isinstance(graph, dict):
            raise ValueError(f"{self.path} is not a detector file (no detection entry in its "
                             f"metadata); export a detector with mobilenets.export_onnx")
        if self.output_names != list(DETECTION_OUTPUTS):
            raise ValueError(f"{self.path} has outputs {self.output_names}, not a detector "
                             f"file's {list(DETECTION_OUTPUTS)}; export it again")
        self.resize = graph.get("resize", "stretch")
        if self.resize not in ("stretch", "letterbox"):
            raise ValueError(f"{self.path} wants images resized by {self.resize!r}, which "
                             f"OnnxDetector does not do; run OnnxDetector.detect on batches "
                             f"prepared that way")
        size = self.fixed_resolution
        if size is None:
            raise ValueError(f"{self.path} has no fixed input size; export the detector again")
        self.graph_options = dict(graph)
        self.score_thresh = graph["score_thresh"]
        self.nms_thresh = graph["nms_thresh"]
        self.detections_per_img = graph["max_det"]
        mean, std = list(self.preprocess["mean"]), list(self.preprocess["std"])
        self.transform = GeneralizedRCNNTransform(size, size, mean, std, size_divisible=1,
                                                  fixed_size=(size, size)).eval()
        # YOLOv4's letterbox reads these attributes only (a square canvas of the file's size)
        self._letterbox = SimpleNamespace(image_mean=torch.tensor(mean).view(1, 3, 1, 1),
                                          image_std=torch.tensor(std).view(1, 3, 1, 1),
                                          canvas="square", resolution=size)

    def detect(self, x) -> dict[str, torch.Tensor]:
        """The graph's padded outputs for ``x``, the prepared B x 3 x S x S batch (resized
        and normalised): ``boxes`` B x max_det x 4 in ``x``'s pixels, ``scores``, ``labels``
        and ``num_detections`` (see :mod:`mobilenets.deploy.detection_export`)."""
        return dict(zip(DETECTION_OUTPUTS, OnnxModel.__call__(self, x)))

    def _check_knobs(self) -> None:
        graph = self.graph_options
        how = (f"export the detector again with it (mobilenets.export_onnx(model, path, "
               f"{{}}=...))")
        if not math.isclose(float(self.nms_thresh), graph["nms_thresh"]):
            raise ValueError(f"{self.path.name} suppresses at IoU {graph['nms_thresh']} in its "
                             f"graph, not {self.nms_thresh}: {how.format('nms_thresh')}")
        if float(self.score_thresh) < graph["score_thresh"]:
            raise ValueError(f"{self.path.name} keeps scores above {graph['score_thresh']} in "
                             f"its graph, so not down to {self.score_thresh}: "
                             f"{how.format('score_thresh')}")
        if int(self.detections_per_img) > graph["max_det"]:
            raise ValueError(f"{self.path.name} gives at most {graph['max_det']} detections "
                             f"per image, not {self.detections_per_img}: "
                             f"{how.format('max_det')}")

    def __call__(self, images) -> list[dict[str, torch.Tensor]]:
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            images = list(images)
        if isinstance(images, torch.Tensor) or not isinstance(images, (list, tuple)):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else None
            raise ValueError(f"{self.path.name} takes a list of 3 x H x W float images in "
                             f"[0, 1] or a B x 3 x H x W batch, not "
                             f"{f'shape {shape}' if shape else type(images).__name__}")
        for image in images:
            if (not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3
                    or not image.is_floating_point()):
                what = (f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor)
                        else type(image).__name__)
                raise ValueError(f"{self.path.name} takes float 3 x H x W images in [0, 1] "
                                 f"(e.g. decode_image(path).float() / 255), not {what}")
        self._check_knobs()
        if not images:
            return []
        original = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        images = [img.float().cpu() for img in images]
        with torch.no_grad():
            if self.resize == "letterbox":
                from ..models.heads.yolo import YOLOv4
                size = (self.fixed_resolution,) * 2
                x, moves, _ = YOLOv4.letterbox(self._letterbox, images, size=size)
            else:
                batch, _ = self.transform(images)
                x = batch.tensors
        out = self.detect(x)
        found = []
        for i, n in enumerate(out["num_detections"].tolist()):
            n = min(n, int(self.detections_per_img))
            scores = out["scores"][i, :n]
            keep = scores > self.score_thresh
            found.append({"boxes": out["boxes"][i, :n][keep], "scores": scores[keep],
                          "labels": out["labels"][i, :n][keep]})
        if self.resize == "letterbox":
            for i, f in enumerate(found):
                f["boxes"] = YOLOv4.unletterbox(f["boxes"], moves[i], original[i])
            return found
        return self.transform.postprocess(found, batch.image_sizes, original)

    def losses_and_detections(self, images, targets):
        """The detections of ``images`` and, for the evaluation that asks for both, a NaN
        loss: an exported file computes no training loss."""
        return {"loss": torch.tensor(float("nan"))}, self(images)


__all__ = ["OnnxDetector"]
