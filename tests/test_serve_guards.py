"""Cross-site requests: a web page the user visits must not reach a local server (Host and Origin checks).

DNS rebinding makes a browser send ``Host: evil.example`` to 127.0.0.1; a form or ``fetch`` POST from a page
sends ``Origin: http://evil.example``. Both are refused unless configured (``--allowed-host``,
``--cors-origin``); the server's own page, local scripts and clients that send no Origin keep working.
"""
from __future__ import annotations

import pytest

from test_serve_support import DOCS, index_dir, make_client, serve_encoder, serve_model_dir  # noqa: F401
from textcl.errors import ConfigError
from textcl.serve import ServeConfig

KEY = "k" * 24
DOC = {"documents": [{"id": "planted", "text": "a document a web page tried to plant"}]}


def message(response) -> str:
    body = response.json()
    assert set(body) == {"error", "message", "fields"}, body
    return body["message"]


@pytest.fixture()
def writer(make_client):
    return make_client(allow_writes=True)


def test_a_foreign_host_is_refused_before_anything_is_written(writer):
    r = writer.post("/documents", json=DOC, headers={"Host": "evil.example"})
    assert r.status_code == 400
    assert "Host 'evil.example'" in message(r) and "--allowed-host" in message(r)
    assert r.json()["fields"][0]["field"] == "Host (header)"
    r = writer.get("/search", params={"q": "x"}, headers={"Host": "evil.example:8000"})
    assert r.status_code == 400  # reads too: a rebound page could read the index
    assert writer.get("/documents/planted").status_code == 404


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1", "127.0.0.1:1234", "[::1]:8000",
                                  "LOCALHOST:80"])
def test_loopback_host_names_are_served(writer, host):
    assert writer.get("/health", headers={"Host": host}).status_code == 200


def test_a_write_from_a_foreign_page_is_refused(writer):
    for origin in ("http://evil.example", "null", "http://localhost:9999"):
        r = writer.post("/documents", json=DOC, headers={"Origin": origin})
        assert r.status_code == 403, (origin, r.text)
        assert f"{origin!r}" in message(r) and "--cors-origin" in message(r)
        assert r.json()["fields"][0]["field"] == "Origin (header)"
    assert writer.delete("/documents/dna", headers={"Origin": "http://evil.example"}).status_code == 403
    assert writer.get("/documents/planted").status_code == 404 and writer.get("/documents/dna").status_code == 200
    # reading with a foreign Origin is answered (the browser withholds it from the page unless CORS allows)
    assert writer.get("/search", params={"q": "x"}, headers={"Origin": "http://evil.example"}).status_code == 200


def test_the_servers_own_page_and_scripts_without_origin_may_write(writer):
    assert writer.post("/documents", json=DOC, headers={"Origin": "http://localhost"}).status_code == 200
    r = writer.delete("/documents/planted", headers={"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"})
    assert r.status_code == 200
    assert writer.post("/documents", json=DOC).status_code == 200  # curl, Python: no Origin header


def test_configured_cors_origins_may_write(make_client):
    client = make_client(allow_writes=True, cors_origins=["https://app.example"])
    assert client.post("/documents", json=DOC, headers={"Origin": "https://app.example"}).status_code == 200
    assert client.post("/documents", json=DOC, headers={"Origin": "https://other.example"}).status_code == 403


def test_allowed_host_serves_a_name_behind_a_proxy(make_client):
    client = make_client(allow_writes=True, allowed_hosts=["search.example.com"])
    headers = {"Host": "search.example.com", "Origin": "https://search.example.com"}  # TLS ends at the proxy
    assert client.get("/health", headers={"Host": "search.example.com"}).status_code == 200
    assert client.post("/documents", json=DOC, headers=headers).status_code == 200
    assert client.get("/health", headers={"Host": "other.example.com"}).status_code == 400
    anyhost = make_client(allowed_hosts=["*"])
    assert anyhost.get("/health", headers={"Host": "whatever.example"}).status_code == 200


def test_a_wildcard_bind_answers_to_its_ip_addresses_but_not_to_other_names(make_client):
    client = make_client(host="0.0.0.0")
    assert client.get("/health", headers={"Host": "10.1.2.3:8000"}).status_code == 200
    assert client.get("/health", headers={"Host": "[fe80::1]:8000"}).status_code == 200
    assert client.get("/health", headers={"Host": "rebound.example:8000"}).status_code == 400


def test_config_refuses_any_origin_with_writes_and_no_key_and_malformed_hosts(tmp_path, monkeypatch):
    monkeypatch.delenv("TEXTCL_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"^--cors-origin: '\*' with --allow-writes lets any web page write"):
        ServeConfig(tmp_path, allow_writes=True, cors_origins=["*"]).validate()
    ServeConfig(tmp_path, allow_writes=True, cors_origins=["*"], api_key=KEY).validate()
    ServeConfig(tmp_path, cors_origins=["*"]).validate()  # read-only: any page may search
    for bad in ("http://example.com", "example.com/", "a b", ""):
        with pytest.raises(ConfigError, match=r"^--allowed-host: .*expected a host name"):
            ServeConfig(tmp_path, allowed_hosts=[bad]).validate()
    ServeConfig(tmp_path, allowed_hosts=["example.com", "example.com:8443", "10.0.0.5", "[::1]:80", "*"]).validate()


def test_the_command_passes_allowed_hosts_and_the_hit_limit():
    import argparse

    from textcl.commands.serve import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "ix", "--allowed-host", "a.example", "--allowed-host", "b.example:80",
                              "--max-hits", "500"])
    config = config_from_args(args)
    assert config.allowed_hosts == ["a.example", "b.example:80"] and config.max_hits == 500


def test_any_host_with_writes_needs_a_key(tmp_path, monkeypatch):
    """With --allowed-host '*' a page that rebinds its name to 127.0.0.1 sends Host and Origin that agree, so
    the origin check cannot tell it from the server's own page: writes then need an API key."""
    from textcl.errors import ConfigError
    from textcl.serve import ServeConfig

    monkeypatch.delenv("TEXTCL_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"--allowed-host: '\*' with --allow-writes lets a web page that rebinds"):
        ServeConfig(tmp_path, allow_writes=True, allowed_hosts=["*"]).validate()
    ServeConfig(tmp_path, allow_writes=True, allowed_hosts=["*"], api_key="k" * 24).validate()
    ServeConfig(tmp_path, allowed_hosts=["*"]).validate()  # read-only: nothing to write


def test_a_symlinked_index_folder_is_served_where_it_pointed_at_start(tmp_path):
    """A link repointed while serving (blue/green) must not receive this server's saves."""
    from textcl.serve import ServeConfig

    (tmp_path / "v3").mkdir()
    (tmp_path / "v4").mkdir()
    link = tmp_path / "index"
    link.symlink_to(tmp_path / "v3", target_is_directory=True)
    config = ServeConfig(link)
    link.unlink()
    link.symlink_to(tmp_path / "v4", target_is_directory=True)
    assert config.index_dir == (tmp_path / "v3").resolve()
    assert config.log_path.name == "v3.wal.sqlite"


def test_serving_threads_start_at_the_cores_split_between_workers(monkeypatch, tmp_path, serve_model_dir,
                                                                    serve_encoder):
    """The usable cores split between the workers; --threads wins (and is never governed, next test)."""
    import os

    import torch

    from test_serve_support import build_index
    from textcl.serve.config import ServeConfig, default_threads
    from textcl.serve.service import IndexService

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert (default_threads(1), default_threads(2), default_threads(16)) == (8, 4, 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    path = build_index(tmp_path / "ix", serve_model_dir, encoder=serve_encoder)
    before = torch.get_num_threads()
    for threads, expected in ((None, 2), (1, 1)):
        service = IndexService(ServeConfig(path, threads=threads), serve_encoder).start()
        assert torch.get_num_threads() == expected
        service.close()
        assert torch.get_num_threads() == before  # an app built inside a program gives its threads back


def test_a_server_governs_its_threads_unless_told_how_many(monkeypatch, tmp_path, serve_model_dir, serve_encoder):
    """Beside other busy processes torch's threads collapse (benchmarks/RESULTS.md "Serving threads"): each app's
    batchers take a ThreadGovernor of their own, measured at startup and consulted before each batch; nothing is
    left installed on the thread that built the app; --threads fixes them."""
    import os

    from fastapi.testclient import TestClient

    from test_serve_support import build_index
    from textcl import thread_governor as tg
    from textcl.serve.app import create_app

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr("textcl.threads.cgroup_quota", lambda *a: None)
    path = build_index(tmp_path / "ix", serve_model_dir, encoder=serve_encoder)
    tuned, settled = [], []
    monkeypatch.setattr(tg.ThreadGovernor, "tune", lambda self: tuned.append(self) or self.target)
    monkeypatch.setattr(tg.ThreadGovernor, "settle", lambda self, seconds=0.3: settled.append(self) or self.target)
    app_a = create_app(path, encoder=serve_encoder)
    app_b = create_app(path, encoder=serve_encoder, threads=1)  # a second app in the same program, pinned
    governor = app_a.state.service.batcher.governor
    assert isinstance(governor, tg.ThreadGovernor) and governor.ceiling == 2 and settled == [governor]
    assert app_b.state.service.batcher.governor is None and tg.current() is None
    with TestClient(app_a, base_url="http://127.0.0.1") as a, TestClient(app_b, base_url="http://127.0.0.1") as b:
        r = a.post("/search", json={"queries": ["a cat"], "k": 1})
        assert r.status_code == 200, r.text
        assert tuned and set(tuned) == {governor}  # the search batch (and its encode) asked A's governor
        count = len(tuned)
        assert b.post("/search", json={"queries": ["a cat"], "k": 1}).status_code == 200
        assert len(tuned) == count  # B is pinned: nobody asks


def test_a_writes_encoding_follows_the_servers_governor(make_client, monkeypatch):
    """A POST's documents are encoded on a request thread, not the batcher's: it takes the batcher's governor
    for the encode, and gives the thread back without one."""
    import contextlib
    import threading

    from textcl import thread_governor as tg

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(tg.ThreadGovernor, "settle", lambda self, seconds=0.3: self.target)
    seen = []

    @contextlib.contextmanager
    def recording(governor=None):
        seen.append((threading.current_thread().name, tg.current()))
        yield

    monkeypatch.setattr("textcl.models.encoder.running", recording)
    client = make_client(allow_writes=True)
    governor = client.app.state.service.batcher.governor
    assert isinstance(governor, tg.ThreadGovernor)
    assert client.post("/documents", json=DOC).status_code == 200
    writes = [g for name, g in seen if not name.startswith("textcl")]  # not on a batcher's thread
    assert writes and all(g is governor for g in writes)
