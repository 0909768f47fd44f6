"""The write-ahead log, recovery after a crash at each point, the one-writer lock, and the micro-batcher."""
from __future__ import annotations

import threading
import time

import pytest

from test_serve_support import DOCS, build_index, index_dir, serve_encoder, serve_model_dir  # noqa: F401
from textcl.index import SearchIndex
from textcl.serve import ServeConfig
from textcl.serve.batcher import BusyError, MicroBatcher
from textcl.serve.schemas import RequestModels
from textcl.serve.service import IndexService
from textcl.serve.wal import (LogLockedError, StaleLogError, WriteLog, WriterLock, ops_to_replay,
                              snapshot_identity)


# ---------------------------------------------------------------- the log
def test_log_appends_durably_and_rebase_drops_what_a_save_holds(tmp_path):
    log = WriteLog(tmp_path / "ix.wal.sqlite")
    assert log.append([("upsert", "a", "text a", {"n": 1}), ("delete", "b", None, None)]) == [1, 2]
    assert log.append([("upsert", "c", "text c", None)]) == [3]
    log.rebase("snap-1", through_seq=2)
    assert [(op.seq, op.op, op.doc_id, op.text) for op in log.ops()] == [(3, "upsert", "c", "text c")]
    log.rebase("snap-2", through_seq=3)
    assert len(log) == 0 and log.last_seq() == 3 and log.base == "snap-2"
    assert log.append([("delete", "a", None, None)]) == [4]  # never reused, even once the log is empty
    log_id = log.log_id
    log.close()
    reopened = WriteLog(tmp_path / "ix.wal.sqlite", readonly=True)
    assert reopened.log_id == log_id and [op.seq for op in reopened.ops()] == [4]


def test_which_logged_writes_a_snapshot_lacks(tmp_path):
    log = WriteLog(tmp_path / "log.sqlite")
    log.rebase("A", 0)
    log.append([("upsert", str(i), f"t{i}", None) for i in range(1, 6)])
    # 1. the snapshot names this log and records seq 3: the rest
    assert [op.seq for op in ops_to_replay(log, "B", log.log_id, "3")] == [4, 5]
    # 2. the log was started on this very snapshot (killed before its first save): everything
    assert [op.seq for op in ops_to_replay(log, "A", None, None)] == [1, 2, 3, 4, 5]
    # 4. the folder now holds another index: refuse, saying what to do
    with pytest.raises(StaleLogError, match=r"holds 5 acknowledged write\(s\) made to a different version .* "
                                            r"move log\.sqlite away to discard them"):
        ops_to_replay(log, "C", "another-log", "9")
    # 3. an empty log adopts any snapshot
    log.rebase("A", 5)
    assert ops_to_replay(log, "C", None, None) == []


def test_one_writer_per_index(tmp_path):
    first = WriterLock(tmp_path / "ix.wal.lock")
    with pytest.raises(LogLockedError, match=r"already served with --allow-writes by pid \d+; one writer"):
        WriterLock(tmp_path / "ix.wal.lock")
    first.release()
    WriterLock(tmp_path / "ix.wal.lock").release()


# ---------------------------------------------------------------- recovery, in-process
def open_service(index_dir, encoder, **options) -> IndexService:
    return IndexService(ServeConfig(index_dir, allow_writes=True, save_interval_s=3600, **options), encoder).start()


def crash(service: IndexService) -> None:
    """Stop a service the way SIGKILL would: no save; the log and the lock just close."""
    def drop():
        service.wal.close()
        service.lock.release()
        service.index.close()

    service._stop.set()
    service.batcher.call(drop).result()
    service.batcher.close()
    service._closed = True


def write(service: IndexService, doc_id: str, text: str, **meta) -> None:
    import asyncio

    from textcl.index import Document

    asyncio.run(service.write([Document(doc_id, text, meta)]))


def state(index_dir, encoder) -> dict[str, str]:
    index = SearchIndex.load(index_dir, encoder=encoder)
    try:
        return {doc_id: index.get(doc_id).text for (doc_id,) in index.store.query("SELECT doc_id FROM docs")}
    finally:
        index.close()


def test_a_crash_before_any_save_is_recovered_from_the_log(index_dir, serve_encoder):
    service = open_service(index_dir, serve_encoder)
    write(service, "new", "a new document about rivers")
    write(service, "dna", "the text of dna, replaced")
    asyncio_delete(service, "linux")
    crash(service)
    assert SearchIndex.read_manifest(index_dir)["n_docs"] == 12  # nothing was saved
    service = open_service(index_dir, serve_encoder)
    assert service.replayed == 3 and pending(service) == 0 and service.n_docs == 12
    service.close()
    docs = state(index_dir, serve_encoder)
    assert docs["new"] == "a new document about rivers" and docs["dna"] == "the text of dna, replaced"
    assert "linux" not in docs and len(docs) == 12


def pending(service: IndexService) -> int:
    return service.batcher.call(lambda: len(service.wal)).result()  # the log lives on the index thread


def asyncio_delete(service, doc_id):
    import asyncio

    return asyncio.run(service.delete(doc_id))


def test_a_crash_between_the_save_and_the_log_truncation_replays_harmlessly(index_dir, serve_encoder, monkeypatch):
    service = open_service(index_dir, serve_encoder)
    write(service, "new", "first version")
    write(service, "new", "second version")

    def fail(*args, **kwargs):
        raise OSError("killed here")

    monkeypatch.setattr(service.wal, "rebase", fail)
    with pytest.raises(OSError):
        service.batcher.call(service._save).result()
    monkeypatch.undo()
    crash(service)
    assert SearchIndex.read_manifest(index_dir)["n_docs"] == 13  # the snapshot was saved, the log still full
    service = open_service(index_dir, serve_encoder)
    assert service.replayed == 0 and pending(service) == 0  # the snapshot records that it holds them
    service.close()
    assert state(index_dir, serve_encoder)["new"] == "second version"


def test_a_log_for_a_replaced_index_is_refused_not_applied(index_dir, serve_encoder, serve_model_dir):
    service = open_service(index_dir, serve_encoder)
    write(service, "new", "pending write")
    crash(service)
    build_index(index_dir, serve_model_dir, docs=DOCS[:3], encoder=serve_encoder)  # rebuilt meanwhile
    with pytest.raises(StaleLogError, match=r"ix\.wal\.sqlite holds 1 acknowledged write"):
        open_service(index_dir, serve_encoder)


def test_a_read_only_server_serves_pending_writes_without_writing(index_dir, serve_encoder):
    import asyncio

    service = open_service(index_dir, serve_encoder)
    write(service, "new", "a pending document about volcanoes")
    crash(service)
    before = snapshot_identity(SearchIndex.read_manifest(index_dir))
    reader = IndexService(ServeConfig(index_dir), serve_encoder).start()
    [hits] = asyncio.run(reader.search(["a pending document about volcanoes"], k=1))
    assert hits[0]["id"] == "new" and reader.n_docs == 13
    reader.close()
    assert snapshot_identity(SearchIndex.read_manifest(index_dir)) == before


def test_schemas_reject_text_that_sqlite_or_json_cannot_hold():
    models = RequestModels(max_k=10, max_queries=4, max_documents=4, max_query_chars=50)
    with pytest.raises(ValueError, match="lone surrogate"):
        models.DocumentIn.model_validate({"id": "a", "text": "x", "metadata": {"k": "\ud800"}})
    with pytest.raises(ValueError, match="finite numbers"):
        models.DocumentIn.model_validate({"id": "a", "text": "x", "metadata": {"k": [1.0, float("nan")]}})


# ---------------------------------------------------------------- the micro-batcher
def test_batcher_groups_waiting_items_up_to_max_batch_and_keeps_order():
    sizes, release = [], threading.Event()

    def handler(items):
        release.wait(5)
        sizes.append(sum(len(i) for i in items))
        return [[x * 2 for x in item] for item in items]

    batcher = MicroBatcher(handler, max_batch=8, max_wait_s=0.0).start()
    first = batcher.submit([0])  # holds the thread until released, while the others queue up
    time.sleep(0.05)
    futures = [batcher.submit([i, i + 100], size=2) for i in range(1, 8)]
    release.set()
    assert first.result(5) == [0]
    assert [f.result(5) for f in futures] == [[2 * i, 2 * i + 200] for i in range(1, 8)]
    assert sizes == [1, 8, 6]  # 4 + 3 items of 2 queries: never more than 8 in a batch
    batcher.close()


def test_batcher_waits_for_company_only_while_batches_form():
    sizes = []
    batcher = MicroBatcher(lambda items: sizes.append(len(items)) or items, max_wait_s=0.3).start()
    started = time.perf_counter()
    for i in range(3):  # a lone client: answered at once, never held for max_wait_s
        assert batcher.submit(i).result(5) == i
    assert time.perf_counter() - started < 0.3 and sizes == [1, 1, 1]
    batcher._last_size = 2  # as after a batch of two: the next first item waits for the one behind it
    first = batcher.submit("a")
    time.sleep(0.05)
    second = batcher.submit("b")
    assert (first.result(5), second.result(5)) == ("a", "b") and sizes[-1] == 2
    batcher.close()


def test_batcher_without_batching_answers_items_one_at_a_time():
    sizes = []
    batcher = MicroBatcher(lambda items: sizes.append(len(items)) or items, enabled=False, max_wait_s=0.05).start()
    futures = [batcher.submit(i) for i in range(5)]
    assert [f.result(5) for f in futures] == list(range(5)) and sizes == [1] * 5
    batcher.close()


def test_batcher_delivers_each_items_error_to_it_alone_and_bounds_the_queue():
    def handler(items):
        return [ValueError(f"bad {i}") if i < 0 else i for i in items]

    batcher = MicroBatcher(handler, max_wait_s=0.02, max_pending=3).start()
    good, bad = batcher.submit(1), batcher.submit(-1)
    assert good.result(5) == 1
    with pytest.raises(ValueError, match="bad -1"):
        bad.result(5)
    with pytest.raises(BusyError, match=r"the limit is 3"):
        batcher.submit(0, size=4)
    assert batcher.call(lambda: "ran on the index thread").result(5) == "ran on the index thread"
    batcher.close()
