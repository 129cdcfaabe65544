"""Unpack the real data sets of ``../shared/datasets`` into a cache folder (never the repo).

    python experiments/datasets.py imagenette-224     # prints the unpacked folder

The archive is unpacked once into ``$MOBILENETS_CACHE`` (default ``~/.cache/mobilenets``)
under ``datasets/``; a marker file records a completed unpack, so an interrupted one is redone.
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
    """The folder of data set ``name`` (e.g. ``imagenette-224``), unpacking it if needed."""
    root = CACHE / "datasets"
    folder, marker = root / name, root / f".{name}.complete"
    if marker.is_file() and folder.is_dir():
        return folder
    archive = SHARED / f"{name}.tar.gz"
    if not archive.is_file():
        raise SystemExit(f"{archive} not found: set MOBILENETS_SHARED_DATASETS to the folder "
                         f"holding {name}.tar.gz")
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    marker.touch()
    return folder


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="archive name without .tar.gz, e.g. imagenette-224")
    print(unpacked(p.parse_args().name))
