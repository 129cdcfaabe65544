"""Deployment. Portable: BatchNorm folding (``fuse``), ONNX export (``onnx_export``),
quantization (``quantize``: onnxruntime's QDQ tooling; ``quantize_pt2e``: torchao). Then one
folder per runtime under ``runtimes/`` behind one session interface (onnxruntime and OpenVINO
for ONNX files, ExecuTorch with XNNPACK for ``.pte`` files), :class:`OnnxModel` and
:class:`PteModel` to use an exported file like a model (:class:`OnnxDetector` and
:class:`PteDetector` for a detector file: images in, detections out), ``open_model`` for anything a user names, and
``bench``."""

from .fuse import fuse
from .onnx_export import export_onnx
from .onnx_detector import OnnxDetector
from .onnx_model import OnnxModel, PteModel
from .pte_detector import PteDetector
from .open import evaluate, is_exported_file, open_model
from .quantize import quantize_onnx
from .runtimes import RUNTIMES

__all__ = ["RUNTIMES", "OnnxDetector", "OnnxModel", "PteDetector", "PteModel", "evaluate",
           "export_onnx", "fuse", "is_exported_file", "open_model", "quantize_onnx"]
