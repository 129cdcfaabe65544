"""Architectures: one file per family holds its table; ``architecture.plan`` and ``network.MobileNet`` turn any of them into a net.

Importing this package registers every model.
"""

from . import (efficientnet, efficientnet_v2, fd_mobilenet, mobilenet_v1,  # noqa: F401
               mobilenet_v2, mobilenet_v3, mobilenet_v4)
from . import heads  # noqa: F401  (registers the dense-prediction heads)
from .architecture import Architecture, FeatureTap, NetworkPlan, plan
from .backbones import FPNBackbone, convert_norm
from .network import FeatureNet, MobileNet
from .registry import (MODEL_OPTIONS, ModelEntry, create_model, get_entry, list_models, register,
                       resolve_name)

__all__ = ["MODEL_OPTIONS", "Architecture", "FPNBackbone", "FeatureNet", "FeatureTap", "MobileNet",
           "ModelEntry", "NetworkPlan", "convert_norm", "create_model",
           "get_entry", "list_models", "plan", "register", "resolve_name"]
