"""What one request may cost: hits per request, the fields a hit holds, rendering off the event loop, and the
queue bound on every read that waits for the index thread."""
from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from test_serve_support import (DOCS, LOCAL, build_index, index_dir, local_client, make_client,  # noqa: F401
                                serve_encoder, serve_model_dir)
from textcl.serve import create_app

TEXT = {d[0]: d[2] for d in DOCS}


@pytest.fixture(scope="module")
def client(tmp_path_factory, serve_model_dir, serve_encoder):
    path = build_index(tmp_path_factory.mktemp("limits") / "ix", serve_model_dir, encoder=serve_encoder)
    with local_client(create_app(path, encoder=serve_encoder), raise_server_exceptions=False) as client:
        yield client


def test_queries_times_k_is_bounded_naming_the_limit(client):
    r = client.post("/search", json={"queries": ["x"] * 64, "k": 1000})
    assert r.status_code == 422
    [field] = r.json()["fields"]
    assert field["field"] == "k"
    assert field["message"] == ("64 queries x k 1000 = 64000 hits, over the limit of 1000 hits per request "
                                "(--max-hits); send fewer queries or a smaller k (got 1000)")
    assert client.post("/search", json={"queries": ["x"] * 10, "k": 100}).status_code == 200  # 1000: at the limit
    assert client.get("/info").json()["limits"]["max_hits"] == 1000


def test_the_hit_limit_is_configurable(make_client):
    small = make_client(max_hits=20)
    assert small.post("/search", json={"queries": ["x"] * 3, "k": 7}).status_code == 422
    assert small.post("/search", json={"queries": ["x"] * 2, "k": 10}).status_code == 200
    r = small.get("/search", params={"q": "x", "k": 21})
    assert r.status_code == 422 and "--max-hits" in r.json()["message"]


def test_fields_select_what_each_hit_holds(client):
    r = client.post("/search", json={"queries": [TEXT["dna"]], "k": 3, "fields": ["id", "score"]})
    hits = r.json()["results"][0]["hits"]
    assert r.status_code == 200 and [set(h) for h in hits] == [{"id", "score"}] * 3
    assert hits[0]["id"] == "dna" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    r = client.post("/search", json={"queries": [TEXT["dna"]], "k": 1, "fields": ["title", "metadata"]})
    assert r.json()["results"][0]["hits"] == [{"id": "dna", "title": "DNA",
                                               "metadata": {"topic": "biology", "featured": False}}]


def test_text_chars_truncates_each_text(client):
    r = client.post("/search", json={"queries": [TEXT["eiffel"]], "k": 2, "text_chars": 10})
    hits = r.json()["results"][0]["hits"]
    assert hits[0]["text"] == TEXT["eiffel"][:10] and all(len(h["text"]) <= 10 for h in hits)
    assert set(hits[0]) == {"id", "score", "text", "title", "metadata"}  # the default: every field
    r = client.get("/search", params={"q": TEXT["eiffel"], "k": 1, "text_chars": 5})
    assert r.json()["results"][0]["hits"][0]["text"] == TEXT["eiffel"][:5]


@pytest.mark.parametrize("payload, field, words", [
    ({"queries": ["x"], "fields": ["id", "body"]}, "fields[1]", "'id', 'score', 'text', 'title' or 'metadata'"),
    ({"queries": ["x"], "fields": []}, "fields", "at least 1 item"),
    ({"queries": ["x"], "text_chars": 0}, "text_chars", "greater than or equal to 1"),
])
def test_bad_fields_are_422_naming_the_field(client, payload, field, words):
    r = client.post("/search", json=payload)
    got = {f["field"]: f["message"] for f in r.json()["fields"]}
    assert r.status_code == 422 and field in got and words in got[field], got


def test_the_response_is_rendered_off_the_event_loop(make_client, monkeypatch):
    """A slow render of a search answer must not hold up the other requests on the event loop."""
    from starlette.responses import JSONResponse

    client = make_client()
    render = JSONResponse.render

    def slow_render(self, content):
        if isinstance(content, dict) and "results" in content:
            time.sleep(1.0)  # stands for a large response being encoded
        return render(self, content)

    monkeypatch.setattr(JSONResponse, "render", slow_render)
    finished: list[str] = []

    async def fire():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url=LOCAL) as ac:
            async def call(name, coro):
                r = await coro
                assert r.status_code == 200, r.text
                finished.append(name)

            search = asyncio.ensure_future(call("search", ac.get("/search", params={"q": "x"})))
            await asyncio.sleep(0.3)  # the search is being rendered by now
            await asyncio.wait_for(call("health", ac.get("/health")), 5)
            await asyncio.wait_for(search, 10)

    asyncio.run(fire())
    assert finished == ["health", "search"]


def test_info_and_document_reads_are_bounded_by_the_queue(make_client):
    """Reads that wait for the index thread count against --max-pending like searches: 503 when over."""
    client = make_client(max_pending=1)
    service = client.app.state.service
    gate = threading.Event()
    service.batcher.call(lambda: gate.wait(10))  # the index thread is busy
    waiting = service.batcher.submit(service_item("x"), size=1)  # the queue is full
    threading.Timer(2.0, gate.set).start()  # bounded: without the limit, the reads below wait for this
    try:
        for path in ("/info", "/documents/dna"):
            r = client.get(path)
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert "the limit is 1" in r.json()["message"]
    finally:
        gate.set()
    waiting.result(10)
    assert client.get("/info").status_code == 200 and client.get("/documents/dna").status_code == 200


def service_item(query: str):
    from textcl.serve.service import SearchItem

    return SearchItem((query,), 1)


def test_a_default_k_counts_against_the_hit_limit(make_client):
    """k left at its default (10) is bounded like an explicit one: 64 queries x 10 > 100."""
    small = make_client(max_hits=100)
    r = small.post("/search", json={"queries": ["x"] * 64})
    assert r.status_code == 422 and "64 queries x k 10 = 640 hits, over the limit of 100" in r.json()["message"]
    tiny = make_client(max_hits=3)
    r = tiny.get("/search", params={"q": "x"})  # GET's default k is at most the limit
    assert r.status_code == 200 and len(r.json()["results"][0]["hits"]) == 3


def test_an_answer_over_the_character_budget_is_refused_naming_the_remedies(make_client):
    """The hit count alone does not bound an answer: documents may hold 100k characters. Over
    --max-response-chars the answer is refused; text_chars or fields without text bring it under."""
    client = make_client(max_response_chars=200)
    r = client.post("/search", json={"queries": [TEXT["dna"]], "k": 10})
    assert r.status_code == 422
    assert "over the limit of 200 per answer (--max-response-chars)" in r.json()["message"]
    assert "text_chars" in r.json()["message"] and r.json()["fields"][0]["field"] == "k"
    assert client.get("/search", params={"q": TEXT["dna"], "k": 10}).status_code == 422
    ok = client.post("/search", json={"queries": [TEXT["dna"]], "k": 10, "fields": ["id", "score"]})
    assert ok.status_code == 200 and len(ok.json()["results"][0]["hits"]) == 10
    assert client.post("/search", json={"queries": [TEXT["dna"]], "k": 10, "text_chars": 5,
                                        "fields": ["id", "text"]}).status_code == 200


def test_post_without_k_under_a_small_limit_takes_what_the_limit_allows(make_client):
    small = make_client(max_hits=3)
    r = small.post("/search", json={"queries": ["x"]})
    assert r.status_code == 200 and len(r.json()["results"][0]["hits"]) == 3


def test_metadata_counts_toward_the_answer_budget(tmp_path, serve_model_dir, serve_encoder):
    """Metadata rides along with every hit by default: a large metadata field cannot slip past the budget."""
    docs = [(f"d{i}", f"T{i}", f"short text {i}", {"blob": "x" * 500}) for i in range(5)]
    path = build_index(tmp_path / "meta", serve_model_dir, docs=docs, encoder=serve_encoder)
    with local_client(create_app(path, encoder=serve_encoder, max_response_chars=1000),
                      raise_server_exceptions=False) as client:
        r = client.post("/search", json={"queries": ["short text"], "k": 5})
        assert r.status_code == 422 and "characters of document text, titles and metadata" in r.json()["message"]
        ok = client.post("/search", json={"queries": ["short text"], "k": 5, "fields": ["id", "text", "title"]})
        assert ok.status_code == 200
