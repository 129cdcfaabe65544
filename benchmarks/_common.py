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
from mobilenets.deploy.quantize import cpu_flags


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (as the tests' conftest gives
    them), so that eval outputs are O(1) and parity checks before timing compare something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# the x86 instruction sets int8 speed depends on: without a VNNI dot product (AVX-512 VNNI or
# AVX-VNNI) int8 convolutions gain little or nothing over fp32 in every runtime here
INT8_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_isa() -> list[str]:
    """Which of :data:`INT8_ISA` the CPU reports in /proc/cpuinfo ([] where it cannot say)."""
    flags = cpu_flags()
    return [f for f in INT8_ISA if f in flags]


def measure(fns: dict, x: torch.Tensor, args, reference: str) -> dict:
    """:func:`mobilenets.deploy.compare.measure` with the scripts' ``args.warmup``,
    ``args.repeats`` and ``args.iters``."""
    return interleaved(fns, x, warmup=args.warmup, repeats=args.repeats, iters=args.iters,
                       reference=reference)
