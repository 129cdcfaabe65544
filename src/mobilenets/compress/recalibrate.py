"""Re-estimate BatchNorm running statistics on real images after pruning.

Cutting channels changes what every later BatchNorm sees, so the running mean and variance
learnt on the unpruned network no longer fit and the pruned model's eval accuracy collapses
until it is fine-tuned. Re-estimating them from a few hundred training images, with the
weights untouched, recovers much of it at once (adaptive BatchNorm, Li et al. 2020, "EagleEye",
arXiv 2007.02491, section 3.2).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..models.memory_split import run_whole


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them as the plain average
    over ``batches`` (momentum None) with the rest of the model in eval mode (no dropout or
    drop-path); weights are untouched, and each BatchNorm's momentum and the model's mode are
    restored. Split inverted residuals (``memory_split``) run whole meanwhile, so that their
    BatchNorms see the batches. Returns the number of images seen (an error if none)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        with run_whole(model):
            for x in batches:
                model(x)
                seen += len(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    if seen == 0:
        raise ValueError("recalibrate_bn() got no images; give it at least one batch")
    return seen


__all__ = ["recalibrate_bn"]
