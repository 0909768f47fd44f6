"""The embeddings API as applications use it: the official ``openai`` client and LangChain's
``OpenAIEmbeddings`` against uvicorn on 127.0.0.1, ``textcl encode`` and ``textcl index build`` taking their
vectors from it (``--server``), and ``textcl serve --model`` as a command."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

from test_serve_embeddings_support import PROMPTS, WIDTH, wide_encoder, wide_model_dir  # noqa: F401
from test_serve_support import (DOCS, ROOT, free_port, live_server, process_output, serve_encoder,  # noqa: F401
                                serve_model_dir, wait_until_healthy)
from textcl.cli import main
from textcl.serve import create_app

KEY = "test-key-" + "x" * 16
TEXTS = [d[2] for d in DOCS]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def server(wide_encoder, serve_encoder, serve_model_dir):
    """One live server with a key, serving the wide model as ``wide`` and the tiny one by its path."""
    app = create_app(models=["wide=unused", str(serve_model_dir)], api_key=KEY, max_wait_ms=20,
                     encoders={"wide": wide_encoder, str(serve_model_dir): serve_encoder})
    with live_server(app) as url:
        yield app, url


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server[1] + "/v1", api_key=KEY, max_retries=0, timeout=30)


def test_the_openai_client_gets_the_encoders_vectors_in_order(client, wide_encoder):
    expected = wide_encoder.encode(TEXTS)
    answer = client.embeddings.create(input=TEXTS, model="wide", encoding_format="float")
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)
    assert [d.index for d in answer.data] == list(range(len(TEXTS))) and answer.model == "wide"
    assert cosines(got, expected).min() >= 0.99999
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > len(TEXTS) * 10
    # without encoding_format the client asks for base64 and decodes it itself
    default = np.array([d.embedding for d in client.embeddings.create(input=TEXTS, model="wide").data], np.float32)
    assert np.array_equal(default, got)


def test_base64_through_the_client_decodes_to_the_same_floats(client):
    floats = client.embeddings.create(input=TEXTS[:3], model="wide", encoding_format="float").data
    encoded = client.embeddings.create(input=TEXTS[:3], model="wide", encoding_format="base64").data
    for f, e in zip(floats, encoded):
        assert np.array_equal(np.frombuffer(base64.b64decode(e.embedding), dtype="<f4"), np.float32(f.embedding))


def test_dimensions_64_gives_unit_vectors_of_64(client, wide_encoder):
    answer = client.embeddings.create(input=TEXTS, model="wide", dimensions=64)
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)
    assert got.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cosines(got, wide_encoder.encode(TEXTS, dim=64)).min() >= 0.99999


def test_the_input_type_extension_goes_through_extra_body(client, wide_encoder):
    answer = client.embeddings.create(input=TEXTS[:2], model="wide", extra_body={"input_type": "query"})
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)
    assert cosines(got, wide_encoder.encode([PROMPTS["query"] + t for t in TEXTS[:2]])).min() >= 0.99999


def test_the_client_lists_the_models_and_chooses_one_by_name(client, serve_model_dir, serve_encoder):
    assert [m.id for m in client.models.list().data] == ["wide", str(serve_model_dir)]
    answer = client.embeddings.create(input=TEXTS[:2], model=str(serve_model_dir))
    assert cosines(np.float32([d.embedding for d in answer.data]), serve_encoder.encode(TEXTS[:2])).min() >= 0.99999


def test_the_clients_exceptions_carry_the_servers_messages(client, server):
    with pytest.raises(openai.BadRequestError, match="token-id arrays are not supported") as err:
        client.embeddings.create(input=[[101, 2023, 102]], model="wide")
    assert err.value.status_code == 400 and err.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError, match="dimensions: 256 is above the width of model 'wide'"):
        client.embeddings.create(input="x", model="wide", dimensions=256)
    with pytest.raises(openai.NotFoundError, match="'text-embedding-3-small' is not served here") as err:
        client.embeddings.create(input="x", model="text-embedding-3-small")
    assert err.value.code == "model_not_found"
    stranger = openai.OpenAI(base_url=server[1] + "/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="the key sent does not match"):
        stranger.embeddings.create(input="x", model="wide")


def test_concurrent_clients_share_batches_and_each_gets_its_own_vectors(server, wide_encoder):
    app, url = server
    batcher = app.state.embedders.get("wide").batcher
    before = (batcher.batches, batcher.queries)
    requests = [(TEXTS[i % 12 : i % 12 + 2], [None, 64, 8][i % 3], ["query", None][i % 2]) for i in range(24)]

    def ask(request):
        texts, dim, input_type = request
        body = {"input": texts, "model": "wide", **({"dimensions": dim} if dim else {}),
                **({"input_type": input_type} if input_type else {})}
        r = httpx.post(f"{url}/v1/embeddings", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert r.status_code == 200, r.text
        return np.float32([d["embedding"] for d in r.json()["data"]])

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, requests))
    for (texts, dim, input_type), got in zip(requests, answers):
        np.testing.assert_allclose(got, wide_encoder.encode(texts, dim=dim, prompt_name=input_type), atol=1e-5)
    batches, queries = batcher.batches - before[0], batcher.queries - before[1]
    assert queries == sum(len(r[0]) for r in requests) and batches < len(requests)


@pytest.mark.minilm
def test_langchain_finds_the_right_document_through_the_server(minilm_path):
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_openai import OpenAIEmbeddings

    app = create_app(models=[f"minilm={minilm_path}"])
    with live_server(app) as url:
        # check_embedding_ctx_length=False sends the texts themselves (else LangChain sends tiktoken ids)
        embeddings = OpenAIEmbeddings(model="minilm", base_url=url + "/v1", api_key="unused",
                                      check_embedding_ctx_length=False, max_retries=0)
        store = InMemoryVectorStore.from_texts(TEXTS, embeddings, metadatas=[{"id": d[0]} for d in DOCS])
        for query, expected in [("Which Renaissance artist painted a famous portrait of a woman?", "mona-lisa"),
                                ("What is the tallest peak on Earth?", "everest"),
                                ("How do plants turn sunlight into food?", "photosynthesis"),
                                ("a double helix molecule that stores genetic information", "dna")]:
            assert store.similarity_search(query, k=1)[0].metadata["id"] == expected, query
        from textcl.models import Encoder
        from textcl.models.encode_precision import bf16_copy

        import httpx

        # the server says what it encodes in (--precision auto: bf16 where it measures faster here)
        precision = httpx.get(url + "/v1/models/minilm").json()["precision"]
        local = Encoder.load(str(minilm_path))
        local = (bf16_copy(local) if precision == "bf16" else local).encode(TEXTS[:3])
        assert cosines(np.float32(embeddings.embed_documents(TEXTS[:3])), local).min() >= 0.99999


# ---------------------------------------------------------------- batch jobs: --server
def test_textcl_encode_takes_its_vectors_from_a_server(server, tmp_path, wide_encoder, capsys, monkeypatch):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    monkeypatch.setenv("TEXTCL_API_KEY", KEY)
    out = tmp_path / "v.npy"
    assert main(["encode", "--server", server[1], "--model", "wide", "--input", str(texts), "--out", str(out),
                 "--batch-size", "5"]) == 0
    got = np.load(out)
    assert got.shape == (len(TEXTS), WIDTH) and cosines(got, wide_encoder.encode(TEXTS)).min() >= 0.99999
    assert f"wrote {out}: 12 x 128 float32" in capsys.readouterr().out


def test_textcl_index_build_takes_its_vectors_from_a_server(server, tmp_path, serve_model_dir, monkeypatch):
    from textcl.index import SearchIndex

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": d[0], "text": d[2]}) + "\n" for d in DOCS), encoding="utf-8")
    monkeypatch.setenv("TEXTCL_API_KEY", KEY)
    out = tmp_path / "ix"
    assert main(["index", "build", "--server", server[1], "--model", str(serve_model_dir), "--input", str(docs),
                 "--out", str(out)]) == 0
    assert SearchIndex.read_manifest(out)["model"] == str(serve_model_dir.resolve())
    from textcl.models import Encoder

    index = SearchIndex.load(out, encoder=Encoder.load(str(serve_model_dir)))  # searched with the local model
    assert [hits[0].id for hits in index.search([d[2] for d in DOCS[:4]], k=1)] == [d[0] for d in DOCS[:4]]
    index.close()


@pytest.mark.parametrize("argv, message", [
    (["--model", "nope", "--bf16"], "--bf16: applies to a local model; with --server the vectors are as the server's"),
    (["--model", "nope", "--no-normalize"], "--no-normalize: applies to a local model"),
    (["--model", "nope"], "HTTP 404: model: 'nope' is not served here; this server serves 'wide'"),
    ([], "serves 2 models (wide, "),
])
def test_encode_with_a_server_refuses_with_the_servers_message(server, tmp_path, capsys, monkeypatch, argv, message):
    texts = tmp_path / "t.txt"
    texts.write_text("a text\n", encoding="utf-8")
    monkeypatch.setenv("TEXTCL_API_KEY", KEY)
    assert main(["encode", "--server", server[1], *argv, "--input", str(texts), "--out", str(tmp_path / "v.npy")]) == 2
    assert message in capsys.readouterr().err


def test_encode_names_an_unreachable_server_and_a_missing_key(server, tmp_path, capsys, monkeypatch):
    texts = tmp_path / "t.txt"
    texts.write_text("a text\n", encoding="utf-8")
    out = str(tmp_path / "v.npy")
    monkeypatch.delenv("TEXTCL_API_KEY", raising=False)
    assert main(["encode", "--server", f"http://127.0.0.1:{free_port()}", "--model", "wide", "--input", str(texts),
                 "--out", out]) == 2
    assert "cannot reach the server" in capsys.readouterr().err
    assert main(["encode", "--server", server[1], "--model", "wide", "--input", str(texts), "--out", out]) == 2
    assert "HTTP 401: this endpoint needs the header `Authorization: Bearer <API key>`" in capsys.readouterr().err
    assert main(["encode", "--input", str(texts), "--out", out]) == 2
    assert "--model: required: a local folder or hub name (or --server URL)" in capsys.readouterr().err


# ---------------------------------------------------------------- the command
def test_textcl_serve_model_serves_several_models_without_an_index(wide_model_dir, serve_model_dir, wide_encoder):
    port = free_port()
    cmd = [sys.executable, "-m", "textcl.cli", "serve", "--model", f"wide={wide_model_dir}", "--model",
           str(serve_model_dir), "--port", str(port), "--threads", "1", "--log-level", "warning"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        proc.stdout = log
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(url, timeout=90, proc=proc)
            models = httpx.get(f"{url}/v1/models").json()["data"]
            assert [(m["id"], m["dimensions"]) for m in models] == [("wide", WIDTH), (str(serve_model_dir), 32)]
            r = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS[:2], "model": "wide"})
            got = np.float32([d["embedding"] for d in r.json()["data"]])
            assert cosines(got, wide_encoder.encode(TEXTS[:2])).min() >= 0.99999
        finally:
            proc.kill()
            proc.wait(30)
        assert proc.returncode is not None, process_output(proc)


def test_the_command_refuses_to_serve_nothing(capsys):
    assert main(["serve"]) == 2
    assert "INDEX_DIR: nothing to serve: give an index folder, one or more --model" in capsys.readouterr().err
