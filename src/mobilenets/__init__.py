"""mobilenets: the MobileNet family from the papers' tables to deployed models."""

from .cost import profile
from .deploy import export_onnx, fuse
from .models import FeatureNet, MobileNet, list_models
from .weights import CheckpointError, create_model, load, save
from .training import evaluate, train
from .version import __version__

__all__ = ["CheckpointError", "FeatureNet", "MobileNet", "__version__", "create_model",
           "evaluate", "export_onnx", "fuse", "list_models", "load", "profile", "save", "train"]
