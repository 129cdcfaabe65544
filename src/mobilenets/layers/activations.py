"""Activation functions by name.

h-swish and h-sigmoid are MobileNetV3 §5.2: h-swish(x) = x * ReLU6(x + 3) / 6 and
h-sigmoid(x) = ReLU6(x + 3) / 6. PyTorch's ``nn.Hardswish``/``nn.Hardsigmoid`` compute exactly
these and export to the ONNX ``HardSwish``/``HardSigmoid`` operators.
"""

from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hard_swish": nn.Hardswish,
    "hard_sigmoid": nn.Hardsigmoid,
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}

# Names used in the papers' tables and by other libraries.
# (torch's module names too: nn.Hardswish, nn.Hardsigmoid)
_ALIASES = {"re": "relu", "hs": "hard_swish", "hswish": "hard_swish", "hardswish": "hard_swish",
            "silu": "swish", "hsigmoid": "hard_sigmoid", "hardsigmoid": "hard_sigmoid",
            "linear": "identity", "none": "identity"}


def canonical_activation(name: str) -> str:
    """Return the canonical activation name, or raise a ValueError listing the allowed ones."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in ACTIVATIONS:
        allowed = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {name!r}; allowed: {allowed}")
    return key


_HAS_INPLACE = {"relu", "relu6", "hard_swish", "hard_sigmoid", "swish"}


def make_activation(name: str, inplace: bool = False) -> nn.Module:
    """Instantiate an activation module from its name (see ``ACTIVATIONS``); ``inplace`` is for
    callers whose input is a fresh intermediate nobody else reads."""
    key = canonical_activation(name)
    if inplace and key in _HAS_INPLACE:
        return ACTIVATIONS[key](inplace=True)
    return ACTIVATIONS[key]()
