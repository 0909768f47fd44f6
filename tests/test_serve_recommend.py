"""``POST /recommend`` on ``textcl serve``: a user given by their history (index ids or texts, oldest first) is
embedded as the text a recommendation model was trained on and searched like a query; the history is left out;
each recommendation names the history entry it is most like.

The model is conftest's tiny random BERT: its rankings are arbitrary, so every expectation is computed by hand
(numpy cosines of the encoder's own vectors), except that identical texts have cosine 1.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_serve_support import build_index, local_client, serve_encoder, serve_model_dir  # noqa: F401
from textcl.errors import ConfigError, DataFormatError
from textcl.serve import create_app
from textcl.serve.schemas import RecommendResponse

NIXON = "Nixon (1995). Drama"
# (id, title, text, metadata) as build_index takes them; the *-copy items repeat a text, so that they are
# recommended "because" of that exact history entry (cosine 1)
ITEMS = [
    ("toy", "Toy Story", "Toy Story (1995). Animation Children's Comedy", {"year": 1995}),
    ("heat", "Heat", "Heat (1995). Action Crime Thriller", {"year": 1995}),
    ("jumanji", "Jumanji", "Jumanji (1995). Adventure Children's Fantasy", {}),
    ("casino", "Casino", "Casino (1995). Drama Thriller", {}),
    ("sabrina", "Sabrina", "Sabrina (1995). Comedy Romance", {}),
    ("goldeneye", "GoldenEye", "GoldenEye (1995). Action Adventure Thriller", {}),
    ("balto", "Balto", "Balto (1995). Animation Children's", {}),
    ("heat-copy", "Heat", "Heat (1995). Action Crime Thriller", {}),
    ("toy-copy", "Toy Story", "Toy Story (1995). Animation Children's Comedy", {}),
    ("nixon-copy", "Nixon", NIXON, {}),
]
TEXT = {i[0]: i[2] for i in ITEMS}
SEP = " || "  # not the default: the answer shows that the model's settings were read
SETTINGS = {"history": 2, "separator": SEP}


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def rec_model(tmp_path_factory, serve_model_dir):
    """A copy of the tiny BERT with the settings a recommendation run writes beside its model."""
    folder = tmp_path_factory.mktemp("rec") / "model"
    shutil.copytree(serve_model_dir, folder)
    (folder / "textcl_recommend.json").write_text(json.dumps(SETTINGS), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def rec_encoder(rec_model):
    from textcl.models import Encoder

    return Encoder.load(str(rec_model))


@pytest.fixture(scope="module")
def by_hand(rec_encoder):
    """``vec(texts)``: the encoder's vectors for ``texts``, normalised here, one text at a time (no padding)."""
    def vec(texts):
        return unit(np.concatenate([rec_encoder.encode([t], normalize=False) for t in texts]))
    return vec


@pytest.fixture(scope="module")
def rec_index(tmp_path_factory, rec_model, rec_encoder):
    return build_index(tmp_path_factory.mktemp("rec-ix") / "ix", rec_model, docs=ITEMS, encoder=rec_encoder)


@pytest.fixture(scope="module")
def client(rec_index, rec_encoder):
    with local_client(create_app(rec_index, encoder=rec_encoder), raise_server_exceptions=False) as client:
        yield client


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def ids(body) -> list[str]:
    return [h["id"] for h in body["recommendations"]]


# ---------------------------------------------------------------- the answer, by hand
def test_ranking_user_text_and_because_match_a_by_hand_computation(client, by_hand):
    history = ["toy", "jumanji", {"text": NIXON}, "heat"]  # oldest first
    body = ok(client.post("/recommend", json={"history": history, "k": 20}))

    # the user's text: the last 2 items (history 2 in the model's folder), most recent first, joined by " || "
    assert body["user_text"] == TEXT["heat"] + SEP + NIXON
    assert body["settings"] == {"history": 2, "separator": SEP, "source": "model", "user_tower": "text"}
    assert body["excluded"] == 3  # toy, jumanji, heat

    # every item but the history's, ranked by cosine to the user's text
    others = [i for i in TEXT if i not in {"toy", "jumanji", "heat"}]
    user = by_hand([body["user_text"]])[0]
    docs = by_hand([TEXT[i] for i in others])
    scores = docs @ user
    order = np.argsort(-scores, kind="stable")
    assert ids(body) == [others[j] for j in order]
    assert [h["score"] for h in body["recommendations"]] == pytest.approx(scores[order].tolist(), abs=1e-4)

    # because: among the entries the user's text holds (heat at 3, the Nixon text at 2), the most similar
    window = [(3, "heat", TEXT["heat"]), (2, None, NIXON)]
    cands = by_hand([t for _, _, t in window])
    for hit in body["recommendations"]:
        cos = cands @ by_hand([TEXT[hit["id"]]])[0]
        best = int(np.argmax(cos))
        assert hit["because"]["index"] == window[best][0] and hit["because"]["id"] == window[best][1], hit
        assert hit["because"]["score"] == pytest.approx(cos[best], abs=1e-4)
    because = {h["id"]: h["because"] for h in body["recommendations"]}
    assert because["heat-copy"] == {"id": "heat", "index": 3, "score": pytest.approx(1.0, abs=1e-4)}
    assert because["nixon-copy"] == {"id": None, "index": 2, "score": pytest.approx(1.0, abs=1e-4)}
    # toy is in the history but not in the user's text: it explains nothing, not even its own copy
    assert because["toy-copy"]["index"] in (2, 3) and because["toy-copy"]["score"] < 0.9999


def test_a_hit_holds_what_search_hits_hold_and_k_cuts_the_list(client):
    full = ok(client.post("/recommend", json={"history": ["heat", {"text": NIXON}], "k": 20}))
    top3 = ok(client.post("/recommend", json={"history": ["heat", {"text": NIXON}], "k": 3}))
    assert ids(top3) == ids(full)[:3]
    first = full["recommendations"][0]
    assert set(first) == {"id", "score", "text", "title", "metadata", "because"}
    item = next(i for i in ITEMS if i[0] == first["id"])
    assert (first["text"], first["title"], first["metadata"]) == (item[2], item[1], item[3])
    cut = ok(client.post("/recommend", json={"history": ["heat"], "k": 2, "fields": ["id", "score"],
                                             "text_chars": 4}))
    assert all(set(h) == {"id", "score", "because"} for h in cut["recommendations"])
    for body in (full, cut):  # the answers are what /docs declares
        RecommendResponse.model_validate(body)
    short = ok(client.post("/recommend", json={"history": ["heat"], "k": 2, "text_chars": 4}))
    assert all(h["text"] == TEXT[h["id"]][:4] for h in short["recommendations"])


# ---------------------------------------------------------------- the history left out, k kept
def test_exclude_history_false_keeps_the_history_items(client):
    body = ok(client.post("/recommend", json={"history": ["heat"], "k": 2, "exclude_history": False}))
    # the user's text is heat's own text: heat and its copy have cosine 1
    assert set(ids(body)) == {"heat", "heat-copy"} and body["excluded"] == 0
    assert [h["score"] for h in body["recommendations"]] == pytest.approx([1.0, 1.0], abs=1e-4)


@pytest.mark.parametrize("history, excluded", [(["heat"], 1), (["heat", "heat", "heat"], 1),
                                               (["toy", "heat", "toy"], 2)])
def test_k_hits_come_back_when_excluded_items_would_have_been_in_the_top_k(client, history, excluded):
    k = len(ITEMS) - excluded  # every other item: the search must look past the history's own ids
    body = ok(client.post("/recommend", json={"history": history, "k": k}))
    assert body["excluded"] == excluded
    assert sorted(ids(body)) == sorted(i for i in TEXT if i not in history)
    kept = ok(client.post("/recommend", json={"history": history, "k": k, "exclude_history": False}))
    assert set(ids(kept)) & set(history)  # without the exclusion, history items take places in this top k


def test_k_larger_than_what_is_left_returns_what_is_left(client):
    body = ok(client.post("/recommend", json={"history": ["toy"], "k": 100}))
    assert sorted(ids(body)) == sorted(i for i in TEXT if i != "toy")


# ---------------------------------------------------------------- bad requests
def fields(response) -> dict[str, str]:
    body = response.json()
    assert response.status_code == 422 and body["error"] == "invalid_request", response.text
    assert "Traceback" not in response.text
    return {f["field"]: f["message"] for f in body["fields"]}


def test_an_unknown_id_is_422_naming_its_position_and_the_id(client):
    r = client.post("/recommend", json={"history": ["heat", "toy", "nope"]})
    assert fields(r) == {"history[2]": "no document with id 'nope' in the index"}
    assert r.json()["message"] == "history[2]: no document with id 'nope' in the index"
    r = client.post("/recommend", json={"history": ["x", "heat", {"text": NIXON}, "y"]})
    assert fields(r) == {"history[0]": "no document with id 'x' in the index",
                         "history[3]": "no document with id 'y' in the index"}


@pytest.mark.parametrize("payload, field, words", [
    ({"history": []}, "history", "at least 1 item"),
    ({"history": ["heat"] * 1001}, "history", "at most 1000 items"),
    ({"history": ["heat", {"text": "  \t"}]}, "history[1].text", "non-whitespace"),
    ({"history": ["   "]}, "history[0]", "non-whitespace"),
    ({"history": [{"text": "x" * 2001}]}, "history[0].text", "at most 2000 characters"),
    ({"history": [{"txt": "x"}]}, "history[0].txt", "Extra inputs are not permitted"),
    ({"history": [5]}, "history[0]", "valid string"),
    ({"history": "heat"}, "history", "valid list"),
    ({"history": ["heat"], "k": 0}, "k", "greater than or equal to 1"),
    ({"history": ["heat"], "k": 1001}, "k", "less than or equal to 1000"),
    ({"history": ["heat"], "exclude_history": "yes"}, "exclude_history", "valid boolean"),
    ({}, "history", "Field required"),
])
def test_bad_requests_are_422_naming_the_field(client, payload, field, words):
    got = fields(client.post("/recommend", json=payload))
    assert field in got and words in got[field], got


def test_an_answer_over_the_response_limit_is_422(rec_index, rec_encoder):
    with local_client(create_app(rec_index, encoder=rec_encoder, max_response_chars=60)) as small:
        r = small.post("/recommend", json={"history": ["heat"], "k": 5})
        assert r.status_code == 422 and "--max-response-chars" in r.json()["message"]
        assert ok(small.post("/recommend", json={"history": ["heat"], "k": 5, "fields": ["id"]}))["recommendations"]


# ---------------------------------------------------------------- the settings
def test_a_model_without_settings_is_served_with_the_defaults_and_says_so(tmp_path, serve_model_dir, serve_encoder):
    assert not (serve_model_dir / "textcl_recommend.json").exists()
    path = build_index(tmp_path / "ix", serve_model_dir, docs=ITEMS, encoder=serve_encoder)
    history = [i[0] for i in ITEMS] + [{"text": NIXON}, "toy"]  # 12 entries: more than the default 10
    with local_client(create_app(path, encoder=serve_encoder)) as client:
        body = ok(client.post("/recommend", json={"history": history, "k": 3, "exclude_history": False}))
        defaults = {"history": 10, "separator": " | ", "source": "default", "user_tower": "text"}
        assert body["settings"] == defaults and client.get("/info").json()["recommend"] == defaults
    texts = [TEXT[h] if isinstance(h, str) else h["text"] for h in history]
    assert body["user_text"] == " | ".join(texts[-10:][::-1])


def test_the_settings_are_read_from_the_model_the_server_loads(tmp_path, rec_model, serve_model_dir, serve_encoder,
                                                               client):
    assert client.get("/info").json()["recommend"] == {**SETTINGS, "source": "model", "user_tower": "text"}
    # the index's own model, found through its manifest
    path = build_index(tmp_path / "own", rec_model, docs=ITEMS[:3], encoder=serve_encoder)
    with local_client(create_app(path)) as own:
        assert own.get("/info").json()["recommend"]["source"] == "model"
    # --index-model: the same weights in a folder with settings replace an index model without them
    path = build_index(tmp_path / "plain", serve_model_dir, docs=ITEMS[:3], encoder=serve_encoder)
    with local_client(create_app(path, model=str(rec_model))) as swapped:
        body = ok(swapped.post("/recommend", json={"history": ["toy", "heat"], "k": 1}))
        assert body["settings"]["source"] == "model" and body["user_text"] == TEXT["heat"] + SEP + TEXT["toy"]


@pytest.mark.parametrize("content, field", [
    ('{"history": 0, "separator": " | "}', "history"),
    ('{"history": "3", "separator": " | "}', "history"),
    ('{"history": true, "separator": " | "}', "history"),
    ('{"history": 3, "separator": 5}', "separator"),
    ('{"history": 3}', "separator"),
    ('[3, " | "]', "(top level)"),
])
def test_a_malformed_settings_file_refuses_the_start_naming_the_file_and_field(tmp_path, serve_model_dir, rec_index,
                                                                               content, field):
    from textcl.models import Encoder

    folder = tmp_path / "model"
    shutil.copytree(serve_model_dir, folder)
    settings = folder / "textcl_recommend.json"
    settings.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        create_app(rec_index, encoder=Encoder.load(str(folder)), allow_writes=True)
    assert err.value.field == field and err.value.source == str(settings)
    assert str(err.value).startswith(f"{settings}: {field}: ")
    # the refused start held nothing: the same index serves (and writes) with a good model
    with local_client(create_app(rec_index, encoder=Encoder.load(str(serve_model_dir)), allow_writes=True)) as c:
        assert c.get("/health").status_code == 200


def test_a_settings_file_that_is_not_json_refuses_the_start_naming_the_file_and_line(tmp_path, serve_model_dir,
                                                                                    rec_index):
    from textcl.models import Encoder

    folder = tmp_path / "model"
    shutil.copytree(serve_model_dir, folder)
    (folder / "textcl_recommend.json").write_text('{"history": 3,\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"textcl_recommend\.json:\d+: not valid JSON"):
        create_app(rec_index, encoder=Encoder.load(str(folder)))


def test_written_settings_are_read_back_and_bad_ones_are_never_written(tmp_path):
    from textcl.models.recommend_settings import read_recommend_settings, write_recommend_settings

    assert read_recommend_settings(tmp_path) is None
    write_recommend_settings(tmp_path, 7, " ; ")
    assert read_recommend_settings(tmp_path) == {"history": 7, "separator": " ; "}
    with pytest.raises(ConfigError, match="history"):
        write_recommend_settings(tmp_path / "other", 0, " | ")
    assert not (tmp_path / "other").exists()


# ---------------------------------------------------------------- writes
def test_a_document_added_with_post_documents_is_recommended_at_once(tmp_path, rec_model, rec_encoder):
    path = build_index(tmp_path / "ix", rec_model, docs=ITEMS, encoder=rec_encoder)
    new = "Braveheart (1995). Action Drama War"
    with local_client(create_app(path, encoder=rec_encoder, allow_writes=True)) as writer:
        before = ok(writer.post("/recommend", json={"history": [{"text": new}], "k": 3}))
        assert "braveheart" not in ids(before)
        doc = {"id": "braveheart", "text": new, "title": "Braveheart"}
        added = writer.post("/documents", json={"documents": [doc]})
        assert added.status_code == 200, added.text
        body = ok(writer.post("/recommend", json={"history": [{"text": new}], "k": 3}))
        first = body["recommendations"][0]
        assert first["id"] == "braveheart" and first["score"] == pytest.approx(1.0, abs=1e-4)
        assert first["title"] == "Braveheart" and first["because"] == {"id": None, "index": 0,
                                                                       "score": pytest.approx(1.0, abs=1e-4)}
        # and, as an id, it is history: left out of its own recommendations
        assert "braveheart" not in ids(ok(writer.post("/recommend", json={"history": ["braveheart"], "k": 20})))


def test_the_endpoint_is_in_the_openapi_schema_with_its_limits(client):
    schema = client.get("/openapi.json").json()
    request = schema["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = request["$ref"].rsplit("/", 1)[-1]
    history = schema["components"]["schemas"][name]["properties"]["history"]
    assert history["maxItems"] == 1000 and history["minItems"] == 1 and "oldest first" in history["description"]
    assert client.get("/info").json()["limits"]["max_history"] == 1000  # a client can read it without the schema


@pytest.fixture()
def encoded(client, monkeypatch) -> list[int]:
    """The sizes of the service's encode calls (``because`` is the only /recommend work that encodes)."""
    service = client.app.state.service
    sizes: list[int] = []
    real = service.encode

    async def counting(texts, **kw):
        sizes.append(len(texts))
        return await real(texts, **kw)

    monkeypatch.setattr(service, "encode", counting)
    return sizes


def test_because_stops_after_the_first_fifty_recommendations(client, monkeypatch, encoded):
    """A read request with a large k encodes at most BECAUSE_MAX recommendation texts for ``because``; the
    later recommendations answer ``because: null``."""
    from textcl.serve import recommend as rec

    monkeypatch.setattr(rec, "BECAUSE_MAX", 2)
    body = ok(client.post("/recommend", json={"history": ["heat"], "k": 6}))
    assert [h["because"] is None for h in body["recommendations"]] == [False, False, True, True, True, True]
    assert encoded and max(encoded) <= 1 + 2  # the one history text and the first two recommendations


# ---------------------------------------------------------------- limits a client cannot get past
def test_because_false_encodes_nothing_and_answers_null(client, encoded):
    body = ok(client.post("/recommend", json={"history": ["heat", "toy"], "k": 4, "because": False}))
    assert len(body["recommendations"]) == 4 and all(h["because"] is None for h in body["recommendations"])
    assert encoded == []
    with_because = ok(client.post("/recommend", json={"history": ["heat", "toy"], "k": 4}))
    assert ids(with_because) == ids(body) and encoded  # the same ranking; because costs encodings


def test_because_counts_against_max_pending_and_is_null_past_it(rec_index, rec_encoder, monkeypatch):
    from textcl.serve.batcher import BusyError

    # a limit of 3 texts: history 2 in the model's settings holds casino and sabrina (no copies in the index),
    # which leaves room for 1 recommendation's text; the others answer null
    with local_client(create_app(rec_index, encoder=rec_encoder, max_pending=3)) as small:
        body = ok(small.post("/recommend", json={"history": ["casino", "sabrina"], "k": 3}))
        assert [h["because"] is None for h in body["recommendations"]] == [False, True, True]
        some = ok(small.post("/recommend", json={"history": ["casino"], "k": 5}))  # room for 2 of 5
        assert [h["because"] is None for h in some["recommendations"]] == [False, False, True, True, True]
        # queries waiting past the limit when because's texts would queue: the search (done) is answered, without
        # its reasons, rather than refused
        batcher = small.app.state.service.batcher

        def busy(size):
            raise BusyError("3 queries are waiting (the limit is 3); retry shortly")

        monkeypatch.setattr(batcher, "admitted", busy)
        crowded = ok(small.post("/recommend", json={"history": ["heat"], "k": 3}))
        assert len(crowded["recommendations"]) == 3
        assert all(h["because"] is None for h in crowded["recommendations"])


def test_because_names_only_entries_the_cut_user_text_holds(rec_index, rec_encoder):
    # heat's text (34 characters) and " || " fill 38 of 30 allowed: toy, next in the user's text, was cut out
    with local_client(create_app(rec_index, encoder=rec_encoder, max_query_chars=30)) as small:
        body = ok(small.post("/recommend", json={"history": ["toy", "heat"], "k": 5}))
        assert body["user_text"] == TEXT["heat"][:30] and body["user_text_cut"] is True
        assert {h["because"]["id"] for h in body["recommendations"]} == {"heat"}


def test_the_user_text_is_cut_at_max_query_chars(rec_index, rec_encoder):
    with local_client(create_app(rec_index, encoder=rec_encoder, max_query_chars=40)) as small:
        body = ok(small.post("/recommend", json={"history": ["toy", "heat"], "k": 2}))
        assert body["user_text"] == (TEXT["heat"] + SEP + TEXT["toy"])[:40] and body["user_text_cut"] is True
        short = ok(small.post("/recommend", json={"history": [{"text": "Heat"}], "k": 2}))
        assert short["user_text"] == "Heat" and short["user_text_cut"] is False
        RecommendResponse.model_validate(body)


def test_several_workers_refuse_a_bad_settings_file_before_any_starts(tmp_path, serve_model_dir, serve_encoder,
                                                                      monkeypatch):
    import uvicorn

    from textcl.serve.config import ServeConfig
    from textcl.serve.server import run

    folder = tmp_path / "model"
    shutil.copytree(serve_model_dir, folder)
    (folder / "textcl_recommend.json").write_text('{"history": 0, "separator": " | "}', encoding="utf-8")
    path = build_index(tmp_path / "ix", folder, docs=ITEMS[:3], encoder=serve_encoder)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("uvicorn started with a bad settings file"))
    with pytest.raises(ConfigError, match=r"textcl_recommend\.json: history: "):
        run(ServeConfig(path, workers=2))
    with pytest.raises(ConfigError, match=r"textcl_recommend\.json: history: "):
        run(ServeConfig(path, workers=2, model=str(folder)))
