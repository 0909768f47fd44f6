"""Run by tests/test_train_dist.py under torchrun: mixed_precision auto where each process, measuring alone (its
own cache), would choose differently; prints the precision each process trained in."""
import json
import os
import sys

from textcl.config import config_from_dict
from textcl.models import precision
from textcl.train import Trainer

rank = int(os.environ["RANK"])
os.environ["TEXTCL_CACHE"] = os.path.join(sys.argv[2], f"cache-{rank}")
ratio = 0.5 if rank == 0 else 2.0  # process 0 measures bf16 faster, process 1 slower
precision.precision_probe = lambda *a, **k: {"fp32_s": 1.0, "bf16_s": ratio, "bf16_over_fp32": ratio, "spread": 0.01}
if sys.argv[3:] == ["fail"] and rank == 0:  # process 0's measurement breaks: every process must stop with it
    precision.precision_probe = lambda *a, **k: {"fp32_s": float("nan"), "bf16_s": 1.0}
trainer = Trainer(config_from_dict(json.loads(sys.argv[1])), sys.argv[2])
trainer.run()
print(f"rank {rank} trained in {trainer.run_state.precision}", file=sys.stderr)
