"""Run by tests/test_train_dist.py under torchrun: a training run whose loss turns NaN on one process only."""
import json
import os
import sys

from textcl.config import config_from_dict
from textcl.losses import InfoNCE
from textcl.train import TrainingDiverged, train

bad_rank, bad_call = int(sys.argv[3]), int(sys.argv[4])
real, calls = InfoNCE.forward, {"n": 0}


def poisoned(self, *args, **kwargs):
    calls["n"] += 1
    loss = real(self, *args, **kwargs)
    return loss * float("nan") if calls["n"] == bad_call and int(os.environ["RANK"]) == bad_rank else loss


InfoNCE.forward = poisoned
try:
    train(config_from_dict(json.loads(sys.argv[1])), output_dir=sys.argv[2])
except TrainingDiverged as exc:
    print(f"rank {os.environ['RANK']}: {exc}", file=sys.stderr)
    sys.exit(3)
