"""``textcl tune RECIPE --space SPACE.yaml --trials N [--out DIR] [--set k=v ...] [--study NAME] [--storage URL]
[--timeout S] [--workers K]``."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="search a recipe's hyperparameters and augmentations on its dev sets (Optuna)")
    p.add_argument("recipe", help="a recipe YAML file (see recipes/)")
    p.add_argument("--space", required=True, help="the search space: YAML mapping recipe fields to distributions "
                   "(e.g. recipes/tune-quickstart.yaml)")
    p.add_argument("--trials", type=int, required=True, metavar="N",
                   help="the number of trials (complete or pruned) the study should hold; a rerun with a larger N "
                        "adds trials")
    p.add_argument("--out", help="output folder (default runs/tune-STUDY)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix one field for every trial, e.g. --set train.max_steps=200 (repeatable; VALUE is YAML)")
    p.add_argument("--study", help="the study's name (default: the recipe's file name); a rerun continues it")
    p.add_argument("--storage", help="an Optuna storage URL shared by every worker: sqlite:///PATH, postgresql://..., "
                   "mysql://..., or journal:PATH (default sqlite:///OUT/study.sqlite3)")
    p.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds")
    p.add_argument("--workers", type=int, default=1, metavar="K",
                   help="processes on this machine sharing the study, the cores split between them (default 1)")
    p.add_argument("--pruner", choices=["halving", "median", "none"], default="halving",
                   help="successive halving (default), median, or none")
    p.add_argument("--seed", type=int, help="the sampler's seed (worker i uses SEED + i)")
    p.add_argument("--no-compare", dest="compare", action="store_false",
                   help="skip the final comparison (retraining the best and the original recipe for the test sets)")
    p.add_argument("--keep-models", action="store_true", help="keep every trial's model folders")
    p.add_argument("--check", action="store_true", help="validate the recipe and the space, then exit")
    p.set_defaults(func=run)


def _positive(value: int | float | None, flag: str) -> None:
    from textcl.errors import ConfigError

    if value is not None and value <= 0:
        raise ConfigError(flag, f"expected a positive number, got {value}")


def format_trials(rows: list[dict], fields: list[str]) -> str:
    head = f"{'trial':>5}  {'state':<9}{'dev':>9}{'step':>7}   " + "  ".join(fields)
    lines = [head, "-" * len(head)]
    for r in rows:
        dev = f"{r['value']:.2f}" if r["value"] is not None else "-"
        step = r["pruned_at"] if r["pruned_at"] is not None else (r["steps"] if r["steps"] is not None else "-")
        params = "  ".join(f"{r[f]:.3g}" if isinstance(r[f], float) else str(r[f]) for f in fields)
        lines.append(f"{r['number']:>5}  {r['state']:<9}{dev:>9}{step!s:>7}   {params}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    _positive(args.trials, "--trials")
    _positive(args.workers, "--workers")
    _positive(args.timeout, "--timeout")
    try:
        import optuna  # noqa: F401
    except ModuleNotFoundError:
        from textcl.errors import TextclError

        raise TextclError("textcl tune needs Optuna: pip install 'textcl[tune]' (make install includes it)") from None
    from textcl.tune import load_space
    from textcl.tune.recipe import BaseRecipe
    from textcl.tune.tuner import check_dev_sets

    base = BaseRecipe.load(args.recipe, args.overrides)
    space = load_space(args.space)
    space.check(base.config, fixed=base.fixed_fields())
    check_dev_sets(base.config({}), source=args.recipe)
    if args.check:
        print(f"{args.recipe} with {args.space}: valid; searching " + "; ".join(
            f"{p.field} ({p.describe()})" for p in space.params))
        return 0
    from pathlib import Path

    from textcl._io import check_writable
    from textcl.eval.sts import format_sts_table
    from textcl.tune import tune

    out = args.out or str(Path("runs") / f"tune-{args.study or Path(args.recipe).stem}")
    check_writable(out, "--out", folder=True)

    result = tune(args.recipe, space, trials=args.trials, out=out, overrides=args.overrides, study=args.study,
                  storage=args.storage, timeout=args.timeout, workers=args.workers, pruner=args.pruner,
                  compare=args.compare, keep_models=args.keep_models, seed=args.seed)
    print(f"\nstudy {result.study} ({result.storage}): {len(result.trials)} trials")
    print(format_trials(result.trials, space.fields))
    if result.best is None:
        print("\nno trial completed: no best.yaml")
        return 0
    print(f"\nbest: trial {result.best['number']}, dev score {result.best['value']:.2f} -> {result.best['recipe']}")
    if result.importances:
        print("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in result.importances.items()))
    if result.comparison and "test" in result.comparison:
        c = result.comparison
        print(f"\nfinal comparison on the test sets (dev: best {c['best']['dev']:.2f}, original "
              f"{c['original']['dev']:.2f}):")
        print(format_sts_table(c["test"]))
    elif result.comparison:
        print(f"\nfinal comparison skipped: {result.comparison['skipped']}")
    print(f"\noutputs in {result.out}: best.yaml, trials.csv, history.png, importance.png, summary.json"
          + (", comparison.json" if result.comparison else ""))
    return 0
