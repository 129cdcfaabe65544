"""What the benchmark scripts share: the machine's CPU name and interleaved timing (the
library's, :func:`mobilenets.deploy.compare.measure`).

Imported as ``from _common import ...``: the scripts run as ``python benchmarks/NAME.py``,
which puts this folder first on ``sys.path``.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from mobilenets.deploy.compare import measure as interleaved


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(fns: dict, x: torch.Tensor, args, reference: str) -> dict:
    """:func:`mobilenets.deploy.compare.measure` with the scripts' ``args.warmup``,
    ``args.repeats`` and ``args.iters``."""
    return interleaved(fns, x, warmup=args.warmup, repeats=args.repeats, iters=args.iters,
                       reference=reference)
