"""Pad depthwise channel counts to a multiple of 16 before int8 quantization for onnxruntime.

onnxruntime's fast int8 convolutions on x86 (MLAS "ConvSym": symmetric int8 weights, uint8
activations, VNNI) take a depthwise convolution only when its channel count is a multiple
of 16; any other count falls back to a generic kernel, about twice as slow as the float one.
MobileNetV3's expansion widths (paper-tables.md, Tables 1 and 2: 72, 120, 200, 184 in Large;
72, 88, 120 in Small) are multiples of 8, not 16.

:func:`pad_depthwise_channels` widens each such group of channels with zero channels: the
1x1 convolution that produces it gets zero output filters, the depthwise convolution zero
kernels, every convolution that mixes it into others (the projection, squeeze-excite's
reduce) zero input weights, and squeeze-excite's expand convolution zero filters. Element-
wise ops, global pooling and the depthwise convolution never mix channels, and every op that
does sees zero weights on the new ones, so the outputs are exactly those of the unpadded
graph, whatever values the padding channels carry.
"""

from __future__ import annotations

import numpy as np

from ...onnx_graph import GraphIndex, node_attrs

INT8_DEPTHWISE_MULTIPLE = 16

# Ops that keep channels apart: output channel c depends on input channel c only.
_CHANNELWISE = {"Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "LeakyRelu", "Identity",
                "Mul", "GlobalAveragePool", "Dropout"}


class _Graph(GraphIndex):
    """The graph index, plus the convolution weights and kinds the padding needs. A weight
    (or bias) is an initializer, or, in a QDQ file, the quantized initializer behind a
    DequantizeLinear."""

    def source(self, node, index: int) -> tuple[str | None, object]:
        """(initializer name, DequantizeLinear node or None) behind ``node.input[index]``."""
        name = node.input[index] if len(node.input) > index else ""
        if name in self.inits:
            return name, None
        dq = self.producer.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in self.inits:
            return dq.input[0], dq
        return None, None

    def weight(self, node, index: int = 1) -> np.ndarray | None:
        """The array behind ``node.input[index]`` (1: the weight, 2: the bias), or None."""
        from onnx import numpy_helper
        name, _ = self.source(node, index)
        return None if name is None else numpy_helper.to_array(self.inits[name])

    def is_depthwise(self, node) -> bool:
        w = self.weight(node) if node.op_type == "Conv" else None
        return (w is not None and w.ndim == 4 and w.shape[1] == 1
                and node_attrs(node).get("group", 1) == w.shape[0] > 1)

    def is_dense_conv(self, node) -> bool:
        w = self.weight(node) if node.op_type == "Conv" else None
        return w is not None and node_attrs(node).get("group", 1) == 1

    def exact_dequantize(self, dq, channels: int) -> bool:
        """True if padding the initializer behind ``dq`` with zeros (and its scale with
        ones, zero point with zeros, when per channel) keeps the new channels at exactly 0:
        scale and zero point are initializers, every zero point is 0, and the scale is one
        value or one per output channel (axis 0)."""
        from onnx import numpy_helper
        params = [i for i in list(dq.input[1:3]) if i]
        if not params or any(i not in self.inits for i in params):
            return False
        scale = numpy_helper.to_array(self.inits[params[0]])
        if len(params) > 1 and np.any(numpy_helper.to_array(self.inits[params[1]]) != 0):
            return False
        if scale.size == 1:
            return True
        rank = len(self.inits[dq.input[0]].dims)
        axis = node_attrs(dq).get("axis", 1) % max(rank, 1)
        return axis == 0 and scale.ndim == 1 and len(scale) == channels

    def is_channelwise(self, node) -> bool:
        """An op whose output channel c depends on input channel c only: those of
        _CHANNELWISE, and per-tensor (activation) Quantize/DequantizeLinear."""
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale = self.inits.get(node.input[1])
            return scale is not None and not list(scale.dims)
        return node.op_type in _CHANNELWISE


def _channel_closure(g: _Graph, depthwise) -> tuple[dict, dict, dict] | None:
    """Follow the tensors that carry ``depthwise``'s channels (as channel dimension, 1:1):
    the dense convolutions that produce them (to pad with zero output filters), those that
    consume them (zero input weights) and the depthwise ones among them, each as a dict
    id(node) -> node; None if some op in between would mix or reshape the channels."""
    tensors, todo = set(), [depthwise.input[0], depthwise.output[0]]
    producers, consumers, depthwises = {}, {}, {}
    while todo:
        t = todo.pop()
        if t in tensors:
            continue
        tensors.add(t)
        if t in g.outputs:
            return None
        node = g.producer.get(t)
        if node is None:
            return None                                   # a graph input or initializer
        if g.is_dense_conv(node):
            producers[id(node)] = node
        elif g.is_depthwise(node) or g.is_channelwise(node):
            if node.op_type == "Mul" and any(i in g.inits for i in node.input):
                return None                               # a constant scale: not padded
            todo += [i for i in node.input[:2 if node.op_type == "Mul" else 1]]
            if g.is_depthwise(node):
                depthwises[id(node)] = node
        else:
            return None
        for c in g.consumers.get(t, []):
            if g.is_dense_conv(c) and c.input[0] == t:
                consumers[id(c)] = c
            elif (g.is_depthwise(c) and c.input[0] == t) or (
                    g.is_channelwise(c) and t in c.input[:2]):
                todo += [c.output[0]] + (list(c.input[:2]) if c.op_type == "Mul" else [])
            else:
                return None
    if producers.keys() & consumers.keys():
        return None
    return producers, consumers, depthwises


def _pad(array: np.ndarray, axis: int, extra: int) -> np.ndarray:
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, extra)
    return np.pad(array, widths)


def pad_depthwise_channels(proto, multiple: int = INT8_DEPTHWISE_MULTIPLE) -> int:
    """Widen, in place, every depthwise convolution whose channel count is not a multiple of
    ``multiple`` (and the convolutions around it, see the module docstring) to the next one.
    Returns how many depthwise convolutions were widened; a group whose producer or
    consumers it cannot follow (a residual Add, a reshape, a graph input) is left alone."""
    import onnx
    from onnx import numpy_helper
    g, done, count, replaced = _Graph(proto.graph), set(), 0, set()

    def write(name, array):
        g.inits[name].CopyFrom(numpy_helper.from_array(array.astype(
            numpy_helper.to_array(g.inits[name]).dtype), name))

    def set_weight(node, index, array, axis=0):
        """Store the padded weight or bias; in a QDQ file also pad its per-channel scale
        (with ones) and zero point (zeros) when the new channels are output channels."""
        name, dq = g.source(node, index)
        write(name, array)
        if dq is None or axis != 0:
            return
        for k, fill in ((1, 1), (2, 0)):
            param = dq.input[k] if len(dq.input) > k else ""
            values = numpy_helper.to_array(g.inits[param]) if param in g.inits else None
            if values is None or values.size == 1:
                continue                                  # per-tensor: nothing to pad
            own = f"{name}_padded_{'scale' if k == 1 else 'zero_point'}"
            while own in g.inits:
                own += "_"
            proto.graph.initializer.append(numpy_helper.from_array(
                np.pad(values, (0, array.shape[0] - len(values)), constant_values=fill), own))
            g.inits[own] = proto.graph.initializer[-1]
            replaced.add(param)
            dq.input[k] = own                             # its own copy: others may share it

    for dw in g.nodes:
        if id(dw) in done or not g.is_depthwise(dw):
            continue
        channels = g.weight(dw).shape[0]
        extra = -channels % multiple
        closure = _channel_closure(g, dw)
        if closure is None:
            continue
        producers, consumers, depthwises = closure
        done |= depthwises.keys()
        widened = [*producers.values(), *depthwises.values()]
        sizes = ({g.weight(n).shape[0] for n in widened}
                 | {g.weight(n).shape[1] for n in consumers.values()})
        if extra == 0 or sizes != {channels} or not producers:
            continue
        nodes = widened + list(consumers.values())
        sources = [g.source(n, k) for n in nodes for k in range(1, len(n.input)) if n.input[k]]
        if any(name is None for name, _ in sources):
            continue                                      # a weight computed in the graph
        if not all(g.exact_dequantize(dq, g.inits[name].dims[0])
                   for name, dq in sources if dq is not None):
            continue                                      # padded zeros would not stay 0
        shared = {n.input[k] for n in nodes for k in range(1, len(n.input))}
        shared |= {name for name, dq in sources if dq is not None}
        if any(len(g.consumers.get(s, [])) > 1 for s in shared if s):
            continue                                      # a weight used elsewhere too
        for node in widened:
            for k in range(1, len(node.input)):           # weight, then bias if any
                if node.input[k]:
                    set_weight(node, k, _pad(g.weight(node, k), 0, extra))
        for node in depthwises.values():
            for a in node.attribute:
                if a.name == "group":
                    a.i = channels + extra
        for node in consumers.values():
            set_weight(node, 1, _pad(g.weight(node), 1, extra), axis=1)
        count += len(depthwises)
    if count:
        read = {i for n in proto.graph.node for i in n.input}
        for init in [i for i in proto.graph.initializer if i.name in replaced - read]:
            proto.graph.initializer.remove(init)          # scales now copied per node
        del proto.graph.value_info[:]                     # shapes changed; re-inferred later
        onnx.checker.check_model(proto)
    return count


__all__ = ["INT8_DEPTHWISE_MULTIPLE", "pad_depthwise_channels"]
