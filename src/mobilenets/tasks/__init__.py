"""Tasks on the training engine, one sub-package each; ``TASKS`` maps a name to its task."""

from .classification import ClassificationTask
from .segmentation import SegmentationTask

TASKS = {"classification": ClassificationTask, "segmentation": SegmentationTask}

__all__ = ["TASKS", "ClassificationTask", "SegmentationTask"]
