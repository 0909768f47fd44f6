"""Graded-similarity fine-tuning on STS-B: textcl's recipes/sts-finetune.yaml against sentence-transformers'
CoSENTLoss and AnglELoss with the same settings, in one run.

Same packaged all-MiniLM-L6-v2, same packaged STS-B train (5,749 pairs), 4 epochs, batch 16, the recipe's
learning rate (``--lr`` sets another for every arm) with 10% warm-up and linear decay, max length 128, fp32 in
every arm (equal precision), seed 42 (``--seed``). Each arm is a fresh process, run one after the other. Every
final model is scored by the same code (textcl's STS evaluation, Spearman x100 of cosines) on STS-B dev and
test. Training throughput is pairs per second of training time: textcl's ``time.train_s`` (evaluations
excluded), sentence-transformers' ``train_runtime`` (it evaluates nothing during training). textcl keeps its
best step on STS-B dev, as its recipe says; sentence-transformers keeps its last step.

    python benchmarks/bench_sts_finetune.py [--arms textcl-cosent st-cosent st-angle textcl-angle] [--epochs 4]
        [--seed 42] [--lr RECIPE'S] [--ema-decay 0]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARMS = ("textcl-cosent", "st-cosent", "st-angle", "textcl-angle")
BATCH, WARMUP, MAX_LEN = 16, 0.1, 128
RECIPE = ROOT / "recipes" / "sts-finetune.yaml"


def minilm() -> str:
    from textcl.models import packaged_minilm_path

    return str(packaged_minilm_path())


def score(model_dir: str) -> dict:
    from textcl.eval.sts import evaluate_sts
    from textcl.models import Encoder

    report = evaluate_sts(Encoder.load(model_dir, device="cpu"), ["stsb-dev", "stsb-test"])
    return {name: round(m["spearman"], 2) for name, m in report["sets"].items()}


def run_textcl(loss: str, epochs: int, out: str, seed: int, lr: float, ema_decay: float) -> dict:
    from textcl.config import load_config
    from textcl.train import train

    config = load_config(RECIPE,
                         [f"loss.name={loss}", f"train.epochs={epochs}", "train.mixed_precision=no",
                          "train.checkpoint_every=0", "train.plot=false", "train.report_to=none",
                          f"train.seed={seed}", f"optim.lr={lr}", f"optim.ema_decay={ema_decay}",
                          # the trainers compared as they train: no guard sets, no general-domain term, no
                          # WiSE-FT merge (bench_keep.py measures those)
                          "eval.guard=[]", "data.mix=null", "train.wise_alpha=null"])
    t0 = time.perf_counter()
    result = train(config, output_dir=out)
    wall = time.perf_counter() - t0
    pairs = result.steps * BATCH
    return {"train_s": result.metrics["time"]["train_s"], "eval_s": result.metrics["time"]["eval_s"], "wall_s": wall,
            "pairs": pairs, "best_step": result.metrics["best_step"], **score(str(result.model_dir))}


def run_st(loss: str, epochs: int, out: str, seed: int, lr: float, ema_decay: float) -> dict:
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)

    from textcl.data.sts import load_sts

    train_set = load_sts("stsb-train")
    ds = Dataset.from_dict({"sentence1": train_set.sentences1, "sentence2": train_set.sentences2,
                            "score": [float(s) / 5.0 for s in train_set.scores]})
    model = SentenceTransformer(minilm(), device="cpu")
    model.max_seq_length = MAX_LEN
    loss_fn = losses.CoSENTLoss(model) if loss == "cosent" else losses.AnglELoss(model)
    args = SentenceTransformerTrainingArguments(
        output_dir=out, per_device_train_batch_size=BATCH, num_train_epochs=epochs, learning_rate=lr,
        warmup_ratio=WARMUP, use_cpu=True, save_strategy="no", report_to="none", logging_steps=10_000,
        seed=seed, disable_tqdm=True)
    t0 = time.perf_counter()
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss_fn)
    output = trainer.train()
    wall = time.perf_counter() - t0
    model.save(os.path.join(out, "model"))
    pairs = output.global_step * BATCH
    return {"train_s": output.metrics["train_runtime"], "eval_s": 0.0, "wall_s": wall, "pairs": pairs,
            "best_step": output.global_step, **score(os.path.join(out, "model"))}


def child(arm: str, epochs: int, seed: int, lr: float, ema_decay: float) -> None:
    side, loss = arm.split("-")
    with tempfile.TemporaryDirectory() as out:
        result = (run_textcl if side == "textcl" else run_st)(loss, epochs, out, seed, lr, ema_decay)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arms", nargs="+", default=list(ARMS[:3]), choices=ARMS)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42, help="data order and dropout, for every arm")
    parser.add_argument("--lr", type=float, help="every arm's peak learning rate (default: the recipe's)")
    parser.add_argument("--ema-decay", type=float, default=0.0, help="textcl arms: optim.ema_decay")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lr is None:
        from textcl.config import load_config

        args.lr = load_config(RECIPE).optim.lr
    if args.child:
        child(args.child, args.epochs, args.seed, args.lr, args.ema_decay)
        return
    results = {}
    for arm in args.arms:
        proc = subprocess.run([sys.executable, __file__, "--child", arm, "--epochs", str(args.epochs),
                               "--seed", str(args.seed), "--lr", str(args.lr), "--ema-decay", str(args.ema_decay)],
                              capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"{arm} failed")
        r = json.loads(line[7:])
        r["pairs_per_s"] = r["pairs"] / r["train_s"]
        results[arm] = r
        print(f"{arm:14s} dev {r['stsb-dev']:.2f}  test {r['stsb-test']:.2f}  train {r['train_s']:.0f} s "
              f"({r['pairs_per_s']:.1f} pairs/s)  eval {r['eval_s']:.0f} s  wall {r['wall_s']:.0f} s", flush=True)
    st = [a for a in results if a.startswith("st-")]
    for arm in (a for a in results if a.startswith("textcl-")):
        for peer in st:
            print(f"{arm} / {peer}: throughput {results[arm]['pairs_per_s'] / results[peer]['pairs_per_s']:.2f}x, "
                  f"test {results[arm]['stsb-test'] - results[peer]['stsb-test']:+.2f}")
    print("JSON " + json.dumps({"seed": args.seed, "lr": args.lr, "arms": results}))


if __name__ == "__main__":
    main()
