"""Next-item recommendation on MovieLens-100k: textcl's text towers (recipes/recommend-ml100k.yaml) against
popularity and ID-based recommenders, on the identical split, ranked by the identical code.

Protocol (textcl.recommend): leave-one-out in time order per user (last interaction test, the one before it
validation, the rest training); 10% of the films (seed 0) are held out of training with all their
interactions, and the users whose test film is one of them form the cold stage (``ml100k-cold``); the warm test
stage holds the others. Every film of the catalogue (1,682) is ranked for every user; the user's own films
(the history) are left out of the ranking, the target never; ties count against the target. NDCG@10,
Recall@10 (= Hit@10: one target a user) and MRR@10, with 95% bootstrap CIs over users (1,000 resamples).
The validation stage selects (textcl's best step; RecBole's early stopping), the test stages are reported.

Arms:

- ``popularity``: every user gets the films ordered by their number of training interactions.
- ``textcl``: the recipe (MiniLM as both towers, in-batch softmax with logQ correction and accidental hits
  masked); ``textcl-no-logq`` and ``textcl-no-mask`` switch one correction off; ``textcl-catalogue`` trains
  with every training film as a negative too (``negatives: catalogue``: a second softmax of each user over the
  cached vectors of every film, re-embedded every 50 steps); ``textcl-catalogue-lr1e-4`` does so at twice the learning rate.
- ``textcl-sequence`` (and ``-seed43``, ``-seed44``): recipes/recommend-ml100k-sequence.yaml, a GRU user tower over
  the frozen MiniLM vectors of the user's last 50 films plus a learned vector per training film, a softmax over
  every training film; ``textcl-sequence-text-only`` without the learned vectors (films are their text alone).
- ``textcl-mean-user``: the ``textcl`` run's model with the other user tower: the mean of the embeddings of the
  same recent films instead of the encoded history text (scored after training, no run of its own).
- ``bpr``, ``sasrec``, ``gru4rec``: RecBole 1.2.1 with its default configuration for the model, trained on
  the same training interactions and ranked by the same code (benchmarks/bench_recommend_peers.py; RecBole
  runs in its own virtual environment, ``benchmarks/.cache/venvs/recbole``, never a textcl dependency).
  GRU4Rec is there to check the protocol against RecBole's published ml-100k figures.

Targets (issue 22): warm test NDCG@10 at least the best ID-based peer's; cold Recall@10 >= 0.03; training
<= 15 minutes.

    python benchmarks/bench_recommend.py --arms popularity textcl bpr sasrec   # each arm: .cache/recommend/ARM.json
    python benchmarks/bench_recommend.py --report
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "recommend-ml100k.yaml"
CACHE = ROOT / "benchmarks" / ".cache" / "recommend"
TEXTCL_ARMS = {
    "textcl": {},
    "textcl-no-logq": {"logq_correction": False},
    "textcl-no-mask": {"mask_hits": False},
    # beside the in-batch softmax, each user against every training item's cached vector (re-embedded every 50 steps)
    "textcl-catalogue": {"negatives": "catalogue"},
    "textcl-catalogue-lr1e-4": {"negatives": "catalogue", "optim.lr": 1e-4},
}
SEQUENCE_RECIPE = ROOT / "recipes" / "recommend-ml100k-sequence.yaml"
#: recipes/recommend-ml100k-sequence.yaml: a GRU user tower over frozen MiniLM film vectors plus id embeddings;
#: it trains in minutes, so it runs under three seeds
SEQUENCE_ARMS = {
    "textcl-sequence": {},
    "textcl-sequence-seed43": {"train.seed": 43},
    "textcl-sequence-seed44": {"train.seed": 44},
    "textcl-sequence-text-only": {"data.interactions.sequence.id_embeddings": False},
}
TEXTCL_ARMS.update(SEQUENCE_ARMS)
PEERS = {"bpr": "BPR", "sasrec": "SASRec", "gru4rec": "GRU4Rec"}
#: the ``textcl`` run's saved model with another user tower: the mean of the history items' embeddings
POSTHOC = {"textcl-mean-user": "mean"}
ARMS = ["popularity", *TEXTCL_ARMS, *POSTHOC, *PEERS]
STAGES = ("valid", "test", "cold")
METRICS = ("ndcg@10", "recall@10", "mrr@10")
COLD_TARGET, TRAIN_LIMIT_S = 0.03, 900.0


def _config(overrides: dict, out: Path | None = None, recipe: Path = RECIPE):
    from textcl.config import config_from_dict, load_config

    from textcl.config import set_field

    d = load_config(recipe).to_dict()
    for key, value in overrides.items():  # a dotted key is a recipe field; a plain one, data.interactions'
        set_field(d, key if "." in key else f"data.interactions.{key}", value)
    d["train"].update({"report_to": "none", "plot": False})
    if out is not None:
        d["output_dir"] = str(out)
    return config_from_dict(d)


def _stage(m: dict) -> dict:
    """The figures of one stage, from textcl's metrics.json entry or from ``ranking_metrics``."""
    ci = m.get("ci95_by_metric") or m.get("ci95") or {}
    return {"n": m.get("n", m.get("n_users")), **{k: m[k] for k in METRICS},
            "ci95": {k: ci[k] for k in METRICS if isinstance(ci, dict) and k in ci}}


def run_popularity() -> dict:
    import torch

    from textcl.recommend.metrics import rank_of_target, ranking_metrics
    from textcl.recommend.popularity import popularity_scores
    from textcl.recommend.task import load_task

    task = load_task(_config({}).data)
    scores = popularity_scores(task.counts, task.item_ids)
    stages = {}
    for stage, s in task.sets.items():
        ranks = rank_of_target(scores[None, :].expand(len(s.histories), -1), torch.from_numpy(s.targets),
                               [torch.as_tensor(x, dtype=torch.long) for x in s.seen])
        stages[stage] = _stage(ranking_metrics(ranks, k=10, n_bootstrap=1000))
    return {"arm": "popularity", "train_s": 0.0, "stages": stages}


def run_textcl(arm: str) -> dict:
    from textcl.train import train

    out = CACHE / f"run-{arm}"
    config = _config(TEXTCL_ARMS[arm], out, SEQUENCE_RECIPE if arm in SEQUENCE_ARMS else RECIPE)
    t0 = time.perf_counter()
    m = train(config, output_dir=out).metrics
    name = config.data.interactions.name or "ml100k"
    return {"arm": arm, "overrides": TEXTCL_ARMS[arm], "wall_s": round(time.perf_counter() - t0, 1),
            "train_s": m["time"]["train_s"], "eval_s": m["time"].get("eval_s"), "steps": m["steps"],
            "best_step": m["best_step"], "precision": m.get("eval_precision"),
            "stages": {s: _stage(m["after"][f"{name}-{s}"]) for s in STAGES if f"{name}-{s}" in m["after"]},
            "before": {s: _stage(m["before"][f"{name}-{s}"]) for s in STAGES if f"{name}-{s}" in m["before"]}}


def run_posthoc(arm: str) -> dict:
    """The ``textcl`` arm's saved model, its users embedded another way, in the precision the run evaluated in."""
    from textcl.models import Encoder
    from textcl.recommend.task import load_task

    ran = json.loads((CACHE / "textcl.json").read_text())
    enc = Encoder.load(CACHE / "run-textcl" / "model")
    enc.encode_bf16 = ran.get("precision") == "bf16"
    task = load_task(_config({}).data)
    return {"arm": arm, "train_s": ran["train_s"], "of": "textcl",
            "stages": {s: _stage(task.evaluate(enc, s, n_bootstrap=1000, batch_size=128, user=POSTHOC[arm]))
                       for s in task.sets}}


def run_peer_arm(arm: str, epochs: int | None = None) -> dict:
    """A RecBole model with its defaults; ``epochs`` caps RecBole's 300 (early stopping stays on)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_recommend_peers import run_peer

    from textcl.recommend.task import load_task

    r = run_peer(PEERS[arm], load_task(_config({}).data), epochs=epochs, seed=42)
    return {"arm": arm, "train_s": r["train_s"], "epochs_run": r.get("epochs_run"), "epochs_cap": epochs,
            "best_epoch": r.get("best_epoch"), "recbole": r.get("recbole"),
            "stages": {s: _stage(m) for s, m in r["stages"].items()}}


def run_arm(arm: str, peer_epochs: int | None = None) -> dict:
    record = (run_popularity() if arm == "popularity" else run_textcl(arm) if arm in TEXTCL_ARMS
              else run_posthoc(arm) if arm in POSTHOC else run_peer_arm(arm, peer_epochs))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f".{arm}.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, CACHE / f"{arm}.json")
    return record


def _cell(stage: dict, metric: str) -> str:
    ci = stage.get("ci95", {}).get(metric)
    return f"{stage[metric]:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{stage[metric]:.4f}"


def report() -> str:
    records = {a: json.loads((CACHE / f"{a}.json").read_text()) for a in ARMS if (CACHE / f"{a}.json").exists()}
    if not records:
        return "no arm has run yet"
    lines = ["| arm | test NDCG@10 | test Recall@10 | test MRR@10 | cold NDCG@10 | cold Recall@10 | valid NDCG@10 "
             "| training |", "|---|---|---|---|---|---|---|---|"]
    for arm, r in records.items():
        s = r["stages"]
        cold = s.get("cold")
        label = arm
        if r.get("epochs_run") is not None:
            label += f" ({r['epochs_run']} epochs, best {r.get('best_epoch')}"
            label += f"; capped at {r['epochs_cap']})" if r.get("epochs_cap") else ")"
        lines.append(f"| {label} | {_cell(s['test'], 'ndcg@10')} | {_cell(s['test'], 'recall@10')} | "
                     f"{_cell(s['test'], 'mrr@10')} | {_cell(cold, 'ndcg@10') if cold else '–'} | "
                     f"{_cell(cold, 'recall@10') if cold else '–'} | {s['valid']['ndcg@10']:.4f} | "
                     f"{r['train_s']:.0f} s |")
    n = {st: records[next(iter(records))]["stages"][st]["n"] for st in STAGES
         if st in records[next(iter(records))]["stages"]}
    lines.append(f"\nusers: " + ", ".join(f"{st} {k}" for st, k in n.items()))
    peers = {a: r for a, r in records.items() if a in PEERS}
    if "textcl" in records and peers:
        best = max(peers, key=lambda a: peers[a]["stages"]["test"]["ndcg@10"])
        ours, theirs = records["textcl"]["stages"]["test"]["ndcg@10"], peers[best]["stages"]["test"]["ndcg@10"]
        cold = records["textcl"]["stages"].get("cold", {}).get("recall@10", 0.0)
        lines.append(f"textcl / best ID-based peer ({best}) on warm test NDCG@10: {ours / theirs:.2f}x; "
                     f"targets: NDCG {'met' if ours >= theirs else 'not met'}, cold Recall@10 {cold:.4f} "
                     f"({'met' if cold >= COLD_TARGET else 'not met'}), training {records['textcl']['train_s']:.0f} s "
                     f"({'met' if records['textcl']['train_s'] <= TRAIN_LIMIT_S else 'not met'})")
    seeds = [records[a] for a in ("textcl-sequence", "textcl-sequence-seed43", "textcl-sequence-seed44")
             if a in records]
    if seeds and peers:
        import statistics

        best = max(peers, key=lambda a: peers[a]["stages"]["test"]["ndcg@10"])
        theirs = peers[best]["stages"]["test"]["ndcg@10"]
        ndcg = [r["stages"]["test"]["ndcg@10"] for r in seeds]
        cold = [r["stages"]["cold"]["recall@10"] for r in seeds if "cold" in r["stages"]]
        longest = max(r["wall_s"] for r in seeds)
        lines.append(f"textcl sequence tower over {len(seeds)} seeds: warm test NDCG@10 median "
                     f"{statistics.median(ndcg):.4f} (each: {', '.join(f'{x:.4f}' for x in ndcg)}) / {best} "
                     f"{theirs:.4f} = {statistics.median(ndcg) / theirs:.2f}x (lowest seed "
                     f"{min(ndcg) / theirs:.2f}x); cold Recall@10 median {statistics.median(cold):.4f} "
                     f"({'met' if min(cold) >= COLD_TARGET else 'not met'} at every seed); longest run "
                     f"{longest:.0f} s end to end")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=[])
    parser.add_argument("--report", action="store_true", help="print the table of the arms run so far")
    parser.add_argument("--peer-epochs", type=int, default=None,
                        help="cap the RecBole models' epochs (default: RecBole's 300, with its early stopping)")
    args = parser.parse_args()
    for arm in args.arms:  # each arm in a fresh process
        if len(args.arms) > 1:
            cap = [] if args.peer_epochs is None else ["--peer-epochs", str(args.peer_epochs)]
            subprocess.run([sys.executable, __file__, "--arms", arm, *cap], check=True)
        else:
            print(json.dumps(run_arm(arm, args.peer_epochs), indent=1))
    if args.report or not args.arms:
        print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
