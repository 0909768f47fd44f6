"""``textcl serve`` as people run it: uvicorn on 127.0.0.1, and the command killed with SIGKILL mid-way."""
from __future__ import annotations

import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from test_serve_support import (DOCS, index_dir, live_server, process_output, serve_encoder,  # noqa: F401
                                serve_model_dir, server_process)
from textcl.cli import main
from textcl.index import SearchIndex
from textcl.serve import create_app
from textcl.serve.wal import LogLockedError

TEXT = {d[0]: d[2] for d in DOCS}


def test_live_uvicorn_answers_concurrent_clients_in_shared_batches(index_dir, serve_encoder):
    app = create_app(index_dir, encoder=serve_encoder, max_wait_ms=20)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        def ask(doc):
            r = client.get("/search", params={"q": doc[2], "k": 3})
            return r.status_code, r.json()["results"][0]["hits"][0]["id"]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, DOCS * 2))
        assert answers == [(200, d[0]) for d in DOCS * 2]
        batching = client.get("/info").json()["batching"]
        assert batching["queries"] == 24 and batching["batches"] < 24
        assert client.get("/docs").status_code == 200 and "textcl search" in client.get("/").text
        r = client.post("/search", content=b'{"queries": ["x"], "k": "many"}', headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "k"


def test_every_acknowledged_write_survives_sigkill(index_dir):
    """Write, SIGKILL before any save, restart: each acknowledged write is there; then SIGTERM saves."""
    new = [{"id": f"new-{i}", "text": f"recovered document number {i} about {word}", "title": f"New {i}",
            "metadata": {"batch": i // 5}} for i, word in enumerate("rivers mountains lakes deserts forests "
                                                                   "islands glaciers valleys canyons caves".split())]
    with server_process(index_dir, "--allow-writes", "--save-interval", "3600") as (proc, url):
        with httpx.Client(base_url=url, timeout=30) as client:
            for start in (0, 5):
                r = client.post("/documents", json={"documents": new[start : start + 5], "mode": "add"})
                assert r.status_code == 200, r.text
            assert client.post("/documents", json={"documents": [{"id": "dna", "text": "DNA, rewritten"}]}).json() \
                == {"written": 1, "n_docs": 22}
            assert client.delete("/documents/linux").json() == {"deleted": "linux", "n_docs": 21}
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert SearchIndex.read_manifest(index_dir)["n_docs"] == 12  # the vector index was never saved

    with server_process(index_dir, "--allow-writes", "--save-interval", "3600") as (proc, url):
        with httpx.Client(base_url=url, timeout=30) as client:
            info = client.get("/info").json()
            assert (info["n_docs"], info["pending_writes"]) == (21, 0)
            for doc in new:
                hits = client.get("/search", params={"q": doc["text"], "k": 1}).json()["results"][0]["hits"]
                assert hits[0]["id"] == doc["id"] and hits[0]["title"] == doc["title"]
            assert client.get("/documents/dna").json()["text"] == "DNA, rewritten"
            assert client.get("/documents/linux").status_code == 404
            with pytest.raises(LogLockedError, match="already served with --allow-writes"):
                create_app(index_dir, allow_writes=True)  # a second writer is refused
            assert client.post("/documents", json={"documents": [{"id": "last", "text": "written last"}]}).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM), process_output(proc)  # uvicorn re-raises the signal
    manifest = SearchIndex.read_manifest(index_dir)
    assert manifest["n_docs"] == 22  # recovered at start, then saved on SIGTERM with the last write
    with sqlite3.connect(index_dir.with_name("ix.wal.sqlite")) as log:
        assert log.execute("SELECT COUNT(*) FROM ops").fetchone()[0] == 0


def test_several_workers_serve(index_dir):
    """With --workers 2, two processes answer (each /info names its pid), neither of them the parent."""
    with server_process(index_dir, "--workers", "2") as (proc, url):
        pids: set[int] = set()
        deadline = time.monotonic() + 60  # the second worker may still be loading the model
        for _ in range(300):
            if len(pids) == 2 or time.monotonic() > deadline:
                break
            with httpx.Client(base_url=url, timeout=10) as client:  # a new connection: any worker may take it
                pids.add(client.get("/info").json()["pid"])
                hits = client.get("/search", params={"q": TEXT["dna"], "k": 1}).json()["results"][0]["hits"]
                assert hits[0]["id"] == "dna"
            time.sleep(0.05)
        assert len(pids) == 2 and proc.pid not in pids, pids


@pytest.mark.parametrize("argv, message", [
    (["--workers", "2", "--allow-writes"], "--workers: 2 workers with --allow-writes: writes need one process"),
    (["--host", "0.0.0.0", "--allow-writes"], "--api-key: --allow-writes on 0.0.0.0, which is not a loopback"),
    (["--max-k", "0"], "--max-k: must be a positive integer, got 0"),
])
def test_the_command_refuses_unsafe_flags_with_a_message(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.delenv("TEXTCL_API_KEY", raising=False)
    assert main(["serve", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_command_names_a_missing_index_folder(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "no such index folder" in capsys.readouterr().err


def test_the_command_line_help_lists_the_safety_flags(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--allow-writes", "--api-key", "--cors-origin", "--no-batching", "--workers"))
