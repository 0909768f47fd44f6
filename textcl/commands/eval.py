"""``textcl eval sts`` (and ``textcl eval retrieval``, registered by the retrieval module)."""
from __future__ import annotations

import argparse

from textcl.errors import UndefinedCorrelationError


def register(sub: argparse._SubParsersAction) -> None:
    from textcl.commands.backend import add_argument as add_backend_argument

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
    s.add_argument("--bf16", action="store_true", help="bf16 autocast while encoding (runs in torch)")
    add_backend_argument(s)
    s.add_argument("--json", metavar="OUT", help="write the metrics as JSON (atomically)")
    s.set_defaults(func=run_sts, governed_work="encode")
    try:
        from textcl.commands.eval_retrieval import register as register_retrieval
    except ModuleNotFoundError as exc:
        if exc.name != "textcl.commands.eval_retrieval":
            raise
    else:
        register_retrieval(eval_sub)


def _all_undefined(reasons: dict[str, str]) -> UndefinedCorrelationError:
    return UndefinedCorrelationError("the correlation is undefined for every set: "
                                     + "; ".join(f"{name}: {reason}" for name, reason in reasons.items()))


def run_sts(args: argparse.Namespace) -> int:
    """Exits 0 when at least one set has a defined correlation (the others are reported as undefined and
    left out of ``all``); 2 when none has: before loading a model when the gold scores already tell, else
    after printing the table and writing ``--json``."""
    from textcl._io import atomic_write_json, check_writable
    from textcl.data.sts import load_sts
    from textcl.eval.stats import undefined_reason
    from textcl.eval.sts import as_sts_list, compare_sts, evaluate_sts, format_sts_table, undefined_sets
    from textcl.commands.backend import for_command, report as backend_report
    from textcl.models import Encoder
    from textcl.versions import environment

    if args.json:
        check_writable(args.json, "--json")
    sets = as_sts_list([load_sts(d) for d in args.data])  # fail on bad data before loading any model
    gold_reasons = {d.name: undefined_reason(d.scores) for d in sets}
    if all(gold_reasons.values()):
        raise _all_undefined(gold_reasons)
    overrides = {"pooling": args.pooling} if args.pooling else {}
    overrides["backend"] = for_command(args.backend, args.bf16)
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
        backends = {"backend": backend_report(encoder)}
        if args.compare:
            backends["backend_b"] = backend_report(other)
        atomic_write_json(args.json, {**report, **backends, "versions": environment()})
        print(f"wrote {args.json}")
    reasons = undefined_sets(report)
    if len(reasons) == len(report["sets"]):
        raise _all_undefined(reasons)
    return 0
