"""Compression: inspect what a model wastes, and prune it into a smaller dense model."""

from .inspect import Inspection, inspect_model
from .prune import keep_count, prune, pruned_widths
from .recalibrate import recalibrate_bn

__all__ = ["Inspection", "inspect_model", "keep_count", "prune", "pruned_widths",
           "recalibrate_bn"]
