"""``RemoteEncoder`` against a live textcl server and a scripted fake one: prompts, redirects and the key,
answers validated, timeouts, the server's limits (inputs, 413), and ``index build --server`` recorded as such."""
from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from test_serve_embeddings_support import WIDTH, wide_encoder, wide_model_dir  # noqa: F401
from test_serve_support import DOCS, live_server
from textcl.encode.remote import RemoteEncoder, RemoteEncoderError
from textcl.serve import create_app

TEXTS = [d[2] for d in DOCS]
KEY = "remote-key-" + "x" * 16


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up before the answer is written (a refused model, a timeout) is not an error of
    the fake server: ``socketserver`` would print its traceback to stderr, where the test reads the CLI's
    message."""

    def handle_error(self, request, client_address):
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture()
def fake():
    """``fake(answer)``: a server on 127.0.0.1 whose ``answer(handler, body) -> (status, headers, json)``
    is called for each request; yields its URL; ``seen`` lists (path, Authorization header), ``bodies`` the
    requests' JSON bodies (None for none)."""
    servers, seen, bodies = [], [], []

    def make(answer):
        class Handler(BaseHTTPRequestHandler):
            def _reply(self):
                seen.append((self.path, self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                bodies.append(body)
                status, headers, payload = answer(self, body)
                raw = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(raw))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _reply

            def log_message(self, *args):
                pass

        server = _QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    make.seen, make.bodies = seen, bodies
    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def _b64(values):
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def embeddings(data):
    return lambda handler, body: (200, {}, {"object": "list", "data": data, "model": "m"})


@pytest.fixture(scope="module")
def wide_url(wide_encoder):
    app = create_app(models=["wide=unused"], encoders={"wide": wide_encoder}, max_inputs=4, max_body_bytes=3000)
    with live_server(app) as url:
        yield url


# ---------------------------------------------------------------- prompts
def test_prompt_name_is_sent_as_input_type(wide_url, wide_encoder):
    got = RemoteEncoder(wide_url, "wide").encode(TEXTS[:2], prompt_name="query")
    np.testing.assert_allclose(got, wide_encoder.encode(TEXTS[:2], prompt_name="query"), atol=1e-6)


# ---------------------------------------------------------------- the server's limits
def test_requests_stay_within_the_servers_max_inputs(wide_url, wide_encoder):
    got = RemoteEncoder(wide_url, "wide", batch_size=64).encode(TEXTS)  # the server takes 4 inputs a request
    np.testing.assert_allclose(got, wide_encoder.encode(TEXTS), atol=1e-6)


def test_a_request_too_large_for_the_server_is_split_in_halves(wide_url, wide_encoder):
    texts = [f"{t} " * 6 for t in TEXTS[:4]]  # ~1,500 bytes each: 4 make a body over the 3,000-byte limit
    got = RemoteEncoder(wide_url, "wide").encode(texts)
    np.testing.assert_allclose(got, wide_encoder.encode(texts), atol=1e-6)
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(wide_url, "wide").encode(["word " * 700])
    assert str(err.value).startswith(f"POST {wide_url}/v1/embeddings: HTTP 413: one text of 3,5")
    assert "is larger than the server accepts in a request; shorten it" in str(err.value)


def test_an_empty_list_gives_no_vectors_without_an_empty_request(fake):
    url = fake(embeddings([{"object": "embedding", "index": 0, "embedding": [0.5, 0.5]}]))
    assert RemoteEncoder(url, "m").encode([], dim=2).shape == (0, 2)
    assert RemoteEncoder(url, "m").encode([]).shape == (0, 2)
    assert [body["input"] for body in fake.bodies if body is not None] == [["dimension probe"]]  # the width


# ---------------------------------------------------------------- redirects and the key
def test_a_redirect_to_another_origin_is_not_followed_with_the_key(fake):
    other = fake(lambda handler, body: (200, {}, {"data": [{"id": "m"}]}))
    url = fake(lambda handler, body: (302, {"Location": other + "/v1/models"}, {}))
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(url, api_key=KEY)
    assert str(err.value) == (f"GET {url}/v1/models: redirected to {other}/v1/models, another origin: not "
                              "followed, so the API key is not sent there; give that server as --server if it is "
                              "the one to use")
    assert [auth for path, auth in fake.seen] == [f"Bearer {KEY}"]


# ---------------------------------------------------------------- answers validated
@pytest.mark.parametrize("data, message", [
    ([{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}],
     "data[].index: expected each of 0 to 1 once, got [0, 0]"),
    (["x", {"index": 1, "embedding": [1.0]}], "data[0]: expected an object with index and embedding, got str"),
    ([{"index": 0, "embedding": ["a"]}, {"index": 1, "embedding": [1.0]}],
     "data[0].embedding: expected a list of numbers or base64 float32, got ['a']"),
    ([{"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}],
     "data[].embedding: expected one width, got widths [1, 2]"),
    ([{"index": "0", "embedding": [1.0]}, {"index": 1, "embedding": [1.0]}],
     "data[0].index: expected an integer, got '0'"),
    ([{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": _b64([float("nan")])}],
     "data[1].embedding: not finite"),
    ([{"index": 0, "embedding": [float("inf"), 0.0]}, {"index": 1, "embedding": [1.0, 0.0]}],
     "data[0].embedding: not finite"),
    ([{"index": 0, "embedding": [10**400]}, {"index": 1, "embedding": [1.0]}], "data[0].embedding: not finite"),
    ([{"index": 0, "embedding": [1e39]}, {"index": 1, "embedding": [1.0]}], "data[0].embedding: not finite"),
])
def test_a_malformed_answer_is_refused_naming_the_server_and_the_field(fake, data, message):
    url = fake(embeddings(data))
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(url, "m").encode(["a", "b"])
    assert str(err.value) == f"{url}/v1/embeddings answered {message}"


def test_a_server_that_does_not_answer_in_time_is_named_with_the_timeout(fake):
    url = fake(lambda handler, body: (time.sleep(1.0), (200, {}, {}))[1])
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(url, "m", timeout=0.2, retries=0).encode(["a"])
    assert str(err.value) == f"POST {url}/v1/embeddings: no answer within 0.2 s (--server)"


# ---------------------------------------------------------------- index build --server
def test_an_index_built_through_a_server_records_the_server_and_searches_through_it(wide_url, tmp_path, capsys):
    from textcl.cli import main
    from textcl.errors import ConfigError
    from textcl.index import SearchIndex

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": d[0], "text": d[2]}) + "\n" for d in DOCS), encoding="utf-8")
    out = tmp_path / "ix"
    assert main(["index", "build", "--server", wide_url, "--model", "wide", "--input", str(docs),
                 "--out", str(out)]) == 0
    manifest = SearchIndex.read_manifest(out)
    assert manifest["model"] is None and manifest["server"] == {"server": wide_url + "/v1", "model": "wide"}
    capsys.readouterr()
    assert main(["index", "search", str(out), DOCS[3][2], "-k", "1", "--json", "--server", wide_url]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == DOCS[3][0]
    with pytest.raises(ConfigError) as err:
        create_app(out)
    assert str(err.value) == (f"--index-model: {out} holds vectors from the server {wide_url}/v1 (its model "
                              "'wide'), not from a local model: search it with `textcl index search` (through that "
                              "server); to serve it, pass the folder of the model that server serves as --index-model")


def _docs_file(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": d[0], "text": d[2]}) + "\n" for d in DOCS), encoding="utf-8")
    return docs


def test_index_build_through_a_server_without_model_records_the_servers_only_model(wide_url, tmp_path):
    from textcl.cli import main
    from textcl.index import SearchIndex

    out = tmp_path / "ix"
    assert main(["index", "build", "--server", wide_url, "--input", str(_docs_file(tmp_path)), "--out", str(out)]) == 0
    manifest = SearchIndex.read_manifest(out)
    assert manifest["model"] is None and manifest["server"] == {"server": wide_url + "/v1", "model": "wide"}


def test_an_index_built_in_python_through_a_remote_encoder_records_the_server(wide_url, tmp_path):
    from textcl.index import SearchIndex

    index = SearchIndex.build(TEXTS, encoder=RemoteEncoder(wide_url, "wide"))
    index.save(tmp_path / "ix")
    manifest = SearchIndex.read_manifest(tmp_path / "ix")
    assert manifest["model"] is None and manifest["server"] == {"server": wide_url + "/v1", "model": "wide"}


@pytest.fixture()
def other_weights_url(wide_encoder, wide_model_dir):
    """A server that serves, as ``str(wide_model_dir)``, a model with other weights of the same shape."""
    import copy

    import torch

    other = copy.deepcopy(wide_encoder)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in other.model.parameters():
            p.add_(torch.randn_like(p))
    app = create_app(models=[str(wide_model_dir)], encoders={str(wide_model_dir): other})
    with live_server(app) as url:
        yield url


def test_index_build_refuses_a_local_model_the_server_does_not_serve(other_weights_url, wide_model_dir, tmp_path,
                                                                     capsys):
    from textcl.cli import main

    assert main(["index", "build", "--server", other_weights_url, "--model", str(wide_model_dir), "--input",
                 str(_docs_file(tmp_path)), "--out", str(tmp_path / "ix")]) != 0
    message = capsys.readouterr().err.strip()
    assert not (tmp_path / "ix").exists()
    assert message.startswith(f"textcl: error: --model: the server {other_weights_url}/v1 serves "
                              f"{str(wide_model_dir)!r} with other weights than the local folder {wide_model_dir} (cosine ")
    assert message.endswith(" between their vectors of a probe text; expected 0.999 or more): searches would embed "
                            "queries with the local one; serve that folder there, or give --model as a name the server "
                            "serves that is no local folder")


@pytest.mark.parametrize("server", ["http://x", {"model": "m"}, {"server": 3}])
def test_a_manifest_whose_server_is_malformed_is_named_not_a_crash(tmp_path, capsys, server):
    from textcl.cli import main
    from textcl.index import SearchIndex

    SearchIndex.build(["a", "b"], embeddings=np.eye(2, dtype=np.float32)).save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text(encoding="utf-8"))
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps({**manifest, "server": server}), encoding="utf-8")
    for argv in (["info", str(tmp_path / "ix")], ["delete", str(tmp_path / "ix"), "0"],
                 ["search", str(tmp_path / "ix"), "a"]):
        assert main(["index", *argv]) != 0
        assert capsys.readouterr().err.strip() == (f"textcl: error: {tmp_path / 'ix' / 'manifest.json'}: server: "
                                                   f"expected {{\"server\": URL, \"model\": name}}, got {server!r}")
