"""The resume checkpoint ``last.pt``: written atomically, read with ``weights_only=True``.

It holds everything a run needs to continue exactly where it stopped: model, optimiser,
scheduler, EMA and AMP-scaler states, the RNG states and the position in the epoch.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import torch


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to a temporary file in the same folder, then an atomic rename: a crash
    while writing leaves the previous checkpoint intact."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, mmap: bool = False) -> dict:
    """A resume checkpoint; ``mmap``: tensors are mapped, not read (to look at its options)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:   # truncated, corrupt, or holding code
        raise ValueError(f"checkpoint {path} cannot be read safely ({e}); it may be truncated "
                         f"or not a mobilenets resume checkpoint") from e
