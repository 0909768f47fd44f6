"""The ``textcl`` command: a thin shell over the Python API.

Each subcommand lives in ``textcl/commands/<name>.py`` and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` to a function ``(args) -> int``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

from textcl.errors import TextclError
from textcl.thread_governor import governing

COMMANDS = ("encode", "eval", "train", "tune", "augment", "index", "mine", "merge", "serve", "env")


class _VersionAction(argparse.Action):
    """``--version``: print textcl's version and its libraries' (looked up only when asked), then exit."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from textcl.versions import format_versions

        print(format_versions())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textcl", description="Contrastive learning of sentence embeddings: train, evaluate, index."
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="print the versions of textcl, torch, transformers, sentence-transformers, faiss")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"textcl.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"textcl.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # commands that encode with a local model follow the cores other processes leave free
        # (textcl.thread_governor); train, serve and tune govern their own, and encode / index build theirs
        with governing(args.governed_work) if getattr(args, "governed_work", None) else contextlib.nullcontext():
            return int(args.func(args) or 0)
    except TextclError as exc:
        print(f"textcl: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"textcl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("textcl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
