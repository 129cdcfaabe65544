"""The training engine (task-agnostic): ``fit(task, cfg)``, its configuration and recipes.

Tasks (``mobilenets.tasks``) plug into it; ``mobilenets.train`` is the classification task's.
"""

from .config import TrainConfig, list_recipes, load_recipe, make_config
from .engine import check_out_folder, ema_lag, eval_loader, fit
from .task import Task

__all__ = ["Task", "TrainConfig", "check_out_folder", "ema_lag", "eval_loader", "fit",
           "list_recipes", "load_recipe", "make_config"]
