"""Run by tests/test_train_dist.py under torchrun: records which elements the first training dropout call
zeroed on this process (``OUT/dropout-rank<R>.pt``), through torch's dropout or textcl's fast CPU dropout, then
trains on."""
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import textcl.models.dropout as fast
from textcl.config import config_from_dict
from textcl.train import train

out = Path(sys.argv[2])


def recorder(real):
    def recording(x, p=0.5, training=True, *args, **kwargs):
        y = real(x, p, training, *args, **kwargs)
        record(y, p, training)
        return y
    return recording


def record(y, p, training):
    path = out / f"dropout-rank{os.environ['RANK']}.pt"
    if training and p > 0 and not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        torch.save((y == 0).cpu(), path)
    return y


F.dropout = recorder(F.dropout)  # torch's dropout (model.fast_dropout: false, or off the CPU)
fast.fast_dropout = recorder(fast.fast_dropout)  # textcl's CPU dropout
train(config_from_dict(json.loads(sys.argv[1])), output_dir=str(out))
