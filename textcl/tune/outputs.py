"""What a study leaves in its output folder: ``trials.csv``, ``history.png``, ``importance.png`` and
``best.yaml`` (the best trial's recipe, runnable with ``textcl train``)."""
from __future__ import annotations

import csv
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from textcl._io import atomic_path
from textcl.tune.recipe import write_recipe
from textcl.tune.space import SearchSpace

FIXED_COLUMNS = ["number", "state", "value", "pruned_at", "last_score", "steps", "seconds", "started", "pid",
                 "error", "folder"]


def _last_score(t: FrozenTrial) -> tuple[int | None, float | None]:
    step = t.last_step
    return step, (t.intermediate_values[step] if step is not None else None)


def trial_rows(study: optuna.Study, space: SearchSpace) -> list[dict]:
    """One row per trial (pruned and failed ones too): its state, dev score (complete trials only), the step
    a pruned trial stopped at, its last intermediate score, the steps trained, seconds, why a failed trial failed,
    and its parameters
    (a choice by its name)."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        step, score = _last_score(t)
        ended, started = t.datetime_complete, t.datetime_start
        seconds = (ended - started).total_seconds() if ended and started else None
        row = {"number": t.number, "state": t.state.name.lower(),
               "value": t.value if t.state == TrialState.COMPLETE else None,
               "pruned_at": step if t.state == TrialState.PRUNED else None, "last_score": score,
               "steps": t.user_attrs.get("steps"), "seconds": round(seconds, 1) if seconds is not None else None,
               "started": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
               "pid": t.user_attrs.get("pid"), "error": t.user_attrs.get("error"),
               "folder": t.user_attrs.get("folder")}
        row.update({field: t.params.get(field) for field in space.fields})
        rows.append(row)
    return rows


def write_trials_csv(path: str | Path, rows: list[dict], space: SearchSpace) -> None:
    columns = FIXED_COLUMNS[:-1] + space.fields + FIXED_COLUMNS[-1:]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows({k: ("" if row.get(k) is None else row[k]) for k in columns} for row in rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)


def plot_history(study: optuna.Study, path: str | Path, title: str = "") -> None:
    """Left: each trial's dev score by trial number (pruned trials at their last score) and the best so far;
    right: every trial's score at each evaluation during training, where the pruner compared them."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [(t.number, _last_score(t)[1]) for t in trials if t.state == TrialState.PRUNED and t.last_step is not None]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    if done:
        ax.plot([t.number for t in done], [t.value for t in done], "o", label="complete")
        best, xs, ys = float("-inf"), [], []
        for t in done:
            best = max(best, t.value)
            xs.append(t.number)
            ys.append(best)
        ax.step(xs, ys, where="post", color="k", lw=1, label="best so far")
    if pruned:
        ax.plot(*zip(*pruned), "x", color="tab:red", label="pruned (last score)")
    ax.set(xlabel="trial", ylabel="dev score (mean of the selection sets)", title="optimisation history")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if done or pruned:
        ax.legend()
    best_number = study.best_trial.number if done else None
    for t in trials:
        if not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        style = dict(color="tab:red", ls="--", lw=0.8, alpha=0.7) if t.state == TrialState.PRUNED else dict(lw=1)
        if t.number == best_number:
            style = dict(color="k", lw=2, label=f"best (trial {t.number})")
        bx.plot(steps, [t.intermediate_values[s] for s in steps], marker=".", **style)
    bx.set(xlabel="step", ylabel="dev score during training", title="evaluations (pruned dashed)")
    if best_number is not None and study.best_trial.intermediate_values:
        bx.legend()
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def param_importances(study: optuna.Study) -> tuple[dict[str, float], str | None]:
    """fANOVA importances of the searched fields over the complete trials (seeded, so a rerun draws the same
    figure), or ``({}, why not)``."""
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), None
    except (ValueError, RuntimeError, ImportError) as exc:
        return {}, str(exc)


def plot_importance(study: optuna.Study, path: str | Path, title: str = "") -> dict[str, float]:
    """A bar per searched field: how much of the dev score's variance over the complete trials it explains."""
    plt = _pyplot()
    importances, why = param_importances(study)
    fig, ax = plt.subplots(figsize=(7, 0.5 * max(3, len(importances)) + 1))
    if importances:
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names])
        ax.set(xlabel="importance (fANOVA, share of the dev score's variance)", title=title or "parameter importance")
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, f"no importances: {why}", ha="center", va="center", wrap=True)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return importances


def best_recipe(trial: FrozenTrial, out: str | Path) -> dict:
    """The best trial's recipe, named ``<name>-tuned`` and writing to ``OUT/final/best`` (where the final
    comparison trains it)."""
    recipe = dict(trial.user_attrs["recipe"])
    recipe["name"] = f"{recipe.get('name', 'run')}-tuned"
    recipe["output_dir"] = str(Path(out) / "final" / "best")
    return recipe


def write_best(path: str | Path, recipe: dict, trial: FrozenTrial, study_name: str, space: SearchSpace) -> None:
    header = [f"textcl tune: the best trial of study {study_name!r}: trial {trial.number}, dev score {trial.value:.4f}",
              *(f"  {field}: {trial.params[field]}" for field in space.fields if field in trial.params),
              f"run it: textcl train {path}"]
    write_recipe(path, recipe, header)
