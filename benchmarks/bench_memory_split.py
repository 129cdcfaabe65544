"""Peak activation memory and latency of inference against the memory split t (MobileNetV2
§5.1: inverted residuals evaluated in t chunks of their expansion channels).

Peak memory is measured on the CPU, where ``torch.cuda.max_memory_allocated`` has no
counterpart: ``torch.profiler`` with ``profile_memory=True`` records every allocation and free
of the forward pass (batch ``--batch``, fp32, ``torch.inference_mode``); the peak is the maximum
of their running sum in time order, i.e. the most memory the forward held at once beyond its
input and the weights. Beside it, the cost model's two estimates (``mobilenets.cost.memory``,
in elements x 4 bytes x batch): ``live`` (whole blocks, conv + BN + act as one op: the t = 1
case) and ``bottleneck`` (only block inputs and outputs materialised: the limit of large t).
Eager PyTorch runs BatchNorm as an op of its own, so the measured unsplit peak is above
``live``; the split blocks apply their chunks' BatchNorms in place. The ``est.`` column applies
the ``live`` definition block by block with the blocks split (:func:`split_live_estimate`).

Latency: interleaved repeats of every t (``_common.measure``), the median per repeat; the ratio
is to the unsplit model. Each model is checked against the unsplit one before timing.

    .venv/bin/python benchmarks/bench_memory_split.py --model mobilenet_v2_100 --splits 1 2 4 8
    .venv/bin/python benchmarks/bench_memory_split.py --resolution 64 --repeats 3 --iters 2
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from _common import cpu_model, measure, randomize_bn
from mobilenets.cost import bottleneck_peak, live_peak
from mobilenets.models import create_model
from mobilenets.cost.memory import measured_peak
from mobilenets.layers import InvertedResidual
from mobilenets.models.memory_split import split_inverted_residuals


def peak_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Peak bytes of ``model(x)`` (cost.memory.measured_peak), after one untimed call that
    takes first-call allocations (caches) out of it."""
    with torch.inference_mode():
        model(x)
        return measured_peak(model, x)


def block_sizes(model: torch.nn.Module, size: tuple[int, int, int]) -> list[dict]:
    """Per step of the unsplit ``model`` (batch 1, elements): a stem / head / other block's
    input and output, an inverted residual's input ``x``, expansion ``e``, depthwise output
    ``d``, output ``p``, expansion width ``mid``, and whether it has a shortcut and SE."""
    steps, hooks = [], []

    def on(module, kind):
        def hook(m, inputs, out):
            step = {"kind": kind, "x": inputs[0][0].numel(), "p": out[0].numel()}
            if kind == "ir":
                step.update(e=m._e, d=m._d, mid=m.dw.conv.in_channels,
                            residual=m.has_residual, se=not isinstance(m.se, torch.nn.Identity))
            steps.append(step)
        hooks.append(module.register_forward_hook(hook))

    for m in model.modules():
        if isinstance(m, InvertedResidual):
            on(m, "ir")
            for name in ("expand", "dw"):
                hooks.append(getattr(m, name).register_forward_hook(
                    lambda mod, i, o, m=m, name=name: setattr(m, f"_{name[0]}", o[0].numel())))
            m._e = 0
    on(model.stem, "other")
    if not isinstance(model.head, torch.nn.Identity):
        on(model.head, "other")
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *size))
    finally:
        for h in hooks:
            h.remove()
    for step in steps:
        if step["kind"] == "ir" and step["e"] == 0:      # no expansion conv: the input is it
            step["e"] = step["x"]
    return steps


def split_live_estimate(steps: list[dict], t: int | None) -> int:
    """Peak elements under the cost model's ``live`` definition (conv + BN + act one op, a
    tensor live from its op to its last reader) with inverted residuals whole (``t`` None) or
    in ``t`` chunks. Whole: max(x + e, e + d, d + p), plus x throughout with a shortcut. Split:
    the input and the running sum of the projections stay live while a chunk is expanded
    (e / t), filtered (d / t) and projected (p, then added): max(x + p + e/t + d/t,
    x + 2p + d/t). Squeeze-excite's pooled vectors are negligible; its scaled copy adds d
    (d / t split). Other steps: input + output."""
    peak = 0
    for s in steps:
        if s["kind"] != "ir":
            peak = max(peak, s["x"] + s["p"])
            continue
        x, e, d, p = s["x"], s["e"], s["d"], s["p"]
        if t is None:
            keep = x if s["residual"] else 0
            here = max(x + e, keep + e + d, keep + d + (d if s["se"] else 0), keep + d + p)
        else:
            n = min(t, s["mid"])
            share = -(-s["mid"] // n) / s["mid"]         # the largest chunk's share
            ec, dc = round(e * share), round(d * share)
            here = max(x + p + ec + dc, x + 2 * p + dc, x + p + 2 * dc if s["se"] else 0)
        peak = max(peak, here)
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v2_100",
                    help="a registered MobileNetV2, V3 or EfficientNet")
    ap.add_argument("--splits", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10, help="interleaved rounds")
    ap.add_argument("--iters", type=int, default=5, help="calls per round")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # non-trivial BN, so the exactness check means something
    base = randomize_bn(create_model(args.model, resolution=args.resolution)).eval()
    x = torch.randn(args.batch, 3, args.resolution, args.resolution)
    models = {"unsplit": base}
    models.update({f"t={t}": split_inverted_residuals(copy.deepcopy(base), t)
                   for t in args.splits})
    errors = {}
    with torch.inference_mode():
        ref = base(x)
        for name, m in models.items():
            errors[name] = err = (m(x) - ref).abs().max().item()
            if err > 1e-4 * max(ref.abs().max().item(), 1.0):
                raise SystemExit(f"{name} differs from the unsplit model by {err}")
    size = (3, args.resolution, args.resolution)
    per_image = 4 * args.batch
    result = {"model": args.model, "resolution": args.resolution, "batch": args.batch,
              "threads": args.threads, "cpu": cpu_model(), "torch": torch.__version__,
              "cost_model_live_bytes": per_image * live_peak(base, size),
              "cost_model_bottleneck_bytes": per_image * bottleneck_peak(base, size),
              "runs": {}}
    steps = block_sizes(base, size)
    for name, m in models.items():
        t = None if name == "unsplit" else int(name[2:])
        result["runs"][name] = {"peak_bytes": peak_bytes(m, x),
                                "estimate_bytes": per_image * split_live_estimate(steps, t),
                                "max_abs_diff": errors[name]}
    times = measure({n: m for n, m in models.items()}, x, args, "unsplit")
    for name, t in times.items():
        result["runs"][name].update({k: t[k] for k in ("median_ms", "min_ms", "max_ms",
                                                       "ratio")})
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.model} at {args.resolution} px, batch {args.batch}, fp32, {args.threads} "
          f"threads, {args.repeats} interleaved rounds of {args.iters} calls; {result['cpu']}, "
          f"torch {torch.__version__}")
    print(f"cost model: live {result['cost_model_live_bytes'] / 2**20:.2f} MiB (t = 1), "
          f"bottleneck {result['cost_model_bottleneck_bytes'] / 2**20:.2f} MiB (large t)")
    print(f"{'':8s} {'peak MiB':>9s} {'est. MiB':>9s} {'median ms':>10s} {'min-max ms':>14s} "
          f"{'x unsplit':>9s}")
    for name, r in result["runs"].items():
        print(f"{name:8s} {r['peak_bytes'] / 2**20:>9.2f} {r['estimate_bytes'] / 2**20:>9.2f} "
              f"{r['median_ms']:>10.2f} "
              f"{r['min_ms']:>6.2f}-{r['max_ms']:<7.2f} {r['ratio']:>9.2f}")


if __name__ == "__main__":
    main()
