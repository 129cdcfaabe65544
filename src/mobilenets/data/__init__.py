"""Data: image loading and transforms (torchvision.transforms.v2)."""

from .transforms import eval_transform

__all__ = ["eval_transform"]
