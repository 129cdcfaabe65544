"""What evaluation choices, not training, give on Imagenette val: trained models scored at
other input sizes and center-crop fractions, and averaged (the ensemble of their softmax
outputs, every combination of two or more). The recorded command behind the README's
"Reaching 90%" notes: it shows whether a model short of a target could reach it without
training more.

    .venv/bin/python experiments/imagenette_eval_variants.py runs/gpu-in-v2-95-mix/best \\
        runs/gpu-in-v2-100-mix-ema/best runs/gpu-in-v2-80/best

Each model keeps its own preprocessing (mean, std, interpolation); only the size and crop
fraction change. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from datasets import unpacked  # noqa: E402

import mobilenets  # noqa: E402
from mobilenets.data import ImageFolderDataset, collate_skip_bad, eval_transform  # noqa: E402


@torch.no_grad()
def probabilities(model, root: Path, preprocess: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax outputs and labels of ``model`` on the images of ``root``."""
    ds = ImageFolderDataset(root, eval_transform(preprocess), classes=model.config["class_names"])
    probs, labels = [], []
    for x, y, _ in DataLoader(ds, 100, collate_fn=collate_skip_bad):
        probs.append(model(x).softmax(1))
        labels.append(y)
    return torch.cat(probs), torch.cat(labels)


def top1(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs.argmax(1) == labels).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="saved-model folders trained on Imagenette")
    p.add_argument("--data", default=None, help="folder with val/ (default: imagenette-224)")
    p.add_argument("--sizes", default="128,144,160", help="input sizes for the first model")
    p.add_argument("--crops", default="0.875,0.95,1.0", help="center-crop fractions")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = (Path(args.data) if args.data else unpacked("imagenette-224")) / "val"
    models = {m: mobilenets.load(m).eval() for m in args.models}
    first = next(iter(models.values()))
    result = {"data": str(root), "variants": {}, "models": {}, "ensembles": {}}
    for size in (int(s) for s in args.sizes.split(",")):
        for crop in (float(c) for c in args.crops.split(",")):
            pre = dict(first.preprocess, resolution=size, crop_pct=crop,
                       resize=int(round(size / crop)))
            result["variants"][f"{size}px crop {crop}"] = top1(*probabilities(first, root, pre))
            print(f"{args.models[0]} {size} px crop {crop}: "
                  f"{100 * result['variants'][f'{size}px crop {crop}']:.2f}%", file=sys.stderr)
    outputs = {}
    for name, model in models.items():
        outputs[name], labels = probabilities(model, root, model.preprocess)
        result["models"][name] = top1(outputs[name], labels)
    for r in range(2, len(models) + 1):
        for combo in itertools.combinations(models, r):
            result["ensembles"][" + ".join(combo)] = top1(sum(outputs[m] for m in combo), labels)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
