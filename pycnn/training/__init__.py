"""Training: datasets (data), the recipe (recipe), the loop and run folders (loop), checkpoints (checkpoint),
evaluation of a checkpoint (evaluate). Above the compiler: nothing below imports this package."""
from .checkpoint import CheckpointError
from .data import DataError
from .loop import RunResult, TrainError, train
from .recipe import Recipe

__all__ = ["train", "Recipe", "RunResult", "TrainError", "DataError", "CheckpointError"]
