"""Two processes (CPU gloo, torchrun) with cross-device negatives train like one process on the whole batch."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent


def run(config: dict, out: Path, nproc: int) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [torchrun, "--nproc_per_node", str(nproc), "--master_port", str(29500 + nproc + os.getpid() % 1000),
           str(HERE / "_dist_train.py"), json.dumps(config), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_two_processes_equal_one_on_the_concatenated_batch(tiny_bert_dir, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"sentence number {i} about topic {i % 7}" for i in range(64)) + "\n")

    def config(batch):
        return {"model": {"name": str(tiny_bert_dir), "max_seq_len": 16, "dropout": 0.0},
                "data": {"path": str(corpus)},
                "loss": {"gather_across_devices": True},
                "eval": {"data": [], "test": [], "every": 0, "before": False},
                # eps = 1 keeps Adam's first steps smooth in the gradient (with a tiny eps, m / sqrt(v) is the
                # sign of the gradient, and float noise on near-zero gradients would flip whole updates)
                "optim": {"lr": 0.1, "eps": 1.0},
                "train": {"batch_size": batch, "max_steps": 3, "checkpoint_every": 0, "report_to": "none",
                          "plot": False}}

    run(config(8), tmp_path / "one", 1)
    run(config(4), tmp_path / "two", 2)
    one = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    for key in one:
        torch.testing.assert_close(one[key], two[key], atol=1e-5, rtol=0)
