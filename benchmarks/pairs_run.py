"""One training run on (anchor, positive) pairs or triples with the settings the pair benchmarks share.

The packaged all-MiniLM-L6-v2, one epoch, batch 32, lr 2e-5, 10% warm-up, max length 128, fp32, seed 42, no
evaluation during training; ``loss`` adds fields to the recipe's loss section (InfoNCE at 0.05 by default).
"""
from __future__ import annotations

from pathlib import Path

BATCH, SEED = 32, 42  #: the runs' batch size and seed (benchmarks that replay the runs' batches import them)


def train_pairs(pairs: Path, out: Path, loss: dict | None = None, kind: str = "pairs", seed: int = SEED):
    """Train and return the :class:`~textcl.train.TrainResult`; ``kind`` ``triples`` for a negative column."""
    from textcl.config import config_from_dict
    from textcl.models import packaged_minilm_path
    from textcl.train import train

    config = config_from_dict({
        "model": {"name": str(packaged_minilm_path()), "max_seq_len": 128},
        "data": {"path": str(pairs), "kind": kind},
        "loss": {"temperature": 0.05, **(loss or {})},
        "eval": {"data": [], "test": [], "every": 0, "before": False, "select_best": False},
        "optim": {"lr": 2e-5, "warmup_ratio": 0.1},
        "train": {"batch_size": BATCH, "epochs": 1, "mixed_precision": "no", "checkpoint_every": 0,
                  "report_to": "none", "plot": False, "seed": seed},
    })
    return train(config, output_dir=out)
