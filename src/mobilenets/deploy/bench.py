"""Latency of a model on CPU backends: eager, fused, compile, onnxruntime, openvino,
executorch (XNNPACK).

Every backend is timed the same way: the same input, the same warm-up, calls under
``torch.inference_mode()``, one ``time.perf_counter`` interval per call; the result is the
median and 90th percentile latency in ms and the images/s the median gives.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .fuse import fuse
from .onnx_export import export_onnx
from .onnx_model import OnnxModel, PteModel

BACKENDS = ("eager", "fused", "compile", "onnxruntime", "int8", "openvino", "executorch")
# the ones an exported file runs on (.onnx: onnxruntime, int8, openvino; .pte: executorch)
ONNX_BACKENDS = ("onnxruntime", "int8", "openvino", "executorch")


def runtime_of(backend: str) -> str:
    """The runtime an ONNX backend runs in: int8 is an int8 file in onnxruntime."""
    return "onnxruntime" if backend == "int8" else backend


class BackendError(RuntimeError):
    """A backend could not be built or run (e.g. torch.compile failed)."""


def time_calls(fn: Callable, x, iters: int) -> list[float]:
    """Wall time in seconds of each of ``iters`` calls of ``fn(x)``."""
    times = []
    with torch.inference_mode():
        for _ in range(iters):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
    return times


def summarize(times: list[float], batch: int) -> dict:
    """Median and p90 latency (ms) and images/s of a list of call times (s)."""
    ms = sorted(1e3 * t for t in times)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    median = statistics.median(ms)
    return {"median_ms": median, "p90_ms": p90, "images_per_s": 1e3 * batch / median,
            "calls": len(ms)}


def benchmark(fn: Callable, x: torch.Tensor, warmup: int = 10, iters: int = 50,
              repeats: int = 1) -> dict:
    """Time ``fn(x)``: ``warmup`` untimed calls, then ``repeats`` x ``iters`` timed calls.

    Returns median_ms and p90_ms over all timed calls, images_per_s, and the per-repeat
    medians (``repeat_ms``)."""
    if iters < 1 or repeats < 1 or warmup < 0:
        raise ValueError("iters and repeats must be >= 1 and warmup >= 0")
    time_calls(fn, x, warmup)
    runs = [time_calls(fn, x, iters) for _ in range(repeats)]
    result = summarize([t for run in runs for t in run], x.shape[0])
    result["repeat_ms"] = [1e3 * statistics.median(run) for run in runs]
    return result


def compile_model(model: nn.Module, x: torch.Tensor) -> Callable:
    """``torch.compile`` of the model (inductor, weights frozen), compiled by one call on
    ``x``; raises BackendError saying why if compilation fails."""
    compiled = torch.compile(model, options={"freezing": True})
    try:
        with torch.inference_mode():
            compiled(x)
    except Exception as e:  # inductor raises many kinds (no compiler, lowering errors)
        raise BackendError(f"torch.compile failed for this model: {type(e).__name__}: "
                           f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
    return compiled


def exported_model(model: nn.Module, x: torch.Tensor, threads: int | None,
                   folder: str | Path | None = None, runtime: str = "onnxruntime"):
    """Export ``model`` (fused) for ``x``'s batch and size to ``folder``/model.onnx (a
    temporary file if None) and open it in ``runtime`` (onnxruntime or openvino) with
    ``threads`` threads; for executorch, to model.pte lowered to XNNPACK."""
    if folder is not None and runtime == "executorch":
        from .runtimes.executorch import export_pte
        path = export_pte(model, Path(folder) / "model.pte", resolution=x.shape[-1],
                          dynamic_batch=x.shape[0] != 1, max_batch=max(2, x.shape[0]))
        return PteModel(path, threads=threads)
    if folder is not None:
        path = export_onnx(model, Path(folder) / "model.onnx", resolution=x.shape[-1],
                           dynamic_batch=x.shape[0] != 1)
        return OnnxModel(path, threads=threads, runtime=runtime)
    with tempfile.TemporaryDirectory() as tmp:
        return exported_model(model, x, threads, tmp, runtime)


def make_backend(model: nn.Module, backend: str, x: torch.Tensor,
                 threads: int | None = None) -> Callable:
    """A callable running ``model`` on ``backend`` (one of BACKENDS) for inputs like ``x``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if threads:
        torch.set_num_threads(threads)
    if backend == "eager":
        return model.eval()
    if backend == "fused":
        return fuse(model)
    if backend == "compile":
        return compile_model(fuse(model), x)
    if backend in ("onnxruntime", "openvino", "executorch"):
        return exported_model(model, x, threads, runtime=backend)
    raise ValueError("the int8 backend runs an int8 .onnx file: make one with `mobilenets "
                     "quantize MODEL --calib DIR --out FILE.onnx`, then `mobilenets bench "
                     "FILE.onnx` (or --format pte for an int8 .pte file)")


def bench_model(model, backend: str, batch: int = 1, resolution: int | None = None,
                threads: int | None = None, warmup: int = 10, iters: int = 50,
                repeats: int = 1) -> dict:
    """Build ``backend`` for ``model`` and benchmark it on a random batch."""
    resolution = resolution or model.preprocess.get("resolution", 224)
    in_chans = model.config.get("in_chans", 3)
    # values in [0, 1]: valid pictures for a detector (which takes images, not a normalised
    # batch); the speed of the others does not depend on them
    x = torch.rand(batch, in_chans, resolution, resolution,
                   generator=torch.Generator().manual_seed(0))
    if isinstance(model, OnnxModel):
        if runtime_of(backend) != model.runtime:
            raise ValueError(f"this OnnxModel runs in {model.runtime}, not on the {backend} "
                             f"backend; open it with OnnxModel(path, runtime=...)")
        fn = model
    else:
        fn = make_backend(model, backend, x, threads)
    if threads:
        torch.set_num_threads(threads)
    result = benchmark(fn, x, warmup, iters, repeats)
    if not threads and backend not in ONNX_BACKENDS:
        threads = torch.get_num_threads()
    return {"model": model.config.get("name"), "backend": backend, "batch": batch,
            "resolution": resolution, "threads": threads, **result}


__all__ = ["BACKENDS", "ONNX_BACKENDS", "BackendError", "bench_model", "benchmark",
           "compile_model", "exported_model", "make_backend", "runtime_of", "summarize",
           "time_calls"]
