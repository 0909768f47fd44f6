"""torch threads for throughput work (training steps, batch encoding), on a quiet machine and beside a busy process.

The rule in textcl/threads.py gives training and batch encoding every usable core (shared among a node's
processes) and serving half of them (serving has its own table: bench_serve.py). This measures the first
half of that rule: for each thread count from 1 to the usable cores, the median time of

- ``train``: one MiniLM training step of the quickstart's shape (64 rows x 2 dropout views x 32 tokens,
  forward + backward + AdamW), fp32;
- ``encode``: ``Encoder.encode`` of 256 STS-B-like sentences (batch 64),

first alone, then beside one busy process (a Python loop spinning on one core, as another job would, or for
a share of the time: ``--loads 0,0.25,0.5,1``), and
``auto``: textcl's default, a :class:`~textcl.thread_governor.ThreadGovernor` that measures the other processes'
load (settled once, as a training run does at its start, then tuned before each call).
Thread counts are interleaved round by round; the table gives each count's time over the best count's.

    python benchmarks/bench_threads.py [--rounds 5] [--loads 0,1]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch


#: another process: spinning the whole time (duty 1) or ``duty`` of every 50 ms and sleeping the rest
SPIN = """import time
duty = {duty}
while True:
    if duty >= 1:
        continue
    end = time.perf_counter() + 0.05 * duty
    while time.perf_counter() < end:
        pass
    time.sleep(0.05 * (1 - duty))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loads", default="0,1", help="the other process's load, in cores' worth: 0 (quiet), 1 (a "
                        "process spinning on a core) or a fraction (spinning that share of each 50 ms); default 0,1")
    args = parser.parse_args()
    loads = [float(x) for x in args.loads.split(",")]
    from textcl.data.wiki import wiki_sentences
    from textcl.models import Encoder, packaged_minilm_path
    from textcl.thread_governor import ThreadGovernor
    from textcl.threads import threads_for, usable_cores

    cores = usable_cores()
    counts = list(range(1, cores + 1))
    enc = Encoder.load(packaged_minilm_path())
    sentences = [s for s in wiki_sentences() if len(s.split()) >= 8][:320]
    train_texts, encode_texts = sentences[:64], sentences[64:320]
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-5)

    def train_step():
        enc.train()
        feats = enc.tokenize(train_texts + train_texts, max_length=32)
        emb = torch.nn.functional.normalize(enc(feats), dim=-1)
        a, b = emb[:64], emb[64:]
        loss = torch.nn.functional.cross_entropy(a @ b.T / 0.05, torch.arange(64))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def encode():
        enc.eval()
        enc.encode(encode_texts, batch_size=64)

    works = {"train": train_step, "encode": encode}
    results = {}
    for busy in loads:
        spinner = subprocess.Popen([sys.executable, "-c", SPIN.format(duty=busy)]) if busy else None
        try:
            times = {(w, n): [] for w in works for n in counts + ["auto"]}
            for w, fn in works.items():
                torch.set_num_threads(counts[-1])
                fn()  # warm-up
            governor = ThreadGovernor(threads_for("train"))
            governor.settle()
            chosen = []
            for _ in range(args.rounds):
                for w, fn in works.items():
                    for n in counts + ["auto"]:
                        if n == "auto":
                            chosen.append(governor.tune())
                        else:
                            torch.set_num_threads(n)
                        start = time.perf_counter()
                        fn()
                        times[(w, n)].append(time.perf_counter() - start)
            print(f"load {busy}: auto chose {chosen} (others' load {governor.others})", flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
        results[busy] = {k: statistics.median(v) for k, v in times.items()}
    print(f"usable cores {cores}; rule: train {threads_for('train')} thread(s), encode {threads_for('encode')}, "
          f"serve {threads_for('serve')}")
    print("\n| work | machine | " + " | ".join(f"{n} thread(s)" for n in counts) + " | auto (governed) |")
    print("|---|---|" + "---|" * (len(counts) + 1))
    for w in works:
        for busy in loads:
            med = results[busy]
            best = min(med[(w, n)] for n in counts)
            cells = [f"{med[(w, n)]:.3f} s ({med[(w, n)] / best:.2f}x)" for n in counts + ["auto"]]
            machine = "quiet" if not busy else f"beside a process using {busy:g} core"
            print(f"| {w} | {machine} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
