"""Contrastive training through Hugging Face Accelerate: :func:`train` runs a recipe end to end."""
from textcl.train.trainer import TrainingDiverged, TrainResult, Trainer, train

__all__ = ["TrainResult", "Trainer", "TrainingDiverged", "train"]
