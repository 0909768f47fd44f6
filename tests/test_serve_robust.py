"""The index thread under stress: cancelled requests, shutdown, failed writes, saves beside searches, and the
per-search cost of counts and tombstones."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from test_serve_support import (DOCS, build_index, index_dir, make_client, serve_encoder,  # noqa: F401
                                serve_model_dir)
from textcl.index import Document, SearchIndex
from textcl.index.docstore import DocStore
from textcl.serve import ServeConfig
from textcl.serve.service import IndexService, SearchItem

TEXT = {d[0]: d[2] for d in DOCS}


def open_service(index_dir, encoder, **options) -> IndexService:
    return IndexService(ServeConfig(index_dir, **options), encoder).start()


def hold_index_thread(service: IndexService) -> threading.Event:
    """Keep the index thread busy until the returned event is set (at most 10 s)."""
    gate = threading.Event()
    service.batcher.call(lambda: gate.wait(10))
    return gate


# ---------------------------------------------------------------- cancellation and shutdown
def test_a_cancelled_request_leaves_the_index_thread_serving(index_dir, serve_encoder):
    service = open_service(index_dir, serve_encoder, allow_writes=True, save_interval_s=3600)

    async def scenario():
        gate = hold_index_thread(service)
        for request in (service.search(["x"], 1), service.info(), service.get("dna")):
            with pytest.raises(asyncio.TimeoutError):  # the client gives up while its request is queued
                await asyncio.wait_for(request, 0.05)
        gate.set()
        [hits] = await asyncio.wait_for(service.search([TEXT["dna"]], 1), 10)
        assert hits[0]["id"] == "dna"
        assert (await asyncio.wait_for(service.info(), 10))["n_docs"] == 12
        await asyncio.wait_for(service.write([Document("late", "written after the cancellations")]), 10)

    asyncio.run(scenario())
    assert service.batcher.alive
    service.close()
    assert SearchIndex.read_manifest(index_dir)["n_docs"] == 13  # the final save ran


def test_requests_during_shutdown_are_503_json(make_client):
    client = make_client()
    client.app.state.service.close()
    for path in ("/search?q=x", "/info", "/documents/dna"):
        r = client.get(path)
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "unavailable" and "shutting down" in r.json()["message"]


# ---------------------------------------------------------------- filters
def test_a_filter_on_true_and_a_filter_on_1_in_one_batch_are_different_filters(index_dir, serve_encoder):
    service = open_service(index_dir, serve_encoder)
    items = [SearchItem(("x",), 12, (("featured", True),)), SearchItem(("x",), 12, (("featured", 1),)),
             SearchItem(("x",), 12, (("featured", 1.0),))]
    try:
        results = service.batcher.call(lambda: service._search_batch(items)).result(10)
    finally:
        service.close()
    assert [[doc.id for doc, _ in r[0]] for r in results] == [["amazon"], [], []]  # booleans match booleans only


# ---------------------------------------------------------------- writes
def test_a_failed_upsert_keeps_the_old_document(make_client, monkeypatch):
    client = make_client(allow_writes=True)
    insert = DocStore.insert

    def disk_full(self, docs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(DocStore, "insert", disk_full)
    r = client.post("/documents", json={"documents": [{"id": "dna", "text": "a replacement that fails"}]})
    assert r.status_code == 500
    monkeypatch.setattr(DocStore, "insert", insert)
    assert client.get("/documents/dna").json()["text"] == TEXT["dna"]
    hits = client.get("/search", params={"q": TEXT["dna"], "k": 1}).json()["results"][0]["hits"]
    assert hits[0]["id"] == "dna" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    info = client.get("/info").json()
    assert (info["n_docs"], info["n_vectors"], info["pending_writes"]) == (12, 12, 0)


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_a_failed_vector_add_keeps_the_old_document(tmp_path, serve_model_dir, serve_encoder, factory):
    index = SearchIndex.load(build_index(tmp_path / "ix", serve_model_dir, factory=factory,
                                         encoder=serve_encoder), encoder=serve_encoder)

    class FailingAdd:  # the FAISS index, except that adding vectors fails (out of memory, say)
        def __init__(self, inner):
            self.inner = inner

        def add_with_ids(self, *args):
            raise MemoryError("std::bad_alloc")

        def __getattr__(self, name):
            return getattr(self.inner, name)

    real = index._index
    index._index = FailingAdd(real)
    with pytest.raises(MemoryError):
        index.upsert(["a replacement that fails"], ["dna"])
    index._index = real
    assert index.get("dna").text == TEXT["dna"] and len(index) == 12 and real.ntotal == 12
    assert index.search([TEXT["dna"]], k=1)[0][0].id == "dna"
    index.upsert(["replaced for real"], ["dna"])
    assert index.get("dna").text == "replaced for real" and len(index) == 12
    assert index.search(["replaced for real"], k=1)[0][0].id == "dna"
    index.close()


# ---------------------------------------------------------------- counts and tombstones
def test_a_search_runs_no_count_and_reads_no_tombstone_table(tmp_path, serve_model_dir, serve_encoder):
    """Counts and tombstones are read once, then followed in memory: searches and deletes run no COUNT and
    do not read the tombstone table again."""
    path = build_index(tmp_path / "hnsw", serve_model_dir, factory="HNSW16", encoder=serve_encoder)
    service = open_service(path, serve_encoder, allow_writes=True, save_interval_s=3600)
    asyncio.run(service.delete("moonlight"))
    asyncio.run(service.search(["x"], 1))  # the first search reads the tombstones once
    statements: list[str] = []
    service.batcher.call(lambda: service.index.store.conn.set_trace_callback(statements.append)).result()
    asyncio.run(service.delete("linux"))
    [hits] = asyncio.run(service.search([TEXT["moonlight"]], 12))
    [music] = asyncio.run(service.search(["x"], 5, {"topic": "music"}))
    info = asyncio.run(service.info())
    service.close()
    assert not {"moonlight", "linux"} & {h["id"] for h in hits} and len(hits) == 10
    assert [h["id"] for h in music] == ["four-seasons"]
    assert (info["n_docs"], info["n_tombstones"]) == (10, 2)
    reads = [s for s in statements if s.upper().startswith("SELECT")]
    assert reads and not [s for s in reads if "COUNT(" in s.upper() or "TOMBSTONES" in s.upper()], reads


def test_the_doc_stores_counts_follow_inserts_removals_tombstones_and_rollbacks(tmp_path):
    store = DocStore(tmp_path / "docs.sqlite")
    store.insert([Document(str(i), f"text {i}") for i in range(5)])
    store.commit()
    assert len(store) == 5 and store.tombstones() == [] and store.n_tombstones() == 0
    store.add_tombstones(store.remove(["1", "3"]))
    store.add_tombstones([1])  # already a tombstone
    assert len(store) == 3 and store.tombstones() == [1, 3] and store.n_tombstones() == 2
    store.rollback()
    assert len(store) == 5 and store.tombstones() == [] and store.n_tombstones() == 0
    store.insert([Document("5", "text 5")])
    store.add_tombstones([0])
    store.commit()
    reopened = DocStore(tmp_path / "docs.sqlite", readonly=True)
    assert (len(store), store.tombstones()) == (len(reopened), reopened.tombstones()) == (6, [0])


# ---------------------------------------------------------------- saving
def test_searches_are_answered_while_the_index_is_saved(index_dir, serve_encoder, monkeypatch):
    service = open_service(index_dir, serve_encoder, allow_writes=True, save_interval_s=3600)
    asyncio.run(service.write([Document("before", "written before the save")]))
    save = SearchIndex.save
    saving = threading.Event()

    def slow_save(self, path):
        saving.set()
        time.sleep(1.5)  # stands for writing a large index
        return save(self, path)

    monkeypatch.setattr(SearchIndex, "save", slow_save)
    saver = threading.Thread(target=lambda: asyncio.run(service.save()))
    saver.start()
    assert saving.wait(10)

    async def during_the_save():
        started = time.perf_counter()
        [hits] = await service.search([TEXT["dna"]], 1)
        took = time.perf_counter() - started
        assert hits[0]["id"] == "dna" and (await service.get("dna")) is not None
        await service.write([Document("during", "written while the index is saved")])
        return took

    took = asyncio.run(asyncio.wait_for(during_the_save(), 10))
    saver.join(10)
    assert took < 0.75, f"a search waited {took:.2f} s for the save"
    assert SearchIndex.read_manifest(index_dir)["n_docs"] == 13  # the save holds "before", not "during"
    info = asyncio.run(service.info())
    assert (info["n_docs"], info["pending_writes"]) == (14, 1)  # "during" waits in the log for the next save
    service.close()
    assert SearchIndex.read_manifest(index_dir)["n_docs"] == 14


def test_save_interval_saves_a_write_without_a_shutdown(index_dir, serve_encoder):
    service = open_service(index_dir, serve_encoder, allow_writes=True, save_interval_s=0.2)
    try:
        asyncio.run(service.write([Document("saved", "saved by the timer")]))
        deadline = time.monotonic() + 10
        while SearchIndex.read_manifest(index_dir)["n_docs"] != 13 and time.monotonic() < deadline:
            time.sleep(0.05)
        saved = SearchIndex.load(index_dir)
        assert saved.get("saved").text == "saved by the timer"
        saved.close()
        assert asyncio.run(service.info())["pending_writes"] == 0
    finally:
        service.close()
