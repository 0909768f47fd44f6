"""``textcl merge BASE TUNED --alpha A --out DIR``: WiSE-FT, (1 - A) x BASE + A x TUNED, tensor by tensor."""
from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "merge", help="interpolate a fine-tuned model towards its base (WiSE-FT)",
        description="Write (1 - alpha) x BASE + alpha x TUNED, tensor by tensor, as a sentence-transformers "
        "folder with TUNED's settings. alpha 0 is BASE, 1 is TUNED; values between keep more of what BASE "
        "knew off the fine-tuning domain. Both must have one architecture.",
    )
    p.add_argument("base", help="the starting model: a sentence-transformers folder or a hub name")
    p.add_argument("tuned", help="the fine-tuned model: a sentence-transformers folder or a hub name")
    p.add_argument("--alpha", type=float, required=True, help="weight of TUNED, in [0, 1]")
    p.add_argument("--out", required=True, help="the folder to write (replaced atomically)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from textcl._io import check_writable
    from textcl.errors import ConfigError
    from textcl.models.merge import merge_folders

    if not 0.0 <= args.alpha <= 1.0:
        raise ConfigError("--alpha", f"expected a number in [0, 1], got {args.alpha!r}")
    check_writable(args.out, "--out", folder=True)
    out = Path(args.out).expanduser().resolve()
    for flag, given in (("BASE", args.base), ("TUNED", args.tuned)):
        model = Path(given).expanduser()
        if model.exists() and (out == model.resolve() or out in model.resolve().parents):
            raise ConfigError("--out", f"{args.out} would replace {flag} {given}; write the merge elsewhere")
    if out.is_dir() and any(out.iterdir()) and not (out / "modules.json").exists() and not (out / "config.json").exists():
        raise ConfigError("--out", f"{args.out} is a folder that holds no model; the merge replaces the folder it "
                                   "writes, so give a new or a model folder")
    out = merge_folders(args.base, args.tuned, args.alpha, args.out)
    print(f"wrote {out}: (1 - {args.alpha}) x {args.base} + {args.alpha} x {args.tuned}", file=sys.stderr)
    return 0
