"""ExecuTorch with XNNPACK: the runtime of Android and iOS apps built on PyTorch, for our
``.pte`` files (fp32, and int8 from ExecuTorch's XNNPACK quantizer), behind onnxruntime's
session interface (``session``); writing them: ``export`` and ``quantize``."""

from __future__ import annotations

from pathlib import Path

from .export import export_pte
from .session import ExecuTorchSession, set_threads

SUFFIX = ".pte"


def open_session(path: Path, threads: int | None = None, rewrite: bool = True):
    """An ExecuTorch session for the ``.pte`` file ``path``; nothing is rewritten (the file
    was lowered for XNNPACK when written), so ``rewrite`` is ignored."""
    return ExecuTorchSession(path, threads), False


def profile(path, x, iters: int = 20, warmup: int = 5, threads: int | None = None):
    """Per-operator times need ExecuTorch built with its event tracer (ETDump), which the
    pip wheel is not."""
    raise ValueError("--profile is not available for .pte files: the ExecuTorch pip wheel "
                     "has no event tracer (ETDump); profile the ONNX file in onnxruntime or "
                     "openvino instead")


def quantize_pte(*args, **kwargs):
    """:func:`.quantize.quantize_pte` (imported when used: it loads the training engine)."""
    from .quantize import quantize_pte as quantize
    return quantize(*args, **kwargs)


__all__ = ["SUFFIX", "ExecuTorchSession", "export_pte", "open_session", "profile",
           "quantize_pte", "set_threads"]
