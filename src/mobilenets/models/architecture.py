"""A family's architecture (its table plus its rules) and the plan the builder resolves from it.

``Architecture`` is pure data written once per family (``mobilenet_v1.py`` ...). ``plan()`` turns
it plus the user's multipliers into a ``NetworkPlan``: every layer's channel count, stride and
activation, and the feature taps for dense tasks. ``network.MobileNet`` builds modules from a
plan; the same plan serves every family.

Departures from the reference code, the same for every family:

- BatchNorm momentum: ``create_model`` uses 0.1 (PyTorch's default, as timm's models do), not
  the reference code's (3e-4 V1, 3e-3 V2, 0.01 V3 and EfficientNet, recorded per family as
  ``Architecture.reference_bn_momentum``). Those tiny values suit runs of hundreds of thousands
  of steps at batch 4096; in a run of a few hundred steps the running statistics barely move
  from their initial values, and the eval-mode model scores chance. The papers' recipes
  (``training/recipes/*.toml``) set the papers' values with ``bn_momentum``, and a torchvision
  or timm checkpoint keeps its source's value (``mobilenets.weights``).
- Classifier initialisation: see ``network.init_classifier`` (the reference's
  uniform(+-1/sqrt(num_classes)) is far too wide for few classes).
- Feature taps (``features_only``): indexed like timm's, see ``_feature_taps``.
- Output stride (``output_stride`` 8 or 16, for DeepLab-style heads): every stride that would
  take the network past it becomes 1, and that block and all later ones dilate their spatial
  convolutions by the product of the strides dropped. This is torchvision's MobileNetV3
  ``dilated=True`` rule (its last stage's three blocks all have dilation 2), which the
  segmentation models reproduce; timm instead keeps the old dilation on the first block of a
  dilated stage. Feature taps keep their indices, their reduction capped at the output stride.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from ..layers import BlockSpec, NormConfig, canonical_activation
from .table import BodyState, Conv, Row, Scaling


@dataclass(frozen=True)
class Architecture:
    family: str
    source: str                     # paper table / reference code the rows are taken from
    stem: Conv
    body: tuple[Row, ...]
    head: Conv | None               # 1x1 conv at full resolution after the body (V2, V3, EffNet)
    pre_logits: Conv | None         # 1x1 conv after pooling: MobileNetV3's "NBN" (bias, no BN)
    act: str                        # default activation
    round_channels: Callable[[float], int]
    norm: NormConfig
    dropout: float
    drop_path_rate: float = 0.0
    se_act: str = "relu"
    se_gate: str = "hard_sigmoid"
    # depth_mult scales each row's repeats (ceil(d * n)); tables written one block per row
    # (MobileNetV1/V3, FD-MobileNet) have no stage repeats to scale
    depth_scalable: bool = False
    # the reference code's BatchNorm momentum (PyTorch convention, 1 - TF decay); ``norm`` holds
    # the default the model is built with (see the module docstring)
    reference_bn_momentum: float = 0.1
    # the 1x1 head conv is the last /32 feature tap, replacing the body's last block (timm's
    # MobileNetV3 counts it as its last block stage); otherwise it is an extra tap after it
    head_is_last_tap: bool = False
    # the pre-logits conv has BatchNorm and no bias (MobileNetV4; timm ``head_norm``)
    pre_logits_norm: bool = False


@dataclass(frozen=True)
class LayerPlan:
    in_ch: int
    out: int
    kernel: int
    stride: int
    act: str


@dataclass(frozen=True)
class FeatureTap:
    """A feature map for dense tasks: the output of module ``module``."""

    module: str
    channels: int
    reduction: int


@dataclass(frozen=True)
class NetworkPlan:
    stem: LayerPlan
    rows: tuple[tuple[BlockSpec, ...], ...]
    head: LayerPlan | None
    pre_logits: LayerPlan | None
    norm: NormConfig
    taps: tuple[FeatureTap, ...] = field(default=())
    padding: str = "symmetric"
    pre_logits_norm: bool = False
    output_stride: int = 32

    @property
    def total_stride(self) -> int:
        s = self.stem.stride
        for row in self.rows:
            for b in row:
                s *= b.stride
        return s

    @property
    def feature_channels(self) -> int:
        """Channels of the map that ``forward_features`` returns."""
        if self.head is not None:
            return self.head.out
        return self.rows[-1][-1].out

    @property
    def num_features(self) -> int:
        """Channels entering the classifier."""
        return self.pre_logits.out if self.pre_logits is not None else self.feature_channels


def _feature_taps(stem: LayerPlan, rows, head: LayerPlan | None,
                  head_is_last_tap: bool = False) -> tuple[FeatureTap, ...]:
    """The feature taps, indexed as timm's ``features_only`` models for every model timm has.

    Index ``i`` is the last map at reduction ``2 ** (i + 1)`` (from the stem or a block: indices
    0-4 are /2, /4, /8, /16, /32 at the default stride 32). The head conv's high-channel map
    (1x1 conv before pooling) is:

    - MobileNetV3 and MobileNetV4 (``head_is_last_tap``): index 4, the /32 tap (960 for V3
      Large and every V4, 576 V3 Small), in place of the last block's map, as in timm where
      that conv is the last block stage;
    - MobileNetV2 and EfficientNet: an extra index 5 after the last block's map (index 4: 320 for
      V2 1.0 and EfficientNet-B0, as timm's); timm's ``features_only`` has no such map;
    - MobileNetV1 and FD-MobileNet have no head conv: index 4 is the last block (1024).
    """
    points = [("stem", stem.out, stem.stride)]
    reduction = stem.stride
    for r, row in enumerate(rows):
        for i, b in enumerate(row):
            reduction *= b.table_stride
            points.append((f"blocks.{r}.{i}", b.out, reduction))
    taps = [FeatureTap(name, ch, red) for k, (name, ch, red) in enumerate(points)
            if k + 1 == len(points) or points[k + 1][2] != red]
    if head is not None:
        if head_is_last_tap:
            taps.pop()
        taps.append(FeatureTap("head", head.out, reduction))
    return tuple(taps)


OUTPUT_STRIDES = (8, 16, 32)


def dilate(stem_stride: int, rows, output_stride: int):
    """``rows`` with the strides past ``output_stride`` traded for dilation (module docstring)."""
    current, dilation, out = stem_stride, 1, []
    for specs in rows:
        row = []
        for b in specs:
            if b.stride > 1 and current * b.stride > output_stride:
                dilation *= b.stride
                b = replace(b, stride=1, nominal_stride=b.stride, dilation=dilation)
            else:
                current *= b.stride
                if dilation > 1:
                    b = replace(b, dilation=dilation)
            row.append(b)
        out.append(tuple(row))
    return tuple(out)


def plan(arch: Architecture, width_mult: float = 1.0, depth_mult: float = 1.0,
         act: str | None = None, drop_path_rate: float | None = None,
         norm: NormConfig | None = None, in_chans: int = 3,
         padding: str = "symmetric", output_stride: int = 32) -> NetworkPlan:
    """Resolve ``arch`` under the multipliers into channel counts (see module docstring)."""
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, "
                         f"got {output_stride!r}")
    act = canonical_activation(act) if act else None
    # the user's act replaces every activation but the squeeze-excite gate, the SE's inner one too
    scaling = Scaling(arch.round_channels, width_mult, depth_mult, arch.act, act or arch.se_act,
                      arch.se_gate, act)
    stem = LayerPlan(in_chans, arch.stem.width(scaling), arch.stem.kernel, arch.stem.stride,
                     scaling.act(arch.stem.act))
    state = BodyState(paper=arch.stem.out, actual=stem.out)
    rows = []
    for row in arch.body:
        specs = row.expand(state, scaling)
        rows.append(specs)
        state = BodyState(paper=row.paper_out, actual=specs[-1].out)
    # stochastic depth ramps linearly over the block index (EfficientNet reference code)
    rate = arch.drop_path_rate if drop_path_rate is None else drop_path_rate
    total = sum(len(r) for r in rows)
    idx, ramped = 0, []
    for specs in rows:
        out = []
        for b in specs:
            out.append(replace(b, drop_path=rate * idx / total))
            idx += 1
        ramped.append(tuple(out))
    channels = state.actual
    head = None
    if arch.head is not None:
        head = LayerPlan(channels, arch.head.width(scaling), arch.head.kernel, arch.head.stride,
                         scaling.act(arch.head.act))
        channels = head.out
    pre = None
    if arch.pre_logits is not None:
        pre = LayerPlan(channels, arch.pre_logits.width(scaling), 1, 1,
                        scaling.act(arch.pre_logits.act))
    taps = _feature_taps(stem, ramped, head, arch.head_is_last_tap)
    if output_stride < 32:
        taps = tuple(replace(t, reduction=min(t.reduction, output_stride)) for t in taps)
        ramped = dilate(stem.stride, ramped, output_stride)
    return NetworkPlan(stem, tuple(ramped), head, pre, norm or arch.norm, taps, padding,
                       arch.pre_logits_norm, output_stride)

