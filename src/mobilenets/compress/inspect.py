"""What a trained model wastes: near-zero depthwise kernels and BatchNorm scales.

The MobileNetV2 write-ups note that depthwise kernels can train to zero (weight decay pulls on
kernels of only 9 or 25 weights, and a ReLU after them can die); such channels cost MACs and
memory for nothing and are what :func:`mobilenets.compress.prune` removes. For every depthwise
conv this reports the share of its per-channel kernels that are near zero under the L-inf and
the L2 norm, and the share of channels whose following BatchNorm has a near-zero |gamma|.

Threshold (relative): a kernel is near zero when its norm is at most ``zero_tol`` times the
largest kernel norm of the same layer (the same norm); a channel's gamma when
``|gamma| <= zero_tol * max |gamma|`` over the layer. ``zero_tol`` defaults to 1e-2. The params
and MACs split by layer type is ``mobilenets.profile(model).by_type()``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..cost import Profile, profile
from ..layers import ConvNormAct

ZERO_TOL = 1e-2


@dataclass
class DepthwiseStats:
    name: str                 # the ConvNormAct module (its conv is ``name.conv``)
    channels: int
    kernel: int
    zero_linf: float          # share of kernels with max|w| <= zero_tol * the layer's largest
    zero_l2: float            # the same with the L2 norm
    zero_gamma: float         # share of channels with |gamma| <= zero_tol * max|gamma|


@dataclass
class Inspection:
    zero_tol: float
    layers: list[DepthwiseStats]
    profile: Profile = field(repr=False)

    def totals(self) -> dict[str, float]:
        """Shares over all depthwise channels of the model."""
        n = sum(s.channels for s in self.layers) or 1
        return {k: sum(getattr(s, k) * s.channels for s in self.layers) / n
                for k in ("zero_linf", "zero_l2", "zero_gamma")}

    def to_dict(self) -> dict:
        return {"zero_tol": self.zero_tol, "params": self.profile.params,
                "macs": self.profile.macs, "by_type": self.profile.by_type(),
                "depthwise": [asdict(s) for s in self.layers], "totals": self.totals()}

    def table(self) -> str:
        from ..cost.report import by_type_table
        rows = [f"near zero: norm <= {self.zero_tol:g} x the layer's largest "
                f"(depthwise kernels; BN |gamma| after them)",
                f"{'depthwise layer':28s} {'ch':>5s} {'k':>3s} {'L-inf':>7s} {'L2':>7s} "
                f"{'gamma':>7s}"]
        for s in self.layers:
            rows.append(f"{s.name:28s} {s.channels:>5d} {s.kernel:>3d} {s.zero_linf:>7.1%} "
                        f"{s.zero_l2:>7.1%} {s.zero_gamma:>7.1%}")
        t = self.totals()
        rows.append(f"{'all depthwise':28s} {sum(s.channels for s in self.layers):>5d} "
                    f"{'':>3s} {t['zero_linf']:>7.1%} {t['zero_l2']:>7.1%} "
                    f"{t['zero_gamma']:>7.1%}")
        rows += ["", f"params {self.profile.params:,}  MACs {self.profile.macs:,} at "
                 f"{self.profile.resolution} px", by_type_table(self.profile)]
        return "\n".join(rows)


def _near_zero(values: torch.Tensor, zero_tol: float) -> float:
    top = values.max()
    if top <= 0:
        return 1.0
    return (values <= zero_tol * top).float().mean().item()


def inspect_model(model: nn.Module, zero_tol: float = ZERO_TOL,
                  input_size: tuple[int, int, int] | None = None) -> Inspection:
    """Near-zero depthwise kernels and BN scales per depthwise layer, and the by-type cost
    split (see the module docstring for the threshold)."""
    if not zero_tol >= 0:
        raise ValueError(f"zero_tol must be >= 0, got {zero_tol}")
    layers = []
    for name, m in model.named_modules():
        if not isinstance(m, ConvNormAct):
            continue
        conv = m.conv
        if not (conv.groups > 1 and conv.groups == conv.in_channels):
            continue
        w = conv.weight.detach().float().flatten(1)
        gamma = m.bn.weight.detach().float().abs()
        layers.append(DepthwiseStats(
            name, conv.out_channels, conv.kernel_size[0],
            _near_zero(w.abs().amax(1), zero_tol), _near_zero(w.norm(dim=1), zero_tol),
            _near_zero(gamma, zero_tol)))
    return Inspection(zero_tol, layers, profile(model, input_size))


__all__ = ["DepthwiseStats", "Inspection", "ZERO_TOL", "inspect_model"]
