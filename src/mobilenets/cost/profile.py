"""Parameters and multiply-adds, per layer and by layer type.

MACs count the multiply-adds of convolutions and fully connected layers, the papers'
"Mult-Adds" (bias additions, BatchNorm, activations and pooling are not counted); they equal
half of what ``torch.utils.flop_counter.FlopCounterMode`` reports. The by-type split is the one
of MobileNetV1 Table 2, with squeeze-excite convolutions in a row of their own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..layers import SqueezeExcite
from ..models.memory_split import run_whole
from .memory import peak_memory

# Layer types of MobileNetV1 Table 2 plus "se" and "norm".
LAYER_TYPES = ("conv1x1", "depthwise", "conv", "fc", "se", "norm")
TYPE_LABELS = {"conv1x1": "Conv 1x1", "depthwise": "Conv DW", "conv": "Conv (full)",
               "fc": "Fully connected", "se": "Squeeze-excite", "norm": "BatchNorm"}


@dataclass
class LayerCost:
    name: str
    type: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass
class Profile:
    """Cost figures of a model at one input size (batch 1).

    ``params`` counts every parameter (BatchNorm weight and bias included, as timm and
    torchvision report); ``params_no_bn`` leaves BatchNorm out, as the MobileNetV2/V3 and
    EfficientNet tables count. Peak activation memory is in elements (multiply by the bytes of
    the dtype; the MobileNetV2 paper's Table 3 uses 16-bit): see ``memory.py`` for both
    definitions.
    """

    input_size: tuple[int, int, int]
    params: int
    params_no_bn: int
    macs: int
    layers: list[LayerCost] = field(default_factory=list)
    peak_memory_bottleneck: int = 0
    peak_memory_live: int = 0

    @property
    def resolution(self) -> int:
        return self.input_size[1]

    def by_type(self) -> dict[str, dict[str, int]]:
        """{type: {"params": ..., "macs": ...}} over ``LAYER_TYPES`` (all present, maybe 0)."""
        out = {t: {"params": 0, "macs": 0} for t in LAYER_TYPES}
        for layer in self.layers:
            out[layer.type]["params"] += layer.params
            out[layer.type]["macs"] += layer.macs
        return out

    def by_type_share(self) -> dict[str, dict[str, float]]:
        """Percent of MACs and of BatchNorm-free params per type (MobileNetV1 Table 2)."""
        shares = {}
        for t, v in self.by_type().items():
            if t == "norm":
                continue
            shares[t] = {"macs": 100.0 * v["macs"] / max(self.macs, 1),
                         "params": 100.0 * v["params"] / max(self.params_no_bn, 1)}
        return shares

    def to_dict(self, per_layer: bool = False) -> dict:
        d = {"resolution": self.resolution, "input_size": list(self.input_size),
             "params": self.params, "params_no_bn": self.params_no_bn, "macs": self.macs,
             "peak_memory_bottleneck": self.peak_memory_bottleneck,
             "peak_memory_live": self.peak_memory_live, "by_type": self.by_type()}
        if per_layer:
            d["layers"] = [asdict(layer) for layer in self.layers]
        return d


def _layer_type(module: nn.Module, inside_se: bool) -> str:
    if inside_se:
        return "se"
    if isinstance(module, nn.Linear):
        return "fc"
    if isinstance(module, nn.BatchNorm2d):
        return "norm"
    k = module.kernel_size[0] * module.kernel_size[1]
    if module.groups > 1 and module.groups == module.in_channels:
        return "depthwise"
    return "conv1x1" if k == 1 else "conv"


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return out.numel() * (module.in_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return 0


class _Network(nn.Module):
    """A detector's network alone (``head_outputs``: one resized batch in, raw predictions
    out), a module torch.fx traces: its list-of-images ``forward`` is not one."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector
        self.train(detector.training)

    def forward(self, x: torch.Tensor):
        return self.detector.head_outputs(x)


def _second_passes(model: nn.Module, split: list, layers: list[LayerCost]) -> list[LayerCost]:
    """The rows a split block with squeeze-excite computes twice (its expansion and depthwise
    layers: the first pass pools them for the gate), without params (counted once)."""
    names = {id(m): n for n, m in model.named_modules()}
    again = []
    for block in split:
        if not isinstance(block.se, SqueezeExcite):
            continue
        prefixes = tuple(f"{names[id(block)]}.{part}." for part in ("expand", "dw"))
        again += [LayerCost(f"{layer.name} (second pass)", layer.type, layer.in_shape,
                            layer.out_shape, 0, layer.macs)
                  for layer in layers if layer.name.startswith(prefixes)]
    return again


def profile(model: nn.Module, input_size: tuple[int, int, int] | None = None) -> Profile:
    """Count params, MACs and peak activation memory of ``model`` for one input of
    ``input_size`` = (channels, height, width); defaults to the model's own resolution.
    A detector (a model with ``head_outputs``) counts its network on an input already of
    that size: not its resizing, box decoding or NMS. A ``memory_split`` model counts what
    its chunks compute: the unsplit block's layers, and for a block with squeeze-excite its
    expansion and depthwise layers a second time (rows named ``... (second pass)``, no
    params), as the split block recomputes them."""
    if input_size is None:
        res = getattr(model, "config", {}).get("resolution", 224)
        input_size = (getattr(model, "config", {}).get("in_chans", 3), res, res)
    input_size = tuple(int(v) for v in input_size)
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(f"input_size must be (channels, height, width), got {input_size}")
    se_children = {id(m) for se in model.modules() if isinstance(se, SqueezeExcite)
                   for m in se.modules()}
    layers: list[LayerCost] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            def hook(mod, inputs, out, name=name):
                layers.append(LayerCost(
                    name, _layer_type(mod, id(mod) in se_children),
                    tuple(inputs[0].shape[1:]), tuple(out.shape[1:]),
                    sum(p.numel() for p in mod.parameters(recurse=False)), _macs(mod, out)))
            hooks.append(module.register_forward_hook(hook))
    param = next(model.parameters())
    x = torch.zeros((1, *input_size), dtype=param.dtype, device=param.device)
    # the wrapper is built in the model's own mode, so that peak_memory restores that mode
    network = _Network(model) if hasattr(model, "head_outputs") else model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), run_whole(model) as split:
            network(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    layers += _second_passes(model, split, layers)
    bottleneck, live = peak_memory(network, input_size)     # restores network's mode
    params = sum(p.numel() for p in model.parameters())
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d)
             for p in m.parameters(recurse=False))
    return Profile(input_size, params, params - bn, sum(layer.macs for layer in layers), layers,
                   bottleneck, live)
