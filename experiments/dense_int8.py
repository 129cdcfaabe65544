"""int8 post-training quantization of the dense models that experiments/dense.py trained:
fp32 vs int8 ONNX accuracy on the val split and batch-1 latency in onnxruntime.

For each task's run ``RUNS/TASK-BACKBONE/best/`` (LR-ASPP on COCO128 with the VOC label set,
FastDepth on 7-Scenes redkitchen; see experiments/dense.py), at the run's resolution:

* the fp32 ONNX export (BatchNorm folded) and two int8 files from ``quantize_onnx`` (static
  PTQ, QDQ, per-channel int8 weights, uint8 activations, percentile ranges): every layer in
  int8 (``int8``), and the last two convolutions kept in float (``int8_output``,
  ``exclude="output"``). Calibration uses ``--num-images`` training images only: COCO128's
  train2017 photos; 7-Scenes' photos of the training pairs (0-399);
* accuracy of each file on the val split with the task's own evaluation: mIoU and pixel
  accuracy (COCO128 val2017, VOC label set); AbsRel, delta1 and RMSE (7-Scenes pairs
  400-499), with the int8 change (mIoU in points; AbsRel relative: the issue's targets are a
  drop of at most 1 point and a rise of at most 5%);
* latency: batch 1, ``--threads`` threads, ``benchmarks/_common.measure`` (interleaved
  repeats; ratio to fp32 per repeat, median and min-max). Take it on a quiet machine.

    .venv/bin/python experiments/dense_int8.py --backbone efficientnet_lite0 \\
        --json runs/dense/int8-efficientnet_lite0.json
    .venv/bin/python experiments/dense_int8.py --tasks depth --backbone mobilenet_v2_100
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "benchmarks"))
from _common import cpu_model, measure  # noqa: E402
from datasets import unpacked  # noqa: E402

ROOT = Path(os.environ.get("MOBILENETS_DENSE_RUNS", "runs/dense"))
VARIANTS = {"int8": None, "int8_output": "output"}      # name -> quantize_onnx exclude


def calibration_folder(task: str, tmp: Path) -> tuple[Path, Path]:
    """(the data folder, a folder of training photos only to calibrate on)."""
    if task == "seg":
        data = unpacked("coco128-lightly")
        return data, data / "images" / "train2017"
    from mobilenets.tasks.depth import split_pairs
    data = unpacked("7scenes-redkitchen-depth")
    train, _, _ = split_pairs(data, train_range=(0, 400), val_range=(400, 500))
    folder = tmp / "calib-7scenes-train"
    folder.mkdir()
    for image, _ in train:                  # the photos of the training pairs, no val frame
        (folder / image.name).symlink_to(image.resolve())
    return data, folder


def score(task: str, model, data: Path, resolution: int) -> dict:
    if task == "seg":
        from mobilenets.tasks.segmentation import evaluate
        r = evaluate(model, data, "val", resolution, batch_size=8, label_set="voc")
        return {k: r[k] for k in ("miou", "pixel_acc", "per_class_iou", "images")}
    from mobilenets.tasks.depth import depth_eval_transform, evaluate_model, seven_scenes
    from mobilenets.training.sampling import SeededView
    _, val = seven_scenes(data, train_range=(0, 400), val_range=(400, 500))
    view = SeededView(val, depth_eval_transform(resolution, model.preprocess), 0)
    r = evaluate_model(model, view, batch_size=8, kind=model.config.get("depth_kind"))
    return {k: r[k] for k in ("abs_rel", "delta1", "rmse", "depth_kind", "scoring", "images")}


def run(task: str, args, tmp: Path) -> dict:
    from mobilenets import load
    from mobilenets.deploy import OnnxModel, export_onnx, quantize_onnx

    folder = args.runs / f"{task}-{args.backbone}" / "best"
    if not folder.is_dir():
        raise SystemExit(f"no trained model {folder}: run `python experiments/dense.py run "
                         f"{task} --backbone {args.backbone}` first")
    model = load(folder).eval()
    res = args.resolution or model.preprocess["resolution"]
    data, calib = calibration_folder(task, tmp)
    files = {"fp32": export_onnx(model, tmp / f"{task}-fp32.onnx", resolution=res)}
    for name, exclude in VARIANTS.items():
        files[name] = quantize_onnx(files["fp32"], tmp / f"{task}-{name}.onnx", calib,
                                    num_images=args.num_images, exclude=exclude)
    sessions = {k: OnnxModel(f, threads=args.threads) for k, f in files.items()}
    result = {"task": task, "model": str(folder), "name": model.config["name"],
              "resolution": res, "calibration": str(calib), "num_images": args.num_images,
              "mb": {k: f.stat().st_size / 1e6 for k, f in files.items()},
              "metrics": {k: score(task, m, data, res) for k, m in sessions.items()}}
    x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(0))
    result["latency"] = measure(sessions, x, args, reference="fp32")
    return result


def show(r: dict) -> None:
    print(f"\n{r['name']} ({r['model']}) {r['resolution']} px, calibrated on {r['num_images']} "
          f"images of {r['calibration']}")
    fp32 = r["metrics"]["fp32"]
    for k, m in r["metrics"].items():
        lat = r["latency"][k]
        if r["task"] == "seg":
            change = f"  {100 * (m['miou'] - fp32['miou']):+.2f} points" if k != "fp32" else ""
            acc = f"mIoU {100 * m['miou']:.2f}%  pixel acc {100 * m['pixel_acc']:.2f}%{change}"
        else:
            change = (f"  AbsRel {100 * (m['abs_rel'] / fp32['abs_rel'] - 1):+.1f}%"
                      if k != "fp32" else "")
            acc = (f"AbsRel {m['abs_rel']:.4f}  delta1 {100 * m['delta1']:.2f}%  RMSE "
                   f"{m['rmse']:.4f}{change}")
        print(f"  {k:12s} {r['mb'][k]:6.2f} MB  {acc}  |  {lat['median_ms']:.2f} ms "
              f"(x{lat['ratio']:.3f} of fp32, {lat['ratio_min']:.3f}-{lat['ratio_max']:.3f})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--tasks", nargs="+", default=["seg", "depth"], choices=["seg", "depth"])
    p.add_argument("--runs", type=Path, default=ROOT,
                   help=f"the folder of experiments/dense.py's runs (default {ROOT})")
    p.add_argument("--resolution", type=int, default=None,
                   help="input size (default: the run's)")
    p.add_argument("--num-images", type=int, default=128, help="calibration images")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}  python {platform.python_version()}  threads "
          f"{args.threads}  cpu {cpu_model()}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            results.append(run(task, args, Path(tmp)))
            show(results[-1])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "results": results},
                                        indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
