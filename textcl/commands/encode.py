"""``textcl encode``: embed a file of texts to a .npy matrix."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="embed texts from a .txt, .jsonl or .csv file into a .npy array")
    p.add_argument("--model", required=True, help="local folder or hub name")
    p.add_argument("--input", required=True, help=".txt (one text per line), .jsonl or .csv (a 'text' field)")
    p.add_argument("--out", required=True, help="output .npy path (float32, shape (n, d)); written atomically")
    p.add_argument("--field", default="text", help="field/column holding the text in .jsonl/.csv (default: text)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-normalize", action="store_true", help="keep raw (un-normalised) embeddings")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from textcl._io import atomic_save_npy, check_writable
    from textcl.data.texts import read_texts
    from textcl.models import Encoder

    check_writable(args.out, "--out")
    texts = read_texts(args.input, field=args.field)
    encoder = Encoder.load(args.model)
    emb = encoder.encode(texts, batch_size=args.batch_size, normalize=False if args.no_normalize else None,
                         show_progress=True, bf16=args.bf16)
    atomic_save_npy(args.out, emb)
    print(f"wrote {args.out}: {emb.shape[0]} x {emb.shape[1]} float32")
    return 0
