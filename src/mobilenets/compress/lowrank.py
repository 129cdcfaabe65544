"""Low-rank factorisation of 1x1 convolutions and linear layers by truncated SVD.

A 1x1 convolution (``groups=1``) or a linear layer computes ``W x + b`` with ``W`` of shape
``out x in``. Its SVD ``W = U S V^T`` truncated to the ``r`` largest singular values is the best
rank-``r`` approximation of ``W`` (Eckart-Young), and it is two thinner layers:
``in -> r`` with weight ``S_r^(1/2) V_r^T`` (no bias), then ``r -> out`` with weight
``U_r S_r^(1/2)`` and the original bias (the singular values shared between the two so both
start at the same scale for fine-tuning). The pair has ``r * (in + out)`` weights and
multiply-adds per position instead of ``in * out``: a saving only when
``r < in * out / (in + out)``, so layers where it would not save are left whole by default.

The rank is chosen per layer by ``rank`` (an integer, capped at ``min(in, out)``, or a fraction
in (0, 1) of ``min(in, out)``, rounded up) or by ``energy``: the smallest ``r`` whose singular
values keep that share of ``sum(s_i^2)`` (the squared Frobenius norm of ``W``; the dropped share
is the relative squared error of the approximation).

The factorised model is a :class:`~mobilenets.models.MobileNet` whose ``low_rank`` builder option
({layer name: rank}) rebuilds its structure, so ``mobilenets.save`` / ``mobilenets.load`` and the
training engine's fine-tuning (``tasks.classification.lowrank_and_finetune``) handle it like any
model. Run it on an unsplit model (``memory_split`` reads the plain expansion and projection).
"""

from __future__ import annotations

import copy
import fnmatch
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..cost import profile
from ..layers import SqueezeExcite
from ..models import MobileNet
from ..models.low_rank import LowRank, factorisable, low_rank_layer
from ..models.memory_split import is_split


@dataclass
class LayerRank:
    """One candidate layer: its shape, the rank chosen, the energy share it keeps, and its
    params (weights and bias) and MACs before and after (equal when ``factorised`` is False)."""

    name: str
    in_features: int
    out_features: int
    rank: int
    energy: float
    factorised: bool
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


@dataclass
class LowRankReport:
    """Per-layer ranks and the whole model's params and MACs (``mobilenets.profile``'s count at
    the model's resolution) before and after."""

    layers: list[LayerRank] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0

    @property
    def ranks(self) -> dict[str, int]:
        """{layer name: rank} of the factorised layers (the model's ``low_rank`` option)."""
        return {lr.name: lr.rank for lr in self.layers if lr.factorised}

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = [f"{'layer':<28} {'in':>5} {'out':>5} {'rank':>5} {'energy':>7} "
                f"{'params':>17} {'MACs':>23}"]
        for lr in self.layers:
            mark = "" if lr.factorised else " (kept: no saving)"
            rows.append(f"{lr.name:<28} {lr.in_features:>5} {lr.out_features:>5} "
                        f"{lr.rank:>5} {lr.energy:>7.4f} "
                        f"{lr.params_before:>8,}->{lr.params_after:<8,} "
                        f"{lr.macs_before:>11,}->{lr.macs_after:<11,}{mark}".rstrip())
        rows.append(f"total: params {self.params_before:,} -> {self.params_after:,}, MACs "
                    f"{self.macs_before:,} -> {self.macs_after:,} "
                    f"(-{1 - self.macs_after / max(self.macs_before, 1):.1%})")
        return "\n".join(rows)


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest ``r`` with ``sum(s[:r]^2) >= energy * sum(s^2)`` (``s`` sorted descending);
    1 for an all-zero weight."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    power = singular_values.double() ** 2
    total = power.sum()
    if total == 0:
        return 1
    kept = torch.cumsum(power, 0) / total
    # the float64 cumsum of the whole spectrum can land a few ulps under 1
    return min(int((kept < energy - 1e-12).sum()) + 1, len(power))


def layer_rank(singular_values: torch.Tensor, rank: int | float | None = None,
               energy: float | None = None) -> int:
    """The rank for one layer: ``rank`` (an int capped at ``len(s)``, or a fraction in (0, 1]
    of ``len(s)``, rounded up) or the :func:`energy_rank` of ``energy``."""
    full = len(singular_values)
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank and energy")
    if energy is not None:
        return energy_rank(singular_values, energy)
    if isinstance(rank, bool) or not isinstance(rank, (int, float)):
        raise ValueError(f"rank must be an integer >= 1 or a fraction in (0, 1], got {rank!r}")
    if isinstance(rank, int):
        if rank < 1:
            raise ValueError(f"rank must be an integer >= 1 or a fraction in (0, 1], got {rank}")
        return min(rank, full)
    if not 0 < rank <= 1:
        raise ValueError(f"a fractional rank must be in (0, 1], got {rank}; give an integer "
                         f"for an absolute rank")
    return max(1, math.ceil(rank * full - 1e-9))


def _matrix(module: nn.Module) -> torch.Tensor:
    return module.weight.detach().reshape(module.weight.shape[0], -1).double()


def _shape(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Conv2d):
        return module.in_channels, module.out_channels
    return module.in_features, module.out_features


def candidates(model: nn.Module, layers=None) -> list[str]:
    """Names of the layers :func:`factorise` considers: by default every 1x1 convolution with
    ``groups=1`` (expansions, projections, pointwise, head) and every linear layer
    (pre-logits, classifier), squeeze-excite convolutions left out (they run on one pooled
    position); or the modules whose names match ``layers`` (shell patterns, e.g.
    ``["blocks.*.project.conv", "classifier"]``), each of which must be factorisable."""
    se = {id(m) for s in model.modules() if isinstance(s, SqueezeExcite) for m in s.modules()}
    named = dict(model.named_modules())
    if layers is None:
        return [n for n, m in named.items() if n and factorisable(m) and id(m) not in se]
    patterns = [layers] if isinstance(layers, str) else list(layers)
    chosen = [n for n in named if n and any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"layers {patterns} match no module of this model; names look like "
                         f"'blocks.1.0.expand.conv', 'head.conv', 'classifier'")
    bad = [n for n in chosen if not factorisable(named[n])]
    if bad:
        raise ValueError(f"layers {patterns} match modules that are not 1x1 convolutions "
                         f"with groups=1 or linear layers: {', '.join(bad[:5])}; narrow the "
                         f"patterns (e.g. end them with '.conv')")
    return chosen


def _factorised(module: nn.Module, u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor,
                r: int) -> LowRank:
    new = low_rank_layer(module, r)
    root = s[:r].sqrt()
    first = root[:, None] * vh[:r]                       # r x in
    second = u[:, :r] * root[None, :]                    # out x r
    with torch.no_grad():
        new[0].weight.copy_(first.reshape(new[0].weight.shape))
        new[1].weight.copy_(second.reshape(new[1].weight.shape))
        if module.bias is not None:
            new[1].bias.copy_(module.bias)
    return new.train(module.training)


def factorise(model: MobileNet, *, rank: int | float | None = None, energy: float | None = None,
              layers=None, only_if_smaller: bool = True) -> tuple[MobileNet, LowRankReport]:
    """A copy of ``model`` with its 1x1 convolutions and linear layers (:func:`candidates` of
    ``layers``) replaced by rank-``r`` factorisations (see the module docstring for ``rank``
    and ``energy``). With ``only_if_smaller`` (the default) a layer is left whole when
    ``r * (in + out) >= in * out``, where the pair would cost as much as the layer or more.
    Returns the model (its ``config["low_rank"]`` lists the factorised layers) and a
    :class:`LowRankReport`. ``model`` is left unchanged."""
    if not isinstance(model, MobileNet):
        raise TypeError("factorise() takes a MobileNet classifier (not a features_only "
                        "backbone or a head model)")
    if model.config.get("low_rank"):
        raise ValueError("this model is factorised already; factorise the original model")
    if is_split(model):
        raise ValueError("factorise a model without memory_split: split inverted residuals "
                         "read their plain expansion and projection weights")
    names = candidates(model, layers)
    before = profile(model)
    macs = {layer.name: layer.macs for layer in before.layers}
    new = copy.deepcopy(model)
    modules = dict(new.named_modules())
    report = LowRankReport(params_before=before.params, macs_before=before.macs)
    for name in names:
        module = modules[name]
        cin, cout = _shape(module)
        u, s, vh = torch.linalg.svd(_matrix(module), full_matrices=False)
        r = layer_rank(s, rank, energy)
        power = s ** 2
        kept = float(power[:r].sum() / power.sum()) if power.sum() > 0 else 1.0
        bias = cout if module.bias is not None else 0
        smaller = r * (cin + cout) < cin * cout
        do = smaller or not only_if_smaller
        positions = macs[name] // (cin * cout)
        report.layers.append(LayerRank(
            name, cin, cout, r, kept, do, cin * cout + bias,
            (r * (cin + cout) if do else cin * cout) + bias, macs[name],
            positions * r * (cin + cout) if do else macs[name]))
        if do:
            parent, _, child = name.rpartition(".")
            setattr(modules[parent] if parent else new, child,
                    _factorised(module, u, s, vh, r))
    ranks = report.ranks
    if ranks:
        new.config["low_rank"] = ranks
    after = profile(new)
    report.params_after, report.macs_after = after.params, after.macs
    return new, report


__all__ = ["LayerRank", "LowRankReport", "candidates", "energy_rank", "factorise",
           "layer_rank"]
