"""Where an ONNX model's time goes in onnxruntime: kernel time per operator kind.

onnxruntime's own profiler (``SessionOptions.enable_profiling``) records every node's kernel
time; this groups them by operator after onnxruntime's graph optimisations, so the names are
those of the kernels that ran (``QLinearConv``, NCHWc ``Conv``, ``ReorderInput`` ...).
Convolutions are split by shape, the split that matters for MobileNets: ``depthwise``
(group == channels), ``1x1`` (pointwise) and ``kxk`` (full convolutions, e.g. the stem),
with ``NCHWc`` marking onnxruntime's blocked-layout float kernels. The profiler adds its own
overhead to every node, so read the shares, not the absolute times, against ``bench``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from ...onnx_graph import node_attrs
from .session import inference_session, session_options
from .rewrite import cpu_model


def _conv_kinds(optimized_path: Path) -> dict[str, str]:
    """Node name -> 'OP [NCHWc] depthwise|1x1|kxk' for the convolutions of a graph."""
    import onnx
    kinds = {}
    for node in onnx.load(str(optimized_path)).graph.node:
        if "Conv" not in node.op_type:
            continue
        attrs = node_attrs(node)
        kernel = list(attrs.get("kernel_shape") or [])
        if int(attrs.get("group", 1)) > 1:
            shape = "depthwise"
        elif kernel and all(k == 1 for k in kernel):
            shape = "1x1"
        else:
            shape = "x".join(map(str, kernel)) if kernel else "conv"
        layout = " NCHWc" if node.domain.endswith("nchwc") else ""
        kinds[node.name] = f"{node.op_type}{layout} {shape}"
    return kinds


def profile_onnx(path: str | Path, x: np.ndarray, iters: int = 20, warmup: int = 5,
                 threads: int | None = None) -> dict:
    """Run ``path`` on ``x`` ``warmup + iters`` times under onnxruntime's profiler, in the
    session :class:`~mobilenets.deploy.OnnxModel` would use (:func:`.ort_rewrite.cpu_model`).

    Returns ``run_ms`` (median whole-run time of the profiled calls), ``kernel_ms`` (kernel
    time per call, summed over nodes) and ``ops``: a list of ``{"op", "ms", "share",
    "nodes"}`` per operator kind, ms per call, largest first; shares sum to 1.
    """
    if iters < 1 or warmup < 0:
        raise ValueError("iters must be >= 1 and warmup >= 0")
    model = cpu_model(path)
    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(threads)
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        inference_session(model, so)  # writes it
        kinds = _conv_kinds(Path(so.optimized_model_filepath))
        so = session_options(threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        session = inference_session(model, so)
        name = session.get_inputs()[0].name
        for _ in range(warmup + iters):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e["dur"] for e in events if e.get("name") == "model_run"][warmup:]
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_call = len(nodes) // (warmup + iters)
    total, count = defaultdict(float), defaultdict(set)
    for e in nodes[warmup * per_call:]:
        node = e["name"][:-len("_kernel_time")]
        op = kinds.get(node, e["args"]["op_name"])
        total[op] += e["dur"]
        count[op].add(node)
    kernel_us = sum(total.values())
    ops = [{"op": op, "ms": us / iters / 1e3, "share": us / kernel_us, "nodes": len(count[op])}
           for op, us in sorted(total.items(), key=lambda kv: -kv[1])]
    return {"runtime": "onnxruntime", "run_ms": statistics.median(runs) / 1e3,
            "kernel_ms": kernel_us / iters / 1e3, "ops": ops}


def format_profile(result: dict) -> str:
    """A table of :func:`profile_onnx`'s (or ``profile_openvino``'s) result, one operator
    kind per line."""
    lines = [f"{result['runtime']} profile: {result['run_ms']:.2f} ms per run, "
             f"{result['kernel_ms']:.2f} ms in kernels",
             f"  {'operator':46s} {'nodes':>5s} {'ms/run':>8s} {'share':>6s}"]
    lines += [f"  {o['op']:46s} {o['nodes']:5d} {o['ms']:8.2f} {100 * o['share']:5.1f}%"
              for o in result["ops"]]
    return "\n".join(lines)


__all__ = ["format_profile", "profile_onnx"]
