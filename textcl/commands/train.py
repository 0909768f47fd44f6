"""``textcl train RECIPE.yaml [--out DIR] [--set k=v ...] [--resume]``."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an encoder from a YAML recipe")
    p.add_argument("recipe", help="a recipe YAML file (see recipes/)")
    p.add_argument("--out", help="output folder (overrides the recipe's output_dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. --set train.batch_size=128 (repeatable; VALUE is YAML)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/checkpoints")
    p.add_argument("--check", action="store_true", help="validate the recipe and exit")
    p.set_defaults(func=run)


def format_results(metrics: dict) -> str:
    from textcl.train.card import metric_value

    names = list(metrics.get("after", {}))
    if not names:
        return "(no evaluation)"
    head = f"{'evaluation':<22}{'before':>9}{'after':>9}{'change':>9}   95% CI (after)"
    lines = [head, "-" * len(head)]
    for name in names:
        after = metrics["after"][name]
        before = metrics.get("before", {}).get(name)
        a = metric_value(after)
        b = f"{metric_value(before):>9.2f}" if before else f"{'-':>9}"
        d = f"{a - metric_value(before):>+9.2f}" if before else f"{'':>9}"
        ci = after.get("ci95")
        lines.append(f"{name:<22}{b}{a:>9.2f}{d}   " + (f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from textcl._io import check_writable
    from textcl.config import load_config

    config = load_config(args.recipe, args.overrides)
    if args.check:
        print(f"{args.recipe}: valid")
        return 0
    check_writable(args.out or config.output_dir, "--out" if args.out else f"{args.recipe}: output_dir", folder=True)
    from textcl.train import train  # torch and transformers: only once the recipe and output folder are fine

    result = train(config, output_dir=args.out, resume=args.resume)
    if result.metrics:
        unit = "epoch" if result.metrics.get("user_tower") == "sequence" else "step"
        print(f"\n{config.name}: {result.steps} {unit}s, best {unit} {result.metrics.get('best_step')}")
        print(format_results(result.metrics))
        if result.metrics.get("user_tower") == "sequence":
            from shlex import quote

            out = Path(result.output_dir).resolve()
            index = quote(str(out.parent / f"{out.name or 'run'}-index"))  # beside the run, as the README puts it
            print(f"\nmodel: {result.model_dir}  (textcl.recommend.sequence.load('{result.model_dir}') loads it)\n"
                  f"serve it: textcl index build --input {quote(str(out / 'items.jsonl'))} --model "
                  f"{quote(str(result.model_dir))} --out {index} && textcl serve {index}")
        else:
            print(f"\nmodel: {result.model_dir}  (SentenceTransformer('{result.model_dir}') loads it)")
    return 0
