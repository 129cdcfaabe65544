"""MACs, params and CPU latency of a model before and after ``mobilenets.compress.prune``.

Latency: batch 1 at ``--resolution`` (default 224), fp32, ``--threads`` intra-op threads, in
``--backend`` eager (``torch.inference_mode``, contiguous) or onnxruntime (each model exported
with :func:`mobilenets.export_onnx` and run by :class:`mobilenets.deploy.OnnxModel`, the
deployment path); the two models alternate (interleaved repeats, so drifting
machine load hits both alike) and the median over repeats of the mean per call is reported,
with the 25-75% spread and the minimum (the least disturbed by other load on the machine).

    .venv/bin/python benchmarks/bench_prune.py --model mobilenet_v2_100 --macs-ratio 0.3
    .venv/bin/python benchmarks/bench_prune.py --model TEACHER/best --pruned PRUNED/best
    .venv/bin/python benchmarks/bench_prune.py --model TEACHER/best --pruned PRUNED/best \
        --backend onnxruntime

With ``--pruned``, ``--model`` and ``--pruned`` are saved-model folders (a trained model and
its pruned, fine-tuned copy, e.g. from ``experiments/imagenette_compress.py``) and those two
are timed; otherwise a registered model with random BN scales is pruned here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mobilenets
from mobilenets.compress import prune


def _time(model, x, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        model(x)
    return (time.perf_counter() - t0) / calls


def _summary(samples: list[float]) -> dict:
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else samples * 3
    return {"median_ms": 1e3 * statistics.median(samples), "p25_ms": 1e3 * q[0],
            "p75_ms": 1e3 * q[2], "min_ms": 1e3 * min(samples)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v2_100",
                    help="registered name, or a saved-model folder with --pruned")
    ap.add_argument("--pruned", default=None, help="saved-model folder of --model pruned")
    ap.add_argument("--macs-ratio", type=float, default=0.3)
    ap.add_argument("--criterion", default="bn", choices=("bn", "l1"))
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=100, help="interleaved rounds")
    ap.add_argument("--calls", type=int, default=1, help="forward calls per round")
    ap.add_argument("--backend", default="eager", choices=("eager", "onnxruntime"))
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.pruned:
        base, pruned = mobilenets.load(args.model).eval(), mobilenets.load(args.pruned).eval()
        if "pruned" not in pruned.config:
            raise SystemExit(f"{args.pruned} is not a pruned model (no 'pruned' in its config)")
        info = pruned.config["pruned"]
        args.macs_ratio, args.criterion = info.get("macs_ratio"), info["criterion"]
    else:
        base = mobilenets.create_model(args.model, resolution=args.resolution).eval()
        with torch.no_grad():            # random BN scales, so the ranking is not all ties
            for m in base.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
        pruned = prune(base, macs_ratio=args.macs_ratio, criterion=args.criterion).eval()
    x = torch.randn(1, 3, args.resolution, args.resolution)
    models = {"base": base, "pruned": pruned}
    runners = models
    if args.backend == "onnxruntime":
        from mobilenets.deploy import OnnxModel, export_onnx
        tmp = Path(tempfile.mkdtemp())
        runners = {k: OnnxModel(export_onnx(m, tmp / f"{k}.onnx", resolution=args.resolution),
                                threads=args.threads) for k, m in models.items()}
    times = {k: [] for k in models}
    with torch.inference_mode():
        for m in runners.values():       # warm-up
            _time(m, x, 10)
        for _ in range(args.repeats):
            for k, m in runners.items():
                times[k].append(_time(m, x, args.calls))
    result = {"model": args.model, "backend": args.backend, "resolution": args.resolution,
              "threads": args.threads,
              "macs_ratio": args.macs_ratio, "ratio": pruned.config["pruned"]["ratio"],
              "criterion": args.criterion, "repeats": args.repeats, "calls": args.calls,
              "torch": torch.__version__}
    for k, m in models.items():
        p = mobilenets.profile(m, (3, args.resolution, args.resolution))
        result[k] = {"params": p.params, "macs": p.macs, **_summary(times[k])}
    result["macs_removed"] = 1 - result["pruned"]["macs"] / result["base"]["macs"]
    result["speedup"] = result["base"]["median_ms"] / result["pruned"]["median_ms"]
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.model} at {args.resolution} px, {args.backend}, batch 1, {args.threads} "
          f"threads, {args.repeats} interleaved rounds of {args.calls} calls "
          f"(torch {torch.__version__})")
    print(f"{'':8s} {'params':>11s} {'MMACs':>9s} {'median ms':>10s} {'p25-p75 ms':>14s} {'min ms':>7s}")
    for k in models:
        r = result[k]
        print(f"{k:8s} {r['params']:>11,} {r['macs'] / 1e6:>9.1f} {r['median_ms']:>10.2f} "
              f"{r['p25_ms']:>6.2f}-{r['p75_ms']:<6.2f} {r['min_ms']:>7.2f}")
    print(f"MACs removed {result['macs_removed']:.1%} (per-layer ratio "
          f"{result['ratio']:.3f}); latency x{result['speedup']:.2f}")


if __name__ == "__main__":
    main()
