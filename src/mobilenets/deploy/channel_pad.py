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

from .onnx_graph import GraphIndex, node_attrs

INT8_DEPTHWISE_MULTIPLE = 16

# Ops that keep channels apart: output channel c depends on input channel c only.
_CHANNELWISE = {"Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "LeakyRelu", "Identity",
                "Mul", "GlobalAveragePool", "Dropout"}


class _Graph(GraphIndex):
    """The graph index, plus the convolution weights and kinds the padding needs."""

    def weight(self, node) -> np.ndarray | None:
        from onnx import numpy_helper
        init = self.inits.get(node.input[1]) if len(node.input) > 1 else None
        return None if init is None else numpy_helper.to_array(init)

    def is_depthwise(self, node) -> bool:
        w = self.weight(node) if node.op_type == "Conv" else None
        return (w is not None and w.ndim == 4 and w.shape[1] == 1
                and node_attrs(node).get("group", 1) == w.shape[0] > 1)

    def is_dense_conv(self, node) -> bool:
        w = self.weight(node) if node.op_type == "Conv" else None
        return w is not None and node_attrs(node).get("group", 1) == 1


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
        elif g.is_depthwise(node) or node.op_type in _CHANNELWISE:
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
                    c.op_type in _CHANNELWISE and t in c.input[:2]):
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
    g, done, count = _Graph(proto.graph), set(), 0

    def set_weight(node, index, array):
        name = node.input[index]
        g.inits[name].CopyFrom(numpy_helper.from_array(array.astype(
            numpy_helper.to_array(g.inits[name]).dtype), name))

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
        shared = {n.input[k] for n in widened + list(consumers.values())
                  for k in range(1, len(n.input))}
        if any(len(g.consumers[s]) > 1 for s in shared if s):
            continue                                      # a weight used elsewhere too
        for node in widened:
            for k in range(1, len(node.input)):           # weight, then bias if any
                if node.input[k]:
                    set_weight(node, k, _pad(g.weight(node) if k == 1 else
                                             numpy_helper.to_array(g.inits[node.input[k]]),
                                             0, extra))
        for node in depthwises.values():
            for a in node.attribute:
                if a.name == "group":
                    a.i = channels + extra
        for node in consumers.values():
            set_weight(node, 1, _pad(g.weight(node), 1, extra))
        count += len(depthwises)
    if count:
        del proto.graph.value_info[:]                     # shapes changed; re-inferred later
        onnx.checker.check_model(proto)
    return count


__all__ = ["INT8_DEPTHWISE_MULTIPLE", "pad_depthwise_channels"]
