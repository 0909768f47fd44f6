"""``textcl tune``: what a search costs with pruning, and what it finds, on two domains.

- ``stsb``: ``recipes/quickstart.yaml`` over ``recipes/tune-quickstart.yaml`` (temperature, learning rate and four
  augmentation pipelines), ``--trials`` trials (16) on this machine's cores. Reported: the search's wall time
  against one full trial's (the median duration of the trials that ran to their end; target: 16 trials cost at
  most 6 full trials), the same in summed trial time, the states (complete / pruned), the best trial's STS-B dev,
  each pipeline's best dev score, and the final comparison: the tuned and the shipped recipe trained once more
  each and scored on STS-B test with the paired bootstrap difference and its 95% CI (target: tuned >= shipped).
- ``wiki``: the same space on another domain: Wikipedia passages (each packaged lead after its first sentence)
  as the unlabeled training text, selected on title -> passage retrieval (nDCG@10) over 250 held-out articles
  among 750 distractor passages; then the tuned and the original recipe trained once more each and scored on
  250 other held-out articles (among 750 other distractors), with a paired bootstrap over the queries. Does the
  best augmentation differ from STS-B's?

Each run writes into a new folder under ``--out`` (default ``benchmarks/.cache/bench_tune/<time>``): one study
folder per domain (``textcl tune``'s outputs: trials.csv, history.png, importance.png, best.yaml, ...), and
``results.json``; the last line printed is ``JSON {...}``.

    python benchmarks/bench_tune.py [--domains stsb wiki] [--trials 16] [--workers 1] [--pruner halving]
        [--seed 0] [--out DIR] [--set KEY=VALUE ...]
    python benchmarks/bench_tune.py --smoke      # 2 trials of 4 steps on small slices: checks the script only

The recorded run (RESULTS.md, "Tuning") adds ``--set eval.every=10``: with the quickstart's evaluation every 20 of
60 steps, successive halving's first rung already costs a third of a trial's training.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
SPACE = ROOT / "recipes" / "tune-quickstart.yaml"
SMOKE_SETS = {"train.max_steps": 4, "eval.every": 2, "train.batch_size": 16, "data.max_examples": 256}


def _write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def sts_slices(folder: Path, n: int) -> dict[str, str]:
    """The first ``n`` pairs of STS-B dev and test as TSV files (for --smoke)."""
    from textcl.data.sts import load_sts

    out = {}
    for name in ("stsb-dev", "stsb-test"):
        d = load_sts(name)
        path = folder / f"{name}-{n}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in zip(d.sentences1[:n], d.sentences2[:n],
                                                                        d.scores[:n])), encoding="utf-8")
        out[name] = str(path)
    return out


def wiki_domain(folder: Path, heldout: int, distractors: int) -> tuple[Path, Path, Path]:
    """(training passages .txt, dev BEIR folder, test BEIR folder). The held-out articles are the last
    ``2 * heldout`` of shapes' shuffled articles; dev takes the first half, test the second, each among its own
    ``distractors`` training passages."""
    articles = shapes._articles()
    train, held = articles[:-2 * heldout], articles[-2 * heldout:]
    passages = folder / "wiki-passages.txt"
    passages.parent.mkdir(parents=True, exist_ok=True)
    passages.write_text("".join(rest + "\n" for _, _, rest in train), encoding="utf-8")
    splits = []
    for i, name in enumerate(("wiki-dev", "wiki-test")):
        queries = held[i * heldout:(i + 1) * heldout]
        others = train[i * distractors:(i + 1) * distractors]
        corpus = ([{"_id": f"d{j}", "title": "", "text": rest} for j, (_, _, rest) in enumerate(queries)]
                  + [{"_id": f"x{j}", "title": "", "text": rest} for j, (_, _, rest) in enumerate(others)])
        splits.append(shapes._write_beir(folder / name, corpus, [t for t, _, _ in queries],
                                         [(j, f"d{j}") for j in range(len(queries))]))
    return passages, splits[0], splits[1]


def pipelines(rows: list[dict]) -> dict:
    """Per augmentation pipeline: trials, how many completed, and the best complete trial's dev score."""
    out: dict = {}
    for r in rows:
        p = out.setdefault(r["data.augment"], {"trials": 0, "complete": 0, "best_dev": None})
        p["trials"] += 1
        if r["state"] == "complete":
            p["complete"] += 1
            p["best_dev"] = max(p["best_dev"] or float("-inf"), r["value"])
    return out


def search(recipe: Path, out: Path, args, overrides: list[str]) -> dict:
    """Run the study (no comparison) and report its cost against one full trial."""
    from textcl.tune import tune

    t0 = time.perf_counter()
    result = tune(recipe, SPACE, trials=args.trials, out=out, overrides=overrides, study=out.name,
                  workers=args.workers, pruner=args.pruner, seed=args.seed, compare=False)
    wall = time.perf_counter() - t0
    rows = result.trials
    full = [r["seconds"] for r in rows if r["state"] == "complete"]
    full_s = statistics.median(full) if full else None
    summed = sum(r["seconds"] or 0 for r in rows)
    states = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail")}
    report = {"trials": len(rows), "states": states,
              "search_wall_s": round(wall, 1), "summed_trial_s": round(summed, 1),
              "full_trial_s": round(full_s, 1) if full_s else None,
              "wall_in_full_trials": round(wall / full_s, 2) if full_s else None,
              "summed_in_full_trials": round(summed / full_s, 2) if full_s else None,
              "best": result.best, "pipelines": pipelines(rows), "importances": result.importances,
              "folder": str(out)}
    print(f"{out.name}: {len(rows)} trials in {wall:.0f} s = {report['wall_in_full_trials']} full trials "
          f"({full_s and round(full_s)} s each); {report['states']}; best {result.best and result.best['params']} "
          f"dev {result.best and round(result.best['value'], 2)}", flush=True)
    return report


def stsb(args, out: Path) -> dict:
    from textcl.tune import tune

    overrides = list(args.overrides)
    if args.smoke:
        sets = sts_slices(out / "data", 200)
        overrides += [f"{k}={v}" for k, v in SMOKE_SETS.items()]
        overrides += [f"eval.data=[{sets['stsb-dev']}]", f"eval.test=[{sets['stsb-test']}]"]
    folder = out / "stsb"
    report = search(QUICKSTART, folder, args, overrides)
    t0 = time.perf_counter()  # the same study again: nothing left to run, so it only writes outputs and compares
    result = tune(QUICKSTART, SPACE, trials=args.trials, out=folder, overrides=overrides, study=folder.name,
                  pruner=args.pruner, compare=True)
    report["comparison_s"] = round(time.perf_counter() - t0, 1)
    c = result.comparison or {}
    if "test" in c:
        report["test"] = {name: {k: m[k] for k in ("spearman_a", "spearman_b", "diff", "ci95", "p_value", "n")}
                          for name, m in c["test"]["sets"].items()}
        report["dev_retrained"] = {"tuned": c["best"]["dev"], "shipped": c["original"]["dev"]}
        for name, m in report["test"].items():
            print(f"stsb: {name} tuned {m['spearman_a']:.2f} vs shipped {m['spearman_b']:.2f} ({m['diff']:+.2f}, "
                  f"95% CI {m['ci95'][0]:+.2f} to {m['ci95'][1]:+.2f}, p = {m['p_value']:.3f})", flush=True)
    return report


def wiki(args, out: Path) -> dict:
    from textcl.config import load_config
    from textcl.eval.retrieval import evaluate_retrieval
    from textcl.eval.stats import paired_mean_bootstrap
    from textcl.models import Encoder
    from textcl.train import train

    heldout, distractors = (20, 60) if args.smoke else (250, 750)
    passages, dev, test = wiki_domain(out / "data", heldout, distractors)
    recipe = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    recipe["name"] = "wiki-unsup-simcse-minilm"
    recipe["data"]["path"] = str(passages)
    recipe["eval"] = {**recipe["eval"], "data": [], "retrieval": [str(dev)], "test": []}
    recipe_path = _write_yaml(out / "wiki-recipe.yaml", recipe)
    overrides = list(args.overrides) + ([f"{k}={v}" for k, v in SMOKE_SETS.items()] if args.smoke else [])
    folder = out / "wiki"
    report = search(recipe_path, folder, args, overrides)
    if not report["best"]:
        return report
    t0 = time.perf_counter()
    tuned = load_config(folder / "best.yaml")
    shipped = load_config(recipe_path, overrides + [f"output_dir={folder / 'final' / 'original'}"])
    per_query = {}
    for label, config in (("tuned", tuned), ("original", shipped)):
        run = train(config, output_dir=config.output_dir)
        per_query[label] = evaluate_retrieval(Encoder.load(run.model_dir), test, per_query=True)["per_query"]
    qids = sorted(per_query["original"])
    a = [per_query["tuned"][q]["ndcg@10"] for q in qids]
    b = [per_query["original"][q]["ndcg@10"] for q in qids]
    diff = paired_mean_bootstrap(a, b)
    report["comparison_s"] = round(time.perf_counter() - t0, 1)
    report["test"] = {"ndcg@10 tuned": round(100 * sum(a) / len(a), 2),
                      "ndcg@10 original": round(100 * sum(b) / len(b), 2), "diff": round(100 * diff["diff"], 2),
                      "ci95": [round(100 * diff["low"], 2), round(100 * diff["high"], 2)],
                      "p_value": round(diff["p_value"], 4), "queries": len(qids)}
    t = report["test"]
    print(f"wiki: test nDCG@10 tuned {t['ndcg@10 tuned']:.2f} vs original {t['ndcg@10 original']:.2f} "
          f"({t['diff']:+.2f}, 95% CI {t['ci95'][0]:+.2f} to {t['ci95'][1]:+.2f}, p = {t['p_value']:.3f})", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", nargs="+", choices=("stsb", "wiki"), default=["stsb", "wiki"])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pruner", choices=("halving", "median", "none"), default="halving")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    parser.add_argument("--out", type=Path, help="default: benchmarks/.cache/bench_tune/<time>")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="fixed for every trial of every domain, as textcl tune --set")
    parser.add_argument("--smoke", action="store_true", help="2 trials of 4 steps on small slices (checks the script)")
    args = parser.parse_args()
    if args.smoke:
        args.trials = min(args.trials, 2)
    out = args.out or Path(__file__).resolve().parent / ".cache" / "bench_tune" / time.strftime("%Y%m%d-%H%M%S")
    from textcl.versions import environment

    results = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "versions": environment()}
    for domain in args.domains:
        results[domain] = {"stsb": stsb, "wiki": wiki}[domain](args, out)
    if "stsb" in results and "wiki" in results:
        best = {d: (results[d]["best"] or {}).get("params", {}).get("data.augment") for d in ("stsb", "wiki")}
        results["best_pipeline"] = best
        print(f"best pipeline: STS-B {best['stsb']}, Wikipedia retrieval {best['wiki']}"
              + (" (the same)" if best["stsb"] == best["wiki"] else " (they differ)"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print("JSON " + json.dumps(results, default=str))


if __name__ == "__main__":
    main()
