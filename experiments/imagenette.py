"""Train a model from scratch on Imagenette (../shared/datasets) and evaluate it on the 3,925
val images: the recorded command behind the Imagenette figures of the README and closing notes.

    .venv/bin/python experiments/imagenette.py --epochs 15 --workers 1 --out runs/in-v2-15-sgd \
        -- --amp --channels-last --no-progress     # 2-core AVX-512 BF16 CPU, ~25 min
        # on a CPU without bf16 instructions leave --amp out (AVX2, 2 cores: ~48 min)
    .venv/bin/python experiments/imagenette.py --epochs 40 --batch-size 128  # a GPU
    .venv/bin/python experiments/imagenette.py --model mobilenet_v2_035 -- --teacher T/best

Arguments after ``--`` go to ``mobilenets train`` unchanged. The run folder (default
``runs/imagenette-MODEL-RESpx``) holds metrics.jsonl, curves.png and best/ as usual; this
script also writes ``experiment.json`` there (command, hardware, wall time, final figures).
A run longer than one sitting is stopped at any point (even SIGKILL) and continued with the
same command plus ``--resume``, which passes the folder's ``last.pt`` to ``mobilenets train
--resume``. In experiment.json ``train_time_s`` sums the epochs' training time (without
evaluation) over all sittings, from metrics.jsonl; ``wall_time_s`` is the last sitting's.
Without ``--resume``, a folder that already holds a run is refused (``mobilenets train``
keeps earlier runs); ``-- --overwrite`` starts afresh there.
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

from mobilenets.training.reporting import validated

sys.path.insert(0, str(Path(__file__).parent))
from datasets import unpacked  # noqa: E402


def metrics(run_dir: Path) -> list[dict]:
    """The per-epoch rows of a run's ``metrics.jsonl`` ([] when the run has none yet)."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mobilenet_v2_100")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--recipe", default="small-data")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--data", default=None, help="an unpacked copy to train on (train/ and val/ "
                   "folders), e.g. the 160 px one of `experiments/datasets.py imagenette-224 "
                   "--short-side 160`; default: imagenette-224 from ../shared")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its "
                   "last.pt (written every epoch, and every K steps with -- "
                   "--checkpoint-every-steps K)")
    p.add_argument("extra", nargs="*", help="more `mobilenets train` options, after --")
    args = p.parse_args()
    data = Path(args.data) if args.data else unpacked("imagenette-224")
    out = Path(args.out or f"runs/imagenette-{args.model}-{args.resolution}px")
    cmd = [sys.executable, "-m", "mobilenets", "train", "--recipe", args.recipe,
           "--model", args.model, "--data", str(data), "--resolution", str(args.resolution),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--workers", str(args.workers), "--seed", str(args.seed), "--out", str(out),
           *args.extra]
    if args.resume:
        last = out / "last.pt"
        if not last.is_file():
            raise SystemExit(f"--resume: {last} does not exist; start the run without --resume")
        cmd += ["--resume", str(last)]
    print(" ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    wall = time.time() - t0
    rows = metrics(out)
    val = validated(rows)
    summary = {"command": cmd, "hardware": hardware(), "torch": torch.__version__,
               "wall_time_s": wall, "train_time_s": sum(r.get("epoch_time_s", 0) for r in rows),
               "epochs": len(rows), "data": str(data),
               "val_images": sum(1 for f in (data / "val").rglob("*") if f.is_file()),
               "final_top1": val[-1]["top1"], "best_top1": max(r["top1"] for r in val),
               "curve_top1": [r["top1"] for r in val],
               "curve_epochs": [r["epoch"] for r in val],
               "images_per_s": [r["images_per_s"] for r in rows]}
    (out / "experiment.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.model} {args.resolution}px, {len(rows)} epochs in "
          f"{summary['train_time_s'] / 60:.1f} min of training on "
          f"{summary['hardware']}: top-1 {100 * summary['final_top1']:.2f}% (best "
          f"{100 * summary['best_top1']:.2f}%) on {summary['val_images']} val images")


if __name__ == "__main__":
    main()
