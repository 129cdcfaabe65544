"""The resume checkpoint ``last.pt``: written atomically, read with ``weights_only=True``.

It holds everything a run needs to continue exactly where it stopped: model, optimiser,
scheduler, EMA and AMP-scaler states, the RNG states and the position in the epoch.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from ..files import atomic_write


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
    atomic_write(path, lambda tmp: torch.save(state, tmp))


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
