"""The study and the loop that runs its trials: in this process, or in ``workers`` processes that share it.

Every process counts the study's trials under :func:`~textcl.tune.storage.study_lock` and starts one only
while fewer than ``trials`` are complete, pruned, running or waiting, so ``trials`` is the total the study
reaches however many processes (and reruns) take part. A process returns once that total is reached and no
trial is running (a running trial whose heartbeat stopped is failed, and replaced).
"""
from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

import textcl.tune.storage as storage_module
from textcl.errors import ConfigError, TextclError
from textcl.threads import threads_for
from textcl.train import TrainingDiverged
from textcl.tune.recipe import BaseRecipe
from textcl.tune.space import SearchSpace
from textcl.tune.storage import fail_stale_trials, has_heartbeat, heartbeat, open_storage, study_lock
from textcl.tune.trial import run_trial

PRUNERS = ("halving", "median", "none")
#: a study stops once this many of its trials failed by their own error (:func:`trial_failure`), or ``--trials``
#: if more
MIN_FAILURES = 3
#: the states that count toward ``--trials`` (a failed trial does not: another takes its place)
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
POLL_S = 5  #: how often a process with nothing to start looks again while other trials run


def make_pruner(name: str, eval_every: int) -> optuna.pruners.BasePruner:
    """``halving``: successive halving with its first rung at the first evaluation (``eval.every``) and a
    reduction factor of 3, so about a third of the trials go on past each rung; ``median``: a trial stops when
    its score at a step is below the median of the earlier trials' at that step (after 4 trials that ran whole);
    ``none``: every trial runs to the end."""
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, eval_every), reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TextclError(f"unknown pruner {name!r}; expected one of {', '.join(PRUNERS)}")


def make_sampler(trials: int, seed: int | None) -> optuna.samplers.BaseSampler:
    """TPE, after a random start of a third of the trials (4 to 10); with ``constant_liar`` so that workers
    running at once do not all sample next to the same promising point."""
    with warnings.catch_warnings():  # constant_liar is an experimental feature of Optuna's
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(n_startup_trials=max(4, min(10, trials // 3)), seed=seed,
                                          constant_liar=True)


def continued_seed(seed: int, earlier: int) -> int:
    """The sampler's seed for a process joining a study that already holds ``earlier`` trials: ``seed`` itself
    for a new study, else one drawn from (seed, earlier), so a rerun with the same ``--seed`` samples anew."""
    if not earlier:
        return seed
    return int(np.random.SeedSequence([seed, earlier]).generate_state(1)[0])


def _plain(obj):
    """``obj`` as JSON would give it back (tuples as lists), to compare with what a study recorded."""
    return json.loads(json.dumps(obj, default=str))


def study_identity(base: BaseRecipe, space: SearchSpace) -> dict:
    """What a study is a search of: the recipe (with ``--set``) and the space. A rerun must match it."""
    return _plain({"recipe": base.data, "space": [dataclasses.asdict(p) for p in space.params]})


def open_study(storage_url: str, name: str, base: BaseRecipe, space: SearchSpace, *, pruner=None, sampler=None,
               create: bool = False) -> tuple[optuna.Study, object]:
    """Load (or with ``create``, create or load) the study; refuse one that searches another recipe or space."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # textcl prints each trial's outcome itself
    storage = open_storage(storage_url)
    if create:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                    pruner=pruner, sampler=sampler)
    else:
        study = optuna.load_study(storage=storage, study_name=name, pruner=pruner, sampler=sampler)
    identity = study_identity(base, space)
    recorded = study.user_attrs.get("textcl")
    if recorded is None:
        study.set_user_attr("textcl", identity)
    elif recorded != identity:
        what = "recipe (with its --set overrides)" if recorded["recipe"] != identity["recipe"] else "space"
        raise TextclError(f"study {name!r} in {storage_url} searches another {what}; rerun it with the same "
                          "recipe, --set and space, or start a new study with --study NAME")
    return study, storage


def counted(study: optuna.Study) -> tuple[int, int]:
    """(trials that count toward the total, trials running now)."""
    trials = study.get_trials(deepcopy=False, states=COUNTED)
    return len(trials), sum(t.state == TrialState.RUNNING for t in trials)


@dataclass(frozen=True)
class Job:
    """Everything a process needs to take part in a study (picklable, for ``workers``)."""

    base: BaseRecipe
    space: SearchSpace
    study: str
    storage: str
    out: str
    trials: int
    pruner: object
    seed: int | None = None
    deadline: float | None = None  #: time.time() after which no trial starts
    keep_models: bool = False
    threads: int | None = None  #: torch threads of this process (None: torch's default)


def _next_trial(study: optuna.Study, job: Job, storage) -> tuple[optuna.Trial | None, int]:
    with study_lock(job.out):
        if has_heartbeat(storage):
            fail_stale_trials(study)
        total, running = counted(study)
        if total >= job.trials:
            return None, running
        with warnings.catch_warnings():  # optuna warns that heartbeats are meant for study.optimize
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        if has_heartbeat(storage):  # at once, still under the lock: a trial is never left without one
            storage.record_heartbeat(trial._trial_id)
        return trial, running


def work(job: Job, evaluators=()) -> int:
    """Run trials of the study until it holds ``job.trials`` (or the deadline passes); returns how many
    this process ran."""
    if job.threads:  # through the environment too: the trainer keeps an OMP_NUM_THREADS it finds (textcl.threads)
        os.environ["OMP_NUM_THREADS"] = str(job.threads)
        torch.set_num_threads(job.threads)
    study, storage = open_study(job.storage, job.study, job.base, job.space, pruner=job.pruner)
    # a rerun continues the sampler's stream, not the first trials' values again
    study.sampler = make_sampler(job.trials, None if job.seed is None else
                                 continued_seed(job.seed, len(study.get_trials(deepcopy=False))))
    trials_dir = Path(job.out) / "trials"
    ran = 0
    failures: list[str] = []  # this process's trials failed by their own values: failures do not count toward the
    # total, so unbounded, a space where every trial fails would loop
    while job.deadline is None or time.time() < job.deadline:
        if len(failures) >= max(job.trials, MIN_FAILURES):
            raise TextclError(f"{len(failures)} trials of study {job.study!r} failed (the bound: --trials, at least "
                              f"{MIN_FAILURES}; the last, {failures[-1]}); check the space's ranges and the recipe, "
                              "then rerun the same command (the study keeps what it has)")
        trial, running = _next_trial(study, job, storage)
        if trial is None:
            if running and has_heartbeat(storage):  # wait for them: one may be a dead process's, to replace
                time.sleep(POLL_S)
                continue
            break
        print(f"textcl tune: trial {trial.number} (process {os.getpid()})", flush=True)
        try:
            with heartbeat(storage, trial):
                value = run_trial(trial, job.base, job.space, trials_dir, evaluators=evaluators,
                                  keep_models=job.keep_models)
        except optuna.TrialPruned as exc:
            _tell(study, trial, f"{exc}", state=TrialState.PRUNED)
        except BaseException as exc:
            if isinstance(exc, optuna.exceptions.UpdateFinishedTrialError) and _finished(study, trial):
                print(f"textcl tune: trial {trial.number} was failed by another process while it ran (no heartbeat "
                      f"for {storage_module.GRACE_S} s; was this process suspended?); going on", flush=True)
            elif trial_failure(exc):  # what the sampled values did (a bad learning rate, a combination the recipe
                # refuses, a batch too large for the data or the memory): a result, not a reason to stop the study
                failures.append(_fail(study, trial, f"{type(exc).__name__}: {exc}"))
            else:  # the environment's or textcl's (a model that cannot load, a bug, Ctrl-C): stop, as it is
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                raise
        else:
            if math.isfinite(value):
                _tell(study, trial, f"scored {value:.4f} on the dev sets", value)
            else:  # Optuna would fail it silently: a collapsed model (a constant dev score) is the trial's result
                failures.append(_fail(study, trial, f"its dev score is {value} (the model collapsed?)"))
        ran += 1
    return ran


def trial_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is something a trial's sampled values made happen (it fails that trial only): a diverged
    loss, a value or combination the recipe or the trainer refuses (ConfigError: a batch larger than the data
    included), memory run out (on a GPU, or the CPU's allocator). Anything else (a model or data set that cannot
    load, a bug) is the environment's, and stops the study."""
    if isinstance(exc, (TrainingDiverged, ConfigError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in ("can't allocate memory", "out of memory"))


def _fail(study: optuna.Study, trial: optuna.Trial, error: str) -> str:
    """Fail ``trial`` with ``error`` kept (``trials.csv``); returns ``"trial N: error"``."""
    try:
        trial.set_user_attr("error", error[:1000])
    except optuna.exceptions.UpdateFinishedTrialError:  # another process failed it meanwhile
        pass
    _tell(study, trial, f"failed: {error}", state=TrialState.FAIL)
    return f"trial {trial.number}: {error}"


def _finished(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether the study already holds an outcome for ``trial`` (another process failed it meanwhile)."""
    return study._storage.get_trial(trial._trial_id).state.is_finished()


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: str, value=None, state=None) -> None:
    """Record a trial's outcome and print it; a trial another process already failed (its heartbeat stopped
    while this one was suspended) keeps that state, and this outcome is printed as not recorded."""
    if _finished(study, trial):
        print(f"textcl tune: trial {trial.number} {outcome}, not recorded: the study had already marked it "
              f"failed (no heartbeat for {storage_module.GRACE_S} s; was this process suspended?)", flush=True)
        return
    study.tell(trial, value, state=state, skip_if_finished=True)  # failed in between: Optuna only warns
    print(f"textcl tune: trial {trial.number} {outcome}", flush=True)


def _worker_main(job: Job, evaluators) -> None:
    try:
        work(job, evaluators)
    except TextclError as exc:
        print(f"textcl: error: {exc}", file=sys.stderr)
        sys.exit(2)


def run_workers(job: Job, workers: int, evaluators=()) -> None:
    """Run ``workers`` processes on the study, the usable cores split between them (torch threads each);
    worker ``i`` seeds its sampler with ``seed + i``."""
    threads = threads_for("train", processes=workers)
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: torch's thread pool is set before use
    procs = []
    for i in range(workers):
        seed = None if job.seed is None else job.seed + i
        procs.append(ctx.Process(target=_worker_main, name=f"textcl-tune-{i}",
                                 args=(dataclasses.replace(job, seed=seed, threads=threads), evaluators)))
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()
        raise
    failed = [f"worker {i} (exit code {p.exitcode})" for i, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        raise TextclError(f"{', '.join(failed)} stopped with an error (see above); rerun the same command to "
                          "continue the study")
