"""The OpenAI-compatible embeddings API through FastAPI's TestClient: the schema, vectors, dimensions, prompts,
token counts and truncation, several models, both APIs on one server, and every refusal with its message."""
from __future__ import annotations

import base64
import threading

import numpy as np
import pytest

from test_serve_embeddings_support import (LIMIT, PROMPTS, WIDTH, embed_client, wide_encoder,  # noqa: F401
                                           wide_model_dir)
from test_serve_support import DOCS, index_dir, local_client, serve_encoder, serve_model_dir  # noqa: F401
from textcl.errors import ConfigError
from textcl.serve import ServeConfig, create_app
from textcl.serve.embedders import EmbedItem

TEXTS = ["the cat sat on the mat", "a dog ran quickly", "the man and the woman"]
KEY = "k" * 24
LONG = "the cat sat on the mat and " * 40  # far over the 64-token limit


def vectors(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return np.array([d["embedding"] for d in data], dtype=np.float32)


def openai_error(response, status: int, param: str | None) -> str:
    """The message of an error in OpenAI's shape, after checking its status, shape and param."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert body["error"]["param"] == param, body
    return body["error"]["message"]


@pytest.fixture()
def client(embed_client):
    return embed_client()


# ---------------------------------------------------------------- vectors
def test_the_answer_has_openai_s_shape_and_the_encoders_vectors_in_order(client, wide_encoder):
    r = client.post("/v1/embeddings", json={"input": TEXTS, "model": "wide"})
    body = r.json()
    assert body["object"] == "list" and body["model"] == "wide"
    assert all(d["object"] == "embedding" for d in body["data"])
    got = vectors(r)
    expected = wide_encoder.encode(TEXTS)
    assert got.shape == (3, WIDTH)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert r.headers["x-textcl-truncated-inputs"] == "0"


def test_a_single_string_gives_one_vector_and_the_model_may_be_left_out_when_one_is_served(client, wide_encoder):
    got = vectors(client.post("/v1/embeddings", json={"input": TEXTS[0]}))
    np.testing.assert_allclose(got[0], wide_encoder.encode(TEXTS[0]), atol=1e-6)


def test_base64_is_the_same_float32_vectors(client):
    floats = vectors(client.post("/v1/embeddings", json={"input": TEXTS, "encoding_format": "float"}))
    r = client.post("/v1/embeddings", json={"input": TEXTS, "encoding_format": "base64"})
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]])
    assert np.array_equal(decoded, floats)  # float32 written in its shortest form reads back exactly


@pytest.mark.parametrize("dim", [64, 1, WIDTH])
def test_dimensions_keep_the_first_dimensions_renormalised(client, wide_encoder, dim):
    got = vectors(client.post("/v1/embeddings", json={"input": TEXTS, "dimensions": dim}))
    assert got.shape == (3, dim)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, wide_encoder.encode(TEXTS, dim=dim), atol=1e-6)


def test_the_user_field_is_accepted_and_ignored(client):
    a = vectors(client.post("/v1/embeddings", json={"input": TEXTS, "user": "someone"}))
    assert np.array_equal(a, vectors(client.post("/v1/embeddings", json={"input": TEXTS})))


# ---------------------------------------------------------------- prompts
@pytest.mark.parametrize("input_type", ["query", "passage"])
def test_input_type_puts_the_models_prompt_before_each_text(client, wide_encoder, input_type):
    got = vectors(client.post("/v1/embeddings", json={"input": TEXTS, "input_type": input_type}))
    np.testing.assert_allclose(got, wide_encoder.encode(TEXTS, prompt_name=input_type), atol=1e-6)
    np.testing.assert_allclose(got, wide_encoder.encode([PROMPTS[input_type] + t for t in TEXTS]), atol=1e-6)
    assert not np.allclose(got, wide_encoder.encode(TEXTS), atol=1e-3)


def test_encoder_encode_takes_a_prompt_name_and_names_the_prompts_it_has(wide_encoder):
    np.testing.assert_allclose(wide_encoder.encode(TEXTS, prompt_name="query"),
                               wide_encoder.encode(["query: " + t for t in TEXTS]), atol=1e-6)
    with pytest.raises(ValueError, match="prompt_name: 'question' is not a prompt of this model; its prompts: "
                                         "passage, query"):
        wide_encoder.encode(TEXTS, prompt_name="question")


def test_a_models_default_prompt_applies_when_no_input_type_is_given(embed_client, wide_model_dir, wide_encoder):
    from textcl.models import Encoder

    defaulted = Encoder.load(str(wide_model_dir))
    defaulted.prompts, defaulted.default_prompt_name = dict(PROMPTS), "query"
    client = embed_client(models=["dflt=unused"], encoders={"dflt": defaulted})
    got = vectors(client.post("/v1/embeddings", json={"input": TEXTS}))
    np.testing.assert_allclose(got, wide_encoder.encode(TEXTS, prompt_name="query"), atol=1e-6)
    np.testing.assert_allclose(got, defaulted.encode(TEXTS), atol=1e-6)


def test_one_batch_mixing_prompts_and_dimensions_gives_each_request_its_own_vectors(client, wide_encoder):
    embedder = client.app.state.embedders.get("wide")
    items = [EmbedItem(tuple(TEXTS[:2]), "query", 64), EmbedItem((TEXTS[2],), None, WIDTH),
             EmbedItem((TEXTS[0],), "passage", 8)]
    out = embedder._embed_batch(items)
    for item, got in zip(items, out):
        np.testing.assert_allclose(got, wide_encoder.encode(list(item.texts), dim=item.dim,
                                                            prompt_name=item.prompt_name), atol=1e-6)


# ---------------------------------------------------------------- tokens and truncation
def test_usage_counts_the_tokens_the_model_read(client):
    r = client.post("/v1/embeddings", json={"input": ["the cat sat"]})  # [CLS] the cat sat [SEP]
    assert r.json()["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    r = client.post("/v1/embeddings", json={"input": ["the cat sat"], "input_type": "query"})  # + query :
    assert r.json()["usage"]["prompt_tokens"] == 7
    r = client.post("/v1/embeddings", json={"input": ["the cat sat", LONG]})
    assert r.json()["usage"]["prompt_tokens"] == 5 + LIMIT  # the long one counts what the model read


def test_token_counts_are_the_tokenizers_untruncated_with_a_fast_or_a_slow_tokenizer(wide_encoder, tiny_bert_dir):
    from types import SimpleNamespace

    from transformers import BertTokenizer

    from textcl.serve.tokens import TokenCounter

    batch = ["the cat sat", LONG, "Ünïcode café, naïve"]
    expected = [len(wide_encoder.tokenizer(t)["input_ids"]) for t in batch]  # the tokenizer alone does not truncate
    assert expected[1] > LIMIT
    assert TokenCounter(wide_encoder).count(batch).tolist() == expected
    slow = SimpleNamespace(tokenizer=BertTokenizer(str(tiny_bert_dir / "vocab.txt"), do_lower_case=True),
                           max_seq_length=LIMIT, do_lower_case=False)
    assert TokenCounter(slow).count(batch).tolist() == expected


def test_inputs_over_the_limit_are_cut_and_counted_in_a_header(client, wide_encoder):
    r = client.post("/v1/embeddings", json={"input": [LONG, TEXTS[0], LONG + "again"]})
    assert r.headers["x-textcl-truncated-inputs"] == "2"
    np.testing.assert_allclose(vectors(r), wide_encoder.encode([LONG, TEXTS[0], LONG + "again"]), atol=1e-6)


def test_truncate_false_refuses_inputs_over_the_limit_naming_them(client):
    r = client.post("/v1/embeddings", json={"input": [TEXTS[0], LONG], "truncate": False})
    message = openai_error(r, 400, "input")
    assert message.startswith("input: 1 input(s) over the model's limit of 64 tokens with truncate false: item 1 (")
    assert "leave truncate at its default (true)" in message
    assert client.post("/v1/embeddings", json={"input": TEXTS, "truncate": False}).status_code == 200


# ---------------------------------------------------------------- refusals
TOKEN_IDS = ("input: token-id arrays are not supported: send the texts as strings (this server tokenizes each text "
             "with its model's own tokenizer)")


@pytest.mark.parametrize("body, param, message", [
    ({"input": [101, 2023, 102]}, "input", TOKEN_IDS),
    ({"input": [[101, 2023], [101]]}, "input", TOKEN_IDS),
    ({"input": 101}, "input", TOKEN_IDS),
    ({"input": []}, "input", "input: expected at least one text, got an empty list"),
    ({"input": ""}, "input", "input: the text is an empty string; expected some text"),
    ({"input": ["ok", ""]}, "input", "input: item 1 is an empty string; expected some text"),
    ({"input": ["ok", 3]}, "input", "input: item 1 is int 3; expected a string"),
    ({"input": [["a"]]}, "input", "input: item 0 is list ['a']; expected a string"),
    ({"input": {"text": "x"}}, "input", "input: expected a string or a list of strings, got dict"),
    ({"input": "x" * 100_001}, "input", "input: the text holds 100,001 characters, over the limit of 100,000"),
    (b'{"input": "\\ud800"}', "input", "input: must be valid Unicode text"),  # JSON allows a lone surrogate
    ({}, "input", "input: Field required"),
    ({"input": "x", "encoding_format": "hex"}, "encoding_format", "encoding_format: Input should be 'float' or "
     "'base64' (got 'hex')"),
    ({"input": "x", "dimensions": 0}, "dimensions", "dimensions: Input should be greater than or equal to 1 (got 0)"),
    ({"input": "x", "dimensions": 129}, "dimensions", "dimensions: 129 is above the width of model 'wide'; expected "
     "1 to 128"),
    ({"input": "x", "dimensions": "64"}, "dimensions", "dimensions: Input should be a valid integer (got '64')"),
    ({"input": "x", "input_type": "question"}, "input_type", "input_type: 'question' is not a prompt of model "
     "'wide'; its prompts (from its config_sentence_transformers.json): 'passage', 'query'"),
    ({"input": "x", "truncate": "no"}, "truncate", "truncate: Input should be a valid boolean (got 'no')"),
    ({"input": "x", "temperature": 1}, "temperature", "temperature: Extra inputs are not permitted"),
])
def test_each_bad_request_is_refused_in_openai_s_shape_naming_the_field(client, body, param, message):
    if isinstance(body, bytes):
        r = client.post("/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    else:
        r = client.post("/v1/embeddings", json=body)
    assert openai_error(r, 400, param).startswith(message)


def test_a_body_that_is_not_json_is_refused(client):
    r = client.post("/v1/embeddings", content=b"{input: x", headers={"Content-Type": "application/json"})
    assert openai_error(r, 400, None).startswith("body: not valid JSON")


def test_too_many_inputs_are_refused_with_the_limit(embed_client):
    client = embed_client(max_inputs=3)
    r = client.post("/v1/embeddings", json={"input": ["a", "b", "c", "d"]})
    assert openai_error(r, 400, "input") == ("input: 4 texts, over the limit of 3 per request (--max-inputs); send "
                                             "them in several requests")


def test_an_unknown_model_is_404_model_not_found_naming_the_served_ones(client):
    r = client.post("/v1/embeddings", json={"input": "x", "model": "text-embedding-3-small"})
    assert openai_error(r, 404, "model") == ("model: 'text-embedding-3-small' is not served here; this server serves "
                                             "'wide' (GET /v1/models)")
    assert r.json()["error"]["code"] == "model_not_found"
    assert openai_error(client.get("/v1/models/nope"), 404, "model").startswith("model: 'nope' is not served here")


def test_an_unknown_v1_path_is_a_404_in_openai_s_shape(client):
    assert openai_error(client.get("/v1/completions"), 404, None) == "no such endpoint: GET /v1/completions (see /docs)"
    assert openai_error(client.get("/v1/embeddings"), 405, None) == "GET is not allowed on /v1/embeddings (see /docs)"


# ---------------------------------------------------------------- models
def test_v1_models_lists_the_served_models(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    [card] = body["data"]
    assert {k: card[k] for k in ("id", "object", "owned_by", "dimensions", "max_input_tokens", "prompts")} == {
        "id": "wide", "object": "model", "owned_by": "textcl", "dimensions": WIDTH, "max_input_tokens": LIMIT,
        "prompts": ["passage", "query"]}
    assert isinstance(card["created"], int)
    assert client.get("/v1/models/wide").json() == card


def test_several_models_each_with_its_own_batcher_chosen_by_the_requests_model(
        embed_client, serve_model_dir, serve_encoder, wide_encoder):
    client = embed_client(models=["wide=unused", str(serve_model_dir)], encoders={str(serve_model_dir): serve_encoder})
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["wide", str(serve_model_dir)]
    small = vectors(client.post("/v1/embeddings", json={"input": TEXTS, "model": str(serve_model_dir)}))
    np.testing.assert_allclose(small, serve_encoder.encode(TEXTS), atol=1e-6)
    assert small.shape == (3, 32)
    assert vectors(client.post("/v1/embeddings", json={"input": TEXTS, "model": "wide"})).shape == (3, WIDTH)
    embedders = client.app.state.embedders
    a, b = embedders.get("wide"), embedders.get(str(serve_model_dir))
    assert a.batcher is not b.batcher and a.batcher.queries == 3 and b.batcher.queries == 3
    r = client.post("/v1/embeddings", json={"input": "x"})
    assert openai_error(r, 400, "model").startswith("model: required: this server serves several models ('wide', ")


def test_one_server_answers_both_apis_sharing_the_index_model(index_dir, serve_model_dir, serve_encoder):
    model = str(serve_model_dir)
    app = create_app(index_dir, encoder=serve_encoder, model=model, models=[model])
    with local_client(app) as client:
        text = DOCS[2][2]
        assert client.get("/search", params={"q": text, "k": 1}).json()["results"][0]["hits"][0]["id"] == DOCS[2][0]
        got = vectors(client.post("/v1/embeddings", json={"input": [text], "model": model}))
        np.testing.assert_allclose(got[0], serve_encoder.encode(text), atol=1e-6)
        embedder = app.state.embedders.get(model)
        assert embedder.encoder is app.state.service.encoder and embedder.lock is app.state.service.encode_lock
        r = client.post("/search", json={"queries": ["x"], "k": "many"})  # the search API keeps its own errors
        assert r.status_code == 422 and set(r.json()) == {"error", "message", "fields"}


def test_a_search_only_server_has_no_v1_routes(index_dir, serve_encoder):
    with local_client(create_app(index_dir, encoder=serve_encoder)) as client:
        r = client.post("/v1/embeddings", json={"input": "x"})
        assert openai_error(r, 404, None).startswith("no such endpoint")


# ---------------------------------------------------------------- auth, limits, cross-site requests
def test_with_an_api_key_the_v1_routes_need_it(embed_client):
    client = embed_client(api_key=KEY)
    r = client.post("/v1/embeddings", json={"input": "x"})
    assert openai_error(r, 401, None).startswith("this endpoint needs the header `Authorization: Bearer <API key>`")
    assert r.json()["error"]["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"
    r = client.get("/v1/models", headers={"Authorization": "Bearer wrong"})
    assert openai_error(r, 401, None).endswith("(the key sent does not match)")
    ok = client.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    assert client.get("/health").status_code == 200  # health needs no key


def test_a_foreign_host_and_a_foreign_origin_are_refused_in_openai_s_shape(client):
    r = client.post("/v1/embeddings", json={"input": "x"}, headers={"Host": "evil.example"})
    assert openai_error(r, 400, None).startswith("Host 'evil.example' is not served here")
    r = client.post("/v1/embeddings", json={"input": "x"}, headers={"Origin": "http://evil.example"})
    assert openai_error(r, 403, None).startswith("a change from the web page at 'http://evil.example' is refused")
    assert client.get("/v1/models", headers={"Origin": "http://evil.example"}).status_code == 200


def test_a_body_over_the_limit_is_413_in_openai_s_shape(embed_client):
    client = embed_client(max_body_bytes=1000)
    r = client.post("/v1/embeddings", json={"input": ["x" * 600, "y" * 600]})
    assert openai_error(r, 413, None).startswith("the request body is larger than the limit of 1000 bytes")


def test_a_full_queue_is_503_with_retry_after(embed_client):
    client = embed_client(max_pending=2, max_inputs=2)  # --max-inputs above --max-pending is refused at startup
    client.app.state.embedders.get("wide").batcher._pending = 1  # one input waiting already
    r = client.post("/v1/embeddings", json={"input": TEXTS[:2]})
    assert openai_error(r, 503, None).startswith("the server is busy: 1 queries are waiting (the limit is 2)")
    assert r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "unavailable"


def test_an_embeddings_only_server_sets_and_gives_back_torch_threads(wide_encoder):
    import torch

    before = torch.get_num_threads()
    app = create_app(models=["wide=unused"], encoders={"wide": wide_encoder}, threads=1)
    with local_client(app) as client:
        assert torch.get_num_threads() == 1
        assert client.get("/health").json() == {"status": "ok", "models": ["wide"]}
        assert client.get("/").status_code == 404 and client.get("/search", params={"q": "x"}).status_code == 404
    # torch's count is per thread and the app closes on another thread than the one that built it: what it gives
    # back is the count every thread starts with
    seen = []
    fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    fresh.start()
    fresh.join()
    assert seen == [before]


def test_float_answers_without_orjson_are_the_same(client, monkeypatch):
    import textcl.serve.openai_render as render

    fast = client.post("/v1/embeddings", json={"input": TEXTS}).json()
    monkeypatch.setattr(render, "orjson", None)
    plain = client.post("/v1/embeddings", json={"input": TEXTS}).json()
    assert np.array_equal(np.float32([d["embedding"] for d in plain["data"]]),
                          np.float32([d["embedding"] for d in fast["data"]]))


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize("options, message", [
    ({}, "INDEX_DIR: nothing to serve: give an index folder, one or more --model for the embeddings API, or both"),
    ({"models": ["a=x", "a=y"]}, "--model: two models are served as 'a' ('x' and 'y'): name them apart with NAME=PATH"),
    ({"models": [" "]}, "--model: expected a model folder or hub name, optionally NAME=PATH; got ' '"),
    ({"models": ["m"], "allow_writes": True}, "--allow-writes: writes go to an index: give the index folder"),
    ({"models": ["m"], "max_inputs": 0}, "--max-inputs: must be a positive integer, got 0"),
])
def test_the_configuration_is_refused_naming_the_flag(options, message):
    with pytest.raises(ConfigError) as err:
        ServeConfig(**options).validate()
    assert str(err.value).startswith(message)


def test_model_specs_name_a_model_or_keep_its_path():
    from textcl.serve.config import parse_model_spec

    assert parse_model_spec("minilm=runs/qs/model") == ("minilm", "runs/qs/model")
    assert parse_model_spec("runs/qs/model") == ("runs/qs/model", "runs/qs/model")
    assert parse_model_spec("runs/a=b/model") == ("runs/a=b/model", "runs/a=b/model")  # a path holding "="
    assert parse_model_spec("sentence-transformers/all-MiniLM-L6-v2")[0] == "sentence-transformers/all-MiniLM-L6-v2"


def test_several_workers_each_build_the_embeddings_app_from_the_environment(monkeypatch, serve_model_dir):
    """``--workers 2`` without an index: each worker process rebuilds the configuration and loads the models."""
    import uvicorn

    from textcl.serve.server import CONFIG_ENV, app_from_env, run

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.update(app=app, **kwargs))
    monkeypatch.setenv(CONFIG_ENV, "")  # run() sets it; undone after the test
    run(ServeConfig(models=[f"tiny={serve_model_dir}"], workers=2, threads=1))
    assert started["app"] == "textcl.serve.server:app_from_env" and started["workers"] == 2
    with local_client(app_from_env()) as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny"]
        assert vectors(client.post("/v1/embeddings", json={"input": TEXTS})).shape == (3, 32)
