"""Run by tests/test_train_dist.py under torchrun: records which elements the first training dropout call
zeroed on this process (``OUT/dropout-rank<R>.pt``), then trains on."""
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from textcl.config import config_from_dict
from textcl.train import train

real = F.dropout
out = Path(sys.argv[2])


def recording(x, p=0.5, training=True, inplace=False):
    y = real(x, p, training, inplace)
    path = out / f"dropout-rank{os.environ['RANK']}.pt"
    if training and p > 0 and not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        torch.save((y == 0).cpu(), path)
    return y


F.dropout = recording
train(config_from_dict(json.loads(sys.argv[1])), output_dir=str(out))
