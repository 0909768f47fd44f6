"""Quality parity on short queries against long passages: textcl and the sentence-transformers trainer, one epoch.

Both train the packaged all-MiniLM-L6-v2 for one epoch on the same (title -> rest of the lead) pairs
(``shapes.pairs``), batch 32, lr 2e-5, warmup 10%, max length 128, the same precision, in-batch negatives
with scale 20 (temperature 0.05), no evaluation during training. Then one evaluator, textcl's
``evaluate_retrieval`` (exact search), scores the base model and both trained models on the held-out BEIR
folder (500 unseen titles, 2,000 passages) at each ``--eval-lengths`` maximum length.

    python benchmarks/bench_quality.py [--pairs 2048] [--precision no] [--eval-lengths 128 256]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402

BATCH, LR, MAX_LEN, WARMUP = 32, 2e-5, 128, 0.1


def train_textcl(pairs: Path, precision: str, out: Path) -> Path:
    from textcl.config import config_from_dict
    from textcl.models import packaged_minilm_path
    from textcl.train import train

    config = config_from_dict({
        "model": {"name": str(packaged_minilm_path()), "max_seq_len": MAX_LEN},
        "data": {"path": str(pairs), "kind": "pairs"},
        "eval": {"data": [], "test": [], "every": 0, "before": False, "select_best": False},
        "optim": {"lr": LR, "warmup_ratio": WARMUP},
        "train": {"batch_size": BATCH, "epochs": 1, "mixed_precision": precision, "checkpoint_every": 0,
                  "report_to": "none", "plot": False},
    })
    return train(config, output_dir=out).model_dir


def train_st(pairs: Path, precision: str, out: Path) -> Path:
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)

    from textcl.models import packaged_minilm_path

    model = SentenceTransformer(str(packaged_minilm_path()), device="cpu")
    model.max_seq_length = MAX_LEN
    rows = [json.loads(line) for line in pairs.open(encoding="utf-8")]
    ds = Dataset.from_dict({"anchor": [r["anchor"] for r in rows], "positive": [r["positive"] for r in rows]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=BATCH, num_train_epochs=1, learning_rate=LR,
        warmup_ratio=WARMUP, bf16=precision == "bf16", use_cpu=True, save_strategy="no", report_to="none",
        dataloader_drop_last=True, seed=42, disable_tqdm=True, logging_steps=1000)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=ds,
                               loss=losses.MultipleNegativesRankingLoss(model, scale=20.0)).train()
    model.save(str(out / "model"))
    return out / "model"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--precision", default="no", choices=["no", "bf16"])
    parser.add_argument("--eval-lengths", type=int, nargs="+", default=[128, 256])
    args = parser.parse_args()

    from textcl.eval.retrieval import evaluate_retrieval
    from textcl.models import Encoder, packaged_minilm_path

    pairs, beir = shapes.pairs(args.pairs), shapes.heldout()
    results: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"base all-MiniLM-L6-v2": packaged_minilm_path()}
        for name, fn in (("textcl", train_textcl), ("sentence-transformers", train_st)):
            t0 = time.perf_counter()
            models[name] = fn(pairs, args.precision, Path(tmp) / name)
            print(f"{name}: one epoch of {args.pairs} pairs in {time.perf_counter() - t0:.0f} s", flush=True)
        for name, path in models.items():
            for length in args.eval_lengths:
                encoder = Encoder.load(path, max_seq_length=length, device="cpu")
                ndcg = 100 * evaluate_retrieval(encoder, beir, batch_size=64)["ndcg@10"]
                results.setdefault(name, {})[length] = ndcg
                print(f"{name} @ max length {length}: nDCG@10 {ndcg:.2f}", flush=True)
    print("\n| model | " + " | ".join(f"nDCG@10 @ {n}" for n in args.eval_lengths) + " |")
    print("|---|" + "---|" * len(args.eval_lengths))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(f"{row[n]:.2f}" for n in args.eval_lengths) + " |")
    for n in args.eval_lengths:
        delta = results["textcl"][n] - results["sentence-transformers"][n]
        print(f"max length {n}: textcl - sentence-transformers = {delta:+.2f} nDCG@10 "
              f"(target |delta| <= 0.5); textcl - base = {results['textcl'][n] - results['base all-MiniLM-L6-v2'][n]:+.2f}")


if __name__ == "__main__":
    main()
