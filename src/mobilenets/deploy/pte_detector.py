"""An ExecuTorch ``.pte`` detector file used like an eval-mode detector in torchvision's
convention. Its program is the network and box decoding (XNNPACK has no NMS kernels); the
score threshold, per-class NMS and top ``max_det`` run after it, in PyTorch, with the same
:func:`~mobilenets.deploy.detection_export.postprocess` as the ONNX graph
(:mod:`.detection_export`)."""

from __future__ import annotations

from pathlib import Path

import torch

from .detection_export import NETWORK_OUTPUTS, postprocess_outputs
from .exported_detector import DETECTION_OUTPUTS, ExportedDetector
from .onnx_model import OnnxModel, PteModel


class PteDetector(ExportedDetector, PteModel):
    """A ``.pte`` detector written by
    :func:`~mobilenets.deploy.runtimes.executorch.export_pte` (``PteDetector(path)``; also
    what :func:`~mobilenets.deploy.open_model` gives for one).

    ``model(images)``: see :class:`~.exported_detector.ExportedDetector` (images in [0, 1]
    in, one dict of ``boxes``, ``scores``, ``labels`` per image out, boxes in the image's
    pixels). :meth:`decoded` runs the program alone on a prepared batch (decoded boxes and
    class scores of every default box); :meth:`detect` adds the post-processing.

    ``score_thresh``, ``nms_thresh`` and ``detections_per_img`` start as the file's
    metadata says and apply to the post-processing after the program, so any value works
    without a new export (``predict --conf --iou --max-det``); ``topk_candidates`` comes from
    the metadata.
    """

    file_outputs = tuple(name for name, _ in NETWORK_OUTPUTS)
    export_hint = "mobilenets.deploy.runtimes.executorch.export_pte"

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__(path, threads)
        self._init_detector()

    def _init_detector(self) -> None:
        super()._init_detector()
        if self.graph_options.get("postprocess") != "after":
            raise ValueError(f"{self.path} has a detection entry without postprocess "
                             f"'after', so it is not a .pte detector whose NMS runs after the "
                             f"program; export it again with {self.export_hint}")

    def decoded(self, x) -> dict[str, torch.Tensor]:
        """The program's outputs for the prepared batch ``x``: ``boxes`` B x N x 4 (decoded,
        in ``x``'s pixels) and ``scores`` B x N x K (column k: label k + 1)."""
        return dict(zip(self.file_outputs, OnnxModel.__call__(self, x)))

    def detect(self, x) -> dict[str, torch.Tensor]:
        """The padded detections of the prepared batch ``x``: the program, then
        :func:`~mobilenets.deploy.detection_export.postprocess` with this detector's
        ``score_thresh``, ``nms_thresh`` and ``detections_per_img`` (``boxes`` B x max_det x
        4, ``scores``, ``labels``, ``num_detections``, as an ONNX detector file's outputs)."""
        out = self.decoded(x)
        for name, value in (("score_thresh", self.score_thresh),
                            ("nms_thresh", self.nms_thresh)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 <= value <= 1:
                raise ValueError(f"{name}={value!r} is not allowed: give a number in [0, 1]")
        max_det = self.detections_per_img
        if isinstance(max_det, bool) or not isinstance(max_det, int) or max_det < 1:
            raise ValueError(f"detections_per_img={max_det!r} is not allowed: give a positive "
                             f"int")
        padded = postprocess_outputs(out["boxes"], out["scores"], self.graph_options,
                                     score_thresh=float(self.score_thresh),
                                     nms_thresh=float(self.nms_thresh), max_det=max_det)
        return dict(zip(DETECTION_OUTPUTS, padded))


__all__ = ["PteDetector"]
