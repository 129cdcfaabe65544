"""Complete a partly quantized QDQ file (torchao PT2E's ONNX export) so that onnxruntime runs
its convolutions in int8.

torchao's X86InductorQuantizer targets oneDNN under ``torch.compile``, which fuses a
convolution with the ReLU, hard-swish, hard-sigmoid or residual Add after it, so it puts no
quantize op on the convolution's own output. onnxruntime fuses a convolution into an int8
kernel only when a QuantizeLinear follows it (DequantizeLinear -> Conv -> QuantizeLinear);
in the exported file most convolutions of MobileNetV3 therefore ran in float (38 of 62 for
mobilenet_v3_large_100, with a reorder around each).

:func:`complete_qdq` calibrates every float activation the quantizer left unquantized
(outputs of convolutions, Gemm, ReLU, hard-sigmoid, Mul, Add, global pooling) on real images
with onnxruntime's own calibrator, the same percentile method as :func:`.quantize_onnx`, and
inserts a QuantizeLinear/DequantizeLinear pair (uint8, asymmetric) on each. Hard-swish is
first written as ``x * HardSigmoid(x)`` (the form of our export, exact), so it gets the same
int8 table lookup when the file is opened (:mod:`.ort_rewrite`); spatial ReduceMeans become
GlobalAveragePool (:func:`.onnx_export.mean_to_global_pool`). The weights and every
quantization parameter learned in QAT stay as they are.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

from .onnx_graph import GraphIndex

# Float ops whose outputs onnxruntime wants quantized to run the ops around them in int8.
CALIBRATED_OPS = ("Conv", "Gemm", "Relu", "HardSigmoid", "Mul", "Add", "GlobalAveragePool")


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
    """Outputs of :data:`CALIBRATED_OPS` nodes that no QuantizeLinear reads (graph outputs
    excepted: the logits stay float)."""
    g = GraphIndex(proto.graph)
    out = []
    for node in g.nodes:
        t = node.output[0] if node.output else ""
        if node.op_type not in CALIBRATED_OPS or not t or t in g.outputs:
            continue
        if not any(c.op_type == "QuantizeLinear" for c in g.consumers.get(t, [])):
            out.append(t)
    return out


def scale_and_zero_point(low: float, high: float) -> tuple[float, int]:
    """uint8 asymmetric quantization of the range (low, high), widened to include 0."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = (high - low) / 255 if high > low else 1.0
    return scale, int(np.clip(round(-low / scale), 0, 255))


def relu_quantization(proto, tensor: str) -> tuple[float, int] | None:
    """When ``tensor``'s only reader is a ReLU (or a Clip from 0, as ReLU6) whose output is
    quantized with zero point 0 over a range the Clip does not cut, that quantization's
    (scale, 0): quantizing ``tensor`` the same way clamps it as the ReLU does, so onnxruntime
    drops the ReLU and the repeated quantization, and runs the convolution before it as one
    int8 kernel."""
    from onnx import numpy_helper
    g = GraphIndex(proto.graph)
    readers = g.consumers.get(tensor, [])
    if len(readers) != 1 or readers[0].op_type not in ("Relu", "Clip"):
        return None
    act = readers[0]
    bounds = [float(numpy_helper.to_array(g.inits[i])) if i in g.inits else None
              for i in list(act.input[1:3]) + [""] * (3 - len(act.input))]
    if act.op_type == "Clip" and (bounds[0] != 0.0 or any(
            i and i not in g.inits for i in act.input[1:])):
        return None
    for q in g.consumers.get(act.output[0], []):
        if q.op_type != "QuantizeLinear" or len(q.input) != 3 or q.input[2] not in g.inits:
            continue
        zero = numpy_helper.to_array(g.inits[q.input[2]])
        scale = numpy_helper.to_array(g.inits.get(q.input[1])) if q.input[1] in g.inits \
            else None
        if (scale is None or zero.dtype != np.uint8 or zero.size != 1 or int(zero) != 0
                or scale.size != 1):
            continue
        if act.op_type == "Clip" and bounds[1] is not None and 255 * float(scale) > bounds[1] * (1 + 1e-6):
            continue                                      # the Clip cuts inside the range
        return float(scale), 0
    return None


def insert_qdq(proto, params: dict[str, tuple[float, int]]) -> int:
    """Insert, in place, QuantizeLinear -> DequantizeLinear (uint8, the given scale and zero
    point) after each tensor of ``params`` and feed its readers the dequantized tensor.
    Returns how many pairs were inserted."""
    from onnx import helper, numpy_helper
    g = GraphIndex(proto.graph)
    after: dict[str, list] = {}
    for t, (scale, zero) in params.items():
        proto.graph.initializer.extend([
            numpy_helper.from_array(np.array(scale, np.float32), f"{t}_qdq_scale"),
            numpy_helper.from_array(np.array(zero, np.uint8), f"{t}_qdq_zero_point")])
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
                 seed: int = 0) -> int:
    """Complete the QDQ file ``path`` in place (module docstring), calibrating on
    ``num_images`` images of ``calib_dir`` (its ``train/`` if any) with the eval transform of
    ``preprocess``. A convolution followed by a quantized ReLU takes that quantization
    (:func:`relu_quantization`). Returns how many tensors were quantized."""
    import onnx

    from .onnx_export import mean_to_global_pool
    path = Path(path)
    proto = onnx.load(str(path))
    mean_to_global_pool(proto)
    decompose_hardswish(proto)
    tensors = unquantized_activations(proto)
    params = {t: q for t in tensors if (q := relu_quantization(proto, t)) is not None}
    ranges = _calibrate(proto, [t for t in tensors if t not in params], calib_dir, preprocess,
                        num_images, seed)
    params.update({t: scale_and_zero_point(*r) for t, r in ranges.items()})
    count = insert_qdq(proto, params)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return count


def _calibrate(proto, tensors: list[str], calib_dir, preprocess: dict, num_images: int,
               seed: int) -> dict[str, tuple[float, float]]:
    """(low, high) of each of ``tensors`` over the calibration images: onnxruntime's
    percentile calibrator, as :func:`.quantize_onnx` uses by default."""
    if not tensors:
        return {}
    import onnx
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    from ..data.calibration import calibration_batches
    from .quantize import _reader
    first = proto.graph.input[0]
    batch = first.type.tensor_type.shape.dim[0].dim_value or 8
    batches = calibration_batches(calib_dir, preprocess, num_images, batch, seed)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.onnx"
        onnx.save(proto, str(plain))
        calibrator = create_calibrator(plain, op_types_to_calibrate=list(CALIBRATED_OPS),
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Percentile)
        with contextlib.redirect_stdout(io.StringIO()):   # the histogram calibrator prints
            calibrator.collect_data(_reader(first.name, batches))
            data = calibrator.compute_data()
    return {t: tuple(float(v) for v in np.asarray(data[t].range_value).ravel()[:2])
            for t in tensors}


__all__ = ["CALIBRATED_OPS", "complete_qdq", "decompose_hardswish", "insert_qdq",
           "relu_quantization", "scale_and_zero_point", "unquantized_activations"]
