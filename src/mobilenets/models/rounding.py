"""Channel and depth rounding rules of the reference implementations."""

from __future__ import annotations

import math
from dataclasses import dataclass


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going more than 10% down.

    The rule of slim ``mobilenet.py`` ``_make_divisible`` and EfficientNet's ``round_filters``.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


@dataclass(frozen=True)
class MakeDivisible:
    """Width rounding of MobileNetV2/V3 and EfficientNet: ``make_divisible(c * width, 8)``."""

    divisor: int = 8

    def __call__(self, channels: float) -> int:
        return make_divisible(channels, self.divisor)


@dataclass(frozen=True)
class Truncate:
    """Width rounding of MobileNetV1 (slim ``max(int(d * depth_multiplier), min_depth)``) and
    FD-MobileNet (``int(c * width_mul)``): truncation, no divisor."""

    min_value: int = 1

    def __call__(self, channels: float) -> int:
        # the small epsilon keeps e.g. 0.35 * 100 = 34.99999 from truncating to 34
        return max(int(channels + 1e-6), self.min_value)


def round_repeats(repeats: int, depth_mult: float) -> int:
    """EfficientNet ``round_repeats``: ``ceil(depth_mult * repeats)``."""
    return int(math.ceil(depth_mult * repeats))
