"""Threads beside other busy processes: /proc/stat readings, the free-core rule, and the governor's decisions."""
import random
import threading

import pytest
import torch

from textcl import thread_governor as tg
from textcl.cpu_load import CpuTimes, others_busy, read_times
from textcl.thread_governor import ThreadGovernor, free_threads, governor_for

#       user nice system idle iowait irq softirq steal
STAT = """cpu  300 0 100 1000 0 0 0 0 0 0
cpu0 100 40 50 500 7 11 13 17 0 0
cpu1 200 0 50 500 0 0 0 0 0 0
cpu2 900 0 0 0 0 0 0 0 0 0
intr 12345
"""


def test_read_times_counts_user_and_system_of_the_cpus_counted(tmp_path, monkeypatch):
    (tmp_path / "stat").write_text(STAT)
    monkeypatch.setattr("os.sysconf", lambda name: 100)
    monkeypatch.setattr("textcl.cpu_load._niced", lambda: False)
    t = read_times(tmp_path / "stat", cpus={0, 1})
    # user + system only: a niced job yields to us; idle, iowait, irq, softirq and steal are not other processes
    assert t.busy == pytest.approx((100 + 50 + 200 + 50) / 100) and t.cpus == 2
    assert read_times(tmp_path / "stat", cpus={2}).busy == pytest.approx(9.0)
    monkeypatch.setattr("textcl.cpu_load._niced", lambda: True)  # niced ourselves: niced jobs are our equals
    assert read_times(tmp_path / "stat", cpus={0, 1}).busy == pytest.approx((100 + 40 + 50 + 200 + 50) / 100)
    assert read_times(tmp_path / "missing") is None
    (tmp_path / "empty").write_text("cpu  1 2 3 4\n")  # no per-CPU lines
    assert read_times(tmp_path / "empty") is None


def test_others_busy_is_the_cpus_busy_time_less_our_own():
    a = CpuTimes(wall=10.0, busy=100.0, own=5.0, cpus=2)
    assert others_busy(a, CpuTimes(12.0, 103.0, 6.0, 2)) == pytest.approx(1.0)  # (3 - 1) / 2 s
    assert others_busy(a, CpuTimes(12.0, 101.0, 6.0, 2)) == 0.0  # our own time only: nobody else
    assert others_busy(a, CpuTimes(12.0, 200.0, 6.0, 2)) == 2.0  # never more than the CPUs counted
    assert others_busy(a, a) == 0.0  # no time passed
    assert others_busy(a, CpuTimes(12.0, 103.0, 6.0, 3)) is None  # a CPU came or went: not comparable


@pytest.mark.parametrize("ceiling, cpus, others, expected", [
    (2, 2, 0.0, 2), (2, 2, 0.1, 2), (2, 2, 0.3, 1), (2, 2, 1.0, 1), (2, 2, 2.0, 1),
    (1, 2, 0.0, 1), (8, 16, 4.0, 8), (16, 16, 4.0, 12), (16, 16, 4.3, 11),
    (2, 8, 6.0, 2),  # a container with a quota of 2 on an 8-CPU host whose other 6 are busy: its 2 are free
])
def test_free_threads(ceiling, cpus, others, expected):
    assert free_threads(ceiling, cpus, others) == expected


class Fake:
    """A clock and a /proc/stat whose other-process load is set by the test."""

    def __init__(self, cpus=2):
        self.now, self.busy, self.own, self.load, self.cpus = 0.0, 0.0, 0.0, 0.0, cpus

    def advance(self, seconds, ours=0.0):
        self.now += seconds
        self.own += ours * seconds
        self.busy += (ours + self.load) * seconds

    def sample(self):
        return CpuTimes(self.now, self.busy, self.own, self.cpus)


class Threads:
    """torch's per-thread count, as the governor sees it."""

    def __init__(self):
        self.local = threading.local()

    def get(self):
        return getattr(self.local, "n", 8)

    def set(self, n):
        self.local.n = n


def governor(fake, calls, counts=None, ceiling=2, hold=(5.0, 5.0)):
    counts = counts or Threads()
    rng = random.Random(0)
    rng.uniform = lambda a, b: hold[0]
    return ThreadGovernor(ceiling, interval=1.0, sample=fake.sample,
                          set_threads=lambda n: calls.append(n) or counts.set(n), get_threads=counts.get,
                          clock=lambda: fake.now, rng=rng)


def test_down_after_two_readings_up_after_three_and_the_hold():
    fake, calls = Fake(), []
    g = governor(fake, calls)
    assert g.tune() == 2 and calls == [2]  # no reading yet: the ceiling
    fake.advance(0.5, ours=2)
    assert g.tune() == 2 and calls == [2]  # not due: nothing measured, nothing set again
    fake.load = 1.0  # another process starts spinning on a core
    fake.advance(0.5, ours=1)
    assert g.tune() == 2 and g.others == pytest.approx(0.5)  # one reading says 1 thread
    fake.advance(1.0, ours=1)
    assert g.tune() == 1 and calls == [2, 1]  # two in a row: down (at t = 2)
    fake.load = 0.0
    for _ in range(4):  # t = 3..6: readings in a row say 2, but the hold after the drop (5 intervals) runs to 7
        fake.advance(1.0, ours=1)
        assert g.tune() == 1
    fake.advance(1.0, ours=1)
    assert g.tune() == 2 and calls == [2, 1, 2]  # t = 7: up
    assert [c["threads"] for c in g.changes] == [1, 2] and g.to_dict()["ceiling"] == 2


def test_up_one_thread_at_a_time(monkeypatch):
    fake, calls = Fake(cpus=8), []
    g = governor(fake, calls, ceiling=8)
    fake.load = 6.0
    monkeypatch.setattr("textcl.thread_governor.time.sleep", lambda s: fake.advance(s))
    g.settle(0.5)  # adopts the first measurement at once: 2 free
    assert g.target == 2
    fake.load = 0.0
    seen = []
    for _ in range(20):
        fake.advance(1.0, ours=g.target)
        seen.append(g.tune())
    assert seen[:3] == [2, 2, 3] and sorted(seen) == seen and seen[-1] == 8 and max(
        b - a for a, b in zip(seen, seen[1:])) == 1


def test_one_burst_does_not_flip_it():
    fake, calls = Fake(), []
    g = governor(fake, calls)
    g.tune()
    fake.load = 1.0
    fake.advance(1.0)
    assert g.tune() == 2
    fake.load = 0.0
    fake.advance(1.0)
    assert g.tune() == 2 and calls == [2] and g.changes == []


def test_a_missing_reading_restarts_the_count():
    fake, calls = Fake(), []
    g = governor(fake, calls)
    fake.load = 1.0
    fake.advance(1.0)
    assert g.measure() == 2  # one reading below
    real = g._sample
    g._sample = lambda: None
    fake.advance(1.0)
    assert g.measure() == 2
    g._sample = real
    fake.advance(1.0)
    assert g.measure() == 2  # no comparison possible after a gap: this reading only primes
    fake.advance(1.0)
    assert g.measure() == 2  # one in a row
    fake.advance(1.0)
    assert g.measure() == 1


def test_settle_measures_now_and_the_thread_changes_at_its_next_tune(monkeypatch):
    fake, calls = Fake(), []
    g = governor(fake, calls)
    fake.load = 1.0
    monkeypatch.setattr("textcl.thread_governor.time.sleep", lambda s: fake.advance(s))
    assert g.settle(0.5) == 1 and calls == [] and g.others == pytest.approx(1.0)
    assert g.changes == [{"at_s": 0.5, "threads": 1, "others": 1.0}]
    assert g.tune() == 1 and calls == [1]


def test_no_readings_keep_the_ceiling():
    calls, counts = [], Threads()
    g = ThreadGovernor(2, sample=lambda: None, set_threads=lambda n: calls.append(n) or counts.set(n),
                       get_threads=counts.get, clock=iter(range(100)).__next__)
    assert [g.tune() for _ in range(5)] == [2] * 5 and calls == [2] and g.settle(0) == 2


def test_a_count_someone_else_changed_is_set_again():
    fake, calls, counts = Fake(), [], Threads()
    g = governor(fake, calls, counts)
    assert g.tune() == 2 and calls == [2]
    counts.set(1)  # e.g. torch.set_num_threads(1) by other code on this thread
    assert g.tune() == 2 and calls == [2, 2]


def _share_between_two(first, second):
    """Two threads inside tg.running() at once, under ``first`` and ``second``: the counts each is given."""
    inside, release, shares = threading.Barrier(2, timeout=10), threading.Event(), []

    def encode(g):
        with tg.running(g):
            inside.wait()
            shares.append(g.tune())
            release.wait(10)

    workers = [threading.Thread(target=encode, args=(g,)) for g in (first, second)]
    for w in workers:
        w.start()
    for _ in range(1000):
        if len(shares) == 2:
            break
        threading.Event().wait(0.01)
    release.set()
    for w in workers:
        w.join(10)
    return shares


def test_encodes_running_at_once_share_the_target():
    fake, calls = Fake(), []
    g = governor(fake, calls)
    assert _share_between_two(g, g) == [1, 1]  # 2 threads' worth between two encodes
    assert g.tune() == 2  # alone again


def test_encodes_under_two_governors_in_one_process_share_it_too():
    """Two servers in one program (or serving beside train() in a notebook) each subtract the whole process's
    CPU time as their own: the running encodes are counted process-wide."""
    fake = Fake()
    a, b = governor(fake, []), governor(fake, [])
    assert _share_between_two(a, b) == [1, 1]


def test_a_quota_container_counts_its_neighbours_in_the_cgroup():
    """A quota of 2 CPUs on an 8-CPU host that is otherwise quiet; a load generator in the same container uses one
    CPU of the quota: one thread is what the quota leaves."""
    readings = iter([CpuTimes(0.0, 0.0, 0.0, 8, 0.0), CpuTimes(1.0, 2.0, 1.0, 8, 2.0),
                     CpuTimes(2.0, 4.0, 2.0, 8, 4.0)])
    now = iter([0.0, 1.0, 2.0])
    g = ThreadGovernor(2, sample=lambda: next(readings), set_threads=lambda n: None, get_threads=lambda: 0,
                       clock=lambda: next(now), quota=2.0)
    assert g.measure() == 2 and g.measure() == 1
    quiet = iter([CpuTimes(0.0, 0.0, 0.0, 8, 0.0), CpuTimes(1.0, 7.0, 1.0, 8, 1.0), CpuTimes(2.0, 14.0, 2.0, 8, 2.0)])
    now = iter([0.0, 1.0, 2.0])
    g = ThreadGovernor(2, sample=lambda: next(quiet), set_threads=lambda n: None, get_threads=lambda: 0,
                       clock=lambda: next(now), quota=2.0)
    assert g.measure() == 2 and g.measure() == 2  # 6 busy CPUs elsewhere on the host: 2 free, and the quota's 2


def test_torch_counts_threads_per_thread():
    """Why the governor tunes on the thread that runs the model: torch's count belongs to the calling thread."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        seen = []
        g = ThreadGovernor(1, sample=lambda: None)
        worker = threading.Thread(target=lambda: seen.append((g.tune(), torch.get_num_threads())))
        worker.start()
        worker.join()
        assert seen == [(1, 1)] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_explicit_or_environment_threads_are_not_governed():
    assert governor_for("serve", explicit=2, environ={}) is None
    assert governor_for("train", environ={"OMP_NUM_THREADS": "2"}) is None
    assert governor_for("train", environ={"MKL_NUM_THREADS": "1"}) is None
    assert isinstance(governor_for("train", environ={}), ThreadGovernor)


def test_a_governor_is_installed_per_thread():
    g = ThreadGovernor(1, sample=lambda: None, set_threads=lambda n: None, get_threads=lambda: 1)
    previous = tg.install(g)
    try:
        other = []
        t = threading.Thread(target=lambda: other.append(tg.current()))
        t.start()
        t.join()
        assert tg.current() is g and other == [None]
    finally:
        tg.install(previous)
    assert tg.current() is previous


def test_governing_installs_a_settled_governor_for_the_block_and_restores_the_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    settled = []
    monkeypatch.setattr(ThreadGovernor, "settle", lambda self, seconds=0.3: settled.append(self) or 1)
    monkeypatch.setattr(ThreadGovernor, "tune", lambda self: torch.set_num_threads(1) or 1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with tg.governing("encode") as g:
            assert tg.current() is g and settled == [g] and torch.get_num_threads() == 1
        assert tg.current() is None and torch.get_num_threads() == 2  # the block's choice does not outlive it
        with tg.governing("encode", explicit=2) as g:
            assert g is None and tg.current() is None
    finally:
        torch.set_num_threads(before)


def test_commands_that_encode_locally_are_governed(monkeypatch, tmp_path):
    from textcl import cli

    seen = []
    monkeypatch.setattr("textcl.commands.mine.run", lambda args: seen.append(tg.current()) or 0)
    monkeypatch.setattr("textcl.commands.eval.run_sts", lambda args: seen.append(tg.current()) or 0)
    monkeypatch.setattr(ThreadGovernor, "settle", lambda self, seconds=0.3: self.target)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cli.main(["mine", "--model", "m", "--pairs", "p.jsonl", "--out", str(tmp_path / "o.jsonl")]) == 0
    assert cli.main(["eval", "sts", "--model", "m", "--data", "d.tsv"]) == 0
    assert len(seen) == 2 and all(isinstance(g, ThreadGovernor) for g in seen) and tg.current() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # pinned: no governor
    assert cli.main(["eval", "sts", "--model", "m", "--data", "d.tsv"]) == 0 and seen[-1] is None


def test_encode_asks_the_calling_threads_governor_before_each_batch(tiny_bert_dir, monkeypatch):
    from textcl.models import Encoder

    asked = []
    monkeypatch.setattr("textcl.models.encoder.tune_current", lambda: asked.append(1))
    Encoder.load(str(tiny_bert_dir)).encode(["a cat", "a dog", "the sun", "rain", "a ship"], batch_size=2)
    assert len(asked) == 3  # 5 texts in batches of 2
