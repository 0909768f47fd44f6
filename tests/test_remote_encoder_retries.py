"""What ``RemoteEncoder`` asks again: a server that restarts (refused, 502, 504) once it has answered; an input
that drops the connection twice is found by halving and named; a size a 413 taught grows back; the server's
error message is shown clean and short; a negative retry count is refused."""
from __future__ import annotations

import socket
import threading

import pytest

from test_remote_encoder_faults import MODELS, _read_request, accept_each, answer, raw_server, vectors  # noqa: F401
from textcl.encode.remote import RemoteEncoder, RemoteEncoderError
from textcl.errors import ConfigError


class Restartable:
    """An embeddings server on one port that can stop (connections refused) and start again."""

    def __init__(self):
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, args=(self.sock,), daemon=True).start()

    def stop(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self.sock.close()

    @staticmethod
    def _serve(sock) -> None:
        import json

        def handle(conn):
            read = _read_request(conn)
            if read is not None:  # GET /models has no body
                body = json.loads(read[1]) if read[1] else None
                conn.sendall(answer(vectors(len(body["input"])) if body else {"data": [{"id": "m"}]}))

        accept_each(sock, handle)


def posts(reply):
    """``reply`` for POST /embeddings; GET /models lists the model ``m``."""
    return lambda method, path, body: answer(MODELS) if method == "GET" else reply(method, path, body)


@pytest.fixture()
def pauses(monkeypatch):
    """The pauses between tries, in seconds (none is waited for)."""
    out = []
    monkeypatch.setattr("textcl.encode.remote_http.time.sleep", out.append)
    return out


# ---------------------------------------------------------------- 5: a restart is waited for
def test_a_server_restart_is_waited_for_once_it_has_answered(monkeypatch):
    server = Restartable()
    encoder = RemoteEncoder(server.url, "m", retries=5)
    assert encoder.encode(["a"]).shape == (1, 2)
    server.stop()
    pauses = []

    def pause(seconds):
        pauses.append(seconds)
        if len(pauses) == 2:
            server.start()

    monkeypatch.setattr("textcl.encode.remote_http.time.sleep", pause)
    assert encoder.encode(["b"]).shape == (1, 2)
    assert pauses == [0.5, 1.0]
    server.stop()


def test_a_server_never_reached_is_not_waited_for(pauses):
    server = Restartable()
    server.stop()
    with pytest.raises(RemoteEncoderError, match=r"^http://127\.0\.0\.1:\d+/v1/embeddings: cannot reach the server"):
        RemoteEncoder(server.url, "m", retries=5).encode(["a"])
    assert pauses == []


def test_502_and_504_are_asked_again_once_the_server_has_answered(raw_server, pauses):
    statuses = iter(["200 OK", "502 Bad Gateway", "504 Gateway Timeout", "200 OK"])
    url = raw_server(posts(lambda method, path, body: answer(vectors(len(body["input"])), next(statuses))))
    encoder = RemoteEncoder(url, "m", retries=5)
    assert encoder.encode(["a"]).shape == encoder.encode(["b"]).shape == (1, 2)
    assert pauses == [0.5, 1.0]


def test_a_502_before_any_answer_is_an_error(raw_server, pauses):
    url = raw_server(lambda method, path, body: answer({"message": "no upstream"}, "502 Bad Gateway"))
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(url, "m", retries=5).encode(["a"])
    assert str(err.value) == f"POST {url}/v1/embeddings: HTTP 502: no upstream" and pauses == []


# ---------------------------------------------------------------- 6: a poison input is named, not retried 21 times
def test_an_input_that_drops_the_connection_is_found_by_halving_and_named(raw_server, pauses):
    url = raw_server(posts(lambda method, path, body: None if "poison" in body["input"]
                     else answer(vectors(len(body["input"])))))
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(url, "m", retries=20).encode(["a", "b", "poison", "c"])
    assert str(err.value) == (f"POST {url}/v1/embeddings: the server closed the connection without an answer to "
                              "input 2 alone (3 tries; 6 characters): the text may crash it; remove or shorten it")
    assert [len(body["input"]) for m, _, body in raw_server.requests if m == "POST"] == [4, 4, 4, 2, 2, 2, 2, 1, 1, 1]


# ---------------------------------------------------------------- 9: a learned size grows back
def test_a_learned_request_size_doubles_after_16_passes_up_to_batch_size(raw_server):
    busy = [True]
    too_large = answer({"error": {"message": "too many"}}, "413 Payload Too Large")
    url = raw_server(posts(lambda method, path, body: too_large if busy[0] and len(body["input"]) > 2
                     else answer(vectors(len(body["input"])))))
    encoder = RemoteEncoder(url, "m", batch_size=8, concurrency=1)
    encoder.encode([f"t{i}" for i in range(8)])  # 8, 4, 2, 2, 2, 2: four passes at 2
    busy[0] = False
    encoder.encode([f"t{i}" for i in range(24)])  # twelve more: 16 at 2, the size doubles
    for _ in range(3):
        encoder.encode([f"t{i}" for i in range(32)])  # 8 at 4, 16 at 4 (doubled to 8), then 8s
    sizes = [len(body["input"]) for method, _, body in raw_server.requests if method == "POST"]
    assert sizes[6:18] == [2] * 12 and sizes[18:] == [4] * 16 + [8] * 4


# ---------------------------------------------------------------- 12: the server's message, clean and short
def test_the_servers_error_message_is_shown_without_control_characters_and_capped(raw_server):
    message = "bad\x1b[2J input\r\n" + "x" * 1000
    url = raw_server(posts(lambda method, path, body: answer({"error": {"message": message}}, "400 Bad Request")))
    with pytest.raises(RemoteEncoderError) as err:
        RemoteEncoder(url, "m").encode(["a"])
    shown = ("bad[2J input" + "x" * 1000)[:300] + "..."
    assert str(err.value) == f"POST {url}/v1/embeddings: HTTP 400: {shown}"


# ---------------------------------------------------------------- 13: retries >= 0
def test_a_negative_retry_count_is_refused():
    with pytest.raises(ConfigError) as err:
        RemoteEncoder("http://127.0.0.1:9", "m", retries=-1)
    assert str(err.value) == "retries: expected 0 or more, got -1"
