"""Run by tests/test_train_dist.py under torchrun: build a training run's accelerator, print its group's timeout."""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from textcl.config import config_from_dict
from textcl.train.build import _accelerator

config = config_from_dict(json.loads(sys.argv[1]))
acc, _ = _accelerator(config, Path(sys.argv[2]), [], {})
backend = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu"))
print(f"rank {acc.process_index} timeout {backend.options._timeout.total_seconds():.0f} s")
acc.wait_for_everyone()
dist.destroy_process_group()
