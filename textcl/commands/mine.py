"""``textcl mine``: hard negatives for (anchor, positive) pairs, written as training triples."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from textcl.commands.backend import add_argument as add_backend_argument

    p = sub.add_parser("mine", help="mine hard negatives for pairs; write anchor/positive/negative triples")
    p.add_argument("--model", required=True, help="local folder or hub name")
    add_backend_argument(p)
    p.add_argument("--pairs", required=True, help="JSONL with anchor/positive (or query/positive) fields")
    p.add_argument("--out", required=True, help="triples JSONL: {anchor, positive, negative} per line")
    p.add_argument("--corpus", help="candidate negatives: documents file, BEIR folder or index folder "
                   "(default: the positives of all pairs)")
    p.add_argument("--range", default="10-50", help="1-based ranks to draw negatives from (default 10-50)")
    p.add_argument("--margin", type=float, default=0.05,
                   help="drop candidates with cos(anchor, c) > cos(anchor, positive) - margin (default 0.05)")
    p.add_argument("--num-negatives", type=int, default=1, help="triples per pair (default 1)")
    p.add_argument("--strategy", choices=["top", "random"], default="top")
    p.add_argument("--factory", default="Flat", help="FAISS factory for the candidate index (default Flat)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run, governed_work="encode")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from textcl._io import check_writable, recover_dir
    from textcl.commands.index import load_encoder
    from textcl.index import SearchIndex
    from textcl.data.documents import read_documents
    from textcl.data.pairs import read_pairs
    from textcl.index.faiss_index import MANIFEST
    from textcl.index.mining import MiningStats, mine_hard_negatives, parse_range, write_triples

    check_writable(args.out, "--out")
    rank_range = parse_range(args.range)
    pairs = read_pairs(args.pairs)
    encoder = load_encoder(args.model, args.backend)
    corpus = None
    if args.corpus:
        if (recover_dir(Path(args.corpus)) / MANIFEST).exists():  # recovered first if a save was killed
            corpus = SearchIndex.load(args.corpus, encoder=encoder)
        else:
            corpus = [d.text for d in read_documents(args.corpus)]
    stats = MiningStats()
    triples = mine_hard_negatives(pairs, encoder, corpus, rank_range=rank_range, margin=args.margin,
                                  num_negatives=args.num_negatives, strategy=args.strategy, factory=args.factory,
                                  batch_size=args.batch_size, seed=args.seed, stats=stats)
    n = write_triples(triples, args.out)
    print(f"wrote {n} triples to {args.out} from {stats.pairs} pairs ({stats.skipped} without a negative)")
    return 0
