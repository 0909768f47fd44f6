"""Guided false-negative filtering on noisy pairs: the same pairs file, with injected duplicates and
near-duplicates, trained with and without ``loss.guide`` (GISTEmbed), scored on held-out retrieval.

The pairs: ``--pairs`` (title -> rest of the lead) pairs from the packaged Wikipedia (``shapes.pairs``), then
for a seeded ``--near`` fraction of them a near-duplicate row (the title in lower case, the passage with two
adjacent words swapped: same length, different text) and for a ``--dups`` fraction an exact copy.

Before training, the benchmark counts what the guide has to do on the epoch's real batches (textcl's sampler,
length grouping on, as in both runs): how many in-batch candidates are a copy or near-copy of the row's own
pair (false negatives), how many of those exact-text masking already removes, and how many of the rest the
guide (the starting model) masks at each ``--margins`` value, against how many other candidates it masks too.

Runs: unguided, then guided at each margin. All: the packaged all-MiniLM-L6-v2, one epoch, batch 32, lr 2e-5,
10% warm-up, max length 128, InfoNCE at temperature 0.05 with exact-text masking, fp32, seed 42. Scores: nDCG@10
x100 on the held-out BEIR folder (``shapes.heldout``: 500 unseen titles, 2,000 passages), with a paired
bootstrap 95% CI of guided - unguided over the 500 queries, and STS-B test, by textcl's evaluators.

    python benchmarks/bench_guided.py [--pairs 2048] [--near 0.25] [--dups 0.05] [--margins 0.0 0.02]
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
from pairs_run import BATCH, SEED, train_pairs  # noqa: E402


def noisy_rows(n: int, near: float, dups: float) -> tuple[Path, np.ndarray]:
    """The pairs file and, per row, the index of the original pair it copies (its own index for originals)."""
    rows = [json.loads(line) for line in shapes.pairs(n).open(encoding="utf-8")]
    rng = np.random.default_rng(7)
    out, source = list(rows), list(range(len(rows)))
    for i in rng.choice(len(rows), int(near * len(rows)), replace=False):
        words = rows[i]["positive"].split(" ")
        j = int(rng.integers(0, max(1, len(words) - 1)))
        words[j:j + 2] = words[j:j + 2][::-1]
        out.append({"anchor": rows[i]["anchor"].lower(), "positive": " ".join(words)})
        source.append(int(i))
    for i in rng.choice(len(rows), int(dups * len(rows)), replace=False):
        out.append(dict(rows[i]))
        source.append(int(i))
    path = shapes.CACHE / f"noisy-pairs-{n}-{near}-{dups}.jsonl"
    if not path.exists():
        shapes._write_jsonl(path, out)
    return path, np.array(source)


def false_negative_counts(pairs: Path, source: np.ndarray, margins: list[float]) -> dict:
    """On epoch 0's batches: candidates that copy the row's pair, those exact-text masking removes, and per
    margin the near-copies the starting model's guide masks and the other candidates it masks."""
    import torch

    from textcl.losses.guide import guided_mask
    from textcl.models import Encoder, packaged_minilm_path
    from textcl.train.sampler import epoch_batches

    rows = [json.loads(line) for line in pairs.open(encoding="utf-8")]
    lengths = np.array([len(r["anchor"]) + len(r["positive"]) for r in rows])  # the trainer's length proxy
    guide = Encoder.load(packaged_minilm_path(), device="cpu")
    anchors = torch.from_numpy(guide.encode([r["anchor"] for r in rows], batch_size=64, normalize=True))
    positives = torch.from_numpy(guide.encode([r["positive"] for r in rows], batch_size=64, normalize=True))
    counts = {"candidates": 0, "copies": 0, "exact": 0, "near": 0,
              "masked": {str(m): {"near": 0, "other": 0} for m in margins}}
    for b in epoch_batches(lengths, BATCH, seed=SEED, epoch=0):
        same = torch.from_numpy(source[b][:, None] == source[b][None, :])
        same.fill_diagonal_(False)
        texts = [rows[i]["positive"] for i in b]
        exact = torch.tensor([[i != j and texts[i] == texts[j] for j in range(len(b))] for i in range(len(b))])
        near = same & ~exact
        counts["candidates"] += len(b) * (len(b) - 1)
        counts["copies"] += int(same.sum())
        counts["exact"] += int(exact.sum())
        counts["near"] += int(near.sum())
        for m in margins:
            masked = guided_mask(anchors[b], positives[b], positives[b], 0, m)
            counts["masked"][str(m)]["near"] += int((masked & near).sum())
            counts["masked"][str(m)]["other"] += int((masked & ~same).sum())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--near", type=float, default=0.25)
    parser.add_argument("--dups", type=float, default=0.05)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.02])
    args = parser.parse_args()
    from textcl.eval.retrieval import evaluate_retrieval
    from textcl.eval.stats import paired_mean_bootstrap
    from textcl.eval.sts import evaluate_sts
    from textcl.models import Encoder

    pairs, source = noisy_rows(args.pairs, args.near, args.dups)
    beir = shapes.heldout()
    n_rows = len(source)
    print(f"{n_rows} rows: {args.pairs} pairs + {int(args.near * args.pairs)} near-duplicates + "
          f"{int(args.dups * args.pairs)} duplicates ({100 * (n_rows - args.pairs) / n_rows:.0f}% injected)")
    counts = false_negative_counts(pairs, source, args.margins)
    print(f"epoch 0, batch {BATCH}: {counts['candidates']} in-batch candidates, {counts['copies']} copy the row's "
          f"own pair ({counts['exact']} exact text, masked without a guide; {counts['near']} near-copies)")
    for m, c in counts["masked"].items():
        print(f"  guide margin {m}: masks {c['near']} / {counts['near']} near-copies and {c['other']} other candidates "
              f"({100 * c['other'] / counts['candidates']:.2f}%)")
    arms = [("unguided", None)] + [(f"guided m={m:g}", m) for m in args.margins]
    results, per_query = {"false_negatives": counts}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, margin) in enumerate(arms):
            loss = {} if margin is None else {"guide": {"model": "self", "margin": margin}}
            trained = train_pairs(pairs, Path(tmp) / f"run{i}", loss)
            encoder = Encoder.load(trained.model_dir, device="cpu")
            ret = evaluate_retrieval(encoder, beir, per_query=True)
            per_query[name] = ret["per_query"]
            results[name] = {"ndcg@10": round(100 * ret["ndcg@10"], 2),
                             "stsb-test": round(evaluate_sts(encoder, ["stsb-test"])["sets"]["stsb-test"]["spearman"], 2),
                             "train_s": round(trained.metrics["time"]["train_s"], 1)}
            print(name, json.dumps(results[name]), flush=True)
    qids = sorted(per_query["unguided"])
    base = results["unguided"]
    print()
    for name, _ in arms[1:]:
        test = paired_mean_bootstrap([per_query[name][q]["ndcg@10"] for q in qids],
                                     [per_query["unguided"][q]["ndcg@10"] for q in qids])
        r = results[name]
        r["ndcg@10_diff"] = {k: round(100 * v, 2) if k != "p_value" else round(v, 4) for k, v in test.items()}
        print(f"{name}: held-out nDCG@10 {r['ndcg@10']:.2f} vs unguided {base['ndcg@10']:.2f} "
              f"({100 * test['diff']:+.2f}, 95% CI {100 * test['low']:+.2f} to {100 * test['high']:+.2f}, "
              f"p = {test['p_value']:.3f}); STS-B test {r['stsb-test']:.2f} vs {base['stsb-test']:.2f}; "
              f"training time {r['train_s'] / base['train_s']:.2f}x")
    print("JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
