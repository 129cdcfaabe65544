"""Compression: inspect what a model wastes, prune it into a smaller dense model, or factorise
its 1x1 convolutions and classifier into low-rank pairs."""

from .inspect import Inspection, inspect_model
from .lowrank import LowRankReport, factorise
from .prune import keep_count, prune, pruned_widths
from .recalibrate import recalibrate_bn

__all__ = ["Inspection", "LowRankReport", "factorise", "inspect_model", "keep_count", "prune",
           "pruned_widths",
           "recalibrate_bn"]
