"""GradCache: step time and peak memory (RSS) as the batch grows, cached vs uncached.

One unsupervised SimCSE step (two dropout views, InfoNCE over the whole batch) on the packaged
all-MiniLM-L6-v2, max length 32. Each (mode, batch) runs in a fresh process so that its peak RSS is its own.

    python benchmarks/bench_gradcache.py [--batches 64 1024 4096] [--uncached-max 512] [--mini-batch 64]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def child(mode: str, batch: int, mini: int, steps: int) -> dict:
    import torch

    from textcl.data.wiki import wiki_sentences
    from textcl.losses import InfoNCE, cached_backward
    from textcl.models import Encoder, packaged_minilm_path

    torch.manual_seed(0)
    enc = Encoder.load(packaged_minilm_path(), max_seq_length=32, device="cpu")
    enc.train()
    loss_fn = InfoNCE(0.05)
    texts = wiki_sentences()[:batch]
    feats = enc.tokenize(texts)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        if mode == "cached":
            cached_backward([(enc, feats), (enc, feats)], loss_fn, mini)
        else:
            both = {k: torch.cat([v, v]) for k, v in feats.items()}
            a, p = enc(both).split(batch)
            loss_fn(a, p).backward()
        enc.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"time": statistics.median(times[1:] if len(times) > 1 else times), "peak_mb": peak / 1024,
            "model_mb": base_rss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 1024, 4096])
    parser.add_argument("--uncached-max", type=int, default=1024, help="largest batch run without GradCache")
    parser.add_argument("--mini-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child[0], int(args.child[1]), args.mini_batch, args.steps)))
        return
    rows = {}
    for batch in args.batches:
        for mode in ("uncached", "cached"):
            if mode == "uncached" and batch > args.uncached_max:
                continue
            steps = args.steps if batch <= 1024 else 2
            proc = subprocess.run([sys.executable, __file__, "--child", mode, str(batch), "--mini-batch",
                                   str(args.mini_batch), "--steps", str(steps)], capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{mode} batch {batch}: failed (exit {proc.returncode}) {proc.stderr[-500:]}")
                continue
            rows[(mode, batch)] = json.loads(line[0][7:])
            r = rows[(mode, batch)]
            print(f"{mode:>8} batch {batch:>5}: step {r['time']:.2f} s, peak RSS {r['peak_mb']:.0f} MB "
                  f"(after model load {r['model_mb']:.0f} MB)", flush=True)
    for batch in args.batches:
        if ("uncached", batch) in rows and ("cached", batch) in rows:
            print(f"batch {batch}: cached/uncached step time {rows[('cached', batch)]['time'] / rows[('uncached', batch)]['time']:.2f}x")
    small, large = min(args.batches), max(args.batches)
    if ("cached", small) in rows and ("cached", large) in rows:
        print(f"cached peak RSS at {large} / at {small}: "
              f"{rows[('cached', large)]['peak_mb'] / rows[('cached', small)]['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
