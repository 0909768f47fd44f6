"""``textcl serve`` through FastAPI's TestClient: search, filters, documents, info, auth, limits, errors."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from test_serve_support import (DOCS, LOCAL, build_index, index_dir, make_client, serve_encoder,  # noqa: F401
                                serve_model_dir, local_client)
from textcl.errors import ConfigError
from textcl.serve import ServeConfig, create_app
from textcl.serve.config import is_loopback

TEXT = {d[0]: d[2] for d in DOCS}
KEY = "k" * 24


@pytest.fixture(scope="module")
def client(tmp_path_factory, serve_model_dir, serve_encoder):
    """One read-only server for the tests that change nothing (building an app per test costs ~0.3 s)."""
    path = build_index(tmp_path_factory.mktemp("read-only") / "ix", serve_model_dir, encoder=serve_encoder)
    with local_client(create_app(path, encoder=serve_encoder), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture()
def writer(make_client):
    return make_client(allow_writes=True)


def top(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [[h["id"] for h in r["hits"]] for r in response.json()["results"]]


# ---------------------------------------------------------------- search
def test_get_search_finds_a_document_by_its_text_with_score_title_and_metadata(client):
    r = client.get("/search", params={"q": TEXT["moonlight"], "k": 3})
    body = r.json()
    assert r.status_code == 200 and body["k"] == 3 and body["took_ms"] >= 0
    [result] = body["results"]
    assert result["query"] == TEXT["moonlight"] and len(result["hits"]) == 3
    best = result["hits"][0]
    assert best == {"id": "moonlight", "score": pytest.approx(1.0, abs=1e-5), "text": TEXT["moonlight"],
                    "title": "Moonlight Sonata", "metadata": {"topic": "music", "year": 1801}}
    scores = [h["score"] for h in result["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_post_search_answers_each_query_in_order(client):
    queries = [TEXT["eiffel"], TEXT["dna"], TEXT["linux"]]
    r = client.post("/search", json={"queries": queries, "k": 2})
    assert [ids[0] for ids in top(r)] == ["eiffel", "dna", "linux"]
    assert [res["query"] for res in r.json()["results"]] == queries
    assert all(len(ids) == 2 for ids in top(r))


def test_k_larger_than_the_index_returns_every_document_once(client):
    [ids] = top(client.post("/search", json={"queries": ["painting"], "k": 1000}))
    assert sorted(ids) == sorted(d[0] for d in DOCS)


@pytest.mark.parametrize("flt, expected", [
    ({"topic": "music"}, {"moonlight", "four-seasons"}),
    ({"year": 1889}, {"eiffel", "starry-night"}),
    ({"topic": "art", "year": 1889}, {"starry-night"}),
    ({"featured": True}, {"amazon"}),
    ({"featured": False}, {"dna"}),
    ({"title": "Linux"}, {"linux"}),
    ({"topic": "cooking"}, set()),
])
def test_filter_keeps_documents_whose_metadata_equals_every_field(client, flt, expected):
    r = client.post("/search", json={"queries": ["a painting", TEXT["linux"]], "k": 10, "filter": flt})
    for ids in top(r):
        assert set(ids) == expected


def test_filters_skip_deleted_documents_on_an_index_that_keeps_tombstones(tmp_path, serve_model_dir, serve_encoder):
    path = build_index(tmp_path / "hnsw", serve_model_dir, factory="HNSW32", encoder=serve_encoder)
    with local_client(create_app(path, encoder=serve_encoder, allow_writes=True)) as writer:
        assert writer.delete("/documents/moonlight").status_code == 200
        assert writer.get("/info").json()["n_tombstones"] == 1
        music = {"queries": [TEXT["moonlight"]], "k": 5, "filter": {"topic": "music"}}
        assert top(writer.post("/search", json=music)) == [["four-seasons"]]
        assert "moonlight" not in top(writer.post("/search", json={"queries": [TEXT["moonlight"]], "k": 12}))[0]


def test_filtered_and_plain_queries_in_one_batch_match_the_index_answers(index_dir, serve_encoder, make_client):
    """Concurrent requests are micro-batched; each gets what SearchIndex.search gives it alone."""
    from textcl.index import SearchIndex

    client = make_client(max_wait_ms=50)
    reference = SearchIndex.load(index_dir, encoder=serve_encoder)
    queries = [d[2] for d in DOCS[:8]]

    async def fire():
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url=LOCAL) as ac:
            plain = [ac.post("/search", json={"queries": [q], "k": 1 + i % 4}) for i, q in enumerate(queries)]
            music = [ac.post("/search", json={"queries": [q], "k": 5, "filter": {"topic": "music"}}) for q in queries[:3]]
            return await asyncio.gather(*plain, *music)

    responses = asyncio.run(fire())
    for i, (q, r) in enumerate(zip(queries, responses[:8])):
        [want] = reference.search([q], k=1 + i % 4)
        [got] = r.json()["results"]
        assert [h["id"] for h in got["hits"]] == [h.id for h in want]
        assert [h["score"] for h in got["hits"]] == pytest.approx([h.score for h in want], abs=1e-5)
    for r in responses[8:]:
        assert {h["id"] for h in r.json()["results"][0]["hits"]} == {"moonlight", "four-seasons"}
    batching = client.get("/info").json()["batching"]
    assert batching["queries"] == 11 and batching["batches"] < 11  # some requests shared a forward


# ---------------------------------------------------------------- documents
def test_documents_add_get_upsert_delete(writer):
    new = {"id": "bach", "title": "Goldberg Variations", "text": "The Goldberg Variations is a work for "
           "harpsichord by Johann Sebastian Bach.", "metadata": {"topic": "music", "year": 1741}}
    r = writer.post("/documents", json={"documents": [new], "mode": "add"})
    assert r.status_code == 200 and r.json() == {"written": 1, "n_docs": len(DOCS) + 1}
    assert writer.get("/documents/bach").json() == new
    assert top(writer.get("/search", params={"q": new["text"], "k": 1})) == [["bach"]]
    assert {"bach", "moonlight", "four-seasons"} == set(top(writer.post(
        "/search", json={"queries": ["x"], "k": 10, "filter": {"topic": "music"}}))[0])

    r = writer.post("/documents", json={"documents": [{"id": "bach", "text": "again"}], "mode": "add"})
    assert r.status_code == 409 and "'bach'" in r.json()["message"] and "upsert" in r.json()["message"]

    changed = {"id": "bach", "text": "Bach wrote the Goldberg Variations for harpsichord.", "title": None,
               "metadata": {"topic": "baroque"}}
    assert writer.post("/documents", json={"documents": [changed]}).json() == {"written": 1, "n_docs": 13}
    assert writer.get("/documents/bach").json() == changed
    hits = writer.get("/search", params={"q": changed["text"], "k": 13}).json()["results"][0]["hits"]
    assert hits[0]["id"] == "bach" and [h["id"] for h in hits].count("bach") == 1

    assert writer.delete("/documents/bach").json() == {"deleted": "bach", "n_docs": 12}
    assert writer.get("/documents/bach").status_code == 404
    assert "bach" not in top(writer.get("/search", params={"q": changed["text"], "k": 20}))[0]
    r = writer.delete("/documents/bach")
    assert r.status_code == 404 and r.json()["message"] == "document id 'bach' is not in the index"


def test_ids_with_slashes_and_unicode_round_trip(writer):
    doc = {"id": "wiki/Zürich 1", "text": "Zürich is the largest city in Switzerland.", "title": "Zürich",
           "metadata": {}}
    assert writer.post("/documents", json={"documents": [doc]}).status_code == 200
    assert writer.get("/documents/wiki/Zürich 1").json() == doc
    assert writer.delete("/documents/wiki/Zürich 1").status_code == 200


def test_info_and_health(client, serve_model_dir):
    info = client.get("/info").json()
    assert info["model"] == serve_model_dir.name and info["dim"] == 32 and info["factory"] == "Flat"
    assert (info["n_docs"], info["n_vectors"], info["n_tombstones"]) == (12, 12, 0)
    assert info["writes_allowed"] is False and info["limits"]["max_k"] == 1000 and info["pending_writes"] == 0
    assert client.get("/health").json() == {"status": "ok", "n_docs": 12}


# ---------------------------------------------------------------- safe defaults
def test_write_endpoints_are_off_by_default(client):
    r = client.post("/documents", json={"documents": [{"id": "x", "text": "y"}]})
    assert r.status_code == 403 and "--allow-writes" in r.json()["message"]
    assert client.delete("/documents/moonlight").status_code == 403
    assert client.get("/documents/moonlight").status_code == 200  # reads stay open


def test_api_key_guards_writes_as_a_bearer_token(make_client):
    client = make_client(allow_writes=True, api_key=KEY)
    body = {"documents": [{"id": "x", "text": "some text"}]}
    r = client.post("/documents", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in r.json()["message"]
    r = client.post("/documents", json=body, headers={"Authorization": "Bearer " + "x" * 24})
    assert r.status_code == 401 and "does not match" in r.json()["message"]
    assert client.post("/documents", json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.delete("/documents/x").status_code == 401
    assert client.get("/search", params={"q": "text"}).status_code == 200


def test_config_refuses_unsafe_or_impossible_setups(tmp_path, monkeypatch):
    monkeypatch.delenv("TEXTCL_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"^--api-key: --allow-writes on 0\.0\.0\.0, which is not a loopback"):
        ServeConfig(tmp_path, host="0.0.0.0", allow_writes=True).validate()
    ServeConfig(tmp_path, host="0.0.0.0").validate()  # read-only needs no key
    monkeypatch.setenv("TEXTCL_API_KEY", KEY)
    assert ServeConfig(tmp_path, host="0.0.0.0", allow_writes=True).validate().api_key == KEY
    with pytest.raises(ConfigError, match=r"^--workers: 2 workers with --allow-writes: writes need one process"):
        ServeConfig(tmp_path, workers=2, allow_writes=True).validate()
    with pytest.raises(ConfigError, match=r"^--api-key: use at least 16 characters"):
        ServeConfig(tmp_path, api_key="short").validate()
    with pytest.raises(ConfigError, match=r"^--cors-origin: 'example.com': expected an origin"):
        ServeConfig(tmp_path, cors_origins=["example.com"]).validate()
    assert [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.1.2.3", "0.0.0.0", "10.0.0.1",
                                     "example.com")] == [True, True, True, True, False, False, False]


def test_cors_is_off_unless_an_origin_is_configured(client, make_client):
    headers = {"Origin": "https://app.example"}
    assert "access-control-allow-origin" not in client.get("/health", headers=headers).headers
    cors = make_client(cors_origins=["https://app.example"])
    assert cors.get("/health", headers=headers).headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in cors.get("/health", headers={"Origin": "https://evil.example"}).headers


# ---------------------------------------------------------------- limits and errors
def fields(response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error", "message", "fields"} and "Traceback" not in response.text
    return {f["field"]: f["message"] for f in body["fields"]}


@pytest.mark.parametrize("payload, field, words", [
    ({"queries": ["x"], "k": 1001}, "k", "less than or equal to 1000 (got 1001)"),
    ({"queries": ["x"], "k": 0}, "k", "greater than or equal to 1"),
    ({"queries": [], "k": 1}, "queries", "at least 1 item"),
    ({"queries": ["x"] * 65}, "queries", "at most 64 items"),
    ({"queries": ["x", "  \t"]}, "queries[1]", "non-whitespace"),
    ({"queries": ["x" * 2001]}, "queries[0]", "at most 2000 characters"),
    ({"queries": "just a string"}, "queries", "valid list"),
    ({"queries": ["x"], "filter": {"topic": ["a", "b"]}}, "filter.topic", "valid string"),
    ({"queries": ["x"], "filter": {"bad key'": "a"}}, "filter.bad key'", "a metadata field name holds"),
    ({"queries": ["x"], "colour": "red"}, "colour", "Extra inputs are not permitted"),
    ({}, "queries", "Field required"),
])
def test_bad_search_requests_are_422_naming_the_field(client, payload, field, words):
    r = client.post("/search", json=payload)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    got = fields(r)
    assert field in got and words in got[field], got
    assert r.json()["message"].startswith(field) or f"; {field}:" in r.json()["message"]


@pytest.mark.parametrize("params, field", [({"k": 3}, "q (query parameter)"), ({"q": "  "}, "q (query parameter)"),
                                           ({"q": "x", "k": "ten"}, "k (query parameter)")])
def test_bad_get_search_is_422(client, params, field):
    r = client.get("/search", params=params)
    assert r.status_code == 422 and field in fields(r)


@pytest.mark.parametrize("body, field, words", [
    ('{"documents": [{"id": "a", "text": "x", "metadata": {"v": NaN}}]}', "documents[0].metadata",
     "finite numbers"),
    ('{"documents": [{"id": "a", "text": "\\ud800"}]}', "documents[0].text", "valid string"),
    ('{"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}', "body",
     "documents[1].id 'a' repeats documents[0].id"),
    ('{"documents": [{"id": "a\\nb", "text": "x"}]}', "documents[0].id", "control characters"),
    ('{"documents": [{"id": "a", "text": "x", "title": "T", "metadata": {"title": "U"}}]}', "documents[0]",
     "title and metadata.title differ"),
    ('{"documents": [{"id": "a"}]}', "documents[0].text", "Field required"),
    ('{"documents": [{"id": "a", "text": "x"}], "mode": "merge"}', "mode", "'upsert' or 'add'"),
    ('{"documents": [', "body", "not valid JSON"),
])
def test_bad_documents_are_422_and_write_nothing(writer, body, field, words):
    r = writer.post("/documents", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    got = fields(r)
    assert field in got and words in got[field], got
    assert writer.get("/info").json()["n_docs"] == 12


def test_bodies_over_the_limit_are_413_declared_or_streamed(make_client):
    client = make_client(allow_writes=True, max_body_bytes=2000)
    big = {"documents": [{"id": "a", "text": "x" * 3000}]}
    r = client.post("/documents", json=big)
    assert r.status_code == 413 and "larger than the limit of 2000 bytes" in r.json()["message"]
    r = client.post("/documents", content=(b"x" * 500 for _ in range(6)), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert client.post("/documents", json={"documents": [{"id": "a", "text": "x" * 100}]}).status_code == 200


def test_unknown_routes_and_methods_answer_json(client):
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["message"] == "no such endpoint: GET /nowhere (see /docs)"
    r = client.put("/search", json={})
    assert r.status_code == 405 and "PUT is not allowed on /search" in r.json()["message"]


def test_an_unexpected_failure_is_a_500_without_traceback(client, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(client.app.state.service, "search_found", boom)
    r = client.get("/search", params={"q": "x"})
    assert r.status_code == 500
    assert r.json() == {"error": "internal", "message": "internal error; the server log has the details", "fields": []}
    assert "secret" not in r.text


# ---------------------------------------------------------------- the page
def test_the_page_is_served_with_a_strict_content_security_policy(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"] and "unsafe-inline" not in r.text
    assert 'id="q"' in r.text and "autofocus" in r.text and 'name="viewport"' in r.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "innerHTML" not in js.text and "insertAdjacentHTML" not in js.text
    assert client.get("/static/style.css").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/search", "/documents", "/documents/{doc_id}", "/info", "/health"} <= set(schema["paths"])
    assert json.dumps(schema).count('"maximum": 1000') >= 2  # k's bound, in POST and GET
