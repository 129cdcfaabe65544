"""An exported ONNX detector file (:mod:`.detection_export`: NMS in the graph) used like an
eval-mode detector in torchvision's convention: images of any size in, one dict of ``boxes``
(in the image's pixels), ``scores`` and ``labels`` per image out."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .exported_detector import DETECTION_OUTPUTS, ExportedDetector
from .onnx_model import OnnxModel


class OnnxDetector(ExportedDetector, OnnxModel):
    """A detector file in a runtime (``OnnxDetector(path, runtime="onnxruntime")``; also what
    :func:`~mobilenets.deploy.open_model` gives for a detector file).

    ``model(images)``: see :class:`~.exported_detector.ExportedDetector` (images in [0, 1]
    in, one dict of ``boxes``, ``scores``, ``labels`` per image out, boxes in the image's
    pixels). :meth:`detect` runs the graph alone on a prepared batch and returns its padded
    outputs.

    ``score_thresh``, ``nms_thresh`` and ``detections_per_img`` are those in the file's
    graph; raising ``score_thresh`` or lowering ``detections_per_img`` filters the graph's
    detections (``predict --conf --max-det``), while a lower threshold, more detections or
    another NMS IoU need a new export (the error says so).
    """

    file_outputs = DETECTION_OUTPUTS
    export_hint = "mobilenets.export_onnx"

    def __init__(self, path: str | Path, threads: int | None = None, rewrite: bool = True,
                 runtime: str = "onnxruntime"):
        super().__init__(path, threads, rewrite, runtime)
        self._init_detector()

    def detect(self, x) -> dict[str, torch.Tensor]:
        """The graph's padded outputs for ``x``, the prepared B x 3 x S x S batch (resized
        and normalised): ``boxes`` B x max_det x 4 in ``x``'s pixels, ``scores``, ``labels``
        and ``num_detections`` (see :mod:`mobilenets.deploy.detection_export`)."""
        return dict(zip(DETECTION_OUTPUTS, OnnxModel.__call__(self, x)))

    def _check_knobs(self) -> None:
        graph = self.graph_options
        how = ("export the detector again with it (`mobilenets export --{}` or "
               "mobilenets.export_onnx(model, path, {}=...))")
        if not math.isclose(float(self.nms_thresh), graph["nms_thresh"]):
            raise ValueError(f"{self.path.name} suppresses at IoU {graph['nms_thresh']} in its "
                             f"graph, not {self.nms_thresh}: {how.format('iou', 'nms_thresh')}")
        if float(self.score_thresh) < graph["score_thresh"]:
            raise ValueError(f"{self.path.name} keeps scores above {graph['score_thresh']} in "
                             f"its graph, so not down to {self.score_thresh}: "
                             f"{how.format('conf', 'score_thresh')}")
        if int(self.detections_per_img) > graph["max_det"]:
            raise ValueError(f"{self.path.name} gives at most {graph['max_det']} detections "
                             f"per image, not {self.detections_per_img}: "
                             f"{how.format('max-det', 'max_det')}")


__all__ = ["OnnxDetector"]
