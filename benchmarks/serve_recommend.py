"""The sequence recommender served: does ``textcl serve``'s ``/recommend`` rank as the training run's evaluation did,
and how long does an answer take?

Trains ``recipes/recommend-ml100k-sequence.yaml`` (unless the run folder already holds its metrics), builds the
index the run's CLI hint names (``textcl index build --input OUT/items.jsonl --model OUT/model``), serves it
in-process (the FastAPI app over ASGI, no network), and asks ``/recommend`` for every ml100k-test and ml100k-cold
user's top 10 given the history evaluation ranks from (the history is left out, and so are the user's earlier
held-out items, as evaluation leaves every earlier item out). Prints NDCG@10, Recall@10 and MRR@10 from the served answers beside the run's
``metrics.json``, and the median and 95th-percentile time of an answer with and without ``because``.

    .venv/bin/python benchmarks/serve_recommend.py [--run DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from textcl.cli import main as cli  # noqa: E402


def served_metrics(client, s, because: bool) -> tuple[dict, list[float]]:
    """Metrics at 10 of the served top 10 for each user of the ranking set ``s``, and each answer's seconds."""
    ndcg, hit, rr, took = [], [], [], []
    for history, target, seen in zip(s.history_items, s.targets_ids, s.seen_ids):
        # evaluation's history holds no held-out (cold) item, but its ranking leaves out every item the user
        # picked before the target, cold ones too: ask for as many more and leave those out here
        extra = seen - set(history)
        t0 = time.perf_counter()
        r = client.post("/recommend", json={"history": list(history), "k": 10 + len(extra), "because": because,
                                            "fields": ["id", "score"]})
        took.append(time.perf_counter() - t0)
        r.raise_for_status()
        ids = [h["id"] for h in r.json()["recommendations"] if h["id"] not in extra][:10]
        pos = ids.index(target) if target in ids else None
        hit.append(pos is not None)
        ndcg.append(0.0 if pos is None else 1 / math.log2(pos + 2))
        rr.append(0.0 if pos is None else 1 / (pos + 1))
    return {"ndcg@10": float(np.mean(ndcg)), "recall@10": float(np.mean(hit)), "mrr@10": float(np.mean(rr)),
            "n": len(hit)}, took


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default=str(ROOT / "benchmarks" / ".cache" / "serve-recommend" / "run"))
    args = p.parse_args()
    run = Path(args.run)
    recipe = ROOT / "recipes" / "recommend-ml100k-sequence.yaml"
    if not (run / "metrics.json").exists():
        assert cli(["train", str(recipe), "--out", str(run)]) == 0
    index = run.parent / "index"
    if not (index / "manifest.json").exists():
        assert cli(["index", "build", "--input", str(run / "items.jsonl"), "--model", str(run / "model"),
                    "--out", str(index)]) == 0
    from fastapi.testclient import TestClient

    from textcl.config import load_config
    from textcl.recommend.task import load_task
    from textcl.serve import create_app

    task = load_task(load_config(str(recipe)).data)
    offline = json.loads((run / "metrics.json").read_text())["after"]
    rows = []
    with TestClient(create_app(index), base_url="http://localhost") as client:
        for stage in ("test", "cold"):
            s = task.sets[stage]
            s.targets_ids = [task.item_ids[t] for t in s.targets.tolist()]
            s.seen_ids = [{task.item_ids[i] for i in seen} for seen in s.seen]
            got, took = served_metrics(client, s, because=False)
            _, took_because = served_metrics(client, s, because=True)
            want = offline[f"{task.name}-{stage}"]
            rows.append((stage, want, got, took, took_because))
    print(f"{'set':<6} {'users':>5}  {'NDCG@10 run / served':>22}  {'Recall@10 run / served':>24}  "
          f"{'MRR@10 run / served':>21}  {'ms median / p95':>16}  {'with because':>14}")
    for stage, want, got, took, tb in rows:
        ms = np.percentile(np.array(took) * 1000, [50, 95])
        mb = np.percentile(np.array(tb) * 1000, [50, 95])
        print(f"{stage:<6} {got['n']:>5}  {want['ndcg@10']:.4f} / {got['ndcg@10']:.4f}     "
              f"{want['recall@10']:.4f} / {got['recall@10']:.4f}       {want['mrr@10']:.4f} / {got['mrr@10']:.4f}    "
              f"{ms[0]:6.1f} / {ms[1]:6.1f}  {mb[0]:5.1f} / {mb[1]:5.1f}")
    same = all(abs(want[k] - got[k]) < 1e-9 for _, want, got, _, _ in rows for k in ("ndcg@10", "recall@10", "mrr@10"))
    print("served = evaluated:", same)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
