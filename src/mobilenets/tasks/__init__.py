"""Tasks on the training engine, one sub-package each; ``TASKS`` maps a name to its task."""

from .classification import ClassificationTask
from .depth import DepthTask
from .detection import DetectionTask
from .segmentation import SegmentationTask

TASKS = {"classification": ClassificationTask, "segmentation": SegmentationTask,
         "depth": DepthTask, "detection": DetectionTask}

__all__ = ["TASKS", "ClassificationTask", "DepthTask", "DetectionTask", "SegmentationTask"]
