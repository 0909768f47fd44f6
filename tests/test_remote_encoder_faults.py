"""``RemoteEncoder`` against broken or hostile servers: a dropped connection is no 413, malformed HTTP, JSON
nested too deep, answers too large, a bad redirect port, a model list that is no list, what a 413 teaches it,
the server's own 413 message, and an API key that cannot be a header."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from textcl.encode.remote import RemoteEncoder, RemoteEncoderError

MODELS = {"object": "list", "data": [{"id": "m", "object": "model"}]}


def answer(payload, status: str = "200 OK", extra: str = "") -> bytes:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n{extra}"
            "Connection: close\r\n\r\n").encode() + raw


def vectors(n: int) -> dict:
    return {"object": "list", "data": [{"index": i, "embedding": [1.0, 0.0]} for i in range(n)], "model": "m"}


def _read_request(conn) -> tuple[list[str], bytes] | None:
    """The head's lines and the body of one request on ``conn``; None when the client closed it early."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(65536)
        if not chunk:  # closed mid-head: nothing to answer
            return None
        head += chunk
    head, body = head.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return lines, body


def accept_each(sock, handle) -> None:
    """``handle(conn)`` for each connection accepted on ``sock``, until the socket is closed."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            handle(conn)


@pytest.fixture()
def raw_server():
    """``raw_server(reply)``: a TCP server on 127.0.0.1; ``reply(method, path, body) -> bytes | None`` (None:
    close without answering) is called for each request read; yields its URL; ``requests`` lists them and
    ``headers`` their headers (lower-case names). A connection that fails (reset, closed early) is dropped, so
    no test waits on a server stuck in one."""
    socks, requests, headers = [], [], []

    def make(reply):
        sock = socket.create_server(("127.0.0.1", 0))
        socks.append(sock)

        def handle(conn):
            try:
                conn.settimeout(30)
                read = _read_request(conn)
                if read is None:
                    return
                lines, body = read
                method, path, _ = lines[0].split(" ")
                headers.append({k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])})
                requests.append((method, path, json.loads(body) if body else None))
                out = reply(method, path, json.loads(body) if body else None)
                if out is not None:
                    conn.sendall(out)
            except Exception:  # noqa: BLE001 (a reply that fails, a reset: that connection only)
                return

        threading.Thread(target=accept_each, args=(sock, handle), daemon=True).start()
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    make.requests = requests
    make.headers = headers
    yield make
    for sock in socks:
        sock.close()


# ---------------------------------------------------------------- 4: a dropped connection is not a 413
def test_a_server_that_closes_the_connection_is_retried_then_named_not_taken_for_a_413(raw_server, monkeypatch):
    monkeypatch.setattr("textcl.encode.remote_http.time.sleep", lambda seconds: None)
    url = raw_server(lambda method, path, body: None)
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(url, "m", retries=1).encode(["a", "b"])
    assert str(err.value) == (f"POST {url}/v1/embeddings: the server closed the connection without an answer to "
                              "input 0 alone (2 tries; 1 characters): the text may crash it; remove or shorten it")
    posts = [len(body["input"]) for method, _, body in raw_server.requests if method == "POST"]
    assert posts == [2, 2, 1, 1]  # asked again, then halved to find the input (not taken for a 413)


# ---------------------------------------------------------------- 5: malformed HTTP, JSON, sizes, ports, lists
@pytest.mark.parametrize("raw, message", [
    (b"garbage\r\n\r\n", "not an HTTP answer (BadStatusLine)"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"data\"", "not an HTTP answer (IncompleteRead)"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n", "not an HTTP answer (LineTooLong)"),
    (answer(b"[" * 100000), "the answer is not JSON"),
])
def test_a_malformed_http_answer_is_an_error_naming_the_url(raw_server, raw, message):
    url = raw_server(lambda method, path, body: raw)
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(url, "m", retries=0).encode(["a"])
    assert str(err.value) == f"POST {url}/v1/embeddings: {message}"


def test_an_answer_larger_than_the_request_needs_is_refused(raw_server):
    url = raw_server(lambda method, path, body: answer({"data": [], "pad": "x" * (2 << 20)}))
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(url, "m", retries=0).encode(["a"])
    assert str(err.value) == (f"POST {url}/v1/embeddings: the answer is over 1,310,720 bytes, more than 1 "
                              "embedding(s) need; refused")


def test_a_redirect_to_an_invalid_port_is_another_origin(raw_server):
    url = raw_server(lambda method, path, body: answer({}, "302 Found", "Location: http://127.0.0.1:99999/v1\r\n"))
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(url, "m", retries=0).encode(["a"])
    assert str(err.value).startswith(f"POST {url}/v1/embeddings: redirected to http://127.0.0.1:99999/v1, another "
                                     "origin: not followed")


def test_a_model_list_that_is_no_list_is_an_error_or_no_limit(raw_server):
    url = raw_server(lambda method, path, body: answer({"data": None}) if path.endswith("/models")
                     else answer(vectors(len(body["input"]))))
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(url)
    assert str(err.value) == f"GET {url}/v1/models: data: expected a list of models, got None"
    assert RemoteEncoder(url, "m").encode(["a", "b"]).tolist() == [[1.0, 0.0], [1.0, 0.0]]  # no max_inputs


# ---------------------------------------------------------------- 8: a 413 teaches the client a request size
def test_a_413_shrinks_later_requests_of_every_call(raw_server):
    too_large = answer({"error": {"message": "too many", "code": "too_large"}}, "413 Payload Too Large")
    url = raw_server(lambda method, path, body: answer(MODELS) if method == "GET" else
                     too_large if len(body["input"]) > 2 else answer(vectors(len(body["input"]))))
    encoder = RemoteEncoder(url, "m")
    texts = [f"t{i}" for i in range(8)]
    assert encoder.encode(texts, batch_size=8).shape == (8, 2)
    assert encoder.encode(texts, batch_size=8).shape == (8, 2)
    sizes = [len(body["input"]) for method, _, body in raw_server.requests if method == "POST"]
    assert sizes == [8, 4, 2, 2, 2, 2] + [2, 2, 2, 2]


# ---------------------------------------------------------------- 13: the server's own 413 message
def test_a_response_too_large_413_for_one_text_gives_the_servers_advice(raw_server):
    message = "the answer would hold 2,052 characters of vectors: ask for fewer dimensions"
    url = raw_server(lambda method, path, body: answer({"error": {"message": message, "code": "response_too_large"}},
                                                       "413 Payload Too Large"))
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(url, "m").encode(["a"])
    assert str(err.value) == f"POST {url}/v1/embeddings: HTTP 413: {message}"


# ---------------------------------------------------------------- 15: an API key that cannot be a header
def test_an_api_key_with_a_newline_is_refused_without_showing_it():
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder("http://127.0.0.1:9", "m", api_key="secret\nX-Evil: 1")
    assert str(err.value) == ("api_key ($TEXTCL_API_KEY): holds a control character or one outside Latin-1; "
                              "expected a token on one line")


# ---------------------------------------------------------------- 16: redirects on the same host
def test_a_same_origin_redirect_is_followed_with_the_key(raw_server):
    url = raw_server(lambda method, path, body: answer({}, "302 Found", "Location: /v1/models\r\n")
                     if path.startswith("/old") else answer(MODELS))
    assert RemoteEncoder(url + "/old", api_key="k").model == "m"
    assert [path for _, path, _ in raw_server.requests] == ["/old/v1/models", "/v1/models"]
    assert [h.get("authorization") for h in raw_server.headers] == ["Bearer k", "Bearer k"]  # the target got it


def test_a_client_that_closes_mid_head_does_not_stall_the_test_server(raw_server):
    url = raw_server(lambda method, path, body: answer(MODELS))
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as half:
        half.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x")  # and closes: recv returns b""
    assert RemoteEncoder(url, timeout=5).model == "m"


def test_a_redirect_from_http_to_https_on_the_same_host_is_refused(raw_server):
    to = {}  # the same host and port, over https
    url = raw_server(lambda method, path, body: answer({}, "302 Found", f"Location: {to['https']}/v1/models\r\n"))
    https = to["https"] = url.replace("http://", "https://")
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(url, api_key="k")
    assert str(err.value).startswith(f"GET {url}/v1/models: redirected to {https}/v1/models, another origin")
