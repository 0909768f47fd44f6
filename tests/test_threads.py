"""Threads for the work at hand: container CPU quotas, the per-work rule, and who wins (explicit, OMP_NUM_THREADS)."""
import os

import pytest
import torch

from textcl.threads import cgroup_quota, apply_threads, threads_for, usable_cores


def test_cgroup_v2_and_v1_quotas(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(v1) == 3.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(v1) is None
    assert cgroup_quota(tmp_path / "missing") is None
    (tmp_path / "cpu.max").write_text("100000 0\n")  # a broken period: no quota, not a ZeroDivisionError
    assert cgroup_quota(tmp_path) is None


def test_a_quota_caps_the_affinity_mask(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs of a 64-core host
    assert usable_cores(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path) == 64


@pytest.mark.parametrize("work, processes, workers, cores, expected", [
    ("train", 1, 1, 2, 2), ("train", 2, 1, 2, 1), ("train", 3, 1, 2, 1), ("encode", 2, 1, 16, 8),
    ("serve", 1, 1, 2, 2), ("serve", 1, 2, 16, 8), ("serve", 1, 1, 1, 1), ("serve", 1, 3, 2, 1),
])
def test_the_rule_per_work(work, processes, workers, cores, expected):
    assert threads_for(work, processes=processes, workers=workers, cores=cores) == expected


def test_unknown_work_is_named():
    with pytest.raises(ValueError, match=r"work: expected one of train, encode, serve, got 'eval'"):
        threads_for("eval", cores=2)


def test_explicit_then_omp_then_the_rule(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert apply_threads("train", explicit=1, environ={}) == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(1)
        assert apply_threads("train", environ={"OMP_NUM_THREADS": "1"}) == 1  # torch's own reading stands
        assert apply_threads("train", environ={"MKL_NUM_THREADS": "1"}) == 1
        monkeypatch.setattr("textcl.threads.usable_cores", lambda: 4)
        assert apply_threads("train", processes=2, environ={}) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
