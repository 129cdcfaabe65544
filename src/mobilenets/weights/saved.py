"""Our own model format: a folder with ``model.safetensors`` and ``config.json``.

The config names the architecture and every builder option, so ``load`` rebuilds the same model;
it also carries class names, eval preprocessing, the parameter count, the library version and a schema
version. Both files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from ..files import atomic_write
from ..version import __version__
from .files import CheckpointError

SCHEMA = "mobilenets.saved_model"
SCHEMA_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
_NOT_OPTIONS = ("name", "family")


def is_saved_model(path: Path) -> bool:
    cfg = path / CONFIG_FILE
    if not (path.is_dir() and cfg.is_file()):
        return False
    try:
        return json.loads(cfg.read_text()).get("schema") == SCHEMA
    except (OSError, ValueError):
        return False


def check_class_names(names: list[str] | None, num_classes: int | None) -> None:
    """Raise ValueError unless ``names`` (None: no names) gives one name per class."""
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes: give one name "
                         f"per class (model.config['class_names'])")


def _check_savable(model) -> None:
    """Raise TypeError, saying what to do instead, for models ``load`` could not rebuild."""
    if not isinstance(model, nn.Module) or not hasattr(model, "config") \
            or "name" not in getattr(model, "config", {}):
        what = "an ONNX model" if hasattr(model, "session") else type(model).__name__
        raise TypeError(f"save() takes a model made by mobilenets.create_model or load, not "
                        f"{what}")
    if getattr(model, "eval_only", None):       # fused, or PT2E-quantized
        raise TypeError(f"save() stores trainable models, and this one is eval-only: "
                        f"{model.eval_only}")


def _options(config: dict) -> dict:
    """The builder options that rebuild the model: a head model (segmentation, depth) keeps
    them in ``config["options"]``; a classifier's or backbone's config is its options plus
    records (name, family, class names, weights)."""
    if "head" in config:
        return dict(config["options"])
    return {k: v for k, v in config.items()
            if k not in _NOT_OPTIONS and k != "class_names" and k != "weights"}


def save(model: nn.Module, directory: str | Path, class_names: list[str] | None = None) -> Path:
    """Write ``model`` to ``directory`` (created if needed) in the saved-model format.

    Everything is checked and computed before anything is written; each file is then
    replaced atomically, so a failed save leaves an existing saved model as it was."""
    _check_savable(model)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} is a file; save() writes a folder")
    class_names = class_names if class_names is not None else model.config.get("class_names")
    check_class_names(class_names, model.config.get("num_classes"))
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "library_version": __version__,
        "architecture": model.config["name"],
        "options": _options(model.config),
        "class_names": class_names, "preprocess": model.preprocess,
        "cost": {"params": sum(p.numel() for p in model.parameters()),
                 "resolution": model.config.get("resolution")},
    }
    text = json.dumps(config, indent=2) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / WEIGHTS_FILE,
                  lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text))
    return directory


# What training writes for a network the library does not build (torchvision's own): its
# state dict and a config.json naming its class
STATE_DICT_SCHEMA = "mobilenets.state_dict"


def state_dict_folder_message(directory, config: dict) -> str:
    """Why the folder ``directory`` (a :data:`STATE_DICT_SCHEMA` config) does not load, and
    what does."""
    cls = config.get("class", "its network class")
    tv = {"LRASPP": "lraspp_mobilenet_v3_large", "DeepLabV3": "deeplabv3_mobilenet_v3_large",
          "SSD": "ssdlite320_mobilenet_v3_large"}.get(str(cls).rsplit(".", 1)[-1])
    hint = (f"; or give the library's twin of torchvision's model its weights: "
            f"`mobilenets eval {tv} --weights {directory}` (create_model('{tv}', "
            f"weights='{directory}') in Python)" if tv and str(cls).startswith("torchvision")
            else "")
    return (f"{directory} holds the state dict of a {cls}, a network the library does not "
            f"build (trained with train(model=<that network>)): build it again and load "
            f"{directory}/{WEIGHTS_FILE} into it (safetensors.torch.load_file){hint}")


def read_config(directory: Path) -> dict:
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{directory / CONFIG_FILE} cannot be read ({e})") from e
    if config.get("schema") == STATE_DICT_SCHEMA:
        raise CheckpointError(state_dict_folder_message(directory, config))
    if config.get("schema") != SCHEMA:
        raise CheckpointError(f"{directory} is not a mobilenets saved model (no {SCHEMA} schema)")
    version = config.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise CheckpointError(
            f"{directory} was saved with schema version {version} (mobilenets "
            f"{config.get('library_version')}); this mobilenets reads up to version "
            f"{SCHEMA_VERSION}: upgrade mobilenets")
    return config
