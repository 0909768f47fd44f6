"""``textcl eval retrieval``: nDCG@10, MRR@10, Recall@1/10/100, MAP@100 on a BEIR folder."""
from __future__ import annotations

import argparse


def register(eval_sub: argparse._SubParsersAction) -> None:
    from textcl.commands.backend import add_argument as add_backend_argument

    r = eval_sub.add_parser("retrieval", help="BEIR-style retrieval: nDCG@10, MRR@10, Recall@k, MAP@100")
    r.add_argument("--model", required=True, help="local folder or hub name")
    add_backend_argument(r)
    r.add_argument("--data", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    r.add_argument("--split", default="test")
    r.add_argument("--factory", default="Flat", help="FAISS factory (default Flat = exact); otherwise "
                   "ann_recall@10 against exact search is reported too")
    r.add_argument("--nprobe", type=int)
    r.add_argument("--ef-search", type=int)
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--json", metavar="OUT", help="write the metrics as JSON (atomically)")
    r.set_defaults(func=run, governed_work="encode")


def format_table(result: dict) -> str:
    keys = ["ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100", "ann_recall@10"]
    lines = [f"{result['n_queries']} queries, {result['n_docs']} documents, factory {result['factory']}"]
    lines += [f"  {k:<14}{100 * result[k]:7.2f}" for k in keys if k in result]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from textcl._io import atomic_write_json, check_writable
    from textcl.commands.backend import report as backend_report
    from textcl.commands.index import load_encoder
    from textcl.data.beir import load_beir
    from textcl.eval.retrieval import evaluate_retrieval
    from textcl.versions import environment

    if args.json:
        check_writable(args.json, "--json")
    data = load_beir(args.data, args.split)  # fail on bad data before loading the model
    encoder = load_encoder(args.model, args.backend)
    result = evaluate_retrieval(encoder, data, split=args.split, factory=args.factory, batch_size=args.batch_size,
                                nprobe=args.nprobe, ef_search=args.ef_search)
    result["model"] = args.model
    result["data"] = args.data
    print(format_table(result))
    if args.json:
        atomic_write_json(args.json, {**result, "backend": backend_report(encoder), "versions": environment()})
        print(f"wrote {args.json}")
    return 0
