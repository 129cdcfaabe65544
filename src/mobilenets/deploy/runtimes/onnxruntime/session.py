"""onnxruntime's CPU session for an ONNX file, after the rewrites of ``rewrite.py``."""

from __future__ import annotations

from pathlib import Path

from .rewrite import cpu_model


def float_weights_after_dequantize(proto) -> bool:
    """Whether a Conv or Gemm of ``proto`` has float weights (an initializer) and reads a
    DequantizeLinear: a layer that ``quantize_onnx(exclude=...)`` kept in float inside an
    int8 network."""
    floats = {i.name for i in proto.graph.initializer if i.data_type == 1}
    dequantized = {o for n in proto.graph.node if n.op_type == "DequantizeLinear"
                   for o in n.output}
    return any(n.op_type in ("Conv", "Gemm") and len(n.input) > 1 and n.input[1] in floats
               and n.input[0] in dequantized for n in proto.graph.node)


def inference_session(model, options):
    """``ort.InferenceSession`` on the CPU for ``model`` (a path or serialised bytes) with
    ``options``. onnxruntime's WeightBiasQuantization gives a float Conv/Gemm between a
    DequantizeLinear and a QuantizeLinear int8 weights and an int32 bias: what a PT2E file's
    float biases need, but per-tensor int8 weights undo ``quantize_onnx(exclude=...)`` inside
    the network, and ruin a depthwise convolution whose channels' ranges differ (an SSDLite
    with four convolutions so kept, one depthwise, lost three quarters of its boxes;
    docs/known-issues.md). So it is off for files with such float layers."""
    import onnx
    import onnxruntime as ort
    proto = (onnx.load_model_from_string(model) if isinstance(model, bytes)
             else onnx.load(str(model), load_external_data=False))
    disabled = ["WeightBiasQuantization"] if float_weights_after_dequantize(proto) else []
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=disabled)


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


def cpu_session(path: str | Path, options, rewrite: bool = True):
    """An onnxruntime CPU session with ``options`` for the ONNX file ``path``, opened from
    :func:`cpu_model` (so squeeze-excite runs in the blocked layout, hard-sigmoid in int8)."""
    return inference_session(cpu_model(path, rewrite), options)


def open_session(path: Path, threads: int | None, rewrite: bool):
    """An onnxruntime CPU session for ``path`` and whether a rewrite changed its graph."""
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf
    except ImportError:
        raise ImportError("running ONNX files needs onnxruntime: pip install "
                          "'mobilenets[deploy]'") from None
    from google.protobuf.message import DecodeError

    try:
        model = cpu_model(path, rewrite)
        session = inference_session(model, session_options(threads))
    except InvalidProtobuf as e:
        raise DecodeError(str(e)) from e
    return session, isinstance(model, bytes)      # bytes: a rewrite changed the graph


__all__ = ["cpu_session", "float_weights_after_dequantize", "inference_session",
           "open_session", "session_options"]
