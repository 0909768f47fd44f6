"""Dropout on the CPU: torch's masks against textcl's (`model.fast_dropout`, textcl/models/dropout.py).

Two measurements, in one process, arms interleaved, medians:

- one mask for a layer's attention probabilities at batch 32 x 128 tokens (32 x 12 x 128 x 128 elements):
  ``F.dropout`` against ``textcl.models.dropout.fast_dropout``;
- one MiniLM training step on the uniform-length shape (32 documents of 128 tokens + 32 titles of 10 tokens,
  forward + backward, train mode): the model as loaded (torch's dropout, SDPA attention) against the same
  model after ``install`` (fast masks, attention dropout through ``cpu_attention``).

    python benchmarks/bench_dropout.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def timed(fn, repeats: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from transformers import AutoModel

    from textcl.models import packaged_minilm_path
    from textcl.models.dropout import fast_dropout, install

    torch.manual_seed(0)
    x = torch.randn(32, 12, 128, 128)
    masks = {"torch": [], "textcl": []}
    for _ in range(args.repeats):
        masks["torch"] += timed(lambda: torch.nn.functional.dropout(x, 0.1, True), 1)
        masks["textcl"] += timed(lambda: fast_dropout(x, 0.1), 1)
    med = {k: statistics.median(v) * 1e3 for k, v in masks.items()}
    print(f"attention-probability mask, 32x12x128x128: torch {med['torch']:.1f} ms, textcl {med['textcl']:.1f} ms, "
          f"{med['torch'] / med['textcl']:.2f}x")

    stock = AutoModel.from_pretrained(str(packaged_minilm_path()), dtype=torch.float32).train()
    fast = copy.deepcopy(stock)
    found = install(fast)
    docs = {"input_ids": torch.randint(1000, 20000, (32, 128)), "attention_mask": torch.ones(32, 128, dtype=torch.long)}
    titles = {"input_ids": torch.randint(1000, 20000, (32, 10)), "attention_mask": torch.ones(32, 10, dtype=torch.long)}

    def step(model):
        a = model(**docs).last_hidden_state.mean(1)
        b = model(**titles).last_hidden_state.mean(1)
        (a @ b.T).logsumexp(1).mean().backward()
        model.zero_grad(set_to_none=True)

    steps = {"torch": [], "textcl": []}
    step(stock), step(fast)
    for _ in range(args.repeats):
        steps["torch"] += timed(lambda: step(stock), 1)
        steps["textcl"] += timed(lambda: step(fast), 1)
    med = {k: statistics.median(v) for k, v in steps.items()}
    print(f"MiniLM step, 32 x 128 + 32 x 10 tokens, fp32, {torch.get_num_threads()} threads "
          f"({found['layers']} dropout layers, attention {found['attention']}): torch dropout {med['torch']:.3f} s, "
          f"textcl {med['textcl']:.3f} s, {med['torch'] / med['textcl']:.2f}x")


if __name__ == "__main__":
    main()
