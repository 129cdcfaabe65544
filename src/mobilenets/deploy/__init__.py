"""Deployment: BatchNorm folding, ONNX export, onnxruntime models and CPU benchmarks."""

from .fuse import fuse
from .onnx_export import export_onnx
from .onnx_model import OnnxModel
from .quantize import quantize_onnx

__all__ = ["OnnxModel", "export_onnx", "fuse", "quantize_onnx"]
