"""Threads beside other busy processes: /proc/stat readings, the free-core rule, and the governor's decisions."""
import threading

import pytest

from textcl.cpu_load import CpuTimes, others_busy, read_times
from textcl.threads import ThreadGovernor, free_threads, governor_for, install, tune_current, uninstall

STAT = """cpu  300 0 100 1000 0 0 0 0 0 0
cpu0 100 0 50 500 7 0 0 0 0 0
cpu1 200 0 50 500 0 0 0 0 0 0
cpu2 900 0 0 0 0 0 0 0 0 0
intr 12345
"""


def test_read_times_sums_busy_ticks_of_the_cpus_counted(tmp_path, monkeypatch):
    (tmp_path / "stat").write_text(STAT)
    monkeypatch.setattr("os.sysconf", lambda name: 100)
    t = read_times(tmp_path / "stat", cpus={0, 1})
    assert t.busy == pytest.approx((150 + 250) / 100)  # user + system; idle and iowait are not busy
    assert read_times(tmp_path / "stat", cpus={2}).busy == pytest.approx(9.0)
    assert read_times(tmp_path / "missing") is None
    (tmp_path / "empty").write_text("cpu  1 2 3 4\n")  # no per-CPU lines
    assert read_times(tmp_path / "empty") is None


def test_others_busy_is_the_cpus_busy_time_less_our_own():
    a = CpuTimes(wall=10.0, busy=100.0, own=5.0)
    assert others_busy(a, CpuTimes(wall=12.0, busy=103.0, own=6.0)) == pytest.approx(1.0)  # (3 - 1) / 2 s
    assert others_busy(a, CpuTimes(wall=12.0, busy=101.0, own=6.0)) == 0.0  # our own time only: nobody else
    assert others_busy(a, a) == 0.0  # no time passed


@pytest.mark.parametrize("ceiling, cores, others, expected", [
    (2, 2, 0.0, 2), (2, 2, 0.1, 2), (2, 2, 0.3, 1), (2, 2, 1.0, 1), (2, 2, 2.0, 1),
    (1, 2, 0.0, 1), (8, 16, 4.0, 8), (16, 16, 4.0, 12), (16, 16, 4.3, 11),
])
def test_free_threads(ceiling, cores, others, expected):
    assert free_threads(ceiling, cores, others) == expected


class Fake:
    """A clock and a /proc/stat whose other-process load is set by the test."""

    def __init__(self):
        self.now, self.busy, self.own, self.load = 0.0, 0.0, 0.0, 0.0

    def advance(self, seconds, ours=0.0):
        self.now += seconds
        self.own += ours * seconds
        self.busy += (ours + self.load) * seconds

    def sample(self):
        return CpuTimes(self.now, self.busy, self.own)


def governor(fake, calls):
    return ThreadGovernor(2, cores=2, interval=1.0, sample=fake.sample, set_threads=calls.append,
                          clock=lambda: fake.now)


def test_the_governor_drops_a_thread_after_two_readings_agree_and_takes_it_back():
    fake, calls = Fake(), []
    g = governor(fake, calls)
    assert g.tune() == 2 and calls == [2]  # no reading yet: the ceiling
    fake.advance(0.5, ours=2)
    assert g.tune() == 2 and calls == [2]  # not due: nothing measured, nothing set again
    fake.load = 1.0  # another process starts spinning on a core
    fake.advance(0.5, ours=1)
    assert g.tune() == 2 and g.others == pytest.approx(0.5)  # one reading says 1 thread: pending
    fake.advance(1.0, ours=1)
    assert g.tune() == 1 and calls == [2, 1]  # two in a row: changed
    fake.load = 0.0
    fake.advance(1.0, ours=1)
    assert g.tune() == 1
    fake.advance(1.0, ours=1)
    assert g.tune() == 2 and calls == [2, 1, 2]
    assert [c["threads"] for c in g.changes] == [1, 2] and g.to_dict()["ceiling"] == 2


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


def test_settle_adopts_one_reading_at_once(monkeypatch):
    fake, calls = Fake(), []
    g = governor(fake, calls)
    fake.load = 1.0
    monkeypatch.setattr("textcl.threads.time.sleep", lambda s: fake.advance(s))
    assert g.settle(0.3) == 1 and calls == [1] and g.others == pytest.approx(1.0)
    assert g.changes == [{"at_s": 0.3, "threads": 1, "others": 1.0}]


def test_no_readings_keep_the_ceiling():
    calls = []
    g = ThreadGovernor(2, cores=2, sample=lambda: None, set_threads=calls.append, clock=iter(range(100)).__next__)
    assert [g.tune() for _ in range(5)] == [2] * 5 and calls == [2] and g.settle(0) == 2


def test_each_thread_sets_its_own_count():
    fake, calls = Fake(), []
    g = governor(fake, calls)
    g.tune()
    worker = threading.Thread(target=g.tune)
    worker.start()
    worker.join()
    assert calls == [2, 2]  # torch's count is per thread: the second thread sets it for itself


def test_explicit_or_environment_threads_are_not_governed():
    assert governor_for("serve", explicit=2, environ={}) is None
    assert governor_for("train", environ={"OMP_NUM_THREADS": "2"}) is None
    assert governor_for("train", environ={"MKL_NUM_THREADS": "1"}) is None
    assert isinstance(governor_for("train", environ={}), ThreadGovernor)


def test_tune_current_uses_the_installed_governor_until_it_is_removed():
    fake, calls = Fake(), []
    g = governor(fake, calls)
    install(g)
    try:
        tune_current()
        assert calls == [2]
    finally:
        uninstall(g)
    uninstall(g)  # twice: nothing
    tune_current()
    assert calls == [2]


def test_governing_installs_a_settled_governor_for_the_block(monkeypatch):
    from textcl import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    settled = []
    monkeypatch.setattr(threads.ThreadGovernor, "settle", lambda self, seconds=0.3: settled.append(self) or 1)
    with threads.governing("encode") as g:
        assert threads._current is g and settled == [g]
    assert threads._current is None
    with threads.governing("encode", explicit=2) as g:
        assert g is None and threads._current is None


def test_encode_asks_the_installed_governor_before_each_batch(tiny_bert_dir, monkeypatch):
    from textcl.models import Encoder

    asked = []
    monkeypatch.setattr("textcl.models.encoder.tune_current", lambda: asked.append(1))
    Encoder.load(str(tiny_bert_dir)).encode(["a cat", "a dog", "the sun", "rain", "a ship"], batch_size=2)
    assert len(asked) == 3  # 5 texts in batches of 2
