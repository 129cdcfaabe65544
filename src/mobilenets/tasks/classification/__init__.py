"""Image classification: the task, its metrics, and the prune / low-rank -> fine-tune workflows."""

from .evaluate import evaluate, evaluate_model
from .lowrank import lowrank_and_finetune
from .prune import compress_and_finetune, prune_and_finetune
from .task import ClassificationTask, kd_loss, train

__all__ = ["ClassificationTask", "compress_and_finetune", "evaluate", "evaluate_model", "kd_loss",
           "lowrank_and_finetune", "prune_and_finetune",
           "train"]
