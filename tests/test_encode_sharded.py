"""Sharded encoding under torchrun: N processes give the bits of one, a killed shard resumes, bad state is named.

Threads stand in for ranks where a test needs no real processes (the barrier is monkeypatched to a
``threading.Barrier``); one test launches real gloo processes with torchrun through the CLI.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import textcl.encode.dist as dist
from _index_fakes import FailingEncoder, HashEncoder
from textcl.data.records import Document
from textcl.encode import Launch, balanced_bounds, encode_shard, encode_sharded, launch_from_env, shard_bounds
from textcl.encode.shards import ShardError, shard_files, shard_pieces
from textcl.errors import ConfigError, DataFormatError
from textcl.index import SearchIndex, build_streaming
from textcl.models import Encoder

HERE = Path(__file__).parent
WORDS = "the a cat dog sat on mat is was and of to in it runs ran quickly slowly man woman".split()


def texts(n=50, seed=0):
    """Sentences of 1 to 30 words, so the length-sorted batches have very different padded widths."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(1, 31)))) + f" {i}" for i in range(n)]


def run_ranks(monkeypatch, world, fn):
    """``fn(Launch(rank, world))`` in one thread per rank, barriers shared; returns ({rank: result}, {rank: error}).
    A rank that raises breaks the barrier, as torchrun stops the other processes when one fails."""
    barrier = threading.Barrier(world)
    monkeypatch.setattr(dist, "barrier", lambda launch: barrier.wait(timeout=120))
    results, errors = {}, {}

    def target(rank):
        try:
            results[rank] = fn(Launch(rank=rank, world=world, local_rank=rank, local_world=world))
        except BaseException as exc:  # KeyboardInterrupt too: a killed rank
            errors[rank] = exc
            barrier.abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


class Counting:
    """An Encoder that counts its encode calls and, like a killed process, stops after ``ok_calls``."""

    def __init__(self, encoder, ok_calls=None):
        self.encoder, self.ok_calls, self.calls = encoder, ok_calls, 0

    def encode_order(self, texts):
        return self.encoder.encode_order(texts)

    def encode(self, texts, **kwargs):
        if self.ok_calls is not None and self.calls >= self.ok_calls:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return self.encoder.encode(texts, **kwargs)


# ---------------------------------------------------------------- (1) bounds, by hand and exhaustively


def test_shard_bounds_by_hand():
    assert shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_bounds(10, 1) == [(0, 10)]
    assert shard_bounds(2, 3) == [(0, 0), (0, 1), (1, 2)]  # more ranks than rows: some shards are empty
    assert shard_bounds(0, 2) == [(0, 0), (0, 0)]
    with pytest.raises(ValueError):
        shard_bounds(5, 0)


def test_balanced_bounds_by_hand():
    assert balanced_bounds([4, 1, 1, 1, 1], 2) == [(0, 1), (1, 5)]  # the heavy first unit is a shard alone
    assert balanced_bounds([1] * 10, 3) == [(0, 3), (3, 7), (7, 10)]  # nearest boundaries to 3.33 and 6.67
    assert balanced_bounds([], 2) == [(0, 0), (0, 0)]


@pytest.mark.parametrize("bounds", [lambda n, w: shard_bounds(n, w),
                                    lambda n, w: balanced_bounds(np.random.default_rng(n).integers(1, 50, n), w)])
def test_bounds_cover_every_row_once_in_order(bounds):
    for n in range(0, 40):
        for w in range(1, 7):
            b = bounds(n, w)
            assert len(b) == w and b[0][0] == 0 and b[-1][1] == n
            assert all(lo <= hi for lo, hi in b) and all(b[i][1] == b[i + 1][0] for i in range(w - 1))


def test_shard_sizes_differ_by_at_most_one():
    for n in range(0, 40):
        for w in range(1, 7):
            sizes = [hi - lo for lo, hi in shard_bounds(n, w)]
            assert max(sizes) - min(sizes) <= 1


# ---------------------------------------------------------------- the launch environment


def test_launch_from_env():
    assert launch_from_env({}) == Launch() and not Launch().distributed
    assert launch_from_env({"WORLD_SIZE": "1", "RANK": "0"}) == Launch()
    got = launch_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert got == Launch(3, 4, 1, 2) and got.distributed and not got.is_main
    assert launch_from_env({"WORLD_SIZE": "2", "RANK": "1"}) == Launch(1, 2, 1, 2)  # one node


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2"}, "RANK: not set, but WORLD_SIZE is 2"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE: expected an integer, got 'two'"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK: expected 0 to WORLD_SIZE - 1 = 1, got 2"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "5"}, "LOCAL_RANK: expected 0 to"),
])
def test_bad_launch_environment_names_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        launch_from_env(env)


def test_threads_per_process():
    assert dist.threads_per_process(Launch(0, 4, 0, 2), {}, cpus=16) == 8
    assert dist.threads_per_process(Launch(0, 4, 0, 4), {}, cpus=2) == 1
    assert dist.threads_per_process(Launch(0, 2, 0, 2), {"OMP_NUM_THREADS": "3"}, cpus=16) is None


# ---------------------------------------------------------------- (2) equivalence: N ranks = one process


@pytest.fixture(scope="module")
def tiny(tiny_bert_dir):
    return Encoder.load(tiny_bert_dir, device="cpu")


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sharded_encode_equals_one_process_bit_for_bit(monkeypatch, tmp_path, tiny_bert_dir, tiny, world):
    data = texts()
    expected = tiny.encode(data, batch_size=4)
    encoders = [Encoder.load(tiny_bert_dir, device="cpu") for _ in range(world)]  # a tokenizer per "process"
    results, errors = run_ranks(monkeypatch, world, lambda launch: encode_sharded(
        encoders[launch.rank], data, tmp_path / "work", launch, dim=32, key={"test": 1}, batch_size=4, chunk_rows=8))
    assert errors == {}
    assert np.array_equal(results[0], expected)
    assert all(results[r] is None for r in range(1, world))


def test_sharded_index_build_equals_one_process(monkeypatch, tmp_path):
    docs = [Document(f"d{i}", t, {"i": i}) for i, t in enumerate(texts(100))]
    one = build_streaming(iter(docs), HashEncoder(), tmp_path / "one", chunk_size=16, show_progress=False)
    encoders = [HashEncoder() for _ in range(3)]
    results, errors = run_ranks(monkeypatch, 3, lambda launch: build_streaming(
        iter(docs), encoders[launch.rank], tmp_path / "three", chunk_size=16, show_progress=False, launch=launch))
    assert errors == {} and results[1] is None and results[2] is None
    assert [e.calls for e in encoders] == [2, 2, 3]  # 7 chunks of 16 documents, whole chunks per rank
    assert (tmp_path / "three" / "index.faiss").read_bytes() == (tmp_path / "one" / "index.faiss").read_bytes()
    three = SearchIndex.load(tmp_path / "three", encoder=HashEncoder())  # rank 0's was opened in its thread
    assert three.search(["the cat sat", "a dog runs"], k=10) == one.search(["the cat sat", "a dog runs"], k=10)
    assert not (tmp_path / "three.partial").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_through_the_cli(tiny_bert_dir, tmp_path):
    from textcl.cli import main

    (tmp_path / "texts.txt").write_text("\n".join(texts(45)) + "\n")
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                                                 for i, t in enumerate(texts(30, seed=1))))
    args = [str(tiny_bert_dir), str(tmp_path / "texts.txt"), str(tmp_path / "docs.jsonl")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(HERE / "_dist_encode.py"), *args, str(tmp_path / "two")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("wrote") == 2  # rank 0 alone reports, once per command

    # one process at the ranks' thread count: on CPUs whose kernels split reductions by thread (AVX-512 MKL
    # paths), 1 and 2 threads differ in the last bit; sharding itself must add no difference
    one = tmp_path / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["encode", "--model", args[0], "--input", args[1], "--out", str(one / "emb.npy"),
                     "--batch-size", "4"]) == 0
        assert main(["index", "build", "--model", args[0], "--input", args[2], "--out", str(one / "index"),
                     "--chunk-size", "8", "--batch-size", "4"]) == 0
    finally:
        torch.set_num_threads(threads)

    two = tmp_path / "two"
    assert np.array_equal(np.load(two / "emb.npy"), np.load(one / "emb.npy"))
    assert not (two / "emb.npy.partial").exists() and not (two / "index.partial").exists()
    encoder = Encoder.load(tiny_bert_dir, device="cpu")
    a, b = SearchIndex.load(one / "index", encoder=encoder), SearchIndex.load(two / "index", encoder=encoder)
    queries = ["the cat sat on the mat", "a man runs quickly", "dog"]
    assert a.search(queries, k=10) == b.search(queries, k=10)  # ids and scores
    assert (two / "index" / "index.faiss").read_bytes() == (one / "index" / "index.faiss").read_bytes()


# ---------------------------------------------------------------- (3) a killed shard resumes


def test_killed_shard_resumes_with_only_the_rest(monkeypatch, tmp_path, tiny_bert_dir, tiny):
    data = texts(60)
    expected = tiny.encode(data, batch_size=4)
    work = tmp_path / "work"

    def run(ok_calls):
        encoders = [Counting(Encoder.load(tiny_bert_dir, device="cpu"), ok) for ok in ok_calls]
        results, errors = run_ranks(monkeypatch, 2, lambda launch: encode_sharded(
            encoders[launch.rank], data, work, launch, dim=32, key={"test": 1}, batch_size=4, chunk_rows=8))
        return results, errors, [e.calls for e in encoders]

    _, errors, calls = run([None, 1])  # rank 1 is killed after its first chunk
    assert isinstance(errors[1], KeyboardInterrupt) and calls[1] == 1
    state = json.loads(shard_files(work, 1, 2)[1].read_text())
    assert state["done"] == 1 and state["n_chunks"] > 2
    results, errors, calls = run([None, None])
    assert errors == {}
    assert calls == [0, state["n_chunks"] - 1]  # rank 0's shard was complete; rank 1 encodes only the rest
    assert np.array_equal(results[0], expected)


def test_killed_index_build_shard_resumes(monkeypatch, tmp_path):
    docs = [Document(f"d{i}", t, {}) for i, t in enumerate(texts(100))]
    build_streaming(iter(docs), HashEncoder(), tmp_path / "one", chunk_size=16, show_progress=False)

    def run(encoders):
        return run_ranks(monkeypatch, 2, lambda launch: build_streaming(
            iter(docs), encoders[launch.rank], tmp_path / "two", chunk_size=16, show_progress=False, launch=launch))

    _, errors = run([HashEncoder(), FailingEncoder(ok_calls=1)])
    assert isinstance(errors[1], KeyboardInterrupt)
    encoders = [HashEncoder(), HashEncoder()]
    results, errors = run(encoders)
    assert errors == {} and [e.calls for e in encoders] == [0, 4 - 1]  # 7 chunks: 3 on rank 0, 4 on rank 1
    assert (tmp_path / "two" / "index.faiss").read_bytes() == (tmp_path / "one" / "index.faiss").read_bytes()


def test_encode_shard_resumes_directly(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.standard_normal((20, 3)).astype(np.float32)
    chunks, calls, kill = [(10, 14), (14, 18), (18, 20)], [], [True]

    def encode_rows(a, b):
        calls.append((a, b))
        if kill[0] and len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return table[a:b]

    launch = Launch(1, 2, 1, 2)
    with pytest.raises(KeyboardInterrupt):  # the first chunk is done, the second is killed
        encode_shard(tmp_path, launch, chunks, 3, {"k": 1}, encode_rows)
    calls.clear()
    kill[0] = False
    assert encode_shard(tmp_path, launch, chunks, 3, {"k": 1}, encode_rows) == 2
    assert calls == [(14, 18), (18, 20)]
    vpath = shard_files(tmp_path, 1, 2)[0]
    assert np.array_equal(np.memmap(vpath, dtype=np.float32, mode="r", shape=(10, 3)), table[10:20])
    assert encode_shard(tmp_path, launch, chunks, 3, {"k": 1}, encode_rows) == 0  # finished: nothing to do
    assert encode_shard(tmp_path, launch, chunks, 3, {"k": 2}, lambda a, b: 2 * table[a:b]) == 3  # another key
    assert np.array_equal(np.memmap(vpath, dtype=np.float32, mode="r", shape=(10, 3)), 2 * table[10:20])


# ---------------------------------------------------------------- (4) bad leftovers


def test_leftover_from_another_world_size_is_discarded_with_a_message(monkeypatch, tmp_path, tiny_bert_dir, tiny,
                                                                      capsys):
    data = texts(30)
    work = tmp_path / "work"
    encoders = [Encoder.load(tiny_bert_dir, device="cpu") for _ in range(3)]

    def run(world):
        return run_ranks(monkeypatch, world, lambda launch: encode_sharded(
            encoders[launch.rank], data, work, launch, dim=32, key={"test": 1}, batch_size=4, chunk_rows=8))

    run(2)  # the caller (textcl encode) would delete the folder after saving; here it is left over
    capsys.readouterr()
    results, errors = run(3)
    assert errors == {} and np.array_equal(results[0], tiny.encode(data, batch_size=4))
    err = capsys.readouterr().err
    assert f"discarding {work}: its shards were encoded by 2 processes and this run has 3" in err
    assert not shard_files(work, 0, 2)[1].exists()


def test_unreadable_shard_state_is_an_error_that_names_the_file(tmp_path):
    state = shard_files(tmp_path, 1, 2)[1]
    state.write_text('{"key": {"k": 1}, "rows": [')
    with pytest.raises(DataFormatError, match=r"shard-1-of-2\.json:1: not valid JSON .*delete .* to encode afresh"):
        encode_shard(tmp_path, Launch(1, 2, 1, 2), [(5, 10)], 3, {"k": 1}, lambda a, b: np.zeros((b - a, 3)))


def test_assembly_names_a_missing_shard(tmp_path):
    encode_shard(tmp_path, Launch(0, 2, 0, 2), [(0, 5)], 3, {"k": 1}, lambda a, b: np.zeros((b - a, 3)))
    with pytest.raises(ShardError, match=r"shard-1-of-2\.json: missing; .*file system they share"):
        list(shard_pieces(tmp_path, 2, 3, 10))
