"""How to lay out one training step's sequences: the choices behind ``Encoder.forward``'s chunking.

One forward + backward of the packaged all-MiniLM-L6-v2 over a batch of 32 rows of each shape (title ->
passage pairs, and triples with a mined hard negative, max length 128), under these layouts:

- ``merged``: anchors, positives and negatives right-padded into one batch (textcl before chunking);
- ``per-side``: one padded forward per side (what the sentence-transformers losses do);
- ``chunked-N``: all rows of the step sorted by length and cut by ``plan_chunks`` with an overhead of
  N tokens per chunk (N = 0 cuts at every distinct length).

Layouts are interleaved, each timed ``--repeats`` times per batch over ``--batches`` batches; the table
gives the median time relative to ``merged``.

    python benchmarks/bench_step_layout.py [--batches 3] [--repeats 3] [--precisions no bf16]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402

OVERHEADS = [0, 64, 256, 1024, 4096]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--precisions", nargs="+", default=["no", "bf16"])
    parser.add_argument("--overheads", nargs="+", type=int, default=OVERHEADS, help="chunk costs to compare (tokens)")
    parser.add_argument("--measured", action="store_true",
                        help="add the chunk cost the trainer measures on this machine for each precision")
    args = parser.parse_args()

    from textcl.models import Encoder, packaged_minilm_path
    from textcl.models.features import pad_features

    encoder = Encoder.load(packaged_minilm_path(), device="cpu").train()
    pad_id = encoder.tokenizer.pad_token_id
    rows = [json.loads(line) for line in shapes.triples(args.batch_size * args.batches).open(encoding="utf-8")]
    overheads = list(args.overheads)
    if args.measured:  # what textcl's trainer would take here (cached under $TEXTCL_CACHE, as in training)
        from textcl.models.chunking import measured_chunk_overhead

        for precision in args.precisions:
            tokens, entry = measured_chunk_overhead(encoder, bf16=precision == "bf16")
            print(f"[{precision}] measured chunk cost: {tokens} tokens{'' if entry['steady'] else ' (disturbed)'}")
            overheads.append(tokens)
        encoder.train()
    layouts = ["merged", "per-side"] + [f"chunked-{o}" for o in sorted(set(overheads))]

    def step(parts, layout):
        encoder.zero_grad(set_to_none=True)
        if layout == "per-side":
            encoder.chunk_overhead = None
            embs = [encoder(p) for p in parts]
        else:
            encoder.chunk_overhead = None if layout == "merged" else int(layout.split("-")[1])
            embs = encoder(pad_features(parts, pad_id)).split([p["input_ids"].shape[0] for p in parts])
        sum((e.float() ** 2).mean() for e in embs).backward()

    for precision in args.precisions:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        for shape, sides in (("pairs", ("anchor", "positive")), ("triples", ("anchor", "positive", "negative"))):
            times = {layout: [] for layout in layouts}
            for b in range(args.batches):
                chunk = rows[b * args.batch_size:(b + 1) * args.batch_size]
                parts = [encoder.tokenize([r[s] for r in chunk], max_length=args.max_len) for s in sides]
                with autocast:
                    step(parts, "merged")  # warm-up
                    for _ in range(args.repeats):
                        for layout in layouts:
                            t0 = time.perf_counter()
                            step(parts, layout)
                            times[layout].append(time.perf_counter() - t0)
            base = statistics.median(times["merged"])
            print(f"[{precision}] {shape}, batch {args.batch_size}, max length {args.max_len}:")
            for layout in layouts:
                t = statistics.median(times[layout])
                print(f"  {layout:14s} {t * 1000:8.0f} ms   {base / t:5.2f}x merged", flush=True)


if __name__ == "__main__":
    main()
