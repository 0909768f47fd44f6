"""Review fixes of the embeddings service: prompts kept by ``Encoder.save`` and loaded once, ``encode_order``
with prompts, ``dimensions`` renormalised for any model, micro-batches under the shared lock, the startup and
response limits, ``/health`` without paths, and ``textcl serve INDEX --model`` keeping the index's model."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from test_serve_embeddings_support import PROMPTS, WIDTH, embed_client, wide_encoder, wide_model_dir  # noqa: F401
from test_serve_support import DOCS, index_dir, local_client, serve_encoder, serve_model_dir  # noqa: F401
from textcl.errors import ConfigError
from textcl.serve import create_app

TEXTS = ["the cat sat on the mat", "a dog ran quickly", "the man and the woman"]


def vectors(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


# ---------------------------------------------------------------- 1: save keeps prompts
def test_save_and_load_keep_the_models_prompts_and_default_prompt(wide_model_dir, tmp_path):
    from textcl.models import Encoder

    encoder = Encoder.load(str(wide_model_dir))
    encoder.default_prompt_name = "query"
    loaded = Encoder.load(str(encoder.save(tmp_path / "copy")))
    assert (loaded.prompts, loaded.default_prompt_name) == (PROMPTS, "query")


# ---------------------------------------------------------------- 10: prompts load once
def test_prompts_load_once_when_two_threads_ask_first(monkeypatch):
    import textcl.models.prompts as prompts

    calls = []

    def slow_read(folder):
        calls.append(folder)
        time.sleep(0.05)
        return dict(PROMPTS), "query"

    monkeypatch.setattr(prompts, "read_prompts", slow_read)
    encoder = SimpleNamespace(_folder="somewhere")
    start = threading.Barrier(2)
    got = []

    def ask():
        start.wait()
        got.append(prompts.prompts_of(encoder))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and got == [(PROMPTS, "query")] * 2


def test_a_loaded_encoder_has_its_prompts_before_any_encode(wide_model_dir):
    from textcl.models import Encoder

    encoder = Encoder.load(str(wide_model_dir))
    assert encoder.__dict__["prompts"] == PROMPTS and encoder.__dict__["default_prompt_name"] is None


# ---------------------------------------------------------------- 11: encode_order with prompts
def test_encode_order_counts_the_prompted_texts_tokens(wide_model_dir):
    from textcl.models import Encoder

    encoder = Encoder.load(str(wide_model_dir))
    encoder.default_prompt_name = "query"
    tokens = [len(encoder.tokenizer(PROMPTS["query"] + t)["input_ids"]) for t in TEXTS]
    assert encoder.encode_order(TEXTS)[1].tolist() == tokens  # the default prompt, as encode() uses
    passage = [len(encoder.tokenizer(PROMPTS["passage"] + t)["input_ids"]) for t in TEXTS]
    assert encoder.encode_order(TEXTS, prompt_name="passage")[1].tolist() == passage


# ---------------------------------------------------------------- 2: dimensions renormalised for any model
def test_dimensions_are_renormalised_when_the_model_does_not_normalise(embed_client, wide_model_dir):
    from textcl.models import Encoder

    raw = Encoder.load(str(wide_model_dir), normalize=False)
    client = embed_client(models=["raw=unused"], encoders={"raw": raw})
    got = vectors(client.post("/v1/embeddings", json={"input": TEXTS, "model": "raw", "dimensions": 64}))
    cut = raw.encode(TEXTS)[:, :64]
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, cut / np.linalg.norm(cut, axis=1, keepdims=True), atol=1e-6)
    full = vectors(client.post("/v1/embeddings", json={"input": TEXTS, "model": "raw"}))
    np.testing.assert_allclose(full, raw.encode(TEXTS), atol=1e-5)  # no dimensions: the model's own vectors


# ---------------------------------------------------------------- 5: micro-batches under the shared lock
def test_a_large_request_holds_the_lock_for_one_batch_at_a_time(embed_client, wide_encoder):
    client = embed_client(max_batch=4)
    embedder = client.app.state.embedders.get("wide")
    events = []

    class Spy:
        def __getattr__(self, name):
            return getattr(wide_encoder, name)

        def encode(self, texts, **kwargs):
            events.append(f"encode {len(texts)}")
            return wide_encoder.encode(texts, **kwargs)

    class RecordingLock:
        def __enter__(self):
            events.append("acquire")

        def __exit__(self, *exc):
            events.append("release")

    embedder.encoder, embedder.lock = Spy(), RecordingLock()
    texts = [f"text number {i} " + "word " * i for i in range(10)]
    got = vectors(client.post("/v1/embeddings", json={"input": texts}))
    assert events == ["acquire", "encode 4", "release", "acquire", "encode 4", "release", "acquire", "encode 2",
                      "release"]
    np.testing.assert_allclose(got, wide_encoder.encode(texts), atol=1e-6)


# ---------------------------------------------------------------- 7: --max-inputs within --max-pending
def test_max_inputs_over_max_pending_is_refused_at_startup(wide_encoder):
    with pytest.raises(ConfigError) as err:
        create_app(models=["wide=unused"], encoders={"wide": wide_encoder}, max_inputs=100, max_pending=50)
    assert str(err.value) == ("--max-inputs: 100 is above --max-pending 50: a request of more inputs than may wait "
                              "could never be queued; expected --max-inputs at most --max-pending")


# ---------------------------------------------------------------- 8: --max-response-chars bounds /v1 answers
def test_an_embeddings_answer_over_max_response_chars_is_refused(embed_client):
    client = embed_client(max_response_chars=1000)
    # base64 of 128 float32: 4 * ceil(512 / 3) = 684 characters a vector
    r = client.post("/v1/embeddings", json={"input": TEXTS, "encoding_format": "base64"})
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["param"] == "input" and error["code"] == "response_too_large"
    assert error["message"] == ("the answer would hold 2,052 characters of vectors (3 vectors of 684), over the "
                                "limit of 1,000 per answer (--max-response-chars): send fewer inputs or ask for "
                                "fewer dimensions")
    r = client.post("/v1/embeddings", json={"input": TEXTS[:2], "dimensions": 64})  # floats: 16 a number
    assert r.json()["error"]["message"].startswith("the answer would hold 2,048 characters of vectors (2 vectors "
                                                   "of 1,024), over the limit of 1,000")
    assert r.json()["error"]["message"].endswith("or use encoding_format base64 (a third the size)")
    ok = client.post("/v1/embeddings", json={"input": TEXTS[0], "encoding_format": "base64"})
    assert ok.status_code == 200


# ---------------------------------------------------------------- 9: /health without paths
def test_health_names_the_models_without_their_local_paths(serve_model_dir, serve_encoder):
    path = str(serve_model_dir)
    app = create_app(models=[path, "tiny=" + path], encoders={path: serve_encoder, "tiny": serve_encoder}, threads=1)
    with local_client(app) as client:
        body = client.get("/health").json()
    assert body == {"status": "ok", "models": [serve_model_dir.name, "tiny"]}


# ---------------------------------------------------------------- 3: serve INDEX --model keeps the index's model
def serve_config(*argv):
    from textcl.cli import build_parser
    from textcl.commands.serve import config_from_args

    return config_from_args(build_parser().parse_args(["serve", *argv, "--threads", "1"]))


def test_serving_an_index_with_another_model_searches_with_the_indexs_own(index_dir, wide_model_dir):
    app = create_app(serve_config(str(index_dir), "--model", f"wide={wide_model_dir}"))
    with local_client(app) as client:
        hits = client.get("/search", params={"q": DOCS[2][2], "k": 1}).json()["results"][0]["hits"]
        assert hits[0]["id"] == DOCS[2][0] and app.state.service.encoder.dim == 32
        assert vectors(client.post("/v1/embeddings", json={"input": TEXTS, "model": "wide"})).shape == (3, WIDTH)


def test_serving_an_index_with_its_own_model_shares_the_encoder(index_dir, serve_model_dir):
    app = create_app(serve_config(str(index_dir), "--model", f"tiny={serve_model_dir}"))
    with local_client(app):
        embedder = app.state.embedders.get("tiny")
        assert embedder.encoder is app.state.service.encoder and embedder.lock is app.state.service.encode_lock


# ---------------------------------------------------------------- review 2: --index-model for a moved model
@pytest.fixture()
def moved_model_index(tmp_path, serve_model_dir, serve_encoder):
    """(index folder, where its model folder is now): built with a copy of the model that then moved."""
    import shutil

    from test_serve_support import build_index

    model = shutil.copytree(serve_model_dir, tmp_path / "model")
    index = build_index(tmp_path / "ix", model, encoder=serve_encoder)
    return index, shutil.move(str(model), str(tmp_path / "elsewhere"))


def test_an_index_whose_model_moved_is_served_with_index_model(moved_model_index):
    from textcl.errors import ModelNotFoundError

    index, moved = moved_model_index
    with pytest.raises(ModelNotFoundError) as err:
        create_app(serve_config(str(index)))
    assert str(err.value).endswith("Pass the model it was built with as --index-model (a model folder or hub name)")
    app = create_app(serve_config(str(index), "--index-model", moved))
    with local_client(app) as client:
        hits = client.get("/search", params={"q": DOCS[2][2], "k": 1}).json()["results"][0]["hits"]
    assert hits[0]["id"] == DOCS[2][0]


def test_index_model_with_other_weights_is_refused(moved_model_index, wide_model_dir):
    index, _ = moved_model_index
    with pytest.raises(ConfigError) as err:
        create_app(serve_config(str(index), "--index-model", str(wide_model_dir)))
    assert str(err.value) == (f"--index-model: {wide_model_dir} is not the model {index} was built with (its weights "
                              "differ from the model_fingerprint in its manifest.json); expected that model's folder")


def test_index_model_without_an_index_is_refused(wide_model_dir):
    with pytest.raises(ConfigError) as err:
        serve_config("--model", str(wide_model_dir), "--index-model", str(wide_model_dir))
    assert str(err.value) == "--index-model: searches an index: give the index folder (INDEX_DIR)"


# ---------------------------------------------------------------- review 10: /info without local paths
def test_info_names_the_indexs_model_without_its_local_path(index_dir, serve_model_dir, serve_encoder):
    app = create_app(index_dir, encoder=serve_encoder, api_key="k" * 32, threads=1)
    with local_client(app) as client:
        response = client.get("/info")
    assert str(serve_model_dir) not in response.text and response.json()["model"] == serve_model_dir.name


# ---------------------------------------------------------------- review 9: the card's max_inputs fits the answer
def test_the_cards_max_inputs_fit_max_response_chars_as_floats(embed_client):
    client = embed_client(max_response_chars=100_000)  # a float vector of 128: 16 * 128 = 2,048 characters
    card = client.get("/v1/models").json()["data"][0]
    assert card["max_inputs"] == 48  # 100,000 // 2,048
    assert client.get("/v1/models/wide").json()["max_inputs"] == 48
    r = client.post("/v1/embeddings", json={"input": [f"text {i}" for i in range(48)], "encoding_format": "float"})
    assert r.status_code == 200, r.text
