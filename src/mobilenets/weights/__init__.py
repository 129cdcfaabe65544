"""Weights: torchvision and timm checkpoints into our models, and our own saved format.

``create_model(name, weights=...)`` takes:
- a torchvision ``.pth``, a timm ``.pth``/``.bin``/``.safetensors``, or a Hugging Face cache
  folder of a timm model: the layout is recognised from the keys, and the model is built with
  the source's BatchNorm eps/momentum, activation, padding and eval preprocessing;
- a folder written by :func:`save`;
- ``"torchvision"`` or ``"timm"``: the file from that library's local cache (hash-checked;
  downloaded only with ``allow_download=True``).
"""

from .cache import timm_file, torchvision_file
from .convert import classifier_classes
from .files import CheckpointError, read_state_dict
from .loading import WeightsNote, create_model, create_with_weights, fpn_backbone, load
from .saved import is_saved_model, read_config, save

__all__ = ["CheckpointError", "WeightsNote", "classifier_classes", "create_model",
           "create_with_weights", "fpn_backbone", "is_saved_model", "load", "read_config", "read_state_dict",
           "save", "timm_file", "torchvision_file"]
