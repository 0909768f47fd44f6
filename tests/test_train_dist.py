"""Two processes (CPU gloo, torchrun) with cross-device negatives train like one process on the whole batch."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent


def launch(script: str, config: dict, out: Path, nproc: int, *args: str, timeout: int = 300):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [torchrun, "--nproc_per_node", str(nproc), "--master_port", str(29500 + nproc + os.getpid() % 1000),
           str(HERE / script), json.dumps(config), str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def run(config: dict, out: Path, nproc: int) -> None:
    proc = launch("_dist_train.py", config, out, nproc)
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


def test_a_nan_on_one_process_stops_every_process_naming_the_step_and_checkpoint(tiny_bert_dir, tmp_path):
    """The loss turns NaN on rank 1 only, at step 3: both ranks stop at once with the same step and the last
    good checkpoint (a per-process check left rank 0 waiting in the next all-reduce until the timeout)."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"sentence number {i} about topic {i % 7}" for i in range(64)) + "\n")
    config = {"model": {"name": str(tiny_bert_dir), "max_seq_len": 16},
              "data": {"path": str(corpus)}, "loss": {"gather_across_devices": True},
              "eval": {"data": [], "test": [], "every": 0, "before": False},
              "train": {"batch_size": 4, "max_steps": 6, "checkpoint_every": 2, "report_to": "none", "plot": False}}
    proc = launch("_dist_nan.py", config, tmp_path / "run", 2, "1", "3", timeout=120)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert re.search(rf"rank {rank}: .*at step 3; training stopped before the optimizer step\. "
                         r"The last good checkpoint is \S*step-00000002", proc.stderr), proc.stderr[-3000:]
    assert "rank 1: the loss is nan" in proc.stderr and "rank 0: the loss is not finite on another process" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints" / "step-00000003").exists()


def test_processes_draw_independent_dropout_masks(tiny_bert_dir, tmp_path):
    """Each process seeds its training randomness with seed + rank: the first dropout masks of two ranks agree
    on about 1 - 2p(1 - p) = 82% of their elements at p = 0.1, as independent masks do (with one seed for every
    process they agreed on all of them, so every rank's row i had the same dropout noise)."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"sentence number {i} about topic {i % 7}" for i in range(64)) + "\n")
    config = {"model": {"name": str(tiny_bert_dir), "max_seq_len": 16, "dropout": 0.1},
              "data": {"path": str(corpus), "group_by_length": False},
              "eval": {"data": [], "test": [], "every": 0, "before": False},
              "train": {"batch_size": 4, "max_steps": 1, "checkpoint_every": 0, "report_to": "none", "plot": False}}
    proc = launch("_dist_dropout.py", config, tmp_path / "run", 2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    m0, m1 = (torch.load(tmp_path / "run" / f"dropout-rank{r}.pt") for r in (0, 1))
    assert m0.shape == m1.shape and m0.numel() > 1000
    assert 0.07 < m0.float().mean() < 0.13  # p = 0.1
    agree = (m0 == m1).float().mean().item()
    assert 0.78 < agree < 0.86, agree


def auto_config(model_dir, tmp_path) -> dict:
    """One step of mixed_precision auto on 64 short sentences."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"sentence number {i} about topic {i % 7}" for i in range(64)) + "\n")
    return {"model": {"name": str(model_dir), "max_seq_len": 16},
            "data": {"path": str(corpus)}, "eval": {"data": [], "test": [], "every": 0, "before": False},
            "train": {"batch_size": 4, "max_steps": 1, "checkpoint_every": 0, "mixed_precision": "auto",
                      "report_to": "none", "plot": False}}


def test_every_process_trains_in_the_precision_process_0_measured(tiny_bert_dir, tmp_path):
    """mixed_precision auto under torchrun: process 0 measures and the others take its choice (measuring each on
    its own, a loaded process could pick fp32 beside a bf16 one)."""
    config = auto_config(tiny_bert_dir, tmp_path)
    proc = launch("_dist_precision.py", config, tmp_path / "run", 2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "rank 0 trained in bf16" in proc.stderr and "rank 1 trained in bf16" in proc.stderr, proc.stderr[-2000:]


def test_a_failed_measurement_on_process_0_stops_every_process_with_its_message(tiny_bert_dir, tmp_path):
    config = auto_config(tiny_bert_dir, tmp_path)
    proc = launch("_dist_precision.py", config, tmp_path / "run", 2, "fail", timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.count("train.mixed_precision auto: process 0 could not measure") >= 2, proc.stderr[-3000:]


@pytest.mark.parametrize("precision", ["auto", "no"])
def test_processes_wait_for_process_0_as_long_as_sharded_encoding_does(tiny_bert_dir, tmp_path, precision):
    """Process 0 evaluates, saves and scores train.wise_alpha's grid while the others wait at a barrier: the
    group's timeout is textcl's barrier timeout (7 days), not torch's 30 min (gloo) or 10 min (nccl), whichever
    path (auto precision starts the group before the Accelerator) built it."""
    config = auto_config(tiny_bert_dir, tmp_path)
    config["train"]["mixed_precision"] = precision
    proc = launch("_dist_timeout.py", config, tmp_path / "run", 2, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout + proc.stderr
    assert "rank 0 timeout 604800 s" in out and "rank 1 timeout 604800 s" in out, out[-2000:]
