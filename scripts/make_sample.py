"""Build the built-in sample (src/mobilenets/data/sample/) from Imagenette, reproducibly.

Streams ``imagenette-224.tar.gz`` (nothing is unpacked to disk), draws a seeded subset per
class (train from Imagenette's train split, val from its val split, so they are disjoint),
resizes the short side to 64 px, centre-crops 64x64, converts to RGB and saves JPEG quality 85
in ImageFolder layout ``<out>/{train,val}/<class name>/<image id>.jpg``.

    python scripts/make_sample.py [--archive ../shared/datasets/imagenette-224.tar.gz] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from PIL import Image
from torchvision.transforms import v2

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOBILENETS_SHARED_DATASETS") or ROOT.parent / "shared/datasets")
CLASSES = {  # ImageNet wnid -> folder name
    "n01440764": "tench", "n02102040": "english_springer", "n02979186": "cassette_player",
    "n03000684": "chain_saw", "n03028079": "church", "n03394916": "french_horn",
    "n03417042": "garbage_truck", "n03425413": "gas_pump", "n03445777": "golf_ball",
    "n03888257": "parachute",
}
COUNTS = {"train": 60, "val": 25}


def select(members: list[tarfile.TarInfo], seed: int) -> dict[str, tuple[str, str]]:
    """Map archive member name -> (split, class folder) for a seeded draw per split and class."""
    pools: dict[tuple[str, str], list[str]] = {}
    for m in members:
        parts = PurePosixPath(m.name).parts   # imagenette-224/<split>/<wnid>/<file>.JPEG
        if m.isfile() and len(parts) == 4 and parts[1] in COUNTS and parts[2] in CLASSES:
            pools.setdefault((parts[1], parts[2]), []).append(m.name)
    rng = random.Random(seed)
    chosen = {}
    for (split, wnid), names in sorted(pools.items()):
        for name in rng.sample(sorted(names), COUNTS[split]):
            chosen[name] = (split, CLASSES[wnid])
    return chosen


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archive", type=Path, default=SHARED / "imagenette-224.tar.gz")
    p.add_argument("--out", type=Path, default=ROOT / "src/mobilenets/data/sample")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--quality", type=int, default=85)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    resize = v2.Compose([v2.Resize(args.size, antialias=True), v2.CenterCrop(args.size)])
    for split in COUNTS:                      # keep SOURCE.md, replace the images
        shutil.rmtree(args.out / split, ignore_errors=True)
    with tarfile.open(args.archive, "r:gz") as tar:
        members = tar.getmembers()
        chosen = select(members, args.seed)
        for m in members:                     # archive order: the gzip stream is read forward
            if m.name not in chosen:
                continue
            split, name = chosen[m.name]
            dest = args.out / split / name / (PurePosixPath(m.name).stem + ".jpg")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(tar.extractfile(m)) as img:
                resize(img.convert("RGB")).save(dest, "JPEG", quality=args.quality)
    for split, n in COUNTS.items():
        print(f"{split}: {len(CLASSES)} classes x {n} = {len(CLASSES) * n} images")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
