"""One trial: train the recipe with the trial's sampled values, report each evaluation during training to the
pruner (which may stop the run), and return the dev score of the model the trial saved."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import optuna
import torch

from textcl.eval.guards import MATRYOSHKA_ROW
from textcl.train import train
from textcl.train.card import metric_value
from textcl.train.trainer import STOP
from textcl.tune.recipe import BaseRecipe
from textcl.tune.space import SearchSpace

#: the folders a trial's run writes that a study does not need once the trial is scored
MODEL_FOLDERS = ("model", "model-document", "best-model", "best-model-document")


class Pruning:
    """The trainer's ``on_eval`` callback for one trial: reports each evaluation at its step, and stops the run
    when the study's pruner says the trial is hopeless.

    With ``best_so_far`` (the recipe's ``eval.select_best``: the trial keeps its best step's model, and that is
    what its value scores) the report is the best selection score up to the step, not the step's own: a trial
    whose later steps fall below its best is judged by the model it will keep."""

    def __init__(self, trial: optuna.Trial, best_so_far: bool = True):
        self.trial = trial
        self.best_so_far = best_so_far
        self.best: float | None = None
        self.pruned_at: int | None = None

    def __call__(self, step: int, score: float) -> str | None:
        if self.best_so_far and np.isfinite(score):
            self.best = score if self.best is None else max(self.best, score)
            score = self.best
        self.trial.report(score, step)
        if self.trial.should_prune():
            self.pruned_at = step
            return STOP
        return None


def dev_score(metrics: dict) -> float:
    """The trial's value: the score of the saved model on the sets that selected it (the recipe's ``eval.data``,
    ``eval.retrieval`` and any extra evaluators, with ``eval.guard_select`` the guards; never a test set),
    weighed as the trainer selects: the task sets' mean, or its mean with the guards' mean."""
    after = metrics["after"]
    guards_select = bool(((metrics.get("config") or {}).get("eval") or {}).get("guard_select"))
    # no evaluation during training (eval.every: 0): the sets after it, less the guards (never selected on
    # unless eval.guard_select), SentEval's "all" and the Matryoshka rows
    names = metrics.get("selected_on") or [k for k, m in after.items() if k != "all" and not MATRYOSHKA_ROW.search(k)
                                           and (guards_select or not m.get("guard"))]
    # as the trainer selects (Evaluator.selection_score): the task sets' mean and the guards' mean weigh the same
    task = [metric_value(after[k]) for k in names if not after[k].get("guard")]
    guards = [metric_value(after[k]) for k in names if after[k].get("guard")]
    return float(np.mean([np.mean(part) for part in (task, guards) if part]))


def trial_folder(trials_dir: str | Path, number: int) -> Path:
    return Path(trials_dir) / f"{number:04d}"


def run_trial(trial: optuna.Trial, base: BaseRecipe, space: SearchSpace, trials_dir: str | Path, *,
              evaluators=(), keep_models: bool = False) -> float:
    """Train one trial in ``trials_dir/NNNN``; raise :class:`optuna.TrialPruned` when the pruner stopped it.

    The trial's recipe (what ``best.yaml`` holds if it wins) is recorded in the study as the user attribute
    ``recipe``; the run itself adds only :data:`~textcl.tune.recipe.TRIAL_SETTINGS`. Unless ``keep_models``,
    the trial's model folders are removed once it is scored (its log, metrics and config stay)."""
    values = space.sample(trial)
    folder = trial_folder(trials_dir, trial.number)
    trial.set_user_attr("recipe", base.recipe(values))
    trial.set_user_attr("folder", str(folder))
    trial.set_user_attr("pid", os.getpid())
    config = base.config(values, trial=True)
    pruning = Pruning(trial, best_so_far=config.eval.select_best)
    try:
        result = train(config, output_dir=folder, evaluators=evaluators, on_eval=pruning)
    finally:
        if not keep_models:
            for name in MODEL_FOLDERS:
                shutil.rmtree(folder / name, ignore_errors=True)
    trial.set_user_attr("steps", result.steps)
    trial.set_user_attr("threads", torch.get_num_threads())
    if not result.finished:
        raise optuna.TrialPruned(f"pruned at step {pruning.pruned_at}")
    return dev_score(result.metrics)
