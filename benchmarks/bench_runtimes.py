"""Every runtime side by side: eager PyTorch, onnxruntime, OpenVINO and ExecuTorch (XNNPACK),
fp32 and int8, batch-1 CPU latency in one interleaved run (and top-1 with ``--data``).

For each model (a registered name, random weights unless ``--weights``; or a saved-model
folder), in one process and with the same input, threads and warm-up:

* ``eager fp32``: the PyTorch model (``torch.inference_mode``);
* ``onnxruntime fp32`` (the reference) and ``openvino fp32``: our ONNX export;
* ``onnxruntime int8`` and ``openvino int8``: ``quantize_onnx`` of it (the library's recipe:
  percentile calibration, depthwise channel padding, and in onnxruntime the x86 rewrites);
* ``executorch fp32``: ``export_pte`` (XNNPACK); ``executorch int8``: ``quantize_pte`` (PT2E
  with ExecuTorch's XNNPACKQuantizer, lowered to XNNPACK).

int8 files are calibrated on ``--num-images`` images of ``--calib`` (default: the built-in
sample). ``--repeats`` interleaved repeats time every candidate for ``--iters`` calls, in an
order rotated each repeat; a figure is the median of the per-repeat medians with their
min-max spread, and each candidate's ratio to ``onnxruntime fp32`` is taken per repeat
(median and min-max). ExecuTorch's thread pool is process-wide: it is set to ``--threads``
once, like every other runtime's. With ``--data DIR`` (class folders, or with val/), each
file's top-1 on it is printed too (meaningful only for trained weights). Run from the
repository root::

    .venv/bin/python benchmarks/bench_runtimes.py
    .venv/bin/python benchmarks/bench_runtimes.py --models mobilenet_v2_100 --repeats 3 \\
        --iters 5 --resolution 224
    .venv/bin/python benchmarks/bench_runtimes.py --models runs/v2/best --data DATA
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from mobilenets.cli.run_cmds import load_cli_model
from mobilenets.data import SAMPLE_DIR
from mobilenets.deploy import OnnxModel, PteModel, evaluate, export_onnx, quantize_onnx
from _common import cpu_model, measure

try:
    import onnxruntime
    from mobilenets.deploy.runtimes.executorch import export_pte, quantize_pte
    from mobilenets.deploy.runtimes.executorch.session import set_threads
except ImportError as e:
    sys.exit(f"{e}: this benchmark needs onnxruntime and ExecuTorch (pip install -e "
             f"'.[deploy,mobile]'; '.[openvino]' for OpenVINO)")

DEFAULT_MODELS = ["mobilenet_v2_100", "mobilenet_v3_large_100", "efficientnet_b0"]
REFERENCE = "onnxruntime fp32"



def build(spec: str, args, tmp: Path) -> tuple[torch.nn.Module, dict, dict]:
    """The model, name -> callable for every candidate, and name -> build seconds."""
    torch.manual_seed(0)
    model = load_cli_model(spec, args.weights, allow_download=False).eval()
    name = model.config["name"]
    res, calib = args.resolution, args.calib or SAMPLE_DIR
    fns, took = {"eager fp32": model}, {}

    def timed(label, make):
        start = time.perf_counter()
        value = make()
        took[label] = time.perf_counter() - start
        print(f"  {label}: built in {took[label]:.0f} s", flush=True)
        return value

    onnx32 = timed("onnx fp32", lambda: export_onnx(model, tmp / f"{name}.onnx",
                                                     resolution=res))
    onnx8 = timed("onnx int8", lambda: quantize_onnx(onnx32, tmp / f"{name}-int8.onnx", calib,
                                                      num_images=args.num_images))
    pte32 = timed("pte fp32", lambda: export_pte(model, tmp / f"{name}.pte", resolution=res))
    pte8 = timed("pte int8", lambda: quantize_pte(model, tmp / f"{name}-int8.pte", calib,
                                                   num_images=args.num_images,
                                                   resolution=res))
    fns[REFERENCE] = OnnxModel(onnx32, threads=args.threads)
    fns["onnxruntime int8"] = OnnxModel(onnx8, threads=args.threads)
    if not args.no_openvino:
        try:
            fns["openvino fp32"] = OnnxModel(onnx32, threads=args.threads, runtime="openvino")
            fns["openvino int8"] = OnnxModel(onnx8, threads=args.threads, runtime="openvino")
        except ImportError as e:
            print(f"  openvino skipped: {e}", flush=True)
    fns["executorch fp32"] = PteModel(pte32, threads=args.threads)
    fns["executorch int8"] = PteModel(pte8, threads=args.threads)
    return model, fns, took



def print_table(name: str, res: dict, top1: dict, args) -> None:
    print(f"\n{name}  (batch 1, {args.resolution} px, {args.threads} threads; ratio = "
          f"candidate / {REFERENCE}, per repeat)")
    head = f"  {'runtime':18s} {'median ms':>10s} {'[min - max]':>17s} {'ratio':>6s} " \
           f"{'[min - max]':>13s}"
    print(head + (f" {'top-1':>7s}" if top1 else ""))
    for n, r in res.items():
        line = (f"  {n:18s} {r['median_ms']:10.2f} [{r['min_ms']:6.2f} - {r['max_ms']:6.2f}] "
                f"{r['ratio']:6.3f} [{r['ratio_min']:.3f} - {r['ratio_max']:.3f}]")
        if top1:
            line += f" {100 * top1[n]:6.2f}%" if n in top1 else "       -"
        print(line)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, metavar="MODEL",
                   help=f"registered names or saved-model folders (default: "
                        f"{' '.join(DEFAULT_MODELS)})")
    p.add_argument("--weights", default=None, help="weights for registered names")
    p.add_argument("--resolution", type=int, default=224, help="input size (default 224)")
    p.add_argument("--threads", type=int, default=2, help="threads of every runtime (2)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats (7)")
    p.add_argument("--iters", type=int, default=20, help="timed calls per repeat (20)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up calls per candidate (10)")
    p.add_argument("--calib", type=Path, default=None,
                   help="calibration images for int8 (default: the built-in sample)")
    p.add_argument("--num-images", type=int, default=128, help="calibration images (128)")
    p.add_argument("--data", type=Path, default=None, help="also top-1 on this image folder")
    p.add_argument("--no-openvino", action="store_true", help="leave OpenVINO out")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.iters < 1 or args.threads < 1:
        p.error("--repeats, --iters and --threads must be at least 1")
    if args.repeats < 5:
        print(f"note: {args.repeats} repeats: the spreads say little (use 5 or more for "
              f"figures)", file=sys.stderr)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    set_threads(args.threads)
    import executorch.version
    machine = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
               "executorch": executorch.version.__version__, "threads": args.threads,
               "cpu": cpu_model(), "python": platform.python_version()}
    try:
        import openvino
        machine["openvino"] = openvino.__version__
    except ImportError:
        pass
    print("  ".join(f"{k} {v}" for k, v in machine.items()))
    print(f"float32 input, repeats={args.repeats} iters={args.iters} warmup={args.warmup}")
    x = torch.randn(1, 3, args.resolution, args.resolution,
                    generator=torch.Generator().manual_seed(0))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models:
            print(f"\n{spec}: building ...", flush=True)
            model, fns, took = build(spec, args, Path(tmp))
            top1 = ({n: evaluate(f, args.data)["top1"] for n, f in fns.items()}
                    if args.data else {})
            load = os.getloadavg()[0]
            res = measure(fns, x, args, REFERENCE)
            load = (load, os.getloadavg()[0])
            print_table(model.config["name"], res, top1, args)
            print(f"  1-min load average before/after timing: {load[0]:.2f} / {load[1]:.2f} "
                  f"(this run adds about 1-2; more means other processes shared the CPUs)")
            results[model.config["name"]] = {"results": res, "top1": top1,
                                             "build_s": took, "loadavg": load}
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "settings": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "models": results}, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
