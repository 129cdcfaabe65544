"""Weights: torchvision and timm checkpoints into our models, and our own saved format.

``create_model(name, weights=...)`` takes:
- a torchvision ``.pth``, a timm ``.pth``/``.bin``/``.safetensors``, or a Hugging Face cache
  folder of a timm model: the layout is recognised from the keys, and the model is built with
  the source's BatchNorm eps/momentum, activation, padding and eval preprocessing;
- a folder written by :func:`save`;
- ``"torchvision"`` or ``"timm"``: the file from that library's local cache (hash-checked;
  downloaded only with ``allow_download=True``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import nn

from ..data.transforms import at_resolution
from .cache import timm_file, torchvision_file
from .convert import classifier_classes, convert_state_dict
from .files import CheckpointError, read_state_dict
from .layouts import detect_layout
from .saved import is_saved_model, load, read_config, save
from .sources import SourceSettings, timm_settings, torchvision_settings


class WeightsNote(UserWarning):
    """What loading changed or decided (classifier re-initialised, ReLU6 for timm's V1...)."""


def _note(message: str) -> None:
    warnings.warn(message, WeightsNote, stacklevel=4)


def create_with_weights(name: str, weights, allow_download: bool = False, **options) -> nn.Module:
    from ..models import FeatureNet, create_model, resolve_name
    name = resolve_name(name)
    if weights in ("torchvision", "timm"):
        path = (torchvision_file if weights == "torchvision" else timm_file)(name, allow_download)
    else:
        path = Path(weights)
    features_only = options.pop("features_only", False)
    out_indices = options.pop("out_indices", None)
    ours = is_saved_model(path)
    if ours:
        config = read_config(path)
        if config["architecture"] != name:
            raise CheckpointError(f"{path} holds a {config['architecture']}, not a {name}")
        if "pruned" in config["options"]:           # its widths are not the table's
            from ..compress.prune import load_pruned
            return load_pruned(path, config, **options)
        saved = dict(config["options"])
        if saved.pop("features_only", False):      # a saved backbone: rebuild it as such
            return _load_feature_net(name, path, dict(saved, **options), config)
        saved.pop("out_indices", None)
        settings = SourceSettings(saved, config.get("preprocess"))
        state = read_state_dict(path / "model.safetensors")
        class_names = config.get("class_names")
    else:
        state = read_state_dict(path)
        try:
            layout = detect_layout(state)
        except ValueError as e:
            raise CheckpointError(f"cannot load {path} into {name}: {e}") from None
        if layout == "torchvision":
            settings = torchvision_settings(name, path)
        elif layout == "timm":
            settings = timm_settings(name, path)
        else:
            settings = SourceSettings()
        class_names = None
    file_classes = classifier_classes(state)
    merged = dict(settings.options)
    for key, value in options.items():
        if (not ours and key in _COMPUTATION and key in settings.options
                and value != settings.options[key]):
            _note(f"{key}={value!r} overrides the checkpoint's {settings.options[key]!r}: the "
                  f"model will not compute what the checkpoint's source computes")
        merged[key] = value
    merged.setdefault("num_classes", file_classes)
    model = create_model(name, **merged)
    fresh_classifier = model.num_classes != file_classes
    converted = convert_state_dict(state, model, skip_classifier=fresh_classifier)
    result = model.load_state_dict(converted, strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")
                and not (fresh_classifier and k.startswith("classifier."))]
    if leftover or result.unexpected_keys:   # convert_state_dict checked this; keep it honest
        raise CheckpointError(f"partial load refused: missing {leftover}, unexpected "
                              f"{result.unexpected_keys}")
    if fresh_classifier:
        _note(f"classifier removed (the checkpoint has {file_classes} classes)"
              if model.num_classes == 0 else
              f"classifier re-initialised for {model.num_classes} classes (the checkpoint has "
              f"{file_classes}): ready for fine-tuning")
        class_names = None
    for note in settings.notes:
        _note(f"{name} from {path.name}: {note}")
    if settings.preprocess:
        pre = dict(settings.preprocess)
        if "resolution" in options:       # the user's resolution, the source's crop ratio
            pre = at_resolution(pre, options["resolution"])
        model.preprocess = pre
    model.config["weights"] = str(path)
    if class_names is not None:
        model.config["class_names"] = list(class_names)
    if features_only:
        return FeatureNet(model, out_indices)
    return model


# options that change what the network computes: overriding the source's value warns
_COMPUTATION = ("bn_eps", "bn_momentum", "padding", "act")


def _load_feature_net(name: str, path: Path, options: dict, config: dict) -> nn.Module:
    """A saved ``features_only`` model: rebuilt as the same backbone, loaded key by key."""
    from ..models import create_model
    model = create_model(name, features_only=True, **options)
    state = read_state_dict(path / "model.safetensors")
    missing = sorted(set(model.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit {name} features_only "
                              f"{model.out_indices}: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}")
    model.load_state_dict(state)
    model.preprocess = dict(config.get("preprocess") or model.preprocess)
    model.config["weights"] = str(path)
    return model


__all__ = ["CheckpointError", "WeightsNote", "create_with_weights", "load", "read_state_dict",
           "save", "timm_file", "torchvision_file"]
