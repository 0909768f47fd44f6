"""Training throughput on the shapes users bring: textcl against SentenceTransformerTrainer with the matching loss.

Scenarios (same packaged all-MiniLM-L6-v2, same rows, batch, lr 2e-5, max length and precision on both sides):

- ``a``: unlabeled Wikipedia sentences, two dropout views, max length 32, batch 64; sentence-transformers
  trains MultipleNegativesRankingLoss on (sentence, sentence) pairs, as its docs advise for SimCSE.
- ``b128`` / ``b256``: short query -> long passage (title -> rest of the lead), max length 128 / 256,
  batch 32; MultipleNegativesRankingLoss on (anchor, positive).
- ``c``: triples with one hard negative mined by ``textcl mine``'s function, max length 128, batch 32;
  MultipleNegativesRankingLoss on (anchor, positive, negative).
- ``d``: GradCache at batch 512 (mini-batches of 64) on title -> first sentence, max length 64;
  CachedMultipleNegativesRankingLoss with the same mini-batch size.
- ``u``: title -> whole lead, only leads longer than 128 tokens, max length 128, batch 32: every document
  is cut at the limit, so length sorting saves no padding and what is left is the step itself.
- ``e``: graded STS-B train pairs (``data.kind: scored``), CoSENT, max length 128, batch 16 (the settings of
  recipes/sts-finetune.yaml); sentence-transformers' CoSENTLoss.

Each run is a fresh process; runs alternate textcl, sentence-transformers, textcl, ...; each reports its
median pairs/s over the steps after a warm-up, timed step end to step end on both sides (building and
tokenizing the batch counts). The ratio of the medians over runs is printed per precision, and textcl bf16
against sentence-transformers fp32 (its CPU default).

    python benchmarks/bench_train.py [--scenarios a b128 b256 c d] [--repeats 2] [--precisions no bf16]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402

LR = 2e-5
SCENARIOS = {
    "a": {"kind": "unlabeled", "max_len": 32, "batch": 64, "steps": 20, "warmup": 3},
    "b128": {"kind": "pairs", "max_len": 128, "batch": 32, "steps": 20, "warmup": 3},
    "b256": {"kind": "pairs", "max_len": 256, "batch": 32, "steps": 16, "warmup": 3},
    "c": {"kind": "triples", "max_len": 128, "batch": 32, "steps": 20, "warmup": 3},
    "d": {"kind": "short_pairs", "max_len": 64, "batch": 512, "steps": 5, "warmup": 1, "mini_batch": 64},
    "e": {"kind": "scored", "max_len": 128, "batch": 16, "steps": 60, "warmup": 5},
    "u": {"kind": "uniform_pairs", "max_len": 128, "batch": 32, "steps": 16, "warmup": 3},
}


GPU_SCALE = 4  # --gpu-scale multiplies every batch (and GradCache mini-batch) by this
MODEL = None  # --model: a local model folder (default: the packaged all-MiniLM-L6-v2)
DEVICE = "cpu"  # --device


def model_path() -> str:
    from textcl.models import packaged_minilm_path

    return MODEL or str(packaged_minilm_path())


def data_file(s: dict) -> str:
    """The scenario's rows: a .txt of sentences or a .jsonl of pairs/triples, built once under benchmarks/.cache."""
    n = s["batch"] * (s["steps"] + 1)
    return {"unlabeled": lambda: str(shapes.sentences(n)), "pairs": lambda: str(shapes.pairs(n)),
            "triples": lambda: str(shapes.triples(n)), "short_pairs": lambda: str(shapes.short_pairs(n)),
            "scored": lambda: str(shapes.scored(n)), "uniform_pairs": lambda: str(shapes.uniform_pairs(n))}[s["kind"]]()


def run_textcl(s: dict, precision: str, out: str) -> list[float]:
    from textcl.config import config_from_dict
    from textcl.train import train
    from textcl.train.logs import read_log

    kind = "pairs" if s["kind"] in ("short_pairs", "uniform_pairs") else s["kind"]
    config = config_from_dict({
        "model": {"name": model_path(), "max_seq_len": s["max_len"]},
        "data": {"path": data_file(s), "kind": kind, "max_examples": s["batch"] * (s["steps"] + 1),
                 "group_by_length": kind != "scored"},  # as recipes/sts-finetune.yaml
        "loss": {"cached": "mini_batch" in s, "mini_batch_size": s.get("mini_batch", 32),
                 "name": "cosent" if kind == "scored" else "infonce"},
        "eval": {"data": [], "test": [], "every": 0, "before": False},
        "optim": {"lr": LR},
        "train": {"batch_size": s["batch"], "max_steps": s["steps"], "mixed_precision": precision,
                  "checkpoint_every": 0, "log_every": 1, "report_to": "none", "plot": False},
    })
    train(config, output_dir=out)
    rows = [r for r in read_log(os.path.join(out, "log.csv")) if r["pairs_per_s"]]
    return [float(r["pairs_per_s"]) for r in rows][s["warmup"]:]


def run_st(s: dict, precision: str, out: str) -> list[float]:
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)
    from transformers import TrainerCallback

    model = SentenceTransformer(model_path(), device=DEVICE)
    model.max_seq_length = s["max_len"]
    n = s["batch"] * (s["steps"] + 1)
    path = data_file(s)
    if path.endswith(".txt"):
        sents = open(path, encoding="utf-8").read().splitlines()[:n]
        ds = Dataset.from_dict({"anchor": sents, "positive": sents})
    else:
        rows = [json.loads(line) for line in open(path, encoding="utf-8")][:n]
        ds = Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]})
    if s["kind"] == "scored":
        ds = ds.map(lambda r: {"score": r["score"] / 5.0})
        loss = losses.CoSENTLoss(model)
    elif "mini_batch" in s:
        loss = losses.CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=s["mini_batch"])
    else:
        loss = losses.MultipleNegativesRankingLoss(model, scale=20.0)
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
        output_dir=out, per_device_train_batch_size=s["batch"], max_steps=s["steps"], learning_rate=LR,
        bf16=precision == "bf16", use_cpu=DEVICE == "cpu", logging_steps=1000, save_strategy="no", report_to="none",
        dataloader_drop_last=True, seed=42, disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss, callbacks=[Clock()])
    trainer.train()
    return [s["batch"] / t for t in times][s["warmup"]:]


def child(which: str, scenario: str, precision: str) -> None:
    with tempfile.TemporaryDirectory() as out:
        rates = (run_textcl if which == "textcl" else run_st)(SCENARIOS[scenario], precision, out)
    print("RESULT " + json.dumps(rates))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["no", "bf16"])
    parser.add_argument("--model", help="a local model folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--gpu-scale", action="store_true", help=f"batches {GPU_SCALE}x larger (benchmarks/gpu.sh)")
    parser.add_argument("--child", nargs=3, metavar=("WHICH", "SCENARIO", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    global MODEL, DEVICE
    MODEL, DEVICE = args.model, args.device
    if args.gpu_scale:
        for s in SCENARIOS.values():
            s["batch"] *= GPU_SCALE
            if "mini_batch" in s:
                s["mini_batch"] *= GPU_SCALE
    if args.child:
        child(*args.child)
        return
    for scenario in args.scenarios:
        data_file(SCENARIOS[scenario])  # build (and mine) the data once, outside the timed runs
    table = []
    for scenario in args.scenarios:
        summary = {}
        for precision in args.precisions:
            medians = {"textcl": [], "st": []}
            for r in range(args.repeats):
                for which in ("textcl", "st"):  # each run in a fresh process, interleaved
                    cmd = [sys.executable, __file__, "--device", args.device, "--child", which, scenario, precision]
                    cmd += ["--model", args.model] if args.model else []
                    cmd += ["--gpu-scale"] if args.gpu_scale else []
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                    if proc.returncode or not line:
                        sys.exit(f"{which} run failed:\n{proc.stderr[-3000:]}")
                    rates = json.loads(line[0][7:])
                    medians[which].append(statistics.median(rates))
                    print(f"[{scenario} {precision}] run {r + 1} {which}: median {medians[which][-1]:.1f} pairs/s "
                          f"over {len(rates)} steps", flush=True)
            ours, theirs = statistics.median(medians["textcl"]), statistics.median(medians["st"])
            summary[precision] = (ours, theirs)
            table.append((scenario, f"{precision} vs {precision}", ours, theirs))
            print(f"[{scenario} {precision}] textcl {ours:.1f} pairs/s, sentence-transformers {theirs:.1f} pairs/s, "
                  f"ratio {ours / theirs:.2f}x", flush=True)
        if "no" in summary and "bf16" in summary:
            table.append((scenario, "textcl bf16 vs st fp32", summary["bf16"][0], summary["no"][1]))
    print("\n| scenario | precision | textcl pairs/s | sentence-transformers pairs/s | ratio |\n|---|---|---|---|---|")
    for scenario, precision, ours, theirs in table:
        print(f"| {scenario} | {precision} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}x |")


if __name__ == "__main__":
    main()
