"""Training throughput: textcl's unsupervised SimCSE step vs SentenceTransformerTrainer + MultipleNegativesRankingLoss.

Same packaged all-MiniLM-L6-v2, same packaged Wikipedia sentences, batch 64, max length 32, lr 1e-5. For
sentence-transformers the unsupervised SimCSE data is the (sentence, sentence) pair, as its docs advise.
Runs are interleaved (textcl, sentence-transformers, textcl, ...); each reports the median pairs/s over its
steps after a warm-up, and the ratio of the medians is printed, at fp32 and with bf16 autocast.

    python benchmarks/bench_train.py [--steps 30] [--repeats 2] [--precisions no bf16]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

WARMUP = 3


def run_textcl(steps: int, precision: str, batch: int, out: str) -> list[float]:
    from textcl.config import config_from_dict
    from textcl.models import packaged_minilm_path
    from textcl.train import train
    from textcl.train.logs import read_log

    config = config_from_dict({
        "model": {"name": str(packaged_minilm_path()), "max_seq_len": 32},
        "data": {"path": "packaged:wiki", "max_examples": batch * (steps + 1)},
        "eval": {"data": [], "test": [], "every": 0, "before": False},
        "optim": {"lr": 1e-5},
        "train": {"batch_size": batch, "max_steps": steps, "mixed_precision": precision, "checkpoint_every": 0,
                  "log_every": 1, "report_to": "none", "plot": False},
    })
    train(config, output_dir=out)
    rows = [r for r in read_log(os.path.join(out, "log.csv")) if r["pairs_per_s"]]
    return [float(r["pairs_per_s"]) for r in rows][WARMUP:]


def run_st(steps: int, precision: str, batch: int, out: str) -> list[float]:
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)
    from transformers import TrainerCallback

    from textcl.data.wiki import wiki_sentences
    from textcl.models import packaged_minilm_path

    model = SentenceTransformer(str(packaged_minilm_path()), device="cpu")
    model.max_seq_length = 32
    sents = wiki_sentences()[: batch * (steps + 1)]
    ds = Dataset.from_dict({"anchor": sents, "positive": sents})
    times: list[float] = []

    class Clock(TrainerCallback):
        """Time between consecutive step ends, so the next batch's loading and collation count, as they do in
        textcl's per-step figure (which includes building and tokenizing the batch)."""

        def on_step_begin(self, args, state, control, **kw):
            if not hasattr(self, "t"):
                self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            times.append(now - self.t)
            self.t = now

    args = SentenceTransformerTrainingArguments(
        output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-5,
        bf16=precision == "bf16", use_cpu=True, logging_steps=1000, save_strategy="no", report_to="none",
        dataloader_drop_last=True, seed=42, disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds,
                                         loss=losses.MultipleNegativesRankingLoss(model, scale=20.0),
                                         callbacks=[Clock()])
    trainer.train()
    return [batch / t for t in times][WARMUP:]


def child(which: str, steps: int, precision: str, batch: int) -> None:
    with tempfile.TemporaryDirectory() as out:
        rates = (run_textcl if which == "textcl" else run_st)(steps, precision, batch, out)
    print("RESULT " + json.dumps(rates))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precisions", nargs="+", default=["no", "bf16"])
    parser.add_argument("--child", nargs=2, metavar=("WHICH", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.steps, args.child[1], args.batch_size)
        return
    summary = {}
    for precision in args.precisions:
        medians = {"textcl": [], "sentence-transformers": []}
        for r in range(args.repeats):
            for which in ("textcl", "sentence-transformers"):  # each run in a fresh process, interleaved
                cmd = [sys.executable, __file__, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                       "--child", "textcl" if which == "textcl" else "st", precision]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not line:
                    sys.exit(f"{which} run failed:\n{proc.stderr[-3000:]}")
                rates = json.loads(line[0][7:])
                medians[which].append(statistics.median(rates))
                print(f"[{precision}] run {r + 1} {which}: median {medians[which][-1]:.1f} pairs/s over {len(rates)} steps",
                      flush=True)
        ours, theirs = statistics.median(medians["textcl"]), statistics.median(medians["sentence-transformers"])
        summary[precision] = (ours, theirs)
        print(f"[{precision}] textcl {ours:.1f} pairs/s, sentence-transformers {theirs:.1f} pairs/s, "
              f"ratio {ours / theirs:.2f}x", flush=True)
    if "no" in summary and "bf16" in summary:
        print(f"textcl bf16 vs sentence-transformers fp32: {summary['bf16'][0] / summary['no'][1]:.2f}x; "
              f"textcl bf16 vs textcl fp32: {summary['bf16'][0] / summary['no'][0]:.2f}x")


if __name__ == "__main__":
    main()
