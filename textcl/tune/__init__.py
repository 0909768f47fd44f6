"""Search a recipe's hyperparameters and augmentations on its dev sets with Optuna (the ``textcl[tune]``
extra): :func:`tune` runs a study whose trials are training runs, pruned from their evaluations during
training; :mod:`textcl.tune.space` reads the search space."""
from textcl.tune.space import Param, SearchSpace, load_space, parse_space
from textcl.tune.tuner import TuneResult, tune

__all__ = ["Param", "SearchSpace", "TuneResult", "load_space", "parse_space", "tune"]
