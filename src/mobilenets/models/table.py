"""Typed rows for the papers' architecture tables.

Each family file writes its table as a tuple of these rows, one per line of the paper's table, so
that it reads against the paper. A row turns itself into resolved :class:`BlockSpec` s given the
channels coming in (``BodyState``) and the width/depth multipliers (``Scaling``); the builder
(``architecture.plan`` and ``network.MobileNet``) does the rest for every family alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable, Protocol

from ..layers import BlockSpec
from .rounding import round_repeats


@dataclass(frozen=True)
class Scaling:
    """What the builder knows when a row expands: the family's rounding and multipliers."""

    round_channels: Callable[[float], int]
    width_mult: float
    depth_mult: float
    default_act: str
    se_act: str
    se_gate: str
    act_override: str | None = None

    def act(self, row_act: str | None = None) -> str:
        """The activation of a layer: the user's override, else the row's, else the family's."""
        return self.act_override or row_act or self.default_act

    def width(self, channels: int) -> int:
        return self.round_channels(channels * self.width_mult)

    def repeats(self, n: int) -> int:
        return round_repeats(n, self.depth_mult)


@dataclass(frozen=True)
class BodyState:
    """Channels entering a row: ``paper`` as printed in the table, ``actual`` after scaling."""

    paper: int
    actual: int


class Row(Protocol):
    def expand(self, state: BodyState, scaling: Scaling) -> list[BlockSpec]: ...
    @property
    def paper_out(self) -> int: ...


def _stack(in_ch: int, out: int, repeats: int, stride: int, make) -> list[BlockSpec]:
    """``repeats`` blocks of one row: the first maps ``in_ch`` with ``stride``, the rest map
    ``out`` to ``out`` with stride 1. ``make(in_ch, stride)`` builds one spec."""
    specs = []
    for i in range(repeats):
        specs.append(make(in_ch, stride if i == 0 else 1))
        in_ch = out
    return specs


def _expanding(kind: str, e: float, c: int, n: int, s: int, kernel: int, state: BodyState,
               scaling: Scaling) -> list[BlockSpec]:
    """A row of ``kind`` blocks without squeeze-excite whose expanded width is
    ``make_divisible(in * e, 8)``, or the input width itself when ``e`` is 1."""
    out = scaling.width(c)

    def make(in_ch: int, stride: int) -> BlockSpec:
        mid = in_ch if e == 1 else scaling.round_channels(in_ch * e)
        return BlockSpec(kind, in_ch, mid, out, kernel, stride, scaling.act())
    return _stack(state.actual, out, scaling.repeats(n), s, make)


# Scale rules for a stem or head convolution under the width multiplier.
ALWAYS, UP_ONLY, NEVER = "always", "up_only", "never"


@dataclass(frozen=True)
class Conv:
    """A plain ``conv2d`` row (conv -> BN -> act): the stem or head convolution, or a body row
    (MobileNetV4-Conv-S's first stages, a ``"cn"`` block with no shortcut).

    ``scale`` says how the width multiplier applies: ``"always"``; ``"up_only"`` (MobileNetV2
    §4: the last layer keeps its width for multipliers below one and grows above); ``"never"``.
    ``act=None`` takes the family's default activation.
    """

    out: int
    kernel: int = 3
    stride: int = 1
    act: str | None = None
    scale: str = ALWAYS

    def width(self, scaling: Scaling) -> int:
        if self.scale == NEVER or (self.scale == UP_ONLY and scaling.width_mult <= 1.0):
            return self.out
        return scaling.width(self.out)

    @property
    def paper_out(self) -> int:
        return self.out

    def expand(self, state: BodyState, scaling: Scaling) -> list[BlockSpec]:
        out = self.width(scaling)
        return [BlockSpec("cn", state.actual, out, out, self.kernel, self.stride,
                          scaling.act(self.act))]


@dataclass(frozen=True)
class DepthSep:
    """MobileNetV1 Table 1 pair "Conv dw / s; Conv 1x1" (also FD-MobileNet), ``n`` times."""

    out: int
    s: int = 1
    n: int = 1
    kernel: int = 3

    @property
    def paper_out(self) -> int:
        return self.out

    def expand(self, state: BodyState, scaling: Scaling) -> list[BlockSpec]:
        out = scaling.width(self.out)
        return _stack(state.actual, out, scaling.repeats(self.n), self.s, lambda c, s: BlockSpec(
            "ds", c, c, out, self.kernel, s, scaling.act()))


@dataclass(frozen=True)
class Bottleneck:
    """MobileNetV2 Table 2 row ``(t, c, n, s)``: expansion t, output channels c, n repeats, the
    first with stride s. The expanded width is ``make_divisible(in * t, 8)`` (slim
    ``expand_input``); with t = 1 there is no expansion conv."""

    t: float
    c: int
    n: int
    s: int
    kernel: int = 3

    @property
    def paper_out(self) -> int:
        return self.c

    def expand(self, state: BodyState, scaling: Scaling) -> list[BlockSpec]:
        return _expanding("ir", self.t, self.c, self.n, self.s, self.kernel, state, scaling)


@dataclass(frozen=True)
class Bneck:
    """MobileNetV3 Tables 1-2 row: kernel, exp size, #out, SE, NL, s.

    The expanded width keeps the table's ratio to the row's input, ``exp / in`` (slim writes
    e.g. ``72/16``), applied to the scaled input and rounded with ``make_divisible(., 8)``. The
    squeeze width is ``make_divisible(expanded / 4, 8)`` (slim ``squeeze_excite``).
    """

    kernel: int
    exp: int
    out: int
    se: bool
    nl: str
    s: int

    @property
    def paper_out(self) -> int:
        return self.out

    def expand(self, state: BodyState, scaling: Scaling) -> list[BlockSpec]:
        ratio = Fraction(self.exp, state.paper)
        out = scaling.width(self.out)

        def make(in_ch: int, stride: int) -> BlockSpec:
            mid = in_ch if ratio == 1 else scaling.round_channels(float(in_ch * ratio))
            se = scaling.round_channels(mid / 4) if self.se else 0
            return BlockSpec("ir", in_ch, mid, out, self.kernel, stride, scaling.act(self.nl), se,
                             scaling.se_act, scaling.se_gate)
        return _stack(state.actual, out, scaling.repeats(1), self.s, make)

    def minimalistic(self) -> "Bneck":
        """slim's ``V3_*_MINIMALISTIC``: no SE, ReLU, 3x3 kernels, same widths."""
        return replace(self, kernel=3, se=False, nl="relu")


@dataclass(frozen=True)
class MBConv:
    """EfficientNet-B0 Table 1 row: MBConv{e}, kernel k, channels c, layers n, stride s.

    SE squeezes to ``max(1, int(in * se))`` of the block's *input* channels (reference
    ``efficientnet_model.py``), unlike MobileNetV3's quarter of the expanded width.
    """

    e: int
    k: int
    c: int
    n: int
    s: int
    se: float = 0.25
    depth_scaled: bool = True     # False: n repeats whatever the depth multiplier (Lite)

    @property
    def paper_out(self) -> int:
        return self.c

    def expand(self, state: BodyState, scaling: Scaling) -> list[BlockSpec]:
        out = scaling.width(self.c)

        def make(in_ch: int, stride: int) -> BlockSpec:
            se = max(1, int(in_ch * self.se)) if self.se else 0
            return BlockSpec("ir", in_ch, in_ch * self.e, out, self.k, stride, scaling.act(), se,
                             scaling.se_act, scaling.se_gate)
        repeats = scaling.repeats(self.n) if self.depth_scaled else self.n
        return _stack(state.actual, out, repeats, self.s, make)

    def lite(self, depth_scaled: bool = True) -> "MBConv":
        """EfficientNet-Lite's version of the row: no squeeze-excite (the TPU lite builder)."""
        return replace(self, se=0.0, depth_scaled=depth_scaled)


@dataclass(frozen=True)
class UIB:
    """MobileNetV4 §4 Universal Inverted Bottleneck row (Tabs. 11-14): start depthwise kernel
    ``k1`` (0: none), middle depthwise kernel ``k2`` (0: none), expansion ``e``, output channels
    ``out``, ``n`` repeats, the first with stride ``s``.

    The paper's "Exp" column is the expanded width, ``in * e``; as in the reference code the
    width is ``make_divisible(in * e, 8)`` of the (scaled) block input. The paper's four
    instantiations are settings of this row: :func:`IB`, :func:`ConvNext`, :func:`ExtraDW`,
    :func:`FFN`.
    """

    k1: int
    k2: int
    e: float
    out: int
    s: int = 1
    n: int = 1

    @property
    def paper_out(self) -> int:
        return self.out

    def expand(self, state: BodyState, scaling: Scaling) -> list[BlockSpec]:
        return _expanded("uib", self, self.k2, state, scaling, start_kernel=self.k1)


# The paper's names for the four UIB settings (MobileNetV4 Fig. 4), as table rows.
def IB(k: int, e: float, out: int, s: int = 1, n: int = 1) -> UIB:  # noqa: N802
    """Inverted Bottleneck (MobileNetV2): expand -> kxk depthwise -> project."""
    return UIB(0, k, e, out, s, n)


def ConvNext(k: int, e: float, out: int, s: int = 1, n: int = 1) -> UIB:  # noqa: N802
    """ConvNext-like: kxk depthwise -> expand -> project."""
    return UIB(k, 0, e, out, s, n)


def ExtraDW(k1: int, k2: int, e: float, out: int, s: int = 1, n: int = 1) -> UIB:  # noqa: N802
    """ExtraDW (new in MobileNetV4): k1 depthwise -> expand -> k2 depthwise -> project."""
    return UIB(k1, k2, e, out, s, n)


def FFN(e: float, out: int, s: int = 1, n: int = 1) -> UIB:  # noqa: N802
    """FFN: expand -> project, pointwise only."""
    return UIB(0, 0, e, out, s, n)


@dataclass(frozen=True)
class FusedIB:
    """MobileNetV4 FusedIB row: a ``k`` x ``k`` conv expanding to ``make_divisible(in * e, 8)``
    (BN, act, stride ``s``) into a linear 1x1 projection to ``out``; ``n`` repeats."""

    k: int
    e: float
    out: int
    s: int = 1
    n: int = 1

    @property
    def paper_out(self) -> int:
        return self.out

    def expand(self, state: BodyState, scaling: Scaling) -> list[BlockSpec]:
        return _expanded("fused", self, self.k, state, scaling)


def _expanded(kind: str, row: "UIB | FusedIB", kernel: int, state: BodyState, scaling: Scaling,
              start_kernel: int = 0) -> list[BlockSpec]:
    """A MobileNetV4 row's blocks: expanded width ``make_divisible(in * e, 8)`` of each block's
    scaled input (timm ``mid_chs``), output ``row.out`` scaled, ``row.n`` repeats."""
    out = scaling.width(row.out)

    def make(in_ch: int, stride: int) -> BlockSpec:
        return BlockSpec(kind, in_ch, scaling.round_channels(in_ch * row.e), out, kernel, stride,
                         scaling.act(), start_kernel=start_kernel)
    return _stack(state.actual, out, scaling.repeats(row.n), row.s, make)


@dataclass(frozen=True)
class FusedMBConv:
    """EfficientNetV2 Table 4 row "Fused-MBConv{e}, k": expansion e, kernel k, channels c,
    layers n, stride s (of the stage's first block); no squeeze-excite.

    The depthwise kxk and the 1x1 expansion of MBConv are fused into one kxk convolution to
    ``make_divisible(in * e, 8)`` channels (torchvision ``FusedMBConv``, automl
    ``FusedMBConvBlock``), followed by the linear 1x1 projection. With e = 1 the kxk
    convolution maps ``in`` to ``out`` itself and there is no projection (``mid == in_ch`` in
    the spec, as for an inverted residual without expansion).
    """

    e: int
    k: int
    c: int
    n: int
    s: int

    @property
    def paper_out(self) -> int:
        return self.c

    def expand(self, state: BodyState, scaling: Scaling) -> list[BlockSpec]:
        return _expanding("fused", self.e, self.c, self.n, self.s, self.k, state, scaling)
