"""Tasks on the training engine, one sub-package each; ``TASKS`` maps a name to its task."""

from .classification import ClassificationTask

TASKS = {"classification": ClassificationTask}

__all__ = ["TASKS", "ClassificationTask"]
