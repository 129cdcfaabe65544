"""onnxruntime's CPU session for an ONNX file, after the rewrites of ``rewrite.py``."""

from __future__ import annotations

from pathlib import Path

from .rewrite import cpu_model


def session_options(threads: int | None = None):
    """ORT options for latency: all graph optimisations, sequential execution, ``threads``
    intra-op threads (None: onnxruntime's default) and one inter-op thread."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads:
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    return so


def open_session(path: Path, threads: int | None, rewrite: bool):
    """An onnxruntime CPU session for ``path`` and whether a rewrite changed its graph."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("running ONNX files needs onnxruntime: pip install "
                          "'mobilenets[deploy]'") from None
    from google.protobuf.message import DecodeError
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf

    try:
        model = cpu_model(path, rewrite)
        session = ort.InferenceSession(model, session_options(threads),
                                       providers=["CPUExecutionProvider"])
    except InvalidProtobuf as e:
        raise DecodeError(str(e)) from e
    return session, isinstance(model, bytes)      # bytes: a rewrite changed the graph


__all__ = ["open_session", "session_options"]
