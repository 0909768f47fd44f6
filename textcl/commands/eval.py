"""``textcl eval sts`` (and ``textcl eval retrieval``, registered by the retrieval module)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model (sts, retrieval)")
    eval_sub = p.add_subparsers(dest="eval_command", required=True, metavar="TASK")
    s = eval_sub.add_parser("sts", help="STS benchmark: Spearman/Pearson x100 with a bootstrap 95% CI")
    s.add_argument("--model", required=True, help="local folder or hub name")
    s.add_argument("--data", action="append", required=True,
                   help="a named set (stsb-train, stsb-dev, stsb-test, sickr, sts12..sts16) or a file; repeatable")
    s.add_argument("--similarity", default="cosine", choices=["cosine", "dot", "euclidean", "manhattan"])
    s.add_argument("--compare", metavar="MODEL_B", help="paired bootstrap test of --model against MODEL_B")
    s.add_argument("--pooling", help="override the model's pooling (cls, cls_before_pooler, mean, max, first_last_avg)")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000; 0 = no CI)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--bf16", action="store_true", help="bf16 autocast while encoding")
    s.add_argument("--json", metavar="OUT", help="write the metrics as JSON (atomically)")
    s.set_defaults(func=run_sts)
    try:
        from textcl.commands.eval_retrieval import register as register_retrieval
    except ModuleNotFoundError as exc:
        if exc.name != "textcl.commands.eval_retrieval":
            raise
    else:
        register_retrieval(eval_sub)


def run_sts(args: argparse.Namespace) -> int:
    from textcl._io import atomic_write_json
    from textcl.data.sts import load_sts
    from textcl.eval.sts import compare_sts, evaluate_sts, format_sts_table
    from textcl.models import Encoder

    sets = [load_sts(d) for d in args.data]  # fail on bad data before loading any model
    overrides = {"pooling": args.pooling} if args.pooling else {}
    encoder = Encoder.load(args.model, **overrides)
    kw = dict(similarity=args.similarity, batch_size=args.batch_size, n_bootstrap=args.bootstrap, seed=args.seed,
              bf16=args.bf16)
    if args.compare:
        other = Encoder.load(args.compare, **overrides)
        report = compare_sts(encoder, other, sets, **kw)
    else:
        report = evaluate_sts(encoder, sets, **kw)
    print(format_sts_table(report))
    if args.json:
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0
