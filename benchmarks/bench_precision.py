"""Is bf16 autocast a speed lever on this machine? One MiniLM forward + backward at fp32 and under bf16 autocast.

The packaged all-MiniLM-L6-v2, random token ids (64 x 32 and 32 x 128, no padding), the median of
``--repeats`` timings after a warm-up, and what ``mixed_precision: auto`` picks here. On a CPU without
AVX-512/AMX PyTorch emulates bf16, and autocast is many times slower than fp32.

    python benchmarks/bench_precision.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from textcl.models import Encoder, packaged_minilm_path
    from textcl.models.precision import native_bf16, resolve_precision

    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}; native bf16: {native_bf16('cpu')}; "
          f"mixed_precision auto -> {resolve_precision('auto', 'cpu')}; threads {torch.get_num_threads()}")
    encoder = Encoder.load(packaged_minilm_path(), device="cpu").train()
    for rows, width in ((64, 32), (32, 128)):
        ids = torch.randint(1000, 20000, (rows, width))
        feats = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        medians = {}
        for name in ("fp32", "bf16"):
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if name == "bf16" else contextlib.nullcontext()
            times = []
            for i in range(args.repeats + 1):
                t0 = time.perf_counter()
                with autocast:
                    emb = encoder(feats)
                (emb.float() ** 2).mean().backward()
                encoder.zero_grad(set_to_none=True)
                if i:  # the first is a warm-up
                    times.append(time.perf_counter() - t0)
            medians[name] = statistics.median(times)
            print(f"{rows} x {width} {name}: {medians[name]:.2f} s (median of {args.repeats})", flush=True)
        print(f"{rows} x {width}: bf16 / fp32 time = {medians['bf16'] / medians['fp32']:.1f}x", flush=True)


if __name__ == "__main__":
    main()
