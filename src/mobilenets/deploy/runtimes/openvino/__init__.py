"""OpenVINO's CPU runtime for our ONNX files (float and int8 QDQ), behind onnxruntime's
session interface (``session``)."""

from __future__ import annotations

from pathlib import Path

from .session import OpenVinoSession, latency_config
from .session import profile_openvino as profile


def open_session(path: Path, threads: int | None = None, rewrite: bool = True):
    """An OpenVINO CPU session for ``path``; onnxruntime's rewrites do not apply here, so
    ``rewrite`` is ignored and nothing is rewritten."""
    return OpenVinoSession(path, threads), False


__all__ = ["OpenVinoSession", "latency_config", "open_session", "profile"]
