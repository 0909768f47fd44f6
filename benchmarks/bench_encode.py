"""Encoding throughput: textcl Encoder.encode vs SentenceTransformer.encode, same model, data and batch size.

Runs are interleaved (textcl, sentence-transformers, textcl, ...) and the medians compared. Also reports
bf16 autocast: its speed ratio against textcl fp32 and how far STS-B test Spearman moves under it.

    python benchmarks/bench_encode.py [--n 10000] [--batch-size 64] [--repeats 3]
    python benchmarks/bench_encode.py --device cuda --model .gpu/minilm --texts .gpu/shapes/sentences-5376.txt \
        --batch-size 256 --skip-sts          (benchmarks/gpu.sh)
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-sts", action="store_true")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", help="a local model folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--texts", help="a .txt of texts, one per line, repeated up to --n (default: the packaged "
                                        "Wikipedia sentences)")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from textcl.data.wiki import wiki_sentences
    from textcl.eval.sts import evaluate_sts
    from textcl.models import Encoder, packaged_minilm_path

    path = args.model or packaged_minilm_path()
    if args.texts:
        lines = [t for t in open(args.texts, encoding="utf-8").read().splitlines() if t.strip()]
        texts = (lines * (args.n // len(lines) + 1))[: args.n]
    else:
        texts = wiki_sentences()[: args.n]
    ours = Encoder.load(path, device=args.device)
    peer = SentenceTransformer(str(path), device=args.device)
    bs = args.batch_size
    where = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"{len(texts)} Wikipedia sentences, {path}, batch {bs}, torch threads {torch.get_num_threads()}, {where}")

    ours.encode(texts[:256], batch_size=bs)  # warm-up both
    peer.encode(texts[:256], batch_size=bs)
    t_ours, t_peer, t_bf16 = [], [], []
    for r in range(args.repeats):
        dt, emb_ours = timed(lambda: ours.encode(texts, batch_size=bs))
        t_ours.append(dt)
        dt, emb_peer = timed(lambda: peer.encode(texts, batch_size=bs))
        t_peer.append(dt)
        dt, emb_bf16 = timed(lambda: ours.encode(texts, batch_size=bs, bf16=True))
        t_bf16.append(dt)
        print(f"run {r + 1}: textcl {len(texts) / t_ours[-1]:.0f}/s  sentence-transformers "
              f"{len(texts) / t_peer[-1]:.0f}/s  textcl bf16 {len(texts) / t_bf16[-1]:.0f}/s")
    cos = (emb_ours * emb_peer).sum(1) / (np.linalg.norm(emb_ours, axis=1) * np.linalg.norm(emb_peer, axis=1))
    cos_bf16 = (emb_ours * emb_bf16).sum(1)
    m_ours, m_peer, m_bf16 = (statistics.median(t) for t in (t_ours, t_peer, t_bf16))
    print(f"median sentences/s: textcl {len(texts) / m_ours:.0f}, sentence-transformers {len(texts) / m_peer:.0f}, "
          f"textcl bf16 {len(texts) / m_bf16:.0f}")
    print(f"ratio textcl/sentence-transformers (fp32): {m_peer / m_ours:.2f}x")
    print(f"largest cosine difference textcl vs sentence-transformers: {float(1 - cos.min()):.2e}")
    print(f"ratio textcl bf16 / textcl fp32: {m_ours / m_bf16:.2f}x; largest cosine difference {float(1 - cos_bf16.min()):.2e}")
    if not args.skip_sts:
        fp32 = evaluate_sts(ours, "stsb-test", n_bootstrap=0)["sets"]["stsb-test"]["spearman"]
        bf16 = evaluate_sts(ours, "stsb-test", n_bootstrap=0, bf16=True)["sets"]["stsb-test"]["spearman"]
        print(f"STS-B test spearman: fp32 {fp32:.2f}, bf16 {bf16:.2f} (moves {bf16 - fp32:+.2f})")


if __name__ == "__main__":
    main()
