"""``tune(recipe, space, trials=N)``: search a recipe's fields on its dev sets, then write the study's outputs
and compare the best recipe with the original on the test sets."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import TrialState

from textcl._io import atomic_write_json
from textcl.config import TrainConfig
from textcl.errors import ConfigError, TextclError
from textcl.tune.compare import final_comparison
from textcl.tune.outputs import best_recipe, plot_history, plot_importance, trial_rows, write_best, write_trials_csv
from textcl.tune.recipe import BaseRecipe
from textcl.tune.search import Job, make_pruner, open_study, run_workers, work
from textcl.tune.space import SearchSpace, load_space
from textcl.tune.storage import OUTPUTS_LOCK_FILE, default_storage, study_lock


STUDY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclass
class TuneResult:
    out: Path
    study: str
    storage: str
    trials: list[dict]  #: the rows of ``trials.csv``
    best: dict | None  #: ``{"number", "value", "params", "recipe"}`` (``recipe``: best.yaml); None if none completed
    importances: dict
    comparison: dict | None  #: ``comparison.json``; None without ``compare``


def check_dev_sets(config: TrainConfig, evaluators=(), source: str | None = None) -> None:
    """Trials are scored on the recipe's selection sets: refuse a recipe without any, or one that selects on a
    test set (a test set that chooses is a dev set, and the final comparison would be biased)."""
    e = config.eval
    task = config.data.kind == "interactions"  # its NAME-valid ranking stage selects
    if not (e.data or e.retrieval or evaluators or task):
        raise ConfigError("eval.data", "tuning scores each trial on the recipe's dev sets (eval.data, "
                                       "eval.retrieval, or an interaction log's validation stage), and it lists "
                                       "none", source)
    it = config.data.interactions if task else None
    if it is not None and it.user_tower == "sequence":
        raise ConfigError("data.interactions.user_tower", "textcl tune prunes trials at the trainer's evaluations, "
                                                          "and user_tower sequence trains in epochs without them; "
                                                          "tune the text tower, or train sequence recipes one by "
                                                          "one", source)
    tests = {str(t) for t in e.test}
    for i, name in enumerate(e.data):
        if str(name) in tests or str(name).endswith("-test"):
            raise ConfigError(f"eval.data[{i}]", f"{name!r} is a test set: the sets that choose a trial must be dev "
                                                 "sets, and test sets are only scored in the final comparison", source)


def tune(recipe: str | Path, space: str | Path | SearchSpace, *, trials: int, out: str | Path | None = None,
         overrides=(), study: str | None = None, storage: str | None = None, timeout: float | None = None,
         workers: int = 1, pruner="halving", compare: bool = True, keep_models: bool = False,
         seed: int | None = None, evaluators=()) -> TuneResult:
    """Run (or continue) a study of ``recipe`` over ``space`` until it holds ``trials`` trials.

    Args:
        recipe: a recipe YAML file; ``overrides`` (``KEY=VALUE``) fix fields for every trial, as in training.
        space: a space YAML file (see :mod:`textcl.tune.space`) or a parsed :class:`SearchSpace`.
        trials: the total (complete and pruned) the study should reach; a rerun with a larger number adds
            trials to the same study.
        out: the output folder (default ``runs/tune-<study>``); study defaults to the recipe's file name.
        storage: an Optuna storage URL or ``journal:PATH`` (default ``sqlite:///OUT/study.sqlite3``).
        timeout: seconds after which no new trial starts.
        workers: processes on this machine, the usable cores split between them.
        pruner: ``halving``, ``median`` or ``none`` (see :func:`~textcl.tune.search.make_pruner`), or an Optuna
            pruner.
        compare: train the best and the original recipe once more and compare them on the test sets.
        keep_models: keep each trial's model folders (by default only logs and metrics stay).
        evaluators: extra dev evaluators ``fn(encoder) -> {name: score}`` for every trial (picklable when
            ``workers > 1``).
    """
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    base = BaseRecipe.load(recipe, overrides)
    space = space if isinstance(space, SearchSpace) else load_space(space)
    space.check(base.config, fixed=base.fixed_fields())
    config = base.config({})
    check_dev_sets(config, evaluators, base.source)
    # the study names the default output folder, runs/tune-<study>: a name, never a path
    name = (re.sub(r"[^A-Za-z0-9._-]+", "-", Path(recipe).stem).lstrip(".") or "study") if study is None else study
    if not STUDY_NAME.fullmatch(name):
        raise TextclError(f"--study: expected a name (letters, digits, '.', '_', '-', not starting with '.'), "
                          f"got {name!r}")
    out = Path(out) if out is not None else Path("runs") / f"tune-{name}"
    storage = storage or default_storage(out)
    if isinstance(pruner, str):
        pruner = make_pruner(pruner, config.eval.every)
    if config.eval.every == 0:
        print("textcl tune: eval.every is 0, so trials are evaluated only at their end and none can be pruned")
    open_study(storage, name, base, space, pruner=pruner, create=True)
    job = Job(base, space, name, storage, str(out), trials, pruner, seed=seed, keep_models=keep_models,
              deadline=None if timeout is None else time.time() + timeout)
    if workers > 1:
        run_workers(job, workers, evaluators)
    else:
        work(job, evaluators)
    return write_outputs(job, compare=compare)


def write_outputs(job: Job, *, compare: bool = True) -> TuneResult:
    """``trials.csv``, ``history.png``, ``importance.png``, ``best.yaml``, ``summary.json`` and (with
    ``compare``) ``comparison.json`` in the job's output folder. Processes sharing the folder take turns: the
    comparison trains into ``OUT/final/``, and a later process reads back a comparison already made."""
    with study_lock(job.out, OUTPUTS_LOCK_FILE):
        return _write_outputs(job, compare=compare)


def _write_outputs(job: Job, *, compare: bool) -> TuneResult:
    out = Path(job.out)
    study, _ = open_study(job.storage, job.study, job.base, job.space)
    rows = trial_rows(study, job.space)
    write_trials_csv(out / "trials.csv", rows, job.space)
    plot_history(study, out / "history.png", title=f"study {job.study}")
    importances = plot_importance(study, out / "importance.png", title=f"parameter importance, study {job.study}")
    best, comparison = None, None
    if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        trial = study.best_trial
        recipe = best_recipe(trial, out)
        write_best(out / "best.yaml", recipe, trial, job.study, job.space)
        best = {"number": trial.number, "value": trial.value, "params": trial.params, "recipe": str(out / "best.yaml")}
        if compare:
            comparison = final_comparison(recipe, job.base.data, out, source=str(out / "best.yaml"))
    states = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running")}
    atomic_write_json(out / "summary.json", {"study": job.study, "storage": job.storage, "trials": states,
                                             "seconds": sum(r["seconds"] or 0 for r in rows), "best": best,
                                             "importances": importances})
    return TuneResult(out, job.study, job.storage, rows, best, importances, comparison)
