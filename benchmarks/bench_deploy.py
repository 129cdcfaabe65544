"""CPU inference latency of our deployment backends against timm and torchvision.

For each model, in one process and under identical settings (threads, float32, NCHW
contiguous input, ``torch.inference_mode()``, the same warm-up, the same random input), this
times batch-1 forward passes of

* timm eager, torchvision eager (where torchvision has the model),
* ours: eager, fused (BatchNorm folded), compile (``torch.compile`` of the fused model,
  inductor with frozen weights), onnxruntime (our ONNX export, in the session mobilenets
  opens; for models with squeeze-excite also without its layout rewrite, ``ours
  onnxruntime, no rewrite``),
* with ``--openvino``, our ONNX export in OpenVINO (``ours openvino``, f32),
* onnxruntime running timm's model exported with the same exporter (``torch.onnx.export``,
  dynamo, opset 18), with the same session options as ours: as onnxruntime opens it
  (``timm onnxruntime``) and, for models with squeeze-excite, also with the layout rewrite
  our sessions apply (``timm onnxruntime+rewrite``, see ``deploy/runtimes/onnxruntime/rewrite.py``).

Each of ``--repeats`` interleaved repeats times every candidate for ``--iters`` calls, in an
order rotated each repeat; a candidate's figure is the median over repeats of its per-repeat
median, with the min-max spread, and its ratio to timm eager is taken per repeat (median and
spread printed). Run from the repository root::

    .venv/bin/python benchmarks/bench_deploy.py
    .venv/bin/python benchmarks/bench_deploy.py --models mobilenet_v3_large_100 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import mobilenets
from mobilenets.deploy import OnnxModel, export_onnx, fuse
from mobilenets.deploy.bench import BackendError, compile_model
from _common import cpu_model, measure

try:
    import onnx  # noqa: F401  (the exporter needs it)
    import timm
    import torchvision
except ImportError:
    sys.exit("timm, torchvision and onnx are needed: `make test` installs them")

TIMM_NAMES = {"mobilenet_v2_100": "mobilenetv2_100",
              "mobilenet_v3_large_100": "mobilenetv3_large_100",
              "mobilenet_v3_small_100": "mobilenetv3_small_100",
              "mobilenet_v1_100": "mobilenetv1_100", "efficientnet_b0": "efficientnet_b0"}
TV_NAMES = {"mobilenet_v2_100": "mobilenet_v2", "mobilenet_v3_large_100": "mobilenet_v3_large",
            "mobilenet_v3_small_100": "mobilenet_v3_small", "efficientnet_b0": "efficientnet_b0"}
DEFAULT_MODELS = ["mobilenet_v2_100", "mobilenet_v3_large_100", "efficientnet_b0"]
REFERENCE = "timm eager"



def timm_onnx(model: torch.nn.Module, x: torch.Tensor, threads: int, tmp: str) -> dict:
    """timm's model through the same exporter and session options as ours: as onnxruntime
    opens it, and with our sessions' layout rewrite where that changes the graph."""
    path = Path(tmp) / "timm.onnx"
    with torch.no_grad():
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, verbose=False,
                                    input_names=["input"], output_names=["logits"])
    program.save(path, external_data=False)
    fns = {"timm onnxruntime": OnnxModel(path, threads=threads, rewrite=False)}
    rewritten = OnnxModel(path, threads=threads)
    if rewritten.rewritten:
        fns["timm onnxruntime+rewrite"] = rewritten
    return fns


def candidates(name: str, x: torch.Tensor, args, tmp: str) -> tuple[dict, dict]:
    """name -> callable for every candidate of one model; name -> reason for failed ones."""
    torch.manual_seed(0)
    ours = mobilenets.create_model(name).eval()
    ref = timm.create_model(TIMM_NAMES[name]).eval()
    fns, failed = {REFERENCE: ref}, {}
    if name in TV_NAMES:
        fns["torchvision eager"] = getattr(torchvision.models, TV_NAMES[name])().eval()
    fns["ours eager"] = ours
    fns["ours fused"] = fuse(ours)
    start = time.perf_counter()
    try:
        fns["ours compile"] = compile_model(fuse(ours), x)
        print(f"  torch.compile took {time.perf_counter() - start:.0f} s", flush=True)
    except BackendError as e:
        failed["ours compile"] = str(e)
        print(f"  ours compile FAILED: {e}", flush=True)
    path = export_onnx(ours, Path(tmp) / f"{name}.onnx", resolution=x.shape[-1])
    fns["ours onnxruntime"] = OnnxModel(path, threads=args.threads)
    if fns["ours onnxruntime"].rewritten:
        fns["ours onnxruntime, no rewrite"] = OnnxModel(path, threads=args.threads,
                                                        rewrite=False)
    if args.openvino:
        fns["ours openvino"] = OnnxModel(path, threads=args.threads, runtime="openvino")
    fns.update(timm_onnx(ref, x, args.threads, tmp))
    return fns, failed



def print_table(name: str, res: dict, failed: dict) -> None:
    print(f"\n{name}  (batch 1, 224 px; ratio = candidate / {REFERENCE}, per repeat)")
    print(f"  {'backend':28s} {'median ms':>10s} {'[min - max]':>17s} {'p90 ms':>8s} "
          f"{'img/s':>7s} {'ratio':>6s} {'[min - max]':>13s}")
    for n, r in res.items():
        print(f"  {n:28s} {r['median_ms']:10.2f} [{r['min_ms']:6.2f} - {r['max_ms']:6.2f}] "
              f"{r['p90_ms']:8.2f} {r['images_per_s']:7.1f} {r['ratio']:6.3f} "
              f"[{r['ratio_min']:.3f} - {r['ratio_max']:.3f}]")
    for n, why in failed.items():
        print(f"  {n:28s} FAILED: {why}")
    ours = {n: r for n, r in res.items() if n.startswith("ours") and "no rewrite" not in n}
    best = min(ours, key=lambda n: ours[n]["median_ms"])
    print(f"  best of ours: {best} at {ours[best]['ratio']:.3f}x timm eager (target <= 0.35: "
          f"{'met' if ours[best]['ratio'] <= 0.35 else 'MISSED'})")
    for other in (n for n in res if "onnxruntime" in n and n != "ours onnxruntime"):
        ort = statistics.median([a / b for a, b in zip(res["ours onnxruntime"]["repeat_ms"],
                                                       res[other]["repeat_ms"])])
        target = (f" (target <= 1: {'met' if ort <= 1.0 else 'MISSED'})"
                  if other.startswith("timm") else "")
        print(f"  ours onnxruntime / {other}: {ort:.3f} per repeat{target}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=sorted(TIMM_NAMES),
                   metavar="NAME", help=f"default: {' '.join(DEFAULT_MODELS)}")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats, >= 5 (7)")
    p.add_argument("--iters", type=int, default=20, help="timed calls per repeat (20)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up calls per candidate (10)")
    p.add_argument("--openvino", action="store_true", help="also our export in OpenVINO")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.repeats < 5 or args.iters < 1:
        p.error("--repeats must be at least 5 and --iters at least 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime
    machine = {"torch": torch.__version__, "timm": timm.__version__,
               "torchvision": torchvision.__version__, "onnxruntime": onnxruntime.__version__,
               "threads": args.threads, "cpu": cpu_model(), "python": platform.python_version()}
    print("  ".join(f"{k} {v}" for k, v in machine.items()))
    print(f"float32 NCHW, inference_mode, repeats={args.repeats} iters={args.iters} "
          f"warmup={args.warmup}")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            print(f"\n{name}: building candidates ...", flush=True)
            fns, failed = candidates(name, x, args, tmp)
            load = os.getloadavg()[0]
            res = measure(fns, x, args, REFERENCE)
            load = (load, os.getloadavg()[0])
            print_table(name, res, failed)
            print(f"  1-min load average before/after timing: {load[0]:.2f} / {load[1]:.2f} "
                  f"(this run adds about 1-2; more means other processes shared the CPUs)")
            results[name] = {"results": res, "failed": failed, "loadavg": load}
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "settings": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "models": results}, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
