"""fp32 vs int8 in onnxruntime (and OpenVINO): top-1 and batch-1 CPU latency.

For each model: export fp32 ONNX (BatchNorm folded), quantize it with ``quantize_onnx``
(static PTQ, QDQ, per-channel int8 weights, uint8 activations, calibrated on
``--num-images`` images of the calibration folder's train/), then

* accuracy (with ``--data DIR`` holding val/): top-1 of both files and their top-1 agreement,
  on the same images with the model's eval preprocessing at ``--resolution``;
* latency: batch 1, ``--threads`` intra-op threads, ``--repeats`` interleaved repeats of
  ``--iters`` calls (order rotated each repeat); figure = median of per-repeat medians, and
  the int8/fp32 ratio taken per repeat (median, min-max).

``--plain`` also runs the int8 model quantized without depthwise channel padding and opened
without the hard-sigmoid lookup (``ort_int8_plain``), so the two int8 rewrites' effect is
measured side by side. ``--openvino`` also runs the same two files in OpenVINO's CPU runtime
(``ov_fp32``, ``ov_int8``; accuracy too, and ov_int8's ratio to ov_fp32 per repeat).
Prefer not to combine it with ``--pt2e``: in the test suite, a process with OpenVINO loaded
died later while torch.compile spawned its compiler (see tests/test_openvino.py).
``--pt2e`` also times torch.compile of the fused fp32 model and of
the PT2E int8 model.
A registered name without weights gives latency only (random weights). Run from the root::

    .venv/bin/python benchmarks/bench_int8.py --model mobilenet_v3_large_100
    .venv/bin/python benchmarks/bench_int8.py --model runs/X/best --data DATA --resolution 224
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from mobilenets.cli.run_cmds import load_cli_model
from mobilenets.data import SAMPLE_DIR, ImageFolderDataset, at_resolution, collate_skip_bad, \
    eval_transform
from mobilenets.deploy import OnnxModel, export_onnx, quantize_onnx
from mobilenets.deploy.bench import time_calls

DEFAULT_MODELS = ["mobilenet_v2_100", "mobilenet_v3_large_100"]


@torch.no_grad()
def accuracy(models: dict, data: Path, preprocess: dict, names) -> dict:
    """Top-1 of each model and each one's top-1 agreement with the first, on data/val."""
    root = data / "val" if (data / "val").is_dir() else data
    ds = ImageFolderDataset(root, eval_transform(preprocess), classes=names)
    loader = torch.utils.data.DataLoader(ds, 50, collate_fn=collate_skip_bad)
    hits, agree, count = dict.fromkeys(models, 0), dict.fromkeys(models, 0), 0
    for x, y, _ in loader:
        preds = {k: m(x).argmax(1) for k, m in models.items()}
        ref = next(iter(preds.values()))
        for k, p in preds.items():
            hits[k] += (p == y).sum().item()
            agree[k] += (p == ref).sum().item()
        count += len(y)
    return {"images": count, **{f"{k}_top1": hits[k] / count for k in models},
            **{f"{k}_agreement": agree[k] / count for k in list(models)[1:]}}


def latency(fns: dict, x: torch.Tensor, repeats: int, iters: int, warmup: int) -> dict:
    """Interleaved repeats; per-candidate median of per-repeat medians (ms), min and max."""
    per = {k: [] for k in fns}
    for fn in fns.values():
        time_calls(fn, x, warmup)
    keys = list(fns)
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            per[k].append(1e3 * statistics.median(time_calls(fns[k], x, iters)))
    out = {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v),
               "repeats_ms": v} for k, v in per.items()}
    for k in keys[1:]:
        out[k]["ratio"], out[k]["ratio_range"] = ratio_per_repeat(per[k], per[keys[0]])
    return out


def ratio_per_repeat(times: list, reference: list) -> tuple[float, list]:
    """Median and [min, max] of the ratios of two candidates' times, repeat by repeat."""
    ratios = [a / b for a, b in zip(times, reference)]
    return statistics.median(ratios), [min(ratios), max(ratios)]


def run(args, spec: str, tmp: Path) -> dict:
    model = load_cli_model(spec, args.weights).eval()
    res = args.resolution or model.preprocess["resolution"]
    pre = at_resolution(model.preprocess, res)
    name = model.config["name"]
    fp32 = export_onnx(model, tmp / f"{name}-fp32.onnx", resolution=res)
    int8 = quantize_onnx(model, tmp / f"{name}-int8.onnx", args.calib or args.data or SAMPLE_DIR,
                         num_images=args.num_images, resolution=res, exclude=args.exclude,
                         activation_type=args.activations)
    ort = {"ort_fp32": OnnxModel(fp32, threads=args.threads),
           "ort_int8": OnnxModel(int8, threads=args.threads)}
    if args.plain:
        plain = quantize_onnx(model, tmp / f"{name}-int8-plain.onnx",
                              args.calib or args.data or SAMPLE_DIR, num_images=args.num_images,
                              resolution=res, exclude=args.exclude,
                              activation_type=args.activations, channel_multiple=None)
        ort["ort_int8_plain"] = OnnxModel(plain, threads=args.threads, rewrite=False)
    if args.openvino:
        ort["ov_fp32"] = OnnxModel(fp32, threads=args.threads, runtime="openvino")
        ort["ov_int8"] = OnnxModel(int8, threads=args.threads, runtime="openvino")
    result = {"model": spec, "name": name, "resolution": res, "threads": args.threads,
              "fp32_mb": fp32.stat().st_size / 1e6, "int8_mb": int8.stat().st_size / 1e6}
    if args.data:
        result.update(accuracy(ort, Path(args.data), pre, model.config.get("class_names")))
    fns = dict(ort)
    if args.pt2e:
        from mobilenets.deploy import fuse
        from mobilenets.deploy.bench import compile_model
        from mobilenets.deploy.quantize_pt2e import compile_pt2e, quantize_pt2e
        torch.set_num_threads(args.threads)
        x = torch.randn(1, 3, res, res)
        qmodel = quantize_pt2e(model, args.calib or args.data or SAMPLE_DIR,
                               num_images=args.num_images, resolution=res)
        fns["compile_fp32"] = compile_model(fuse(model), x)
        fns["compile_int8"] = compile_pt2e(qmodel, x)
    x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(0))
    result["latency"] = latency(fns, x, args.repeats, args.iters, args.warmup)
    lat = result["latency"]
    if args.plain:                                   # the rewrites' effect, per repeat
        int8 = lat["ort_int8"]
        int8["ratio_to_plain"], int8["ratio_to_plain_range"] = ratio_per_repeat(
            int8["repeats_ms"], lat["ort_int8_plain"]["repeats_ms"])
    if args.openvino:
        ov = lat["ov_int8"]
        ov["ratio_to_ov_fp32"], ov["ratio_to_ov_fp32_range"] = ratio_per_repeat(
            ov["repeats_ms"], lat["ov_fp32"]["repeats_ms"])
    if args.pt2e:
        lat["compile_int8"]["ratio_to_compile_fp32"] = (lat["compile_int8"]["median_ms"]
                                                        / lat["compile_fp32"]["median_ms"])
    return result


def show(r: dict) -> None:
    print(f"{r['name']} ({r['model']}) {r['resolution']} px, {r['threads']} threads, "
          f"files {r['fp32_mb']:.1f} MB fp32 / {r['int8_mb']:.1f} MB int8")
    if "images" in r:
        fp32 = 100 * r["ort_fp32_top1"]
        for k in [k for k in ("ort_int8", "ort_int8_plain", "ov_fp32", "ov_int8")
                  if f"{k}_top1" in r]:
            top1 = 100 * r[f"{k}_top1"]
            print(f"  top-1 on {r['images']} images: fp32 {fp32:.2f}%  {k} {top1:.2f}%  (drop "
                  f"{fp32 - top1:.2f} points; top-1 agreement {100 * r[f'{k}_agreement']:.1f}%)")
    for k, v in r["latency"].items():
        extra = (f"  x{v['ratio']:.3f} of ort_fp32 ({v['ratio_range'][0]:.3f}-"
                 f"{v['ratio_range'][1]:.3f})" if "ratio" in v else "")
        if "ratio_to_plain" in v:
            extra += (f"  x{v['ratio_to_plain']:.3f} of ort_int8_plain ("
                      f"{v['ratio_to_plain_range'][0]:.3f}-{v['ratio_to_plain_range'][1]:.3f})")
        if "ratio_to_ov_fp32" in v:
            lo, hi = v["ratio_to_ov_fp32_range"]
            extra += f"  x{v['ratio_to_ov_fp32']:.3f} of ov_fp32 ({lo:.3f}-{hi:.3f})"
        print(f"  {k:14s} {v['median_ms']:7.2f} ms  ({v['min_ms']:.2f}-{v['max_ms']:.2f}){extra}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", help="name, saved-model folder (repeatable)")
    p.add_argument("--weights", default=None)
    p.add_argument("--data", default=None, help="folder with val/ (accuracy) and train/")
    p.add_argument("--calib", default=None, help="calibration folder (default: --data or "
                   "the built-in sample)")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--num-images", type=int, default=128)
    p.add_argument("--exclude", default=None)
    p.add_argument("--activations", default="uint8", choices=["uint8", "int8"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--plain", action="store_true", help="also int8 without channel padding "
                   "and hard-sigmoid lookup")
    p.add_argument("--openvino", action="store_true", help="also both files in OpenVINO")
    p.add_argument("--pt2e", action="store_true", help="also torch.compile fp32 vs PT2E int8")
    p.add_argument("--json", action="store_true", help="print one JSON object per model")
    args = p.parse_args()
    if args.weights and len(args.model or []) > 1:
        sys.exit("--weights applies to a single --model")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.model or DEFAULT_MODELS:
            r = run(args, spec, Path(tmp))
            print(json.dumps(r)) if args.json else show(r)
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
