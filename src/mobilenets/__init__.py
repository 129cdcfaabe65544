"""mobilenets: the MobileNet family from the papers' tables to deployed models."""

from .cost import profile
from .deploy import evaluate, export_onnx, fuse, open_model
from .models import FeatureNet, MobileNet, list_models
from .weights import CheckpointError, create_model, fpn_backbone, load, save
from .tasks.classification import train
from .version import __version__

__all__ = ["CheckpointError", "FeatureNet", "MobileNet", "__version__", "create_model",
           "evaluate", "export_onnx", "fpn_backbone", "fuse", "list_models", "load", "open_model", "profile", "save",
           "train"]
