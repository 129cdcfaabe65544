"""A family's architecture (its table plus its rules) and the plan the builder resolves from it.

``Architecture`` is pure data written once per family (``mobilenet_v1.py`` ...). ``plan()`` turns
it plus the user's multipliers into a ``NetworkPlan``: every layer's channel count, stride and
activation, and the feature taps for dense tasks. ``network.MobileNet`` builds modules from a
plan; the same plan serves every family.
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
    pre_logits: Conv | None         # MobileNetV3's "conv2d 1x1, NBN" after pooling (bias, no BN)
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


def _feature_taps(stem: LayerPlan, rows, head: LayerPlan | None) -> tuple[FeatureTap, ...]:
    """The last output at each reduction (2, 4, 8, ...), then the head's high-channel map."""
    points = [("stem", stem.out, stem.stride)]
    reduction = stem.stride
    for r, row in enumerate(rows):
        for i, b in enumerate(row):
            reduction *= b.stride
            points.append((f"blocks.{r}.{i}", b.out, reduction))
    taps = [FeatureTap(name, ch, red) for k, (name, ch, red) in enumerate(points)
            if k + 1 == len(points) or points[k + 1][2] != red]
    if head is not None:
        taps.append(FeatureTap("head", head.out, reduction))
    return tuple(taps)


def plan(arch: Architecture, width_mult: float = 1.0, depth_mult: float = 1.0,
         act: str | None = None, drop_path_rate: float | None = None,
         norm: NormConfig | None = None, in_chans: int = 3,
         padding: str = "symmetric") -> NetworkPlan:
    """Resolve ``arch`` under the multipliers into channel counts (see module docstring)."""
    scaling = Scaling(arch.round_channels, width_mult, depth_mult, arch.act, arch.se_act,
                      arch.se_gate, canonical_activation(act) if act else None)
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
    taps = _feature_taps(stem, ramped, head)
    return NetworkPlan(stem, tuple(ramped), head, pre, norm or arch.norm, taps, padding)

