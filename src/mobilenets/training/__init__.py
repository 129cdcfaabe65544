"""Training and evaluation (``mobilenets train`` / ``eval``)."""

from .config import TrainConfig, list_recipes, load_recipe, make_config
from .evaluate import evaluate, evaluate_model
from .loop import train

__all__ = ["TrainConfig", "evaluate", "evaluate_model", "list_recipes", "load_recipe", "make_config", "train"]
