"""Peak activation memory of inference, by two definitions (in elements, batch 1).

1. ``bottleneck`` (MobileNetV2 §5 and Table 3): only the tensors on the network's main path
   between blocks must be materialised: the input image and every body block's output. A block's
   inner tensors (expansion, depthwise output, squeeze-excite) are computed slice by slice, the
   stem is fused into the first block (Table 3's caption), and the head conv streams into the
   global pool. The peak is the largest single such tensor.
2. ``live``: the network executes node by node in graph order (conv + BatchNorm + activation
   as one fused op, squeeze-excite as one op, each op writing a new buffer); a tensor is live
   from the op that makes it until its last consumer has run (a residual input stays live until
   the add). The peak is the largest total of live tensors at any op.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..layers import ConvNormAct, SqueezeExcite


_ALIASING = (nn.Identity, nn.Dropout, nn.Flatten)


class _FusedOpTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (ConvNormAct, SqueezeExcite)) or super().is_leaf_module(m, qualname)


def _numel(node: torch.fx.Node) -> int:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return 0
    n = 1
    for d in meta.shape:
        n *= int(d)
    return n


def live_peak(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Definition 2 of the module docstring."""
    graph = _FusedOpTracer().trace(model)
    gm = torch.fx.GraphModule(model, graph)
    param = next(model.parameters())
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros((1, *input_size), dtype=param.dtype,
                                            device=param.device))
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    order = {n: i for i, n in enumerate(nodes)}
    # ops that return their input (identity, eval-mode dropout, flatten) make no new buffer:
    # they extend the life of the tensor they alias
    source = {}
    for n in nodes:
        is_alias = n.op == "call_module" and isinstance(gm.get_submodule(n.target), _ALIASING)
        source[n] = source[n.args[0]] if is_alias else n
    last_use = {n: order[n] for n in nodes}
    for n in nodes:
        for u in n.users:
            last_use[source[n]] = max(last_use[source[n]], order.get(u, len(nodes)))
    buffers = [n for n in nodes if source[n] is n]
    peak = 0
    for i in range(len(nodes)):
        live = sum(_numel(n) for n in buffers if order[n] <= i <= last_use[n])
        peak = max(peak, live)
    return peak


def bottleneck_peak(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Definition 1 of the module docstring (needs a model with ``blocks``)."""
    sizes = [input_size[0] * input_size[1] * input_size[2]]
    hooks = [block.register_forward_hook(lambda m, i, o: sizes.append(o[0].numel()))
             for row in model.blocks for block in row]
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_size), dtype=param.dtype, device=param.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return max(sizes)


def peak_memory(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, int]:
    """(bottleneck, live) peaks in elements of inference (eval mode); bottleneck is 0 for
    models without ``blocks``."""
    was_training = model.training
    model.eval()
    try:
        bottleneck = bottleneck_peak(model, input_size) if hasattr(model, "blocks") else 0
        return bottleneck, live_peak(model, input_size)
    finally:
        model.train(was_training)


def measured_peak(fn, x: torch.Tensor) -> int:
    """Peak bytes held at once while ``fn(x)`` runs on the CPU: the largest running sum of
    ``torch.profiler``'s allocation events (``profile_memory=True``; ``max_memory_allocated``
    exists only for accelerators). Call ``fn`` once before to keep first-call caches out."""
    from torch.autograd.profiler_util import MEMORY_EVENT_NAME
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(x)
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == MEMORY_EVENT_NAME), key=lambda e: e.start_ns())
    now = peak = 0
    for e in events:
        now += e.nbytes()
        peak = max(peak, now)
    return peak
