"""Rewrites of an ONNX graph for onnxruntime's CPU kernels, applied when a file is opened
(:func:`.session.cpu_session`), so the exported file itself stays portable.

On x86 onnxruntime runs convolutions in a blocked channel layout (NCHWc, 8 or 16 channels a
block) and keeps element-wise ops in it only when every input is blocked and of equal shape.
Squeeze-excite's ``x * gate`` (gate of shape N x C x 1 x 1, MobileNetV3 and EfficientNet,
paper-tables.md) is a broadcast: onnxruntime reorders ``x`` back to NCHW for it and the
product into NCHWc again, three passes over the expanded feature map per block. Writing the
broadcast as a nearest-neighbour ``Resize`` of the gate to H x W (exactly the same values)
lets both run blocked, with no reorder.

In an int8 (QDQ) graph, onnxruntime has no int8 hard-sigmoid (MobileNetV3's hard-swish and
gates): :func:`hard_sigmoid_to_lookup` writes it as the 256-entry table lookup it does have.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from ...onnx_export import value_shapes
from ...onnx_graph import GraphIndex, is_quantized, node_attrs

# Gates are rewritten only for channel counts in whole AVX2 blocks (onnxruntime pads them to
# AVX-512's 16). Our builder's widths are all multiples of 8 (make_divisible).
NCHWC_BLOCK = 8


def _gate_input(node, shapes: dict, constants: set, block: int) -> int | None:
    """Which input (0 or 1) of ``node`` is a computed N x C x 1 x 1 gate broadcast over an
    N x C x H x W tensor (static H x W > 1, C a multiple of ``block``); None if it is not
    such a Mul. A constant scale is no gate: onnxruntime folds it into the convolution."""
    if node.op_type != "Mul" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
        return None
    a, b = (shapes.get(name) for name in node.input)
    if not a or not b or len(a) != 4 or len(b) != 4 or a[:2] != b[:2]:
        return None
    for gate, (x, g) in enumerate(((b, a), (a, b))):
        channels, h, w = x[1], x[2], x[3]
        if (g[2:] == [1, 1] and node.input[gate] not in constants
                and isinstance(channels, int) and channels % block == 0
                and isinstance(h, int) and isinstance(w, int) and h * w > 1):
            return gate
    return None


def broadcast_mul_to_resize(proto, block: int = NCHWC_BLOCK) -> int:
    """Rewrite each ``Mul(x, gate)`` with x of static spatial size H x W > 1 and gate of
    shape N x C x 1 x 1 (C a multiple of ``block``) as ``Mul(x, Resize(gate))``, the Resize
    nearest-neighbour with integer scales (1, 1, H, W). In place; returns how many."""
    import onnx
    from onnx import numpy_helper

    if not any(n.op_type == "Mul" for n in proto.graph.node):
        return 0                          # e.g. MobileNetV1/V2: no shape inference needed
    shapes = value_shapes(proto)
    constants = {i.name for i in proto.graph.initializer}
    constants |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    nodes, count = [], 0
    for node in proto.graph.node:
        gate = _gate_input(node, shapes, constants, block)
        if gate is not None:
            h, w = shapes[node.input[1 - gate]][2:]
            scales, gate_hw = f"{node.output[0]}_gate_scales", f"{node.output[0]}_gate_hw"
            proto.graph.initializer.append(numpy_helper.from_array(
                np.array([1, 1, h, w], np.float32), scales))
            nodes.append(onnx.helper.make_node(
                "Resize", [node.input[gate], "", scales], [gate_hw],
                name=f"{node.name or node.output[0]}_gate_resize", mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
            node.input[gate] = gate_hw
            # The upsampled gate has x's shape, symbolic batch included: onnxruntime keeps the
            # Mul blocked only when it can prove the two shapes equal.
            proto.graph.value_info.append(onnx.helper.make_tensor_value_info(
                gate_hw, onnx.TensorProto.FLOAT, shapes[node.input[1 - gate]]))
            count += 1
        nodes.append(node)
    if count:
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
    return count


def _scalar(inits: dict, name: str):
    """The initializer ``name`` (a TensorProto in ``inits``) as a 0-d array, or None if it is
    missing or not a single value."""
    from onnx import numpy_helper
    value = inits.get(name)
    value = None if value is None else numpy_helper.to_array(value)
    return None if value is None or value.size != 1 else value.reshape(())


def hard_sigmoid_to_lookup(proto) -> int:
    """In a QDQ int8 graph, replace each ``DequantizeLinear -> HardSigmoid -> QuantizeLinear``
    (uint8, output zero point 0) by one table lookup on the uint8 values, onnxruntime's
    ``com.microsoft.QLinearLeakyRelu`` with alpha 1. In place; returns how many.

    onnxruntime has no int8 hard-sigmoid, so each one (and MobileNetV3 has one per hard-swish
    and per squeeze-excite gate) ran as three float passes. h = clip(a x + b, 0, 1) quantized
    with scale s and zero point 0 is clamp(round((a x + b) / s), 0, 255): the identity
    quantized with scale s / a and zero point round(b / s), whose saturation at 0 and 255 is
    the clip. The one difference is that rounding: at most one step of s, where the float
    path is at most half a step off (top-1: docs/results/2026-11-24-int8-deploy.md).
    """
    import onnx
    from onnx import numpy_helper
    graph, index = proto.graph, GraphIndex(proto.graph)
    producer, consumers, nodes = index.producer, index.consumers, index.nodes
    drop, replace, count = set(), {}, 0
    for hs in nodes:
        dq = producer.get(hs.input[0])
        after = consumers.get(hs.output[0], [])
        if (hs.op_type != "HardSigmoid" or dq is None or dq.op_type != "DequantizeLinear"
                or len(after) != 1 or after[0].op_type != "QuantizeLinear"):
            continue
        q = after[0]
        x_scale, x_zero = (_scalar(index.inits, n) for n in (list(dq.input) + [""])[1:3])
        h_scale, h_zero = (_scalar(index.inits, n) for n in (list(q.input) + [""])[1:3])
        attrs = node_attrs(hs)
        alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
        if (x_scale is None or x_zero is None or h_scale is None or h_zero is None
                or x_zero.dtype != np.uint8 or h_zero.dtype != np.uint8 or int(h_zero) != 0
                or alpha <= 0 or not 0 <= round(beta / float(h_scale)) <= 255):
            continue
        name = q.output[0]
        y_scale, y_zero = f"{name}_lookup_scale", f"{name}_lookup_zero_point"
        graph.initializer.extend([
            numpy_helper.from_array(np.array(float(h_scale) / alpha, np.float32), y_scale),
            numpy_helper.from_array(np.array(round(beta / float(h_scale)), np.uint8), y_zero)])
        replace[id(q)] = onnx.helper.make_node(
            "QLinearLeakyRelu", [dq.input[0], dq.input[1], dq.input[2], y_scale, y_zero],
            [name], name=f"{hs.name or name}_lookup", domain="com.microsoft", alpha=1.0)
        drop.add(id(hs))
        if len(consumers[dq.output[0]]) == 1 and dq.output[0] not in index.outputs:
            drop.add(id(dq))
        count += 1
    if count:
        kept = [replace.get(id(n), n) for n in nodes if id(n) not in drop]
        del graph.node[:]
        graph.node.extend(kept)
        if not any(o.domain == "com.microsoft" for o in proto.opset_import):
            proto.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return count


def blocked_layout_cpu() -> bool:
    """True where onnxruntime's CPU provider uses the NCHWc layout (x86-64)."""
    return platform.machine().lower() in ("x86_64", "amd64")


def cpu_model(path: str | Path, rewrite: bool = True) -> str | bytes:
    """What to hand ``onnxruntime.InferenceSession`` for the ONNX file ``path``: where a
    rewrite changes something, the graph rewritten (serialised, in memory): an int8 graph
    given :func:`hard_sigmoid_to_lookup`, a float one :func:`broadcast_mul_to_resize` where
    the CPU uses the NCHWc layout. Otherwise, or with ``rewrite=False``, the path itself."""
    import onnx

    if rewrite:
        proto = onnx.load(str(path))
        if is_quantized(proto):
            changed = hard_sigmoid_to_lookup(proto)
        else:
            changed = blocked_layout_cpu() and broadcast_mul_to_resize(proto)
        if changed:
            return proto.SerializeToString()
    return str(path)


__all__ = ["blocked_layout_cpu", "broadcast_mul_to_resize", "cpu_model", "hard_sigmoid_to_lookup"]
