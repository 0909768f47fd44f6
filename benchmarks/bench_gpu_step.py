"""textcl's GPU training step against its own earlier CUDA defaults and against SentenceTransformerTrainer.

Arms, each a fresh process per scenario list (bf16, batches GPU_SCALE x the CPU ones, the fp16-carried MiniLM):

- ``textcl``: the defaults (attention without cuDNN, one chunk per forward below 65,536 tokens of padding);
- ``cudnn``: cuDNN's attention allowed again (it plans each new input shape);
- ``chunk4096``: the earlier CUDA chunk cost of 4,096 tokens;
- ``st``: sentence-transformers' trainer with the matching loss (bench_train.run_st).

    python benchmarks/bench_gpu_step.py --arms textcl cudnn chunk4096 st --scenarios b128 c u d   (benchmarks/gpu.sh)
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train  # noqa: E402


def child(arm: str, scenarios: list[str], model: str) -> None:
    import textcl.models.encoder as encoder_module
    from textcl.models import chunking

    bench_train.MODEL, bench_train.DEVICE = model, "cuda"
    if arm == "cudnn":
        encoder_module._attention_kernels = lambda device: contextlib.nullcontext()
    if arm == "chunk4096":
        chunking.CHUNK_OVERHEAD_TOKENS["cuda"] = 4096
    for sc in scenarios:
        s = {**bench_train.SCENARIOS[sc]}
        s["batch"] *= bench_train.GPU_SCALE
        if "mini_batch" in s:
            s["mini_batch"] *= bench_train.GPU_SCALE
        with tempfile.TemporaryDirectory() as out:
            rates = (bench_train.run_st if arm == "st" else bench_train.run_textcl)(s, "bf16", out)
        print(f"RESULT {arm} {sc} {statistics.median(rates):.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arms", nargs="+", default=["textcl", "cudnn", "chunk4096", "st"])
    parser.add_argument("--scenarios", nargs="+", default=["b128", "c", "u", "d"])
    parser.add_argument("--model", default=".gpu/minilm")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.scenarios, args.model)
    results: dict[tuple[str, str], float] = {}
    for arm in args.arms:
        proc = subprocess.run([sys.executable, __file__, "--child", arm, "--model", args.model, "--scenarios",
                               *args.scenarios], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                _, a, sc, rate = line.split()
                results[(a, sc)] = float(rate)
                print(f"[{sc}] {a}: median {float(rate):.0f} pairs/s", flush=True)
        if proc.returncode:
            print(proc.stderr[-2000:])
    for sc in args.scenarios:
        peer = results.get(("st", sc))
        for arm in args.arms:
            if arm != "st" and (arm, sc) in results and peer:
                print(f"[{sc}] {arm} / sentence-transformers: {results[(arm, sc)] / peer:.2f}x")


if __name__ == "__main__":
    main()
