"""The structure of a low-rank factorised layer: a 1x1 convolution or linear layer replaced by
two thinner ones (``in -> rank`` without bias, then ``rank -> out`` with the original's bias).

:func:`mobilenets.compress.lowrank.factorise` fills them from an SVD of the original weights;
this module only builds them, so that ``create_model(name, low_rank={layer: rank})`` rebuilds a
factorised model (``mobilenets.load`` of a saved one, the training engine's fine-tuning).
"""

from __future__ import annotations

from torch import nn


class LowRank(nn.Sequential):
    """``(0)``: ``in -> rank`` (no bias; a 1x1 conv carries the original's stride), ``(1)``:
    ``rank -> out`` (bias when the original had one). Computes ``W x + b`` with
    ``W = W1 @ W0`` of rank at most ``rank``."""

    @property
    def rank(self) -> int:
        first = self[0]
        return first.out_channels if isinstance(first, nn.Conv2d) else first.out_features


def factorisable(module: nn.Module) -> bool:
    """A 1x1 convolution with ``groups=1`` or a linear layer."""
    if isinstance(module, nn.Conv2d):
        return (module.kernel_size == (1, 1) and module.groups == 1
                and module.padding in ((0, 0), "valid") and module.dilation == (1, 1))
    return isinstance(module, nn.Linear)


def low_rank_layer(module: nn.Module, rank: int) -> LowRank:
    """An (uninitialised) :class:`LowRank` with ``module``'s shape, dtype and device."""
    if not factorisable(module):
        raise ValueError(f"only 1x1 convolutions with groups=1 and linear layers are "
                         f"factorised, not {module}")
    w = module.weight
    kw = {"device": w.device, "dtype": w.dtype}
    bias = module.bias is not None
    if isinstance(module, nn.Conv2d):
        cin, cout = module.in_channels, module.out_channels
        _check_rank(rank, cin, cout)
        return LowRank(nn.Conv2d(cin, rank, 1, module.stride, bias=False, **kw),
                       nn.Conv2d(rank, cout, 1, bias=bias, **kw))
    cin, cout = module.in_features, module.out_features
    _check_rank(rank, cin, cout)
    return LowRank(nn.Linear(cin, rank, bias=False, **kw), nn.Linear(rank, cout, bias=bias, **kw))


def _check_rank(rank, cin: int, cout: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(cin, cout):
        raise ValueError(f"rank {rank!r} is not allowed for a {cin} -> {cout} layer: give an "
                         f"integer from 1 to {min(cin, cout)}")


def apply_low_rank(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """Replace, in place, each layer named in ``ranks`` ({module name: rank}, e.g.
    ``{"blocks.1.0.expand.conv": 8, "classifier": 100}``) by a :class:`LowRank` of that rank;
    records ``low_rank`` in ``model.config``. Returns ``model``."""
    if not isinstance(ranks, dict):
        raise ValueError(f"low_rank must be a dict {{layer name: rank}}, got {ranks!r}")
    modules = dict(model.named_modules())
    for name, rank in ranks.items():
        module = modules.get(name)
        if module is None:
            raise ValueError(f"low_rank names {name!r}, which is not a layer of this model; "
                             f"names are module names like 'blocks.1.0.expand.conv' or "
                             f"'classifier'")
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child,
                low_rank_layer(module, rank))
    config = getattr(model, "config", None)
    if ranks and isinstance(config, dict):
        config["low_rank"] = dict(ranks)
    return model


__all__ = ["LowRank", "apply_low_rank", "factorisable", "low_rank_layer"]
