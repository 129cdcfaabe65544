"""Side-by-side CPU speed of mobilenets models against their timm equivalents.

For each model pair, in one process and under identical settings (threads, float32,
memory format, warm-up, same random input), this measures

* forward latency in eval mode under ``torch.inference_mode()`` at batch 1 and batch 32
  (224x224), and
* training-step throughput (``model.train()``, forward + cross-entropy + backward +
  SGD(momentum=0.9) step) at batch 32 (``--train-resolution``, default 128).

Each result is the median of ``--repeats`` interleaved repeats: a repeat times ours and
timm's back to back (alternating which goes first), each timing being the median over
``--iters`` iterations, and contributes one ratio ours/timm. The median ratio is printed
with its spread (min-max and interquartile range) and the absolute medians.

Run from the repository root (timm is a dev dependency; ``make test`` installs it)::

    .venv/bin/python benchmarks/bench_vs_timm.py                # full run
    .venv/bin/python benchmarks/bench_vs_timm.py --quick --models mobilenet_v3_small_100
    .venv/bin/python benchmarks/bench_vs_timm.py --threads 4 --channels-last --json out.json
    # training throughput as `mobilenets train` runs it on CPU (issue: training), both sides
    # channels_last + bf16 autocast, batch 64 at 128 px:
    .venv/bin/python benchmarks/bench_vs_timm.py --cases train --channels-last --bf16 \
        --train-batch 64 --models mobilenet_v2_100 mobilenet_v3_small_100
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import mobilenets
from _common import cpu_model

try:
    import timm
except ImportError:
    sys.exit("timm is not installed: run `.venv/bin/python -m pip install timm` "
             "(or `make test`, which installs it)")

# our registry name -> timm name (parameter counts are identical)
TIMM_NAMES = {
    "mobilenet_v1_100": "mobilenetv1_100",
    "mobilenet_v2_100": "mobilenetv2_100",
    "mobilenet_v3_large_100": "mobilenetv3_large_100",
    "mobilenet_v3_small_100": "mobilenetv3_small_100",
    **{f"efficientnet_b{i}": f"efficientnet_b{i}" for i in range(8)},
    **{f"efficientnet_lite{i}": f"efficientnet_lite{i}" for i in range(5)},
    # timm's non-tf_ builds: the same layers (equal parameter counts), symmetric padding
    **{f"efficientnet_v2_{s}": f"efficientnetv2_{s}" for s in "sml"},
    **{f"mobilenet_v4_conv_{s}_100": f"mobilenetv4_conv_{s}" for s in ("small", "medium",
                                                                       "large")},
}
DEFAULT_MODELS = ["mobilenet_v2_100", "mobilenet_v3_large_100", "efficientnet_b0"]
SEED = 0



def make_step(model: torch.nn.Module, kind: str, x: torch.Tensor, y: torch.Tensor,
              bf16: bool = False):
    """Return a zero-argument callable doing one forward pass or one training step (under
    bf16 autocast when ``bf16``, as ``mobilenets train --amp`` runs on CPU)."""
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
    if kind == "forward":
        model.eval()

        def forward():
            with autocast():
                return model(x)
        return forward
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
    return train_step


def median_time(step, iters: int) -> float:
    """Median wall time of ``step`` over ``iters`` calls, in seconds."""
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def spread(values: list[float]) -> dict:
    q1, _, q3 = statistics.quantiles(values, n=4)
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "q1": q1, "q3": q3}


def run_case(models: dict, kind: str, batch: int, res: int, args) -> dict:
    """Interleaved ours/timm timing of one case; returns ratio statistics and absolutes."""
    gen = torch.Generator().manual_seed(SEED)
    x = torch.randn(batch, 3, res, res, generator=gen)
    y = torch.randint(0, 1000, (batch,), generator=gen)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mode = torch.inference_mode() if kind == "forward" else contextlib.nullcontext()
    with mode:
        steps = {side: make_step(m, kind, x, y, args.bf16) for side, m in models.items()}
        for step in steps.values():
            for _ in range(args.warmup):
                step()
        times = {"ours": [], "timm": []}
        ratios = []
        for r in range(args.repeats):
            order = ("ours", "timm") if r % 2 == 0 else ("timm", "ours")
            for side in order:
                times[side].append(median_time(steps[side], args.iters))
            ours, ref = times["ours"][-1], times["timm"][-1]
            # time per call ours/timm for both kinds: <= 1 means ours is no slower
            ratios.append(ours / ref)
    result = {"kind": kind, "batch": batch, "resolution": res, "ratio": spread(ratios),
              "ratios": ratios}
    for side, ts in times.items():
        t = statistics.median(ts)
        result[side] = {"ms": 1e3 * t} if kind == "forward" else {"images_per_s": batch / t}
    return result


def build_pair(name: str, channels_last: bool) -> dict:
    """Both models, random init, with the same dropout and stochastic-depth rates."""
    torch.manual_seed(SEED)
    ours = mobilenets.create_model(name)
    torch.manual_seed(SEED)
    theirs = timm.create_model(TIMM_NAMES[name], drop_rate=ours.config["dropout"],
                               drop_path_rate=ours.config["drop_path_rate"])
    models = {"ours": ours.float(), "timm": theirs.float()}
    if channels_last:
        models = {k: m.to(memory_format=torch.channels_last) for k, m in models.items()}
    return models


def format_result(r: dict) -> str:
    s = r["ratio"]
    if r["kind"] == "forward":
        label = f"latency  b{r['batch']:<2d} {r['resolution']}px"
        absolute = f"ours {r['ours']['ms']:8.2f} ms  timm {r['timm']['ms']:8.2f} ms"
        hint = "<1: ours faster"
    else:
        label = f"train    b{r['batch']:<2d} {r['resolution']}px"
        absolute = (f"ours {r['ours']['images_per_s']:7.1f} im/s timm "
                    f"{r['timm']['images_per_s']:7.1f} im/s")
        hint = "<1: ours faster"
    return (f"  {label}  ratio {s['median']:.3f}  [min {s['min']:.3f} max {s['max']:.3f}"
            f"  IQR {s['q1']:.3f}-{s['q3']:.3f}]  {absolute}  ({hint})")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=sorted(TIMM_NAMES),
                   metavar="NAME", help=f"our model names (default: {' '.join(DEFAULT_MODELS)}; "
                   f"choices: {', '.join(sorted(TIMM_NAMES))})")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--repeats", type=int, default=7,
                   help="interleaved repeats per case, at least 5 (default 7)")
    p.add_argument("--iters", type=int, default=10,
                   help="timed iterations per repeat and side (default 10)")
    p.add_argument("--warmup", type=int, default=3,
                   help="warm-up iterations per case and side (default 3)")
    p.add_argument("--train-resolution", type=int, default=128,
                   help="input size of the training-step case (default 128)")
    p.add_argument("--channels-last", action="store_true",
                   help="channels_last memory format for models and inputs")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides")
    p.add_argument("--cases", nargs="+", default=["latency1", "latency32", "train"],
                   choices=["latency1", "latency32", "train"], help="which cases to run")
    p.add_argument("--train-batch", type=int, default=32,
                   help="batch of the training-step case (default 32)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 5 repeats, 2 iters, batch-32 cases at 64px")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.iters, args.train_resolution = 5, 2, 64
    if args.repeats < 5:
        p.error("--repeats must be at least 5")
    if args.iters < 1:
        p.error("--iters must be at least 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    big = 64 if args.quick else 224
    cases = {"latency1": ("forward", 1, 224), "latency32": ("forward", 32, big),
             "train": ("train", args.train_batch, args.train_resolution)}
    cases = [cases[c] for c in args.cases]
    machine = {"torch": torch.__version__, "timm": timm.__version__,
               "python": platform.python_version(), "threads": torch.get_num_threads(),
               "cpu": cpu_model()}
    print(f"torch {machine['torch']}  timm {machine['timm']}  python {machine['python']}  "
          f"threads {machine['threads']}  cpu {machine['cpu']}")
    print(f"{'bf16 autocast' if args.bf16 else 'float32'}  channels_last={args.channels_last}  repeats={args.repeats}  "
          f"iters={args.iters}  warmup={args.warmup}  ratios are ours/timm")
    results = []
    for name in args.models:
        models = build_pair(name, args.channels_last)
        params = {side: sum(p.numel() for p in m.parameters()) for side, m in models.items()}
        note = "" if params["ours"] == params["timm"] else "  (parameter counts differ!)"
        print(f"\n{name} vs timm {TIMM_NAMES[name]}  params {params['ours']:,}"
              f" / {params['timm']:,}{note}")
        for kind, batch, res in cases:
            result = run_case(models, kind, batch, res, args)
            print(format_result(result), flush=True)
            results.append({"model": name, "timm_model": TIMM_NAMES[name], **result})
    if args.json:
        payload = {"machine": machine, "settings": {k: str(v) if isinstance(v, Path) else v
                                                    for k, v in vars(args).items()},
                   "results": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
