"""Matryoshka dimensions on MiniLM: the same pairs trained with and without ``loss.matryoshka``, each model
scored at 384, 256, 128, 64 and 32 dimensions (first d dimensions, renormalised).

Both runs: the packaged all-MiniLM-L6-v2, ``--pairs`` (title -> rest of the lead) pairs from the packaged
Wikipedia (``shapes.pairs``), one epoch, batch 32, lr 2e-5, 10% warm-up, max length 128, InfoNCE at
temperature 0.05, fp32, seed 42; the Matryoshka run weights every dimension 1. Scores: STS-B test Spearman x100
and nDCG@10 x100 on the held-out BEIR folder (``shapes.heldout``), from one encoding per model.

With ``--data stsb`` both runs instead train CoSENT on the packaged STS-B train (5,749 scored pairs), one
epoch, batch 16, lr 2e-5, 10% warm-up, max length 128, fp32, seed 42: the recipes/sts-finetune.yaml settings for
one epoch, with and without ``loss.matryoshka``.

    python benchmarks/bench_matryoshka.py [--data pairs|stsb] [--pairs 2048]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dims as dimlib  # noqa: E402
import shapes  # noqa: E402
from pairs_run import train_pairs  # noqa: E402

DIMS = [384, 256, 128, 64, 32]


def train_run(pairs: Path | None, out: Path, matryoshka: bool) -> Path:
    extra = {"matryoshka": {"dims": DIMS}} if matryoshka else {}
    if pairs is not None:
        return train_pairs(pairs, out, extra).model_dir
    from textcl.config import load_config
    from textcl.train import train

    overrides = ["train.epochs=1", "train.mixed_precision=no", "train.checkpoint_every=0", "train.plot=false",
                 "train.report_to=none", "eval.every=0", "eval.before=false", "eval.select_best=false",
                 "eval.data=[]", "eval.test=[]", "eval.guard=[]", "data.mix=null", "train.wise_alpha=null"]
    if matryoshka:
        overrides.append(f"loss.matryoshka={json.dumps({'dims': DIMS})}")
    config = load_config(Path(__file__).resolve().parent.parent / "recipes" / "sts-finetune.yaml", overrides)
    return train(config, output_dir=out).model_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", choices=["pairs", "stsb"], default="pairs")
    parser.add_argument("--pairs", type=int, default=2048)
    args = parser.parse_args()
    from textcl.models import Encoder, packaged_minilm_path

    pairs, beir = (shapes.pairs(args.pairs) if args.data == "pairs" else None), shapes.heldout()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"base": packaged_minilm_path(),
                  "plain": train_run(pairs, Path(tmp) / "plain", False),
                  "matryoshka": train_run(pairs, Path(tmp) / "matryoshka", True)}
        for name, path in models.items():
            results[name] = dimlib.scores_at_dims(Encoder.load(path, device="cpu"), DIMS, beir)
            print(name, json.dumps(results[name]), flush=True)
    print("\n| model | " + " | ".join(f"{d}: STS-B test / nDCG@10" for d in DIMS) + " |")
    print("|---|" + "---|" * len(DIMS))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[d]['stsb-test']:.2f} / {r[d]['ndcg@10']:.2f}" for d in DIMS) + " |")
    m, p = results["matryoshka"], results["plain"]
    print(f"\nMatryoshka at 64: STS-B test {m[64]['stsb-test']:.2f} vs its 384 {m[384]['stsb-test']:.2f} "
          f"({m[64]['stsb-test'] - m[384]['stsb-test']:+.2f}); the plain model cut to 64: {p[64]['stsb-test']:.2f} "
          f"({m[64]['stsb-test'] - p[64]['stsb-test']:+.2f} for Matryoshka)")
    print("JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
