"""Reading checkpoint files without ever executing code from them.

``.safetensors`` files hold raw tensors only. Pickle files (``.pth``, ``.pt``, ``.bin``) are read
with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers;
the one class let through is ``argparse.Namespace``, which timm's training checkpoints hold.
"""

from __future__ import annotations

import argparse
import pickle
import zipfile
from pathlib import Path

import torch

# wrappers of the state dict in training checkpoints (timm: state_dict / state_dict_ema;
# others: model); the first present wins
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


class CheckpointError(ValueError):
    """A weights file that cannot be loaded; the message says why and what to do."""


def find_weight_file(folder: Path) -> Path:
    """The weights file inside a folder: ours (``model.safetensors``) or a Hugging Face cache
    folder of a timm model (``models--timm--NAME`` with ``snapshots/REV/``, or a snapshot)."""
    candidates = [folder / name for name in WEIGHT_FILES]
    for snapshot in sorted((folder / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime,
                           reverse=True) if (folder / "snapshots").is_dir() else []:
        candidates += [snapshot / name for name in WEIGHT_FILES]
    for c in candidates:
        if c.is_file():
            return c
    raise CheckpointError(f"no weights file in folder {folder}: expected one of "
                          f"{', '.join(WEIGHT_FILES)} (directly or under snapshots/*/)")


# suffixes of checkpoint files: a name with another (or none) is not meant as a file
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar", ".pkl")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file or folder, unwrapped from training-checkpoint containers
    and DDP's ``module.`` prefix."""
    path = Path(path)
    if not path.exists():
        # a word (DEFAULT, IMAGENET1K_V1, MobileNet_V3_Large_Weights.DEFAULT), not a file name
        bare = len(path.parts) == 1 and path.suffix.lower() not in CHECKPOINT_SUFFIXES
        hint = ("; weights='torchvision' or 'timm' load those libraries' published weights "
                "from their local caches (names such as torchvision's DEFAULT or "
                "IMAGENET1K_V1 are not weights here)" if bare else "")
        raise CheckpointError(f"weights file {path} does not exist{hint}")
    if path.is_dir():
        path = find_weight_file(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"weights file {path} is empty")
    if path.suffix == ".safetensors":
        obj = _read_safetensors(path)
    else:
        obj = _read_pickle(path)
    return _unwrap(obj, path)


# the builder options that shape a network's weights, which a training checkpoint's
# model_spec records (a pruned run's block_widths, a factorised one's low_rank, a --width-mult)
STRUCTURE_OPTIONS = ("width_mult", "depth_mult", "block_widths", "low_rank", "reduced_tail",
                     "in_chans")


def training_checkpoint(path: str | Path) -> dict | None:
    """A training checkpoint's dict (memory-mapped), or None for a folder, a safetensors file
    or anything unreadable."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".safetensors":
        return None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:                       # read_state_dict reports what is wrong with it
        return None
    return obj if isinstance(obj, dict) else None


def checkpoint_structure(path: str | Path, name: str, obj: dict | None = None) -> dict:
    """The :data:`STRUCTURE_OPTIONS` that a training checkpoint (``last.pt``) of the model
    ``name`` records in its ``model_spec``, so that its weights load into the network they
    were trained as; {} for any other file or model. ``obj``: the file as
    :func:`training_checkpoint` read it (not read again)."""
    obj = training_checkpoint(path) if obj is None else obj
    spec = (obj or {}).get("model_spec")
    config = (spec.get("config") or {}) if isinstance(spec, dict) else {}
    if not isinstance(config, dict) or config.get("name") != name:
        return {}
    return {k: config[k] for k in STRUCTURE_OPTIONS if config.get(k) is not None}


def checkpoint_class_names(path: str | Path, obj: dict | None = None) -> list[str] | None:
    """The class names a training checkpoint (``last.pt``: its ``model_spec`` or its task's
    state) records, or None for any other file. ``obj``: as for :func:`checkpoint_structure`."""
    obj = training_checkpoint(path) if obj is None else obj
    if not obj:
        return None
    spec, task = obj.get("model_spec"), obj.get("task")
    names = (spec.get("config") or {}).get("class_names") if isinstance(spec, dict) else None
    if names is None and isinstance(task, dict):
        names = task.get("classes")            # the classification task's state
    return list(names) if isinstance(names, list) else None


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"weights file {path} is truncated or corrupt ({e}); download "
                              f"or copy it again") from e


def _read_pickle(path: Path) -> object:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"weights file {path} holds objects other than tensors and plain containers, so it "
            f"was refused: loading never executes code from a file ({str(e).splitlines()[0]}). "
            f"Re-save only the state dict, e.g. torch.save(model.state_dict(), path)") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"weights file {path} is truncated or corrupt ({e}); download or "
                              f"copy it again") from e


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"weights file {path} holds no state dict (found "
                              f"{type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"weights file {path} is not a state dict: entries "
                              f"{', '.join(map(str, bad[:5]))} are not tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj
