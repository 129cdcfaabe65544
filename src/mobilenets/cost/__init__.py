"""Cost model: params, MACs by layer and type, peak activation memory."""

from .memory import bottleneck_peak, live_peak
from .profile import LAYER_TYPES, TYPE_LABELS, LayerCost, Profile, profile

__all__ = ["LAYER_TYPES", "TYPE_LABELS", "LayerCost", "Profile", "bottleneck_peak",
           "live_peak", "profile"]
