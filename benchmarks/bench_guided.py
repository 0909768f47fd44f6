"""Guided false-negative filtering (``loss.guide``, GISTEmbed): the same noisy training file trained with and
without the guide, scored on held-out retrieval. Two kinds of noise (``--noise``):

- ``copies``: ``--pairs`` (title -> rest of the lead) pairs from the packaged Wikipedia (``shapes.pairs``), then
  for a seeded ``--near`` fraction of them a near-duplicate row (the title in lower case, the passage with two
  adjacent words swapped: same length, different text) and for a ``--dups`` fraction an exact copy. Before
  training, the benchmark replays the epoch's real batches (textcl's sampler, length grouping on, as in the
  runs) and counts the in-batch candidates that copy or near-copy the row's own pair, how many of those
  exact-text masking already removes, and how many of the rest the guide masks at each ``--margins`` value,
  against how many other candidates it masks too.
- ``mined``: ``--pairs`` triples (title, rest of the lead, a hard negative mined with the packaged MiniLM,
  ``shapes.triples``) in which a seeded ``--false-rate`` fraction of the negatives is replaced by a passage
  from the anchor's own article, its first sentence: a relevant passage labelled as a negative, what mining
  without complete relevance judgments produces. The benchmark counts how many of those false negatives the
  guide masks at each margin, against how many true mined negatives it masks too, and adds a run on the clean
  triples (no false negatives) for scale.

Runs: unguided, then guided at each margin. All: the packaged all-MiniLM-L6-v2, one epoch, batch 32, lr 2e-5,
10% warm-up, max length 128, InfoNCE at temperature 0.05 with exact-text masking, fp32, seed 42 (``--seed``).
Scores: nDCG@10 x100 on two held-out BEIR folders built from 500 unseen articles (titles as queries):
``heldout`` (the rest of the lead is the one relevant passage) and ``heldout_all`` (the first sentence and the
rest are both relevant, both passages of 1,500 training articles as distractors), with a paired bootstrap 95% CI
of guided - unguided over the 500 queries, and STS-B test, by textcl's evaluators.

    python benchmarks/bench_guided.py [--noise copies] [--pairs 2048] [--near 0.25] [--dups 0.05]
        [--margins 0.0 0.02] [--seed 42]
    python benchmarks/bench_guided.py --noise mined [--pairs 2048] [--false-rate 0.2] [--margins 0.0] [--seed 42]
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


def starting_guide():
    """The guide as training runs it: the packaged MiniLM at the runs' 128 tokens, in bf16 where native."""
    from textcl.models import Encoder, packaged_minilm_path
    from textcl.models.precision import native_bf16

    guide = Encoder.load(packaged_minilm_path(), max_seq_length=128, device="cpu")
    return lambda texts: guide.encode(texts, batch_size=64, normalize=True, bf16=native_bf16("cpu"))


def false_negative_counts(pairs: Path, source: np.ndarray, margins: list[float], seed: int) -> dict:
    """On epoch 0's batches: candidates that copy the row's pair, those exact-text masking removes, and per
    margin the near-copies the starting model's guide masks and the other candidates it masks."""
    import torch

    from textcl.losses.guide import guided_mask
    from textcl.train.sampler import epoch_batches

    rows = [json.loads(line) for line in pairs.open(encoding="utf-8")]
    lengths = np.array([len(r["anchor"]) + len(r["positive"]) for r in rows])  # the trainer's length proxy
    guide = starting_guide()
    anchors = torch.from_numpy(guide([r["anchor"] for r in rows]))
    positives = torch.from_numpy(guide([r["positive"] for r in rows]))
    counts = {"candidates": 0, "copies": 0, "exact": 0, "near": 0,
              "masked": {str(m): {"near": 0, "other": 0} for m in margins}}
    for b in epoch_batches(lengths, BATCH, seed=seed, epoch=0):
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


def mislabelled_triples(n: int, rate: float) -> tuple[Path, Path, np.ndarray]:
    """The clean triples file, the file with a seeded ``rate`` of negatives replaced by the anchor's own first
    sentence, and per row whether its negative was replaced."""
    clean = shapes.triples(n)
    rows = [json.loads(line) for line in clean.open(encoding="utf-8")]
    first = {title: sentence for title, sentence, _ in shapes._articles()}
    false = np.zeros(len(rows), dtype=bool)
    false[np.random.default_rng(7).choice(len(rows), int(rate * len(rows)), replace=False)] = True
    path = shapes.CACHE / f"mislabelled-triples-{n}-{rate}.jsonl"  # rewritten each time: cheap, never stale
    shapes._write_jsonl(path, [dict(r, negative=first[r["anchor"]]) if f else r for r, f in zip(rows, false)])
    return clean, path, false


def mined_negative_counts(triples: Path, false: np.ndarray, margins: list[float]) -> dict:
    """Per margin: the false negatives the starting model's guide masks, and the true mined negatives it masks."""
    import torch

    from textcl.losses.guide import guided_mask

    rows = [json.loads(line) for line in triples.open(encoding="utf-8")]
    guide = starting_guide()
    a, p, n = (torch.from_numpy(guide([r[k] for r in rows])) for k in ("anchor", "positive", "negative"))
    counts = {"rows": len(rows), "false": int(false.sum()), "masked": {}}
    own = torch.arange(len(rows)) + len(rows)  # row i's own negative among the candidates [positives; negatives]
    for m in margins:
        masked = guided_mask(a, p, torch.cat([p, n]), 0, m)[torch.arange(len(rows)), own].numpy()
        counts["masked"][str(m)] = {"false": int((masked & false).sum()), "true": int((masked & ~false).sum())}
    return counts


def copies_setup(args: argparse.Namespace) -> tuple[list, str, dict]:
    """``--noise copies``: the arms (name, data file, margin or None), the data kind, the guide's counts."""
    pairs, source = noisy_rows(args.pairs, args.near, args.dups)
    n_rows = len(source)
    print(f"{n_rows} rows: {args.pairs} pairs + {int(args.near * args.pairs)} near-duplicates + "
          f"{int(args.dups * args.pairs)} duplicates ({100 * (n_rows - args.pairs) / n_rows:.0f}% injected)")
    counts = false_negative_counts(pairs, source, args.margins, args.seed)
    print(f"epoch 0, batch {BATCH}: {counts['candidates']} in-batch candidates, {counts['copies']} copy the row's "
          f"own pair ({counts['exact']} exact text, masked without a guide; {counts['near']} near-copies)")
    for m, c in counts["masked"].items():
        print(f"  guide margin {m}: masks {c['near']} / {counts['near']} near-copies and {c['other']} other candidates "
              f"({100 * c['other'] / counts['candidates']:.2f}%)")
    arms = [("unguided", pairs, None)] + [(f"guided m={m:g}", pairs, m) for m in args.margins]
    return arms, "pairs", counts


def mined_setup(args: argparse.Namespace) -> tuple[list, str, dict]:
    """``--noise mined``: the arms (name, data file, margin or None), the data kind, the guide's counts."""
    clean, noisy, false = mislabelled_triples(args.pairs, args.false_rate)
    counts = mined_negative_counts(noisy, false, args.margins)
    print(f"{counts['rows']} triples, {counts['false']} ({100 * counts['false'] / counts['rows']:.0f}%) with a false "
          f"negative (the anchor's own first sentence)")
    for m, c in counts["masked"].items():
        print(f"  guide margin {m}: masks {c['false']} / {counts['false']} false negatives and {c['true']} / "
              f"{counts['rows'] - counts['false']} true mined negatives")
    arms = ([("clean", clean, None), ("unguided", noisy, None)]
            + [(f"guided m={m:g}", noisy, m) for m in args.margins])
    return arms, "triples", counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--noise", choices=("copies", "mined"), default="copies")
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--near", type=float, default=0.25)
    parser.add_argument("--dups", type=float, default=0.05)
    parser.add_argument("--false-rate", type=float, default=0.2)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.02])
    parser.add_argument("--seed", type=int, default=SEED, help="training seed of every run (data order, dropout)")
    args = parser.parse_args()
    from textcl.eval.retrieval import evaluate_retrieval
    from textcl.eval.stats import paired_mean_bootstrap
    from textcl.eval.sts import evaluate_sts
    from textcl.models import Encoder

    arms, kind, counts = (copies_setup if args.noise == "copies" else mined_setup)(args)
    splits = {"heldout": shapes.heldout(), "heldout_all": shapes.heldout_all()}
    results, per_query = {"seed": args.seed, "false_negatives": counts}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, data, margin) in enumerate(arms):
            loss = {} if margin is None else {"guide": {"model": "self", "margin": margin}}
            trained = train_pairs(data, Path(tmp) / f"run{i}", loss, kind=kind, seed=args.seed)
            encoder = Encoder.load(trained.model_dir, device="cpu")
            results[name] = {"train_s": round(trained.metrics["time"]["train_s"], 1)}
            for split, folder in splits.items():
                ret = evaluate_retrieval(encoder, folder, per_query=True)
                per_query[name, split] = ret["per_query"]
                results[name][f"{split} ndcg@10"] = round(100 * ret["ndcg@10"], 2)
            results[name]["stsb-test"] = round(
                evaluate_sts(encoder, ["stsb-test"])["sets"]["stsb-test"]["spearman"], 2)
            print(name, json.dumps(results[name]), flush=True)
    print()
    base = results["unguided"]
    for name, _, margin in arms:
        if margin is None:
            continue
        r = results[name]
        for split in splits:
            qids = sorted(per_query["unguided", split])
            test = paired_mean_bootstrap([per_query[name, split][q]["ndcg@10"] for q in qids],
                                         [per_query["unguided", split][q]["ndcg@10"] for q in qids])
            r[f"{split} diff"] = {k: round(100 * v, 2) if k != "p_value" else round(v, 4) for k, v in test.items()}
            print(f"{name}: {split} nDCG@10 {r[f'{split} ndcg@10']:.2f} vs unguided {base[f'{split} ndcg@10']:.2f} "
                  f"({100 * test['diff']:+.2f}, 95% CI {100 * test['low']:+.2f} to {100 * test['high']:+.2f}, "
                  f"p = {test['p_value']:.3f})")
        print(f"{name}: STS-B test {r['stsb-test']:.2f} vs {base['stsb-test']:.2f}; "
              f"training time {r['train_s'] / base['train_s']:.2f}x")
    print("JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
