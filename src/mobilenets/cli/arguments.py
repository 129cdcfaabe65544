"""Argument types shared by the commands: numbers checked when the command line is parsed,
so a bad value is a usage error naming the option, not a traceback later; and the check of
an output file before anything is computed."""

from __future__ import annotations

import argparse
from pathlib import Path


def positive_int(text: str) -> int:
    """An integer >= 1 (sizes, counts, threads, top-k)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (worker processes, warm-up calls, caps where 0 means none)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def output_file(out: Path, overwrite: bool, source: str | None = None) -> Path:
    """``out`` as a file to write: not a folder, not the input ``source``, and not an existing
    file unless ``overwrite`` (so a second export never replaces the first by accident)."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the path of the .onnx file to write")
    if source is not None and out.exists() and out.resolve() == Path(source).resolve():
        raise ValueError(f"--out {out} is the input model; give another path")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} already exists; pass --overwrite to replace it, or give "
                         f"another --out")
    return out


def add_overwrite_flag(p) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


__all__ = ["add_overwrite_flag", "non_negative_int", "output_file", "positive_int"]
