"""The one network class every registered model is an instance of, and its feature extractor.

Module names follow the paper's tables: ``stem`` (the first conv2d row), ``blocks.R.I`` (repeat
``I`` of body row ``R``, counted from 0 after the stem), ``head`` (the final 1x1 conv2d row),
``pre_logits`` (the 1x1 conv after pooling: MobileNetV3's NBN one, MobileNetV4's with BN) and
``classifier``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..layers import ConvNormAct, PooledConvNormAct, make_activation, make_block
from .architecture import FeatureTap, NetworkPlan


def _is_tracing() -> bool:
    """True under torch.export / torch.compile / FX / TorchScript tracing (shapes are symbolic)."""
    return (torch.compiler.is_compiling() or torch.fx._symbolic_trace.is_fx_symbolic_tracing()
            or torch.jit.is_tracing() or torch.jit.is_scripting())


def check_input(x: torch.Tensor, in_chans: int, total_stride: int) -> None:
    """Clear errors for inputs the network cannot take (skipped while tracing)."""
    if _is_tracing():
        return
    if x.ndim != 4:
        raise ValueError(f"expected a 4-D input (batch, channels, height, width), got shape "
                         f"{tuple(x.shape)}; add a batch dimension with x.unsqueeze(0)")
    if x.shape[1] != in_chans:
        raise ValueError(f"expected {in_chans} input channels, got {x.shape[1]}; build the "
                         f"model with in_chans={x.shape[1]} or convert the images")
    if min(x.shape[2], x.shape[3]) < total_stride:
        raise ValueError(f"input {x.shape[2]}x{x.shape[3]} is smaller than the network's total "
                         f"stride {total_stride}; use a resolution of at least {total_stride} px")


class Trunk(nn.Module):
    """Stem, body blocks and head conv: everything up to the final feature map."""

    #: why this model cannot be trained or saved (``mobilenets.fuse`` sets it), else None
    eval_only: str | None = None

    def train(self, mode: bool = True):
        if mode and self.eval_only:
            raise RuntimeError(f"this model is eval-only: {self.eval_only}")
        return super().train(mode)

    def __init__(self, plan: NetworkPlan):
        super().__init__()
        n, pad = plan.norm, plan.padding
        s = plan.stem
        self.stem = ConvNormAct(s.in_ch, s.out, s.kernel, s.stride, act=s.act, norm=n,
                                padding=pad)
        self.blocks = nn.Sequential(*[nn.Sequential(*[make_block(b, n, pad) for b in row])
                                      for row in plan.rows])
        h = plan.head
        self.head = (ConvNormAct(h.in_ch, h.out, h.kernel, h.stride, act=h.act, norm=n)
                     if h is not None else nn.Identity())


class MobileNet(Trunk):
    """A MobileNet-family classifier built from a :class:`NetworkPlan`.

    ``forward_features`` gives the last feature map, ``forward_head`` pools and classifies,
    ``reset_classifier`` swaps the classifier for fine-tuning. ``config`` records every option
    the model was built with, ``preprocess`` its eval preprocessing, ``feature_info`` its taps.
    """

    def __init__(self, plan: NetworkPlan, num_classes: int = 1000, dropout: float = 0.0,
                 config: dict | None = None, preprocess: dict | None = None):
        super().__init__(plan)
        self.plan = plan
        self.config = dict(config or {})
        self.preprocess = dict(preprocess or {})
        self.feature_info = FeatureInfo(plan.taps)
        self.num_classes = num_classes
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        p = plan.pre_logits
        if p is None:
            self.pre_logits = nn.Identity()
        elif plan.pre_logits_norm:       # MobileNetV4: 1x1 conv (no bias) -> BN -> act
            self.pre_logits = PooledConvNormAct(p.in_ch, p.out, 1, act=p.act, norm=plan.norm)
        else:                            # MobileNetV3: 1x1 conv with bias, no BN ("NBN")
            self.pre_logits = nn.Sequential(nn.Linear(p.in_ch, p.out),
                                            make_activation(p.act, inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.classifier = self._classifier(num_classes)
        init_weights(self)

    @property
    def num_features(self) -> int:
        return self.plan.num_features

    def _classifier(self, num_classes: int) -> nn.Module:
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 removes the classifier), "
                             f"got {num_classes}")
        if num_classes == 0:
            return nn.Identity()
        fc = nn.Linear(self.num_features, num_classes)
        init_classifier(fc)
        return fc

    def get_classifier(self) -> nn.Module:
        """The final layer (timm's name): an ``nn.Linear``, ``nn.Identity`` without one."""
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` classes
        (the old class names are dropped: they name the old classifier's outputs).
        ``global_pool`` is timm's argument (None keeps the pooling); these networks pool by
        average only."""
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool {global_pool!r}: these networks pool by average "
                             f"only ('avg'), as the papers' do")
        self.classifier = self._classifier(num_classes)
        self.num_classes = num_classes
        self.config["num_classes"] = num_classes
        self.config.pop("class_names", None)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.plan.stem.in_ch, self.plan.total_stride)
        return self.head(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(self.flatten(self.pool(x)))
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class FeatureNet(Trunk):
    """``features_only`` model: the feature maps at ``out_indices`` (a list, in forward order)
    or, with ``return_layers``, a dict of named maps (torchvision's ``IntermediateLayerGetter``
    convention, what torchvision's ``LRASPP`` and ``DeepLabV3`` heads take).

    ``out_indices`` and the keys of ``return_layers`` are tap indices of the model's
    ``feature_info`` (timm's numbering) or module names: ``"stem"``, ``"blocks.R.I"`` (any
    block, e.g. torchvision's LR-ASPP low tap is MobileNetV3-Large's ``"blocks.3.0"``, the
    first block at /8) or ``"head"``. ``out_channels`` gives the channels per output (a list,
    or a dict keyed like the output). Shares its parameter names with :class:`MobileNet` and
    drops the layers after the last requested tap.
    """

    def __init__(self, model: MobileNet, out_indices=None, return_layers: dict | None = None):
        nn.Module.__init__(self)
        if return_layers is not None and out_indices is not None:
            raise ValueError("give out_indices (a list of maps) or return_layers (a dict of "
                             "named maps), not both")
        if return_layers is not None:
            if not isinstance(return_layers, dict) or not return_layers:
                raise ValueError(f"return_layers must be a non-empty dict {{tap index or module "
                                 f"name: output name}}, got {return_layers!r}")
            keys = list(return_layers)
        elif out_indices is None:
            keys = list(range(len(model.feature_info)))
        else:
            keys = [out_indices] if isinstance(out_indices, (int, str)) else list(out_indices)
        if not keys:
            raise ValueError("out_indices is empty; give at least one tap")
        resolved = [_tap(model, k) for k in keys]
        order = {n: k for k, n in enumerate(_module_names(model))}
        by_module = {}
        for key, tap in zip(keys, resolved):
            if tap.module in by_module and return_layers is not None:
                raise ValueError(f"return_layers names {tap.module} twice")
            by_module[tap.module] = (key, tap)
        modules = sorted(by_module, key=order.__getitem__)
        self.feature_info = FeatureInfo(by_module[m][1] for m in modules)
        if return_layers is not None:
            names = [return_layers[by_module[m][0]] for m in modules]
            if len(set(names)) != len(names):
                raise ValueError(f"return_layers maps two taps to one name: {return_layers}")
            self.return_layers = dict(zip(modules, names))
            self.out_channels = {n: t.channels for n, t in zip(names, self.feature_info)}
            self.out_indices = None
        else:
            self.return_layers = None
            self.out_channels = self.feature_info.channels()
            taps = list(model.feature_info)
            self.out_indices = tuple(taps.index(t) if t in taps else t.module
                                     for t in self.feature_info)
        self.total_stride = max(t.reduction for t in self.feature_info)
        self.plan = model.plan
        self.config = dict(model.config, features_only=True)
        if self.return_layers is not None:
            self.config["return_layers"] = dict(self.return_layers)
        else:
            self.config["out_indices"] = list(self.out_indices)
        self.preprocess = model.preprocess
        wanted = set(modules)
        last = modules[-1]
        self.stem = model.stem
        keep_rows = []
        self._taps: list[tuple[str | None, ...]] = []   # per row, per block: tap name or None
        if last != "stem":
            for r, row in enumerate(model.blocks):
                names = [f"blocks.{r}.{i}" for i in range(len(row))]
                keep_rows.append(row)
                self._taps.append(tuple(n if n in wanted else None for n in names))
                if last in names:
                    break
        self.blocks = nn.Sequential(*keep_rows)
        self.head = model.head if "head" in wanted else nn.Identity()
        self._stem_tap = "stem" in wanted
        self._head_tap = "head" in wanted

    def forward(self, x: torch.Tensor):
        check_input(x, self.plan.stem.in_ch, self.total_stride)
        out = []
        x = self.stem(x)
        if self._stem_tap:
            out.append(x)
        for row, taps in zip(self.blocks, self._taps):
            for block, tap in zip(row, taps):
                x = block(x)
                if tap is not None:
                    out.append(x)
        if self._head_tap:
            out.append(self.head(x))
        if self.return_layers is None:
            return out
        return OrderedDict(zip(self.return_layers.values(), out))


def _module_names(model: MobileNet) -> list[str]:
    names = ["stem"] + [f"blocks.{r}.{i}" for r, row in enumerate(model.blocks)
                        for i in range(len(row))]
    return names + (["head"] if model.plan.head is not None else [])


def _tap(model: MobileNet, key) -> FeatureTap:
    """The tap for a ``feature_info`` index or a module name (channels and reduction of any
    block, computed from the plan's strides)."""
    taps = model.feature_info
    listing = (f"this model's feature taps are "
               + ", ".join(f"{k}: {t.module} ({t.channels} ch, /{t.reduction})"
                           for k, t in enumerate(taps))
               + "; any module name 'stem', 'blocks.R.I' or 'head' works too")
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise ValueError(f"feature tap {key!r} is neither an index nor a module name; {listing}")
    if isinstance(key, int):
        if not -len(taps) <= key < len(taps):
            raise ValueError(f"out_indices {key} not available; {listing}")
        return taps[key]
    p = model.plan
    reduction = p.stem.stride
    if key == "stem":
        return FeatureTap("stem", p.stem.out, reduction)
    for r, row in enumerate(p.rows):
        for i, b in enumerate(row):
            reduction *= b.stride
            if key == f"blocks.{r}.{i}":
                return FeatureTap(key, b.out, reduction)
    if key == "head" and p.head is not None:
        return FeatureTap("head", p.head.out, reduction)
    raise ValueError(f"no module {key!r} to tap; {listing}")


class FeatureInfo(list):
    """The feature taps (a list of :class:`FeatureTap`), with timm's accessors."""

    def channels(self) -> list[int]:
        return [t.channels for t in self]

    def reduction(self) -> list[int]:
        return [t.reduction for t in self]

    def module_name(self) -> list[str]:
        return [t.module for t in self]


def init_weights(module: nn.Module) -> None:
    """Conv: normal, std sqrt(2 / fan_out) with fan_out = k * k * out / groups (EfficientNet
    reference ``conv_kernel_initializer``; a depthwise kernel's fan_out is k * k, which keeps
    depthwise weights from starting near zero); Linear: uniform(+-1/sqrt(out)) (its
    ``dense_kernel_initializer``; MobileNetV3's pre-logits layer, whose width is fixed); BN:
    weight 1, bias 0; the ``classifier``: :func:`init_classifier`. Modules are visited in
    order and each draws once, so a seed gives the same network whatever the bounds."""
    classifier = getattr(module, "classifier", None)
    for m in module.modules():
        if m is classifier and isinstance(m, nn.Linear):
            init_classifier(m)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / m.out_features ** 0.5
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


def init_classifier(fc: nn.Linear) -> None:
    """Classifier: uniform(+-1/sqrt(in_features)), bias 0.

    The reference code's bound 1/sqrt(num_classes) uses the fan-out, which does not set the
    logits' scale: logit = sum over the d = in_features pooled features f of w * f, so its
    variance is d * E[f^2] * bound^2 / 3. With the fan-in bound that is E[f^2] / 3, whatever
    the class count and width (logits of std ~0.5, initial cross-entropy ~ln(num_classes)). At
    1000 classes and 1024-1280 features the two bounds nearly agree (0.032 and 0.028-0.031), so
    ImageNet training starts as in the reference; at 10 classes the reference's 0.32 gives logits
    of std ~5 and an initial loss of ~7 instead of ln 10 = 2.3. (torchvision's MobileNetV2/V3
    use normal(0, 0.01), whose logit scale grows with the feature width; PyTorch's own Linear
    default has this same fan-in bound.)"""
    bound = 1.0 / fc.in_features ** 0.5
    nn.init.uniform_(fc.weight, -bound, bound)
    nn.init.zeros_(fc.bias)


__all__ = ["FeatureNet", "FeatureTap", "MobileNet", "check_input", "init_classifier",
           "init_weights"]
