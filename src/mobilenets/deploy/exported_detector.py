"""What every exported detector file shares when used like an eval-mode detector in
torchvision's convention (images of any size in, one dict of ``boxes`` in the image's pixels,
``scores`` and ``labels`` per image out): reading the ``detection`` metadata entry, resizing
and normalising the images as it says (``stretch`` or ``letterbox``), and mapping the boxes
back to each image. The file-specific part, :meth:`ExportedDetector.detect` (the padded
detections of a prepared batch), is :class:`~mobilenets.deploy.OnnxDetector`'s (NMS in the
graph) or :class:`~mobilenets.deploy.PteDetector`'s (NMS after the program)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from ..models.heads.detection import check_image_range
from .onnx_model import _meta

DETECTION_OUTPUTS = ("boxes", "scores", "labels", "num_detections")


class DetectionInput:
    """A detector file's input preparation: ``self(images)`` takes a list of 3 x H x W float
    images in [0, 1] of any size and returns ``(batch, back)``, the normalised B x 3 x S x S
    batch resized as ``resize`` says (``stretch``: torchvision's ``GeneralizedRCNNTransform``,
    SSDLite's own; ``letterbox``: YOLOv4's, onto the square canvas) and what maps boxes in the
    batch's pixels back (the letterbox moves, or the resized sizes)."""

    def __init__(self, resize: str, size: int, mean, std):
        mean, std = list(mean), list(std)
        self.resize, self.size = resize, size
        self.transform = GeneralizedRCNNTransform(size, size, mean, std, size_divisible=1,
                                                  fixed_size=(size, size)).eval()
        # YOLOv4's letterbox reads these attributes only (a square canvas of the file's size)
        self._letterbox = SimpleNamespace(image_mean=torch.tensor(mean).view(1, 3, 1, 1),
                                          image_std=torch.tensor(std).view(1, 3, 1, 1),
                                          canvas="square", resolution=size)

    def __call__(self, images) -> tuple[torch.Tensor, object]:
        images = [img.float().cpu() for img in images]
        with torch.no_grad():
            if self.resize == "letterbox":
                from ..models.heads.yolo import YOLOv4
                x, moves, _ = YOLOv4.letterbox(self._letterbox, images, size=(self.size,) * 2)
                return x, moves
            batch, _ = self.transform(images)
            return batch.tensors, batch.image_sizes


class ExportedDetector:
    """The detector view of an opened file (a mixin over :class:`~.onnx_model.OnnxModel`):
    ``model(images)`` takes a list of 3 x H x W float images in [0, 1] of any size (or a
    B x 3 x H x W batch) and returns one dict per image with ``boxes`` (x1 y1 x2 y2 in that
    image's pixels), ``scores`` and ``labels``, as the PyTorch detector does: each image is
    normalised and resized to the file's S x S input as its metadata's ``resize`` says
    (``stretch``: torchvision's ``GeneralizedRCNNTransform``, SSDLite's own; ``letterbox``:
    YOLOv4's ``letterbox`` onto the square canvas), :meth:`detect` gives the padded
    detections, and the boxes are mapped back to the image.

    ``score_thresh``, ``nms_thresh`` and ``detections_per_img`` start as the file's
    (its metadata's ``score_thresh``, ``nms_thresh``, ``max_det``)."""

    task = "detection"
    # the file's outputs, in order, and how to write such a file (for errors)
    file_outputs: tuple[str, ...] = DETECTION_OUTPUTS
    export_hint = "mobilenets.export_onnx"

    @classmethod
    def of(cls, model):
        """The detector view of an opened detector file (its session is shared)."""
        detector = cls.__new__(cls)
        detector.__dict__.update(model.__dict__)
        detector._init_detector()
        return detector

    def _init_detector(self) -> None:
        graph = _meta(self.metadata, "detection")
        if self.metadata.get("task") != "detection" or not isinstance(graph, dict):
            raise ValueError(f"{self.path} is not a detector file (no detection entry in its "
                             f"metadata); export a detector with {self.export_hint}")
        if self.output_names != list(self.file_outputs):
            raise ValueError(f"{self.path} has outputs {self.output_names}, not a "
                             f"{type(self).__name__} file's {list(self.file_outputs)}; export "
                             f"it again with {self.export_hint}")
        self.resize = graph.get("resize", "stretch")
        if self.resize not in ("stretch", "letterbox"):
            raise ValueError(f"{self.path} wants images resized by {self.resize!r}, which "
                             f"{type(self).__name__} does not do; run its detect method on "
                             f"batches prepared that way")
        size = self.fixed_resolution
        if size is None:
            raise ValueError(f"{self.path} has no fixed input size; export the detector again")
        self.graph_options = dict(graph)
        self.score_thresh = graph["score_thresh"]
        self.nms_thresh = graph["nms_thresh"]
        self.detections_per_img = graph["max_det"]
        self._prepare = DetectionInput(self.resize, size, self.preprocess["mean"],
                                       self.preprocess["std"])
        self.transform = self._prepare.transform

    def detect(self, x) -> dict[str, torch.Tensor]:
        """The padded detections of ``x``, the prepared B x 3 x S x S batch (resized and
        normalised): ``boxes`` B x max_det x 4 in ``x``'s pixels, ``scores``, ``labels`` and
        ``num_detections`` (see :mod:`mobilenets.deploy.detection_export`)."""
        raise NotImplementedError

    def _check_knobs(self) -> None:
        """Raise ValueError when ``score_thresh``, ``nms_thresh`` or ``detections_per_img``
        ask for what the file cannot give (nothing here)."""

    def _image_list(self, images) -> list[torch.Tensor]:
        """``images`` as a list of float 3 x H x W images; ValueError naming what is wrong."""
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
                                 f"(e.g. mobilenets.data.image_io.decode_rgb(path).float() "
                                 f"/ 255), not {what}")
        check_image_range(images, self.path.name)
        return list(images)

    def prepare(self, images) -> tuple[torch.Tensor, tuple]:
        """``images`` (a non-empty list of 3 x H x W float images in [0, 1], or a batch) as
        the B x 3 x S x S batch the file reads, resized and normalised as its metadata says,
        and what maps boxes in that batch's pixels back to each image (for :meth:`__call__`).
        :meth:`detect` takes the batch; so does a session of the file opened with other
        outputs."""
        images = self._image_list(images)
        if not images:
            raise ValueError(f"{self.path.name}: no images to prepare")
        original = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        x, back = self._prepare(images)
        return x, (original, back)

    def __call__(self, images) -> list[dict[str, torch.Tensor]]:
        images = self._image_list(images)
        self._check_knobs()
        if not images:
            return []
        x, (original, back) = self.prepare(images)   # back: letterbox moves or sizes
        out = self.detect(x)
        found = []
        for i, n in enumerate(out["num_detections"].tolist()):
            n = min(n, int(self.detections_per_img))
            scores = out["scores"][i, :n]
            keep = scores > self.score_thresh
            found.append({"boxes": out["boxes"][i, :n][keep], "scores": scores[keep],
                          "labels": out["labels"][i, :n][keep]})
        if self.resize == "letterbox":
            from ..models.heads.yolo import YOLOv4
            return [YOLOv4.image_detections(f["boxes"], f["scores"], f["labels"], back[i],
                                            original[i]) for i, f in enumerate(found)]
        return self.transform.postprocess(found, back, original)

    def losses_and_detections(self, images, targets):
        """The detections of ``images`` and, for the evaluation that asks for both, a NaN
        loss: an exported file computes no training loss."""
        return {"loss": torch.tensor(float("nan"))}, self(images)


__all__ = ["DETECTION_OUTPUTS", "DetectionInput", "ExportedDetector"]
