"""Read-only views of an ONNX graph shared by the export and every runtime's passes: node
attributes, who produces and who consumes each tensor, and whether a file is quantized."""

from __future__ import annotations


def node_attrs(node) -> dict:
    """A node's attributes as plain Python values, by name."""
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class GraphIndex:
    """Producers, consumers and initializers of an ONNX graph, by tensor name.

    ``nodes`` holds one Python wrapper per node, taken once, so ``id(node)`` of any node
    reached through this index is a stable key for sets and dicts of nodes."""

    def __init__(self, graph):
        self.nodes = list(graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inits = {i.name: i for i in graph.initializer}
        self.outputs = {o.name for o in graph.output}


QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                 "ConvInteger", "MatMulInteger", "QLinearMatMul", "QGemm", "QLinearAdd"}


def is_quantized(model) -> bool:
    """True if the ONNX file ``model`` (a path, or a loaded ModelProto) contains quantized
    (int8/uint8) operators."""
    import onnx
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        try:
            proto = onnx.load(str(model), load_external_data=False)
        except Exception as e:              # protobuf's DecodeError, a missing file, ...
            raise ValueError(f"{model} is not a readable ONNX file ({type(e).__name__}: {e}); "
                             f"if it is truncated or of another format, export it again "
                             f"(`mobilenets export MODEL --out FILE.onnx`)") from None
    return any(n.op_type in QUANTIZED_OPS for n in proto.graph.node)


__all__ = ["QUANTIZED_OPS", "GraphIndex", "is_quantized", "node_attrs"]
