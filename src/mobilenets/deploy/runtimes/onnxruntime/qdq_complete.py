"""Complete a partly quantized QDQ file (torchao PT2E's ONNX export) so that onnxruntime runs
its convolutions in int8.

torchao's X86InductorQuantizer targets oneDNN, which fuses a convolution with the hard-swish,
hard-sigmoid or residual Add after it, so it puts no quantize op on those convolutions' own
outputs. onnxruntime fuses a convolution into an int8 kernel only when a QuantizeLinear
follows it (DequantizeLinear -> Conv [-> ReLU/ReLU6] -> QuantizeLinear), so in the exported
file it ran the others in float: 38 of mobilenet_v3_large_100's 62 convolutions, with layout
transposes around them, and the 10 that feed mobilenet_v2's residual Adds.

:func:`complete_qdq` calibrates every float activation the quantizer left unquantized
(outputs of convolutions, Gemm, ReLU, Clip, sigmoid, hard-sigmoid, Mul, Add, global pooling)
on real images with onnxruntime's own calibrator, the same percentile method as
:func:`.quantize_onnx`, and inserts a QuantizeLinear/DequantizeLinear pair (asymmetric, of
the file's activation type: uint8 as the X86 quantizer writes, or int8) on each. A convolution read only by a ReLU (or a ReLU6 Clip) is left alone: the
quantization of the ReLU's output serves it, and a second one before the ReLU would only add
error and a requantization.
Hard-swish is first written as ``x * HardSigmoid(x)`` (the form of our export, exact), so it
gets the same int8 table lookup when the file is opened (:mod:`.ort_rewrite`); spatial
ReduceMeans become GlobalAveragePool (:func:`.onnx_export.mean_to_global_pool`), and
depthwise channel counts are padded for onnxruntime's fast int8 kernels (:mod:`.channel_pad`,
exact). The weights and every quantization parameter learned in QAT stay as they are.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from .channel_pad import INT8_DEPTHWISE_MULTIPLE, pad_depthwise_channels
from ...onnx_export import mean_to_global_pool
from ...onnx_graph import GraphIndex, is_quantized
from ...quantize import calibration_input, calibration_reader, histogram_errors

# Float ops whose outputs onnxruntime wants quantized to run the ops around them in int8.
CALIBRATED_OPS = ("Conv", "Gemm", "Relu", "Clip", "Sigmoid", "HardSigmoid", "Mul", "Add",
                  "GlobalAveragePool")


def decompose_hardswish(proto) -> int:
    """Rewrite, in place, each HardSwish as ``Mul(x, HardSigmoid(x, 1/6, 1/2))`` (the ONNX
    definition of HardSwish); returns how many."""
    from onnx import helper
    nodes, count = [], 0
    for node in proto.graph.node:
        if node.op_type != "HardSwish":
            nodes.append(node)
            continue
        gate = f"{node.output[0]}_hard_sigmoid"
        nodes += [helper.make_node("HardSigmoid", [node.input[0]], [gate], name=gate,
                                   alpha=1 / 6, beta=0.5),
                  helper.make_node("Mul", [node.input[0], gate], [node.output[0]],
                                   name=node.name or f"{node.output[0]}_mul")]
        count += 1
    if count:
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
    return count


def unquantized_activations(proto) -> list[str]:
    """Outputs of :data:`CALIBRATED_OPS` nodes that no QuantizeLinear reads, except graph
    outputs (the logits stay float) and tensors read only by a ReLU or a Clip from 0, whose
    own output is quantized instead (see the module docstring)."""
    from onnx import numpy_helper
    g = GraphIndex(proto.graph)

    def clamped_next(readers) -> bool:
        if len(readers) != 1 or readers[0].op_type not in ("Relu", "Clip"):
            return False
        low = readers[0].input[1] if len(readers[0].input) > 1 else ""
        return readers[0].op_type == "Relu" or (
            low in g.inits and float(numpy_helper.to_array(g.inits[low])) == 0.0)

    out = []
    for node in g.nodes:
        t = node.output[0] if node.output else ""
        if node.op_type not in CALIBRATED_OPS or not t or t in g.outputs:
            continue
        readers = g.consumers.get(t, [])
        if not any(c.op_type == "QuantizeLinear" for c in readers) and not clamped_next(readers):
            out.append(t)
    return out


def activation_type(proto) -> str:
    """'uint8' or 'int8': the type of the file's quantized activations (its QuantizeLinear
    nodes with a scalar zero point), 'uint8' if it has none."""
    from onnx import TensorProto
    g = GraphIndex(proto.graph)
    types = {g.inits[n.input[2]].data_type for n in g.nodes
             if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in g.inits
             and not list(g.inits[n.input[2]].dims)}
    return "int8" if TensorProto.INT8 in types else "uint8"


# Integer range of each activation type.
QUANT_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}


def scale_and_zero_point(low: float, high: float, dtype: str = "uint8") -> tuple[float, int]:
    """Asymmetric quantization of the range (low, high), widened to include 0, to ``dtype``
    ('uint8' or 'int8'): ``x = scale * (q - zero_point)``."""
    qmin, qmax = QUANT_RANGES[dtype]
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = (high - low) / (qmax - qmin) if high > low else 1.0
    return scale, int(np.clip(qmin + round(-low / scale), qmin, qmax))


def insert_qdq(proto, params: dict[str, tuple[float, int]], dtype: str = "uint8") -> int:
    """Insert, in place, QuantizeLinear -> DequantizeLinear (``dtype``, the given scale and
    zero point) after each tensor of ``params`` and feed its readers the dequantized tensor.
    Returns how many pairs were inserted."""
    from onnx import helper, numpy_helper
    if dtype not in QUANT_RANGES:
        raise ValueError(f"dtype must be one of {sorted(QUANT_RANGES)}, not {dtype!r}")
    g = GraphIndex(proto.graph)
    missing = [t for t in params if t not in g.producer]
    if missing:
        raise ValueError(f"insert_qdq quantizes node outputs; {missing} are graph inputs, "
                         f"initializers or not in the graph")
    after: dict[str, list] = {}
    for t, (scale, zero) in params.items():
        proto.graph.initializer.extend([
            numpy_helper.from_array(np.array(scale, np.float32), f"{t}_qdq_scale"),
            numpy_helper.from_array(np.array(zero, np.dtype(dtype)), f"{t}_qdq_zero_point")])
        for reader in g.consumers.get(t, []):
            for k, name in enumerate(reader.input):
                if name == t:
                    reader.input[k] = f"{t}_dequantized"
        after[t] = [helper.make_node("QuantizeLinear", [t, f"{t}_qdq_scale",
                                                        f"{t}_qdq_zero_point"],
                                     [f"{t}_quantized"], name=f"{t}_QuantizeLinear"),
                    helper.make_node("DequantizeLinear", [f"{t}_quantized", f"{t}_qdq_scale",
                                                          f"{t}_qdq_zero_point"],
                                     [f"{t}_dequantized"], name=f"{t}_DequantizeLinear")]
    nodes = []
    for node in proto.graph.node:
        nodes.append(node)
        for o in node.output:
            nodes += after.get(o, [])
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    del proto.graph.value_info[:]
    return len(after)


def complete_qdq(path: str | Path, calib_dir, preprocess: dict, *, num_images: int = 64,
                 seed: int = 0, channel_multiple: int | None = INT8_DEPTHWISE_MULTIPLE) -> dict:
    """Complete the QDQ file ``path`` in place (module docstring), calibrating on
    ``num_images`` images of ``calib_dir`` (its ``train/`` if any) with the eval transform of
    ``preprocess``; then pad depthwise channel counts to a multiple of ``channel_multiple``
    as :func:`.quantize_onnx` does (:mod:`.channel_pad`; None: not). Returns how many tensors
    were quantized and how many depthwise convolutions padded, also recorded in the file's
    ``quantization`` metadata as ``completed_for_onnxruntime``."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    if not is_quantized(proto):
        raise ValueError(f"{path} holds no quantized operators: complete_qdq completes an int8 "
                         f"QDQ file from another quantizer; quantize a float file with "
                         f"quantize_onnx")
    dtype = activation_type(proto)
    mean_to_global_pool(proto)
    decompose_hardswish(proto)
    tensors = unquantized_activations(proto)
    ranges = _calibrate(proto, tensors, calib_dir, preprocess, num_images, seed)
    count = insert_qdq(proto, {t: scale_and_zero_point(*ranges[t], dtype) for t in tensors},
                       dtype)
    padded = pad_depthwise_channels(proto, channel_multiple) if channel_multiple else 0
    done = {"quantized": count, "depthwise_padded": padded}
    meta = {p.key: p for p in proto.metadata_props}
    if "quantization" not in meta:
        meta["quantization"] = proto.metadata_props.add(key="quantization", value="{}")
    meta["quantization"].value = json.dumps({**json.loads(meta["quantization"].value),
                                             "completed_for_onnxruntime": done})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return done


def _calibrate(proto, tensors: list[str], calib_dir, preprocess: dict, num_images: int,
               seed: int) -> dict[str, tuple[float, float]]:
    """(low, high) of each of ``tensors`` over the calibration images: onnxruntime's
    percentile calibrator, as :func:`.quantize_onnx` uses by default."""
    if not tensors:
        return {}
    import onnx

    input_name, batches = calibration_input(proto, calib_dir, preprocess, num_images, seed)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.onnx"
        onnx.save(proto, str(plain))
        calibrator = _only(tensors)(plain, symmetric=True,    # create_calibrator's default
                                    augmented_model_path=str(Path(tmp) / "augmented.onnx"))
        calibrator.augment_graph()
        calibrator.create_inference_session()
        with contextlib.redirect_stdout(io.StringIO()), histogram_errors("percentile"):
            calibrator.collect_data(calibration_reader(input_name, batches))
            data = calibrator.compute_data()
    missing = [t for t in tensors if t not in data]
    if missing:
        raise ValueError(f"onnxruntime's calibrator recorded no range for {missing}: their "
                         f"shapes or types could not be inferred")
    return {t: tuple(float(v) for v in np.asarray(data[t].range_value).ravel()[:2])
            for t in tensors}


def _only(tensors: list[str]):
    """onnxruntime's percentile calibrator recording ``tensors`` only (its own selection
    takes every input and output of the ops it is given: 5x the memory on V3-Large)."""
    from onnxruntime.quantization.calibrate import PercentileCalibrater
    wanted = set(tensors)

    class Calibrator(PercentileCalibrater):
        def select_tensors_to_calibrate(self, model):
            chosen, value_infos = super().select_tensors_to_calibrate(model)
            return chosen & wanted, value_infos

    return Calibrator


__all__ = ["CALIBRATED_OPS", "QUANT_RANGES", "activation_type", "complete_qdq", "decompose_hardswish",
           "insert_qdq", "scale_and_zero_point", "unquantized_activations"]
