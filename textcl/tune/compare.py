"""The final comparison: the best recipe and the original, each trained once more and scored on the recipe's
test sets with the paired bootstrap difference and its CI (the ``textcl eval sts --compare`` machinery).

The study chose on the dev sets; this is the first time the test sets see either recipe, so the difference
is an estimate free of the selection (the best trial's own dev score is not: it won a contest on those sets).
"""
from __future__ import annotations

from pathlib import Path

from textcl._io import atomic_write_json, read_json
from textcl.config import config_from_dict
from textcl.eval.stats import N_BOOTSTRAP
from textcl.eval.sts import compare_sts
from textcl.models import Encoder
from textcl.train import train
from textcl.tune.trial import dev_score

COMPARISON_FILE = "comparison.json"


def _already(path: Path, best: dict, original: dict) -> dict | None:
    """The comparison in ``path`` when it was made for these same two recipes."""
    if not path.is_file():
        return None
    saved = read_json(path)
    same = saved.get("best", {}).get("recipe") == best and saved.get("original", {}).get("recipe") == original
    return saved if same else None


def final_comparison(best: dict, original: dict, out: str | Path, *, source: str | None = None) -> dict:
    """Train ``best`` (into its ``output_dir``) and ``original`` (into ``OUT/final/original``), compare them
    on the original's ``eval.test`` sets (A = best, B = original) and write ``OUT/comparison.json``.
    A comparison already made for the same two recipes is read back instead of trained again."""
    out = Path(out)
    original = {**original, "output_dir": str(out / "final" / "original")}
    path = out / COMPARISON_FILE
    saved = _already(path, best, original)
    if saved is not None:
        return saved
    best_config, original_config = config_from_dict(best, source=source), config_from_dict(original, source=source)
    test_sets = original_config.eval.test
    if not test_sets:
        result = {"skipped": "the recipe lists no eval.test STS sets (the comparison scores STS test sets; an "
                             "interaction log's test ranking is reported in each run's metrics.json, not compared)"}
        atomic_write_json(path, result)
        return result
    runs = {}
    for label, config in (("best", best_config), ("original", original_config)):
        print(f"textcl tune: final comparison: training the {label} recipe into {config.output_dir}", flush=True)
        runs[label] = train(config, output_dir=config.output_dir)
    a, b = (Encoder.load(runs[label].model_dir) for label in ("best", "original"))
    a.name, b.name = f"best ({best_config.name})", f"original ({original_config.name})"
    report = compare_sts(a, b, test_sets, n_bootstrap=N_BOOTSTRAP, seed=0)
    result = {"best": {"recipe": best, "model": str(runs["best"].model_dir),
                       "dev": dev_score(runs["best"].metrics)},
              "original": {"recipe": original, "model": str(runs["original"].model_dir),
                           "dev": dev_score(runs["original"].metrics)},
              "test": report}
    atomic_write_json(path, result)
    return result
