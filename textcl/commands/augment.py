"""``textcl augment``: look at augmented views (``preview``) and precompute paraphrases (``backtranslate``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "augment", help="preview augmentations, precompute back-translations",
        description="Text augmentations: preview the views of a pipeline, precompute back-translations.",
    )
    sub = parser.add_subparsers(dest="augment_command", required=True, metavar="ACTION")

    preview = sub.add_parser(
        "preview", help="print texts next to their augmented views",
        description="Print the first N non-blank lines of a text file, each next to its augmented views.",
    )
    preview.add_argument("--input", required=True, help="plain text file, one text per line")
    preview.add_argument(
        "--config",
        help="YAML augmenter config (or a recipe with an 'augment:' section); default: span crop + word deletion",
    )
    preview.add_argument("-n", type=int, default=5, help="how many lines to show (default 5)")
    preview.add_argument("--views", type=int, default=2, help="views per line (default 2)")
    preview.add_argument("--seed", type=int, default=0, help="global seed (default 0)")
    preview.set_defaults(func=lambda args: run_preview(args))

    bt = sub.add_parser(
        "backtranslate", help="paraphrase a corpus by translating it to a pivot language and back",
        description="Write one paraphrase per input line (src -> via -> src). Translations are cached in "
        "SQLite batch by batch: rerun the same command after an interruption to resume.",
    )
    bt.add_argument("--input", required=True, help="plain text file, one sentence per line")
    bt.add_argument("--out", required=True, help="output file: the paraphrase of line i on line i")
    bt.add_argument("--via", required=True, help="pivot language code, e.g. de")
    bt.add_argument("--src", default="en", help="language of the input (default en)")
    bt.add_argument("--model-forward", help="src->via model (default Helsinki-NLP/opus-mt-{src}-{via})")
    bt.add_argument("--model-backward", help="via->src model (default Helsinki-NLP/opus-mt-{via}-{src})")
    bt.add_argument("--cache", help="SQLite translation cache (default: OUT.cache.sqlite)")
    bt.add_argument("--batch-size", type=int, default=32, help="sentences per generation batch (default 32)")
    bt.add_argument("--device", help="cpu, cuda, cuda:1, … (default: cuda if available)")
    bt.add_argument("--max-length", type=int, default=256, help="max tokens in and out (default 256)")
    bt.add_argument("--num-beams", type=int, default=1, help="beam width (default 1: greedy)")
    bt.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    bt.set_defaults(func=lambda args: run_backtranslate(args))


def run_preview(args: argparse.Namespace) -> int:
    from textcl.augment import build_augmenter, default_pipeline, make_views, read_lines
    from textcl.augment.build import config_error_reason
    from textcl.errors import ConfigError, DataFormatError

    if args.n < 1 or args.views < 1:
        raise ConfigError("-n" if args.n < 1 else "--views", "must be at least 1")
    if args.config:
        try:
            from textcl.config import load_augment_config

            augmenter = build_augmenter(load_augment_config(args.config))
        except ConfigError as exc:
            raise ConfigError(exc.field, config_error_reason(exc), source=args.config) from None
    else:
        augmenter = default_pipeline()
    if getattr(augmenter, "token_level", False):
        raise ConfigError("augment", "token_cutoff works on token ids after tokenization; preview shows text views")
    texts = [(i, line) for i, line in enumerate(read_lines(args.input)) if line.strip()][: args.n]
    if not texts:
        raise DataFormatError(args.input, None, "no non-blank line to preview")
    views = make_views(
        augmenter, [t for _, t in texts], seed=args.seed, indices=[i for i, _ in texts], n_views=args.views
    )
    out = sys.stdout
    print(f"augmenter: {augmenter!r}", file=out)
    for k, (line_no, text) in enumerate(texts):
        print(f"\nline {line_no + 1}", file=out)
        print(f"  original: {text}", file=out)
        for v in range(args.views):
            print(f"  view {v + 1}:   {views[v][k]}", file=out)
    return 0


def run_backtranslate(args: argparse.Namespace) -> int:
    from textcl._io import check_writable
    from textcl.augment import HFTranslator, TranslationCache, back_translate_file
    from textcl.errors import ConfigError

    if args.batch_size < 1:
        raise ConfigError("--batch-size", f"must be at least 1, got {args.batch_size}")
    if args.via == args.src:
        raise ConfigError("--via", f"must differ from --src ({args.src})")
    if not Path(args.input).is_file():
        raise FileNotFoundError(f"no such input file: {args.input}")
    check_writable(args.out, "--out")
    if args.cache:
        check_writable(args.cache, "--cache")
    translator = HFTranslator.pivot(
        args.src, args.via, args.model_forward, args.model_backward,
        batch_size=args.batch_size, device=args.device, max_length=args.max_length, num_beams=args.num_beams,
    )
    cache_path = args.cache or f"{args.out}.cache.sqlite"
    with TranslationCache(cache_path) as cache:
        n = back_translate_file(
            args.input, args.out, translator, src=args.src, via=args.via, cache=cache,
            batch_size=args.batch_size, progress=not args.no_progress,
        )
    print(f"wrote {n} paraphrases to {args.out} (translation cache: {cache_path})")
    return 0
