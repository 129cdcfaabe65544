"""Unpack the real data sets of ``../shared/datasets`` into a cache folder (never the repo).

    python experiments/datasets.py imagenette-224     # prints the unpacked folder
    python experiments/datasets.py imagenette-224 --short-side 160   # a downsized copy

The archive is unpacked once into ``$MOBILENETS_CACHE`` (default ``~/.cache/mobilenets``)
under ``datasets/``; a marker file records a completed unpack, so an interrupted one is redone.
``--short-side S`` also writes a copy whose images are resized (bicubic, aspect kept) so their
shorter side is S px, re-encoded as JPEG (``--quality``), into ``datasets/NAME-Spx`` (``-qQ`` added for a quality
other than 85): fast.ai's
Imagenette leaderboard trains 128 px models on such a 160 px copy, and it is small enough to
send to a lent GPU machine (the 224 px archive is 126 MiB, the 160 px copy about 100 MiB).
"""
from __future__ import annotations

import argparse
import os
import tarfile
from pathlib import Path

SHARED = Path(os.environ.get("MOBILENETS_SHARED_DATASETS")
              or Path(__file__).resolve().parents[2] / "shared" / "datasets")
CACHE = Path(os.environ.get("MOBILENETS_CACHE") or Path.home() / ".cache" / "mobilenets")


def unpacked(name: str) -> Path:
    """The folder of data set ``name`` (e.g. ``imagenette-224``), unpacking it if needed.

    The folder is the archive's top-level folder, which need not be ``name`` (the 7-Scenes
    archive ``7scenes-redkitchen-depth.tar.gz`` holds ``7scenes-redkitchen/``); the marker file
    records it."""
    root = CACHE / "datasets"
    marker = root / f".{name}.complete"
    if marker.is_file():
        folder = root / (marker.read_text().strip() or name)
        if folder.is_dir():
            return folder
    archive = SHARED / f"{name}.tar.gz"
    if not archive.is_file():
        raise SystemExit(f"{archive} not found: set MOBILENETS_SHARED_DATASETS to the folder "
                         f"holding {name}.tar.gz")
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tops = {Path(m.name).parts[0] for m in tar.getmembers() if m.name not in ("", ".")}
        tar.extractall(root, filter="data")
    top = tops.pop() if len(tops) == 1 else name
    marker.write_text(top + "\n")
    return root / top


def downsized(name: str, short_side: int, quality: int = 85) -> Path:
    """A copy of data set ``name`` whose images have a shorter side of ``short_side`` px
    (same folder layout, JPEG files), made once in the cache next to the unpacked original."""
    from PIL import Image

    source = unpacked(name)
    root = CACHE / "datasets"
    stem = f"{name}-{short_side}px" + ("" if quality == 85 else f"-q{quality}")
    folder, marker = root / stem, root / f".{stem}.complete"
    if marker.is_file() and folder.is_dir():
        return folder
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        target = (folder / path.relative_to(source)).with_suffix(".JPEG")
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as img:
            img = img.convert("RGB")
            scale = short_side / min(img.size)
            size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            img.resize(size, Image.Resampling.BICUBIC).save(target, "JPEG", quality=quality)
    marker.touch()
    return folder


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="archive name without .tar.gz, e.g. imagenette-224")
    p.add_argument("--short-side", type=int, default=0, help="also make a copy resized so "
                   "the images' shorter side is this many px, and print its folder")
    p.add_argument("--quality", type=int, default=85, help="JPEG quality of that copy")
    a = p.parse_args()
    print(downsized(a.name, a.short_side, a.quality) if a.short_side else unpacked(a.name))
