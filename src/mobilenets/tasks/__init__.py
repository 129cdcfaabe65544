"""Tasks on the training engine, one sub-package each; ``TASKS`` maps a name to its task."""

from .classification import ClassificationTask
from .detection import DetectionTask

TASKS = {"classification": ClassificationTask, "detection": DetectionTask}

__all__ = ["TASKS", "ClassificationTask", "DetectionTask"]
