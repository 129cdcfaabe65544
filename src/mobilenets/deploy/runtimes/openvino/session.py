"""An ONNX file run by OpenVINO's CPU runtime, behind onnxruntime's session interface.

OpenVINO reads our exported files directly, float or int8 QDQ (it turns each
QuantizeLinear/DequantizeLinear pair into int8 kernels), so ``OnnxModel(path,
runtime="openvino")`` can evaluate, predict and benchmark the same file in either runtime.
Inference precision is pinned to f32: on CPUs with bfloat16 support OpenVINO would otherwise
run float models in bfloat16 and the outputs would no longer match PyTorch's.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..session_types import Arg, Meta




def _args(values, skip=frozenset()) -> list[Arg]:
    out = []
    for v in values:
        if v.name in skip:
            continue
        dims = v.type.tensor_type.shape.dim
        out.append(Arg(v.name, [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                 for d in dims]))
    return out


def latency_config(threads: int | None = None) -> dict:
    """OpenVINO CPU options for latency: one stream, f32, ``threads`` threads (None: its
    default)."""
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVinoSession:
    """The subset of ``onnxruntime.InferenceSession`` that OnnxModel uses (get_inputs,
    get_outputs, get_modelmeta, run), for the ONNX file ``path`` compiled by OpenVINO for
    the CPU with ``threads`` inference threads (and more OpenVINO options in ``config``)."""

    def __init__(self, path: str | Path, threads: int | None = None, config: dict | None = None):
        try:
            import openvino as ov
        except ImportError:
            raise ImportError("the openvino runtime needs OpenVINO: pip install "
                              "'mobilenets[openvino]'") from None
        import onnx
        proto = onnx.load(str(path), load_external_data=False)   # names, shapes, metadata
        initializers = {t.name for t in proto.graph.initializer}
        self._inputs = _args(proto.graph.input, initializers)
        self._outputs = _args(proto.graph.output)
        self._meta = Meta({p.key: p.value for p in proto.metadata_props})
        core = ov.Core()
        try:
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                               {**latency_config(threads), **(config or {})})
        except RuntimeError as e:
            raise ValueError(f"OpenVINO cannot run {path}: {str(e).strip()[:500]}") from e
        self._local = threading.local()     # one infer request per calling thread
        self._index = {name: i for i, o in enumerate(self.compiled.outputs)
                       for name in o.get_names()}

    def executed_layers(self) -> dict:
        """How many layers of each (type, precision) OpenVINO runs, e.g. ("Convolution",
        "u8"): 52 for an int8 mobilenet_v2 (from its runtime graph; constants left out)."""
        from collections import Counter
        kinds = Counter()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            kind = rt["layerType"].astype(str)
            if kind != "Const":
                kinds[(kind, rt["runtimePrecision"].astype(str))] += 1
        return dict(kinds)

    def get_inputs(self) -> list[Arg]:
        return self._inputs

    def get_outputs(self) -> list[Arg]:
        return self._outputs

    def get_modelmeta(self) -> Meta:
        return self._meta

    @property
    def _request(self):
        """This thread's infer request: a request is not safe to share between threads."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def run(self, output_names, feeds: dict) -> list[np.ndarray]:
        """Outputs ``output_names`` (all if None) for ``feeds`` (input name -> array), as
        onnxruntime's ``run``; copies, since OpenVINO reuses its output buffers."""
        expected = {i.name for i in self._inputs}
        if set(feeds) != expected:
            raise ValueError(f"the model's inputs are {sorted(expected)}, but "
                             f"{sorted(feeds)} were given")
        results = self._request.infer(dict(feeds))
        names = output_names or [o.name for o in self._outputs]
        return [np.array(results[self._index[n]]) for n in names]


def profile_openvino(path: str | Path, x: np.ndarray, iters: int = 20, warmup: int = 5,
                     threads: int | None = None) -> dict:
    """Run ``path`` on ``x`` ``warmup + iters`` times in OpenVINO with its performance
    counters on, and group the executed layers' time by layer type and kernel (e.g.
    ``GroupConvolution brgconv_avx512_dw_I8``: the kernel name says the precision it ran in).
    Returns the same structure as :func:`mobilenets.deploy.runtimes.onnxruntime.profile` (``run_ms``, ``kernel_ms``,
    ``ops``), with ``runtime`` "openvino". The counters add overhead: read the shares."""
    import time
    from collections import defaultdict

    if iters < 1 or warmup < 0:
        raise ValueError("iters must be >= 1 and warmup >= 0")
    session = OpenVinoSession(path, threads, {"PERF_COUNT": True})
    request, feeds = session._request, {session.get_inputs()[0].name: x}
    total, nodes, runs = defaultdict(float), defaultdict(set), []
    for i in range(warmup + iters):
        start = time.perf_counter()
        request.infer(feeds)
        if i < warmup:
            continue
        runs.append(time.perf_counter() - start)
        for layer in request.get_profiling_info():
            if layer.status == layer.Status.EXECUTED:
                op = f"{layer.node_type} {layer.exec_type}"
                total[op] += layer.real_time.total_seconds()
                nodes[op].add(layer.node_name)
    kernel_s = sum(total.values())
    ops = [{"op": op, "ms": 1e3 * s / iters, "share": s / kernel_s, "nodes": len(nodes[op])}
           for op, s in sorted(total.items(), key=lambda kv: -kv[1])]
    return {"runtime": "openvino", "run_ms": 1e3 * float(np.median(runs)),
            "kernel_ms": 1e3 * kernel_s / iters, "ops": ops}


__all__ = ["OpenVinoSession", "latency_config", "profile_openvino"]
