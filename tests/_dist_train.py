"""Run by tests/test_train_dist.py under torchrun: one training run, its process count from the launcher."""
import json
import sys

from textcl.config import config_from_dict
from textcl.train import train

config = config_from_dict(json.loads(sys.argv[1]))
train(config, output_dir=sys.argv[2])
