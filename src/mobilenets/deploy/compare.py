"""Every runtime side by side for one model: eager PyTorch, onnxruntime, OpenVINO and
ExecuTorch (XNNPACK), fp32 and int8, batch-1 latency in one interleaved run.

:func:`build_candidates` writes the model's files into a folder and opens each one:

* ``eager fp32``: the PyTorch model (``torch.inference_mode``);
* ``onnxruntime fp32`` (the reference) and ``openvino fp32``: the ONNX export;
* ``onnxruntime int8`` and ``openvino int8``: ``quantize_onnx`` of it (the library's recipe:
  percentile calibration, depthwise channel padding, and in onnxruntime the x86 rewrites);
* ``executorch fp32``: ``export_pte`` (XNNPACK); ``executorch int8``: ``quantize_pte`` (PT2E
  with ExecuTorch's XNNPACKQuantizer, lowered to XNNPACK).

:func:`measure` times them interleaved: a warm-up per candidate, then ``repeats`` rounds
that time every candidate for ``iters`` calls, in an order rotated each round, so a load
change on the machine falls on every candidate alike. A figure is the median of the
per-round medians with their min-max spread; each candidate's ratio to the reference is
taken per round (median and min-max). :func:`compare_runtimes` does both.

OpenVINO and ExecuTorch share the process safely: ExecuTorch's runtime loads OpenVINO's C
library only for files delegated to its OpenVINO backend, which ours (XNNPACK) never are.
OpenVINO and ``torch.compile`` do not mix in one long-lived process
(``docs/known-issues.md``); nothing here compiles, and ``openvino=False`` leaves OpenVINO
out. A runtime that is not installed is left out with a note (``skipped``), except
onnxruntime, the reference.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .bench import time_calls

REFERENCE = "onnxruntime fp32"
# every candidate, in the order tables list them
CANDIDATES = ("eager fp32", "onnxruntime fp32", "onnxruntime int8", "openvino fp32",
              "openvino int8", "executorch fp32", "executorch int8")


def build_candidates(model: nn.Module, folder: str | Path, calib, *, resolution: int,
                     threads: int | None = None, num_images: int = 128,
                     openvino: bool = True, log: Callable[[str], None] | None = None,
                     calibrate_method: str = "percentile") -> tuple[dict, dict, dict]:
    """Write ``model``'s ONNX and ``.pte`` files (fp32, and int8 calibrated on
    ``num_images`` images of ``calib``) at ``resolution`` into ``folder`` and open them with
    ``threads`` threads. Returns (name -> callable in :data:`CANDIDATES` order, name of a
    built file -> seconds it took, left-out runtime -> why). ``log`` gets one line per built
    file. ``calibrate_method``: the ONNX int8 file's activation ranges (:func:`quantize_onnx`;
    "minmax" for random weights whose activations saturate, where percentile fails).
    ExecuTorch's thread pool is process-wide: ``threads`` resizes it for the process."""
    from .onnx_export import export_onnx
    from .onnx_model import OnnxModel, PteModel
    from .quantize import quantize_onnx
    folder, log = Path(folder), log or (lambda line: None)
    name = model.config["name"]
    model = model.eval()
    fns, took, skipped = {"eager fp32": model}, {}, {}

    def timed(label, make):
        start = time.perf_counter()
        value = make()
        took[label] = time.perf_counter() - start
        log(f"{label}: built in {took[label]:.1f} s")
        return value

    onnx32 = timed("onnx fp32", lambda: export_onnx(model, folder / f"{name}.onnx",
                                                     resolution=resolution))
    onnx8 = timed("onnx int8", lambda: quantize_onnx(onnx32, folder / f"{name}-int8.onnx",
                                                      calib, num_images=num_images,
                                                      calibrate_method=calibrate_method))
    fns[REFERENCE] = OnnxModel(onnx32, threads=threads)
    fns["onnxruntime int8"] = OnnxModel(onnx8, threads=threads)
    if not openvino:
        skipped["openvino"] = "left out (openvino=False)"
    else:
        try:
            fns["openvino fp32"] = OnnxModel(onnx32, threads=threads, runtime="openvino")
            fns["openvino int8"] = OnnxModel(onnx8, threads=threads, runtime="openvino")
        except ImportError as e:
            skipped["openvino"] = f"not installed ({e})"
    try:
        from .runtimes.executorch import export_pte, quantize_pte
        from .runtimes.executorch.session import portable_lib
        portable_lib()
    except ImportError as e:
        skipped["executorch"] = f"not installed ({e})"
    else:
        pte32 = timed("pte fp32", lambda: export_pte(model, folder / f"{name}.pte",
                                                     resolution=resolution))
        pte8 = timed("pte int8", lambda: quantize_pte(model, folder / f"{name}-int8.pte", calib,
                                                      num_images=num_images,
                                                      resolution=resolution))
        fns["executorch fp32"] = PteModel(pte32, threads=threads)
        fns["executorch int8"] = PteModel(pte8, threads=threads)
    return fns, took, skipped


def measure(fns: dict, x: torch.Tensor, *, warmup: int = 10, repeats: int = 7,
            iters: int = 20, reference: str = REFERENCE) -> dict:
    """Interleaved timing of the callables ``fns`` (name -> callable) on ``x``: ``warmup``
    untimed calls each, then ``repeats`` rounds of ``iters`` timed calls each, the order
    rotated every round. Per name: ``median_ms`` (median of the per-round medians),
    ``min_ms`` / ``max_ms`` (their spread), ``p90_ms`` over all calls, ``images_per_s``,
    ``ratio`` (median of the per-round ratios to ``reference``) with ``ratio_min`` /
    ``ratio_max``, and ``repeat_ms`` (the per-round medians)."""
    if reference not in fns:
        raise ValueError(f"the reference {reference!r} is not among the candidates "
                         f"{sorted(fns)}")
    if repeats < 1 or iters < 1 or warmup < 0:
        raise ValueError("repeats and iters must be >= 1 and warmup >= 0")
    names = list(fns)
    for n in names:
        time_calls(fns[n], x, warmup)
    per_repeat = {n: [] for n in names}
    calls = {n: [] for n in names}
    for r in range(repeats):
        shift = r % len(names)
        for n in names[shift:] + names[:shift]:
            ts = time_calls(fns[n], x, iters)
            calls[n] += ts
            per_repeat[n].append(1e3 * statistics.median(ts))
    out = {}
    for n in names:
        ms, all_ms = per_repeat[n], sorted(1e3 * t for t in calls[n])
        ratios = [a / b for a, b in zip(ms, per_repeat[reference])]
        out[n] = {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
                  "p90_ms": all_ms[int(round(0.9 * (len(all_ms) - 1)))],
                  "images_per_s": 1e3 * x.shape[0] / statistics.median(ms),
                  "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                  "ratio_max": max(ratios), "repeat_ms": ms}
    return out


def compare_runtimes(model: nn.Module, calib, *, resolution: int | None = None,
                     threads: int | None = None, num_images: int = 128, warmup: int = 10,
                     repeats: int = 7, iters: int = 20, openvino: bool = True,
                     folder: str | Path | None = None,
                     log: Callable[[str], None] | None = None) -> dict:
    """:func:`build_candidates` then :func:`measure` on one random batch-1 input (seed 0).
    ``resolution`` defaults to the model's; ``threads`` (default: PyTorch's current count)
    is set for every runtime, PyTorch's included; the files go to ``folder`` (a temporary
    one if None). Returns {"model", "resolution", "threads", "reference", "results" (name ->
    :func:`measure`'s figures), "build_s", "skipped"}."""
    import tempfile
    resolution = int(resolution or model.preprocess.get("resolution")
                     or model.config.get("resolution") or 224)
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    if folder is None:
        with tempfile.TemporaryDirectory() as tmp:
            return compare_runtimes(model, calib, resolution=resolution, threads=threads,
                                    num_images=num_images, warmup=warmup, repeats=repeats,
                                    iters=iters, openvino=openvino, folder=tmp, log=log)
    fns, took, skipped = build_candidates(model, folder, calib, resolution=resolution,
                                          threads=threads, num_images=num_images,
                                          openvino=openvino, log=log)
    x = torch.rand(1, model.config.get("in_chans", 3), resolution, resolution,   # images for
                   generator=torch.Generator().manual_seed(0))                  # a detector
    return {"model": model.config["name"], "resolution": resolution, "threads": threads,
            "reference": REFERENCE,
            "results": measure(fns, x, warmup=warmup, repeats=repeats, iters=iters),
            "build_s": took, "skipped": skipped}


def format_table(name: str, results: dict, resolution: int, threads: int,
                 top1: dict | None = None, reference: str = REFERENCE) -> str:
    """:func:`measure`'s ``results`` as one text table (``top1``: name -> top-1 as a
    fraction, an extra column)."""
    lines = [f"{name}  (batch 1, {resolution} px, {threads} threads; ratio = candidate / "
             f"{reference}, per repeat)",
             f"  {'runtime':18s} {'median ms':>10s} {'[min - max]':>17s} {'ratio':>6s} "
             f"{'[min - max]':>13s}" + (f" {'top-1':>7s}" if top1 else "")]
    for n, r in results.items():
        line = (f"  {n:18s} {r['median_ms']:10.2f} [{r['min_ms']:6.2f} - {r['max_ms']:6.2f}] "
                f"{r['ratio']:6.3f} [{r['ratio_min']:.3f} - {r['ratio_max']:.3f}]")
        if top1:
            line += f" {100 * top1[n]:6.2f}%" if n in top1 else "       -"
        lines.append(line)
    return "\n".join(lines)


__all__ = ["CANDIDATES", "REFERENCE", "build_candidates", "compare_runtimes", "format_table",
           "measure"]
