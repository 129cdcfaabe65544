"""Imagenette to 90% top-1 from random weights on one lent GPU, within a time budget, and the
GPU throughput benchmark against timm: the recorded commands of
docs/results/2026-12-04-imagenette-gpu-90.md.

Two steps. Here (a CPU machine with ../shared):

    .venv/bin/python experiments/imagenette_gpu.py pack      # writes .gpu/imagenette.tar.gz

packs the 9,469 training images (shorter side 160, JPEG quality 70, so that they travel
under the lent machine's 64 MiB) and a fixed 100-per-class subset of the val images (for the
run's curve; the reported top-1 is measured afterwards here, on all 3,925 val images of the
224 px archive). Then on the GPU machine, in the repository root, with .gpu carried:

    PYTHONPATH=src python3 experiments/imagenette_gpu.py run --out $OUT --train-s 330

unpacks the data, trains ``mobilenet_v2_100`` with the ``imagenette-gpu`` recipe for as many
epochs as fit ``--train-s`` seconds at the images/s of a short probe run, saves the final
weights (``final/``) and the run's log, metrics and environment into ``--out``, then runs
``benchmarks/bench_gpu_train.py`` in what is left of ``--total-s``. Finally, here:

    .venv/bin/mobilenets eval FINAL --data ~/.cache/mobilenets/datasets/imagenette-224/val \\
        --resolution 128 --json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / ".gpu" / "imagenette.tar.gz"
VAL_PER_CLASS = 100


def pack(args) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from datasets import downsized
    copy = downsized("imagenette-224", 160, quality=70)
    PACK.parent.mkdir(exist_ok=True)
    rng = random.Random(0)
    tmp = PACK.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
        tar.add(copy / "train", "imagenette/train")
        for cls in sorted(p for p in (copy / "val").iterdir() if p.is_dir()):
            files = sorted(cls.iterdir())
            for f in sorted(rng.sample(files, min(VAL_PER_CLASS, len(files)))):
                tar.add(f, f"imagenette/val/{cls.name}/{f.name}")
    tmp.replace(PACK)
    print(f"{PACK}: {PACK.stat().st_size / 2**20:.1f} MiB")


def environment() -> dict:
    import torch
    env = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "python": sys.version.split()[0], "cpus": os.cpu_count()}
    try:
        import torchvision
        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cudnn"] = torch.backends.cudnn.version()
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = "unknown"
    return env


def train_cmd(data: Path, out: Path, epochs: int, args, extra=()) -> list[str]:
    return [sys.executable, "-m", "mobilenets", "train", "--recipe", args.recipe,
            "--model", args.model, "--data", str(data), "--epochs", str(epochs),
            "--workers", str(args.workers), "--seed", str(args.seed), "--out", str(out),
            "--no-progress", "--overwrite", *args.extra, *extra]


def rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def save_final(run: Path, dest: Path) -> None:
    """The weights of the run's last epoch (``last.pt``) as a saved model in ``dest``."""
    import torch
    import mobilenets
    from mobilenets.data.transforms import at_resolution
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    cfg, classes = ckpt["config"], ckpt["task"]["classes"]
    model = mobilenets.create_model(cfg["model"], num_classes=len(classes),
                                    resolution=cfg["resolution"])
    model.load_state_dict(ckpt["model"])
    model.preprocess = at_resolution(model.preprocess, cfg["resolution"])
    mobilenets.save(model, dest, class_names=classes)


def run(args) -> None:
    start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"environment": environment(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def write():
        (out / "experiment.json").write_text(json.dumps(summary, indent=2) + "\n")

    write()
    work = Path(args.work)
    with tarfile.open(args.pack) as tar:
        tar.extractall(work, filter="data")
    data = work / "imagenette"
    n_train = sum(1 for f in (data / "train").rglob("*") if f.is_file())
    # probe: two short epochs; the second one's images/s sets the epoch count
    probe = train_cmd(data, work / "probe", 2, args, ["--max-steps-per-epoch", "15"])
    t0 = time.time()
    subprocess.run(probe, check=True, stdout=subprocess.DEVNULL)
    rate = rows(work / "probe")[-1]["images_per_s"]
    per_epoch = n_train / rate + args.epoch_overhead_s
    epochs = max(10, min(args.max_epochs, int(args.train_s / per_epoch)))
    summary.update(probe_images_per_s=rate, probe_wall_s=time.time() - t0, epochs=epochs,
                   train_images=n_train)
    write()
    run_dir = work / "run"
    cmd = train_cmd(data, run_dir, epochs, args)
    summary["command"] = " ".join(cmd[1:])
    print(summary["command"], flush=True)
    t0 = time.time()
    with open(out / "train.log", "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=args.total_s - (time.time() - start) - 60)
            summary["returncode"] = proc.returncode
        except subprocess.TimeoutExpired:        # the last finished epoch is still saved
            summary["returncode"] = "stopped at the time limit"
    summary["train_wall_s"] = time.time() - t0
    metrics = rows(run_dir)
    from mobilenets.training.reporting import validated
    val = validated(metrics)
    if val:
        shutil.copy(run_dir / "metrics.jsonl", out / "metrics.jsonl")
        summary.update(epochs_done=len(metrics),
                       train_time_s=sum(r["epoch_time_s"] for r in metrics),
                       final_top1_val_subset=val[-1]["top1"],
                       final_top1_epoch=val[-1]["epoch"],
                       best_top1_val_subset=max(r["top1"] for r in val),
                       images_per_s=[round(r["images_per_s"]) for r in metrics])
        save_final(run_dir, out / "final")
    write()
    left = args.total_s - (time.time() - start)
    if args.bench and left > 60:
        with open(out / "bench.log", "w") as log:
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu_train.py"),
                            "--data", str(data), "--json", str(out / "bench.json"),
                            "--budget-s", str(left - 30), *args.bench_args.split()],
                           stdout=log, stderr=subprocess.STDOUT, timeout=left - 10)
    summary["wall_s"] = time.time() - start
    write()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    sub.add_parser("pack", help="pack the data to send (here, with ../shared)")
    r = sub.add_parser("run", help="train and benchmark (on the GPU machine)")
    r.add_argument("--out", required=True)
    r.add_argument("--pack", default=str(PACK))
    r.add_argument("--work", default="/tmp/imagenette-gpu")
    r.add_argument("--model", default="mobilenet_v2_100")
    r.add_argument("--recipe", default="imagenette-gpu")
    r.add_argument("--workers", type=int, default=14)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--train-s", type=float, default=330, help="training time to fill")
    r.add_argument("--max-epochs", type=int, default=400)
    r.add_argument("--epoch-overhead-s", type=float, default=0.5,
                   help="seconds per epoch besides training (validation, checkpoint)")
    r.add_argument("--total-s", type=float, default=560,
                   help="the whole command's budget (training is stopped 60 s before it)")
    r.add_argument("--bench", action=argparse.BooleanOptionalAction, default=True)
    r.add_argument("--bench-args", default="", help="more bench_gpu_train.py options, one string")
    r.add_argument("extra", nargs="*", help="more `mobilenets train` options, after --")
    args = p.parse_args()
    pack(args) if args.step == "pack" else run(args)


if __name__ == "__main__":
    main()
