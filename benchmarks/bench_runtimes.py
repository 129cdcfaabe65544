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
from pathlib import Path

import torch

from mobilenets.cli.run_cmds import load_cli_model
from mobilenets.data import SAMPLE_DIR
from mobilenets.deploy import evaluate
from mobilenets.deploy.compare import build_candidates, format_table, measure
from _common import cpu_isa, cpu_model

try:
    import onnxruntime
    from mobilenets.deploy.runtimes.executorch.session import set_threads
except ImportError as e:
    sys.exit(f"{e}: this benchmark needs onnxruntime and ExecuTorch (pip install -e "
             f"'.[deploy,mobile]'; '.[openvino]' for OpenVINO)")

DEFAULT_MODELS = ["mobilenet_v2_100", "mobilenet_v3_large_100", "efficientnet_b0"]


def build(spec: str, args, tmp: Path) -> tuple[torch.nn.Module, dict, dict]:
    """The model, name -> callable for every candidate, and name -> build seconds
    (:func:`mobilenets.deploy.compare.build_candidates`)."""
    torch.manual_seed(0)
    model = load_cli_model(spec, args.weights, allow_download=False).eval()
    fns, took, skipped = build_candidates(
        model, tmp, args.calib or SAMPLE_DIR, resolution=args.resolution,
        threads=args.threads, num_images=args.num_images, openvino=not args.no_openvino,
        calibrate_method=args.calibration, log=lambda line: print(f"  {line}", flush=True))
    for runtime, why in skipped.items():
        print(f"  {runtime} skipped: {why}", flush=True)
    return model, fns, took


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
    p.add_argument("--calibration", choices=("percentile", "minmax"), default="percentile",
                   help="the ONNX int8 files' activation ranges (minmax where random weights "
                        "saturate an activation and percentile fails; latency is the same)")
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
               "cpu": cpu_model(), "isa": " ".join(cpu_isa()) or "unknown",
               "python": platform.python_version()}
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
            res = measure(fns, x, warmup=args.warmup, repeats=args.repeats, iters=args.iters)
            load = (load, os.getloadavg()[0])
            print("\n" + format_table(model.config["name"], res, args.resolution, args.threads,
                                      top1))
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
