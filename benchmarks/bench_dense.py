"""Side-by-side CPU speed of our dense heads: LR-ASPP and DeepLabV3 against torchvision's, and
each head's deployed latency in onnxruntime (fp32 and int8).

Torchvision parity first: ``lraspp_mobilenet_v3_large`` and ``deeplabv3_mobilenet_v3_large``
(no aux head, torchvision's default) are built by torchvision with random weights (BatchNorm
statistics randomised), saved, and loaded into ours through the library's torchvision import
(``create_model(name, weights=FILE)``); the run stops unless both give torchvision's outputs.
Then, in one process under identical settings (threads, float32, the same random input):

* ``latency``: eval mode under ``torch.inference_mode()``, batch 1 at ``--resolution``
  (default 512x512);
* ``train``: one training step (``model.train()``, forward + cross-entropy on ``out`` +
  backward + SGD(momentum=0.9) step), batch ``--train-batch`` (2) at ``--train-resolution``
  (default 256, or ``--resolution`` when smaller);
* ``deploy``: every head (lraspp, deeplabv3, fastdepth, midas_small) on ``--backbone``
  (default mobilenet_v3_large_100, random weights), exported with our ONNX exporter at
  ``--deploy-resolution`` (as ``--train-resolution``) and quantized to int8 with
  ``quantize_onnx`` (calibrated on ``--num-images`` images of ``--calib``; the accuracy of
  int8 files is experiments/dense_int8.py's), batch 1 in onnxruntime with ``--threads``
  threads.

Timing is ``benchmarks/_common.measure``: ``--repeats`` interleaved repeats (order rotated
each repeat) of ``--iters`` calls after ``--warmup``; each figure is the median of per-repeat
medians, and each ratio (ours/torchvision, int8/fp32) is taken per repeat and given as its
median with the min-max spread. Take figures on an otherwise idle machine. Run from the
repository root::

    .venv/bin/python benchmarks/bench_dense.py --json dense.json        # the full run
    .venv/bin/python benchmarks/bench_dense.py --cases latency train --repeats 9
    .venv/bin/python benchmarks/bench_dense.py --resolution 64 --repeats 1 --iters 1  # smoke
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torchvision.models import segmentation as tv_segmentation

import mobilenets
from _common import cpu_model, measure, randomize_bn
from mobilenets.data import SAMPLE_DIR
from mobilenets.deploy import OnnxModel, export_onnx, quantize_onnx
from mobilenets.weights import WeightsNote

SEED = 0
PAIRS = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large")
HEADS = ("lraspp", "deeplabv3", "fastdepth", "midas_small")


def build_pair(name: str, tmp: Path) -> dict:
    """torchvision's model with random weights and ours loaded from its state dict; raises
    if their eval outputs differ."""
    torch.manual_seed(SEED)
    theirs = randomize_bn(getattr(tv_segmentation, name)(weights=None, weights_backbone=None),
                          SEED).eval()
    path = tmp / f"{name}.pth"
    torch.save(theirs.state_dict(), path)
    with warnings.catch_warnings():          # the import's note on torchvision's settings
        warnings.simplefilter("ignore", WeightsNote)
        ours = mobilenets.create_model(name, weights=path).eval()
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(SEED))
    with torch.inference_mode():
        got, want = ours(x), theirs(x)
    if list(got) != list(want):
        raise SystemExit(f"{name}: outputs {list(got)} vs torchvision's {list(want)}")
    for k in want:
        diff = (got[k] - want[k]).abs().max().item()
        if not torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-4):
            raise SystemExit(f"{name}: output {k!r} differs from torchvision's by up to {diff:g}")
    params = {side: sum(p.numel() for p in m.parameters())
              for side, m in (("ours", ours), ("torchvision", theirs))}
    if params["ours"] != params["torchvision"]:
        raise SystemExit(f"{name}: {params['ours']:,} parameters vs torchvision's "
                         f"{params['torchvision']:,}")
    return {"ours": ours, "torchvision": theirs, "params": params["ours"], "max_diff": diff}


def forward_fn(model):
    model.eval()
    return lambda x: model(x)


def train_fn(model, classes: int):
    """One training step on the batch it is called with (targets fixed per batch shape);
    runs with grad enabled although ``measure`` calls it under inference mode."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    targets = {}

    def step(x):
        with torch.inference_mode(False):
            key = tuple(x.shape)
            if key not in targets:
                g = torch.Generator().manual_seed(SEED)
                targets[key] = torch.randint(0, classes, (x.shape[0], *x.shape[-2:]),
                                             generator=g)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x.clone())["out"], targets[key])
            loss.backward()
            opt.step()
    return step


def deployed(head: str, args, tmp: Path) -> dict:
    """fp32 and int8 ONNX latency of ``head`` on ``args.backbone`` in onnxruntime."""
    name = f"{head}_{args.backbone}"
    torch.manual_seed(SEED)
    model = mobilenets.create_model(name).eval()
    res = args.deploy_resolution
    fp32 = export_onnx(model, tmp / f"{name}.onnx", resolution=res)
    int8 = quantize_onnx(fp32, tmp / f"{name}-int8.onnx", args.calib,
                         num_images=args.num_images, resolution=res)
    fns = {"fp32": OnnxModel(fp32, threads=args.threads),
           "int8": OnnxModel(int8, threads=args.threads)}
    x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(SEED))
    return {"model": name, "task": model.task, "resolution": res,
            "params": sum(p.numel() for p in model.parameters()),
            "fp32_mb": fp32.stat().st_size / 1e6, "int8_mb": int8.stat().st_size / 1e6,
            "timing": measure(fns, x, args, reference="fp32")}


def row(label: str, timing: dict, candidate: str, reference: str) -> str:
    c, r = timing[candidate], timing[reference]
    return (f"  {label:42s} {c['median_ms']:9.2f} {r['median_ms']:9.2f}  {c['ratio']:6.3f}  "
            f"[{c['ratio_min']:.3f}-{c['ratio_max']:.3f}]  ({c['min_ms']:.2f}-"
            f"{c['max_ms']:.2f} ms)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=["latency", "train", "deploy"],
                   choices=["latency", "train", "deploy"], help="which cases to run")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats (default 7)")
    p.add_argument("--iters", type=int, default=5,
                   help="timed calls per repeat and candidate (default 5)")
    p.add_argument("--warmup", type=int, default=2,
                   help="warm-up calls per candidate (default 2)")
    p.add_argument("--resolution", type=int, default=512,
                   help="input size of the latency case (default 512)")
    p.add_argument("--train-resolution", type=int, default=None,
                   help="input size of the training step (default 256, or --resolution when "
                   "smaller)")
    p.add_argument("--train-batch", type=int, default=2,
                   help="batch of the training step (default 2)")
    p.add_argument("--backbone", default="mobilenet_v3_large_100",
                   help="backbone of the deployed heads (default mobilenet_v3_large_100)")
    p.add_argument("--deploy-resolution", type=int, default=None,
                   help="input size of the deployed heads (default as --train-resolution)")
    p.add_argument("--calib", default=str(SAMPLE_DIR),
                   help="int8 calibration images (default: the built-in sample)")
    p.add_argument("--num-images", type=int, default=32,
                   help="calibration images (default 32)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    args.train_resolution = args.train_resolution or min(256, args.resolution)
    args.deploy_resolution = args.deploy_resolution or min(256, args.resolution)
    for flag in ("repeats", "iters", "resolution", "train_resolution", "train_batch",
                 "deploy_resolution", "num_images", "threads"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be at least 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime
    machine = {"torch": torch.__version__, "torchvision": torchvision.__version__,
               "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
               "threads": torch.get_num_threads(), "cpu": cpu_model()}
    print("  ".join(f"{k} {v}" for k, v in machine.items()))
    print(f"float32  repeats={args.repeats}  iters={args.iters}  warmup={args.warmup}  "
          f"ratio: median per-repeat ratio [min-max]")
    results = {"pairs": [], "deploy": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if {"latency", "train"} & set(args.cases):
            print(f"\n  {'case (ours vs torchvision)':42s} {'ours ms':>9s} {'tv ms':>9s}  "
                  f"{'ratio':>6s}  spread")
        for name in PAIRS if {"latency", "train"} & set(args.cases) else ():
            pair = build_pair(name, tmp)
            entry = {"model": name, "params": pair["params"], "parity_max_diff": pair["max_diff"]}
            models = {"ours": pair["ours"], "torchvision": pair["torchvision"]}
            g = torch.Generator().manual_seed(SEED)
            if "latency" in args.cases:
                x = torch.randn(1, 3, args.resolution, args.resolution, generator=g)
                entry["latency"] = measure({k: forward_fn(m) for k, m in models.items()}, x,
                                           args, reference="torchvision")
                print(row(f"{name} b1 {args.resolution}px", entry["latency"], "ours",
                          "torchvision"), flush=True)
            if "train" in args.cases:
                r = args.train_resolution
                x = torch.randn(args.train_batch, 3, r, r, generator=g)
                classes = pair["ours"].num_classes
                entry["train"] = measure({k: train_fn(m, classes) for k, m in models.items()},
                                         x, args, reference="torchvision")
                print(row(f"{name} train b{args.train_batch} {r}px", entry["train"], "ours",
                          "torchvision"), flush=True)
            results["pairs"].append(entry)
        if "deploy" in args.cases:
            print(f"\n  {'deployed, onnxruntime (int8 vs fp32)':42s} {'int8 ms':>9s} "
                  f"{'fp32 ms':>9s}  {'ratio':>6s}  spread")
            for head in HEADS:
                r = deployed(head, args, tmp)
                results["deploy"].append(r)
                print(row(f"{r['model']} {r['resolution']}px", r["timing"], "int8", "fp32"),
                      flush=True)
    if args.json:
        payload = {"machine": machine, "settings": {k: str(v) if isinstance(v, Path) else v
                                                    for k, v in vars(args).items()},
                   "results": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
