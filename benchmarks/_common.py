"""What the benchmark scripts share: the machine's CPU name and interleaved timing.

Imported as ``from _common import ...``: the scripts run as ``python benchmarks/NAME.py``,
which puts this folder first on ``sys.path``.
"""

from __future__ import annotations

import platform
import statistics
from pathlib import Path

import torch

from mobilenets.deploy.bench import time_calls


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(fns: dict, x: torch.Tensor, args, reference: str) -> dict:
    """Interleaved repeats (``args.warmup``, ``args.repeats``, ``args.iters``); per candidate:
    per-repeat medians (ms), p90 over all calls, images/s and ratios to ``reference``."""
    names = list(fns)
    for n in names:
        time_calls(fns[n], x, args.warmup)
    per_repeat = {n: [] for n in names}
    calls = {n: [] for n in names}
    for r in range(args.repeats):
        shift = r % len(names)
        for n in names[shift:] + names[:shift]:
            ts = time_calls(fns[n], x, args.iters)
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
