"""Image classification: the task, its metrics, and the prune -> fine-tune workflow."""

from .evaluate import evaluate, evaluate_model
from .prune import prune_and_finetune
from .task import ClassificationTask, kd_loss, train

__all__ = ["ClassificationTask", "evaluate", "evaluate_model", "kd_loss", "prune_and_finetune",
           "train"]
