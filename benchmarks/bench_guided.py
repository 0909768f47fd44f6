"""Guided false-negative filtering on noisy pairs: the same pairs file, with injected duplicates and
near-duplicates, trained with and without ``loss.guide`` (GISTEmbed), scored on held-out retrieval.

The pairs: ``--pairs`` (title -> rest of the lead) pairs from the packaged Wikipedia (``shapes.pairs``), then
for a seeded ``--near`` fraction of them a near-duplicate row (the title in lower case, the passage with two
adjacent words swapped: same length, different text) and for a ``--dups`` fraction an exact copy. Length
grouping puts equal-length rows side by side, so most near-duplicates share a batch with their original: a
near-duplicate passage is then an in-batch "negative" of the original title, a false negative that exact-text
masking (on in both runs) cannot see. The guide is the starting model itself (``guide.model: self``).

Both runs: the packaged all-MiniLM-L6-v2, one epoch, batch 32, lr 2e-5, 10% warm-up, max length 128, InfoNCE
at temperature 0.05, fp32, seed 42. Scores: nDCG@10 x100 on the held-out BEIR folder (``shapes.heldout``:
500 unseen titles, 2,000 passages) and STS-B test, by textcl's evaluators.

    python benchmarks/bench_guided.py [--pairs 2048] [--near 0.25] [--dups 0.05]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402
from pairs_run import train_pairs  # noqa: E402


def noisy_pairs(n: int, near: float, dups: float) -> Path:
    path = shapes.CACHE / f"noisy-pairs-{n}-{near}-{dups}.jsonl"
    if path.exists():
        return path
    rows = [json.loads(line) for line in shapes.pairs(n).open(encoding="utf-8")]
    rng = np.random.default_rng(7)
    out = list(rows)
    for i in rng.choice(len(rows), int(near * len(rows)), replace=False):
        words = rows[i]["positive"].split(" ")
        j = int(rng.integers(0, max(1, len(words) - 1)))
        words[j:j + 2] = words[j:j + 2][::-1]
        out.append({"anchor": rows[i]["anchor"].lower(), "positive": " ".join(words)})
    out += [dict(rows[i]) for i in rng.choice(len(rows), int(dups * len(rows)), replace=False)]
    return shapes._write_jsonl(path, out)


def train_run(pairs: Path, out: Path, guided: bool) -> tuple[Path, float]:
    result = train_pairs(pairs, out, {"guide": {"model": "self", "margin": 0.0}} if guided else {})
    return result.model_dir, result.metrics["time"]["train_s"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--near", type=float, default=0.25)
    parser.add_argument("--dups", type=float, default=0.05)
    args = parser.parse_args()
    from textcl.eval.retrieval import evaluate_retrieval
    from textcl.eval.sts import evaluate_sts
    from textcl.models import Encoder

    pairs, beir = noisy_pairs(args.pairs, args.near, args.dups), shapes.heldout()
    n_rows = sum(1 for _ in pairs.open(encoding="utf-8"))
    print(f"{n_rows} rows: {args.pairs} pairs + {int(args.near * args.pairs)} near-duplicates + "
          f"{int(args.dups * args.pairs)} duplicates ({100 * (n_rows - args.pairs) / n_rows:.0f}% injected)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, guided in (("unguided", False), ("guided", True)):
            model_dir, train_s = train_run(pairs, Path(tmp) / name, guided)
            encoder = Encoder.load(model_dir, device="cpu")
            results[name] = {"ndcg@10": round(100 * evaluate_retrieval(encoder, beir)["ndcg@10"], 2),
                             "stsb-test": round(evaluate_sts(encoder, ["stsb-test"])["sets"]["stsb-test"]["spearman"], 2),
                             "train_s": round(train_s, 1)}
            print(name, json.dumps(results[name]), flush=True)
    g, u = results["guided"], results["unguided"]
    print(f"\nheld-out nDCG@10: guided {g['ndcg@10']:.2f} vs unguided {u['ndcg@10']:.2f} "
          f"({g['ndcg@10'] - u['ndcg@10']:+.2f}); STS-B test {g['stsb-test']:.2f} vs {u['stsb-test']:.2f}; "
          f"training time {g['train_s'] / u['train_s']:.2f}x")
    print("JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
