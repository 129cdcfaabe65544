"""Registered model names, their defaults, and ``create_model`` / ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
import math
from dataclasses import dataclass, replace

import torch

from ..layers import NormConfig, canonical_activation
from ..layers.conv_norm_act import PADDINGS
from .architecture import Architecture, plan
from .backbones import NORM_LAYERS, convert_norm
from .heads.registry import head_listing, resolve_head
from .low_rank import apply_low_rank
from .memory_split import split_inverted_residuals
from .network import FeatureNet, MobileNet
from .widths import block_widths, reduce_tail, with_block_widths

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelEntry:
    """A registered name: an architecture plus the multipliers and defaults that make the model
    the papers report."""

    name: str
    arch: Architecture
    width_mult: float = 1.0
    depth_mult: float = 1.0
    resolution: int = 224
    dropout: float | None = None
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    aliases: tuple[str, ...] = ()
    mean: tuple[float, float, float] = IMAGENET_MEAN    # eval normalisation of [0, 1] pixels
    std: tuple[float, float, float] = IMAGENET_STD


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register(entry: ModelEntry) -> ModelEntry:
    for key in (entry.name, *entry.aliases):
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"model name {key!r} registered twice")
    _REGISTRY[entry.name] = entry
    for alias in entry.aliases:
        _ALIASES[alias] = entry.name
    return entry


TASKS = ("classification", "segmentation", "depth", "detection")


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Registered names (not aliases), sorted; ``pattern`` is a shell wildcard like ``'*v3*'``
    that a name or one of its timm / torchvision aliases matches (``'mobilenetv2*'`` lists
    the ``mobilenet_v2_*`` models).

    ``task`` keeps one task's models: ``"classification"`` (the registered classifiers, which
    are also every head's possible backbones), ``"segmentation"``, ``"depth"`` or
    ``"detection"`` (each head once on its default backbone, plus torchvision's names)."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")
    names = {n: "classification" for n in _REGISTRY}
    names.update(head_listing())
    names = sorted(n for n, t in names.items() if task is None or t == task)
    if not pattern:
        return names
    # a timm or torchvision alias matching the pattern lists its registered name
    via_alias = {target for alias, target in _ALIASES.items() if fnmatch.fnmatch(alias, pattern)}
    return [n for n in names if fnmatch.fnmatch(n, pattern) or n in via_alias]


def check_model_name(name) -> None:
    """TypeError unless ``name`` is a string (a built model given where a name is expected)."""
    if not isinstance(name, str):
        built = (": create_model builds a model from its name, and a head takes its backbone "
                 "by name (backbone='mobilenet_v3_large_100', with width_mult= and "
                 "backbone_weights= for a checkpoint), not a built model"
                 if isinstance(name, torch.nn.Module) else "")
        raise TypeError(f"a model name is a string such as 'mobilenet_v3_large_100', not a "
                        f"{type(name).__name__}{built}")


def resolve_name(name: str) -> str:
    """Map a registered name or a timm/torchvision alias to the registered name."""
    check_model_name(name)
    if name in _REGISTRY:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    close = difflib.get_close_matches(name, list(_REGISTRY) + list(_ALIASES), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}{hint} (`mobilenets list` shows all "
                     f"{len(_REGISTRY)} registered models)")


def get_entry(name: str) -> ModelEntry:
    return _REGISTRY[resolve_name(name)]


def preprocessing(entry: ModelEntry, resolution: int) -> dict:
    """Eval preprocessing: resize the short side to ``resize``, centre-crop ``resolution``."""
    return {"resolution": resolution, "resize": int(round(resolution / entry.crop_pct)),
            "crop_pct": entry.crop_pct, "interpolation": entry.interpolation,
            "mean": entry.mean, "std": entry.std}


# what create_model takes; mobilenets.create_model (the weights layer) adds weights and
# allow_download
MODEL_OPTIONS = ("num_classes", "width_mult", "depth_mult", "resolution", "dropout",
                 "drop_path_rate", "act", "in_chans", "bn_eps", "bn_momentum", "padding",
                 "features_only", "out_indices", "return_layers", "output_stride", "norm_layer",
                 "block_widths", "reduced_tail", "low_rank", "memory_split")


def _check(name: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is not allowed: {name} must be {allowed}")


def create_model(name: str, **options) -> MobileNet | FeatureNet:
    """Build a registered model with random initialisation (``mobilenets.create_model`` also
    takes ``weights``).

    Options: ``num_classes`` (1000; 0 removes the classifier), ``width_mult`` and ``depth_mult``
    (the registered values by default), ``resolution`` (default input size, used for
    preprocessing and cost figures), ``dropout``, ``drop_path_rate``, ``act`` (replaces every
    activation but the squeeze-excite gate), ``in_chans``, ``bn_eps``, ``bn_momentum``
    (PyTorch convention), ``padding`` (``"symmetric"``, or ``"same"`` for TensorFlow's),
    ``features_only`` with ``out_indices`` (a list of maps) or ``return_layers`` (a dict of
    named maps; see :class:`~mobilenets.models.FeatureNet`), ``output_stride`` (8 or 16 trade
    the last strides for dilation, as DeepLab heads need; 32, the default, changes nothing),
    ``norm_layer`` (``"batchnorm"``, ``"frozen_batchnorm"``, ``"sync_batchnorm"``: see
    :mod:`~mobilenets.models.backbones`), ``block_widths`` (per-block ``[in, mid, out]``
    channels instead of the table's: a pruned network), ``reduced_tail`` (the layers after the
    last strided block's expansion halved: the MobileNetV3 paper's detection backbone,
    torchvision's ``reduced_tail=True``), ``low_rank`` ({layer name: rank}: those 1x1 convs /
    linear layers as two thinner ones, see :mod:`~mobilenets.models.low_rank`; made by
    :func:`mobilenets.compress.factorise`), ``memory_split`` (t: inverted residuals evaluated in
    t chunks of their expansion at inference, see :mod:`~mobilenets.models.memory_split`).
    """
    check_model_name(name)
    if options.get("pretrained") is False:      # timm's spelling of the default
        options.pop("pretrained")
    if "weights" in options or "allow_download" in options:
        raise TypeError("mobilenets.models.create_model builds random weights; for weights=... "
                        "use mobilenets.create_model (mobilenets.weights.create_model)")
    if name not in _REGISTRY and name not in _ALIASES:
        head = resolve_head(name)
        if head is not None:
            return _create_head(name, *head, options)
    unknown = sorted(set(options) - set(MODEL_OPTIONS))
    if unknown:
        timm_names = {"pretrained": "timm's pretrained=True is weights='timm' (or "
                                    "'torchvision', or a file) here",
                      "drop_rate": "timm's drop_rate is dropout here",
                      "pretrained_cfg": "the preprocessing is model.preprocess here"}
        hint = "".join(f"; {timm_names[k]}" for k in unknown if k in timm_names)
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for create_model; allowed: "
                        f"{', '.join(MODEL_OPTIONS)} (and weights, allow_download in "
                        f"mobilenets.create_model){hint}")
    entry = get_entry(name)
    width = options.get("width_mult", entry.width_mult)
    depth = options.get("depth_mult", entry.depth_mult)
    resolution = options.get("resolution", entry.resolution)
    num_classes = options.get("num_classes", 1000)
    dropout = options.get("dropout", entry.dropout if entry.dropout is not None
                          else entry.arch.dropout)
    drop_path = options.get("drop_path_rate", entry.arch.drop_path_rate)
    in_chans = options.get("in_chans", 3)
    act = options.get("act")
    padding = options.get("padding", "symmetric")
    norm = entry.arch.norm
    norm = replace(norm, eps=options.get("bn_eps", norm.eps),
                   momentum=options.get("bn_momentum", norm.momentum))
    _check("width_mult", width, _positive(width), "a number > 0")
    _check("depth_mult", depth, _positive(depth), "a number > 0")
    if depth != entry.depth_mult and not entry.arch.depth_scalable:
        raise ValueError(f"depth_mult is not defined for {entry.arch.family}: its table has no "
                         f"repeated stages to scale (depth_mult applies to MobileNetV2 and "
                         f"EfficientNet)")
    _check("resolution", resolution, isinstance(resolution, int) and resolution > 0,
           "a positive integer (pixels)")
    _check("num_classes", num_classes, isinstance(num_classes, int) and num_classes >= 0,
           "an integer >= 0")
    _check("dropout", dropout, _unit(dropout), "in [0, 1)")
    _check("drop_path_rate", drop_path, _unit(drop_path), "in [0, 1)")
    _check("in_chans", in_chans, isinstance(in_chans, int) and in_chans > 0, "an integer >= 1")
    _check("bn_eps", norm.eps, _positive(norm.eps), "a number > 0")
    _check("bn_momentum", norm.momentum, _unit(norm.momentum) and norm.momentum > 0,
           "in (0, 1) (PyTorch convention: 1 - TF decay)")
    _check("padding", padding, padding in PADDINGS, f"one of {', '.join(PADDINGS)}")
    if act is not None:
        act = canonical_activation(act)
    output_stride = options.get("output_stride", 32)
    norm_layer = options.get("norm_layer", "batchnorm")
    _check("norm_layer", norm_layer, norm_layer in NORM_LAYERS, f"one of {', '.join(NORM_LAYERS)}")
    net_plan = plan(entry.arch, width, depth, act, drop_path, NormConfig(norm.eps, norm.momentum),
                    in_chans, padding, output_stride)
    reduced = options.get("reduced_tail", False)
    _check("reduced_tail", reduced, isinstance(reduced, bool), "True or False")
    if reduced:
        net_plan = reduce_tail(net_plan)
    widths = options.get("block_widths")
    if widths is not None:       # a pruned network (see models/widths.py)
        net_plan = with_block_widths(net_plan, widths)
        widths = block_widths(net_plan)
    if resolution < net_plan.total_stride:
        raise ValueError(f"resolution={resolution} is smaller than the network's total stride "
                         f"{net_plan.total_stride}; use at least {net_plan.total_stride}")
    config = {"name": entry.name, "family": entry.arch.family, "num_classes": num_classes,
              "width_mult": width, "depth_mult": depth, "resolution": resolution,
              "dropout": dropout, "drop_path_rate": drop_path, "act": act, "in_chans": in_chans,
              "bn_eps": norm.eps, "bn_momentum": norm.momentum, "padding": padding}
    if widths is not None:
        config["block_widths"] = widths
    if reduced:
        config["reduced_tail"] = True
    if output_stride != 32:
        config["output_stride"] = output_stride
    if norm_layer != "batchnorm":
        config["norm_layer"] = norm_layer
    model = MobileNet(net_plan, num_classes, dropout, config, preprocessing(entry, resolution))
    if options.get("low_rank"):
        apply_low_rank(model, options["low_rank"])
    if options.get("memory_split") is not None:
        split_inverted_residuals(model, options["memory_split"])
    model = convert_norm(model, norm_layer)
    return as_features(model, options)


def as_features(model: MobileNet, options: dict):
    """``model``, or its :class:`FeatureNet` when ``options`` ask for ``features_only``."""
    if options.get("features_only"):
        return FeatureNet(model, options.get("out_indices"), options.get("return_layers"))
    for key in ("out_indices", "return_layers"):
        if options.get(key) is not None:
            raise ValueError(f"{key} needs features_only=True")
    return model


def _create_head(name: str, entry, backbone: str | None, options: dict):
    """A head model: ``entry.build(backbone, **options)``, the backbone resolved from aliases."""
    if backbone is not None and "backbone" in options:
        raise ValueError(f"{name!r} names its backbone already; pass backbone= only with the "
                         f"bare head name {entry.name!r}")
    backbone = options.pop("backbone", None) or backbone or entry.default_backbone
    if backbone in entry.extra_backbones:
        return entry.build(backbone, **options)
    try:
        backbone = resolve_name(backbone)
    except ValueError as e:
        extra = (f" (besides the registered backbones it takes {', '.join(entry.extra_backbones)})"
                 if entry.extra_backbones else "")
        raise ValueError(f"{name!r}: head {entry.name!r} on backbone {backbone!r}: {e}"
                         f"{extra}") from None
    return entry.build(backbone, **options)


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _unit(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1
