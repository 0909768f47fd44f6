"""Shared fixtures and helpers of the ``textcl serve`` tests (this module holds no tests itself).

The index is real (FAISS Flat + SQLite doc store) over a dozen short documents, encoded with the tiny
random BERT from conftest.py: its rankings are arbitrary, except that a document's exact text is its own
nearest neighbour (cosine 1), which is what the tests search for.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from textcl.index import SearchIndex

ROOT = Path(__file__).resolve().parents[1]

DOCS = [
    ("mona-lisa", "Mona Lisa", "The Mona Lisa is a half-length portrait painting by Leonardo da Vinci, "
     "considered an archetypal masterpiece of the Italian Renaissance.", {"topic": "art", "year": 1503}),
    ("moonlight", "Moonlight Sonata", "The Piano Sonata No. 14 in C-sharp minor, known as the Moonlight Sonata, "
     "is a piano sonata by Ludwig van Beethoven.", {"topic": "music", "year": 1801}),
    ("eiffel", "Eiffel Tower", "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
     "France, named after the engineer Gustave Eiffel.", {"topic": "architecture", "year": 1889}),
    ("everest", "Mount Everest", "Mount Everest is the highest mountain above sea level, in the Mahalangur "
     "Himal sub-range of the Himalayas.", {"topic": "geography"}),
    ("python", "Python (programming language)", "Python is a high-level, general-purpose programming language "
     "whose design emphasizes code readability.", {"topic": "computing", "year": 1991}),
    ("photosynthesis", "Photosynthesis", "Photosynthesis is the process by which plants convert light energy "
     "into chemical energy that fuels their activities.", {"topic": "biology"}),
    ("starry-night", "The Starry Night", "The Starry Night is an oil-on-canvas painting by the Dutch "
     "Post-Impressionist painter Vincent van Gogh.", {"topic": "art", "year": 1889}),
    ("four-seasons", "The Four Seasons", "The Four Seasons is a group of four violin concerti by Antonio "
     "Vivaldi, each of which gives musical expression to a season of the year.", {"topic": "music", "year": 1725}),
    ("great-wall", "Great Wall of China", "The Great Wall of China is a series of fortifications built across "
     "the historical northern borders of ancient Chinese states.", {"topic": "architecture"}),
    ("amazon", "Amazon River", "The Amazon River in South America is the largest river by discharge volume of "
     "water in the world.", {"topic": "geography", "featured": True}),
    ("dna", "DNA", "Deoxyribonucleic acid is a polymer composed of two polynucleotide chains that coil around "
     "each other to form a double helix.", {"topic": "biology", "featured": False}),
    ("linux", "Linux", "Linux is a family of open-source Unix-like operating systems based on the Linux kernel, "
     "first released by Linus Torvalds.", {"topic": "computing", "year": 1991}),
]


def build_index(path: Path, model_dir: Path, docs=DOCS, factory: str = "Flat", encoder=None) -> Path:
    """Build and save an index of ``docs`` (id, title, text, metadata) whose manifest names ``model_dir``."""
    from textcl.models import Encoder

    encoder = encoder or Encoder.load(str(model_dir))
    index = SearchIndex.build([d[2] for d in docs], ids=[d[0] for d in docs],
                              metadata=[{"title": d[1], **d[3]} for d in docs], encoder=encoder,
                              factory=factory, model_name=str(model_dir))
    index.save(path)
    index.close()
    return path


@pytest.fixture(scope="session")
def serve_model_dir(tiny_bert_dir) -> Path:
    """conftest's tiny random BERT (its tokenizer knows MiniLM's 30,522 WordPiece tokens)."""
    return tiny_bert_dir


@pytest.fixture(scope="session")
def serve_encoder(serve_model_dir):
    from textcl.models import Encoder

    return Encoder.load(str(serve_model_dir))


@pytest.fixture()
def index_dir(tmp_path, serve_model_dir, serve_encoder) -> Path:
    return build_index(tmp_path / "ix", serve_model_dir, encoder=serve_encoder)


# The server answers only to its own and loopback host names (a DNS rebinding guard); TestClient's default,
# http://testserver, is neither.
LOCAL = "http://localhost"


def local_client(app, **kwargs):
    """A TestClient that talks to ``app`` as a local browser or script would (``Host: localhost``)."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url=LOCAL, **kwargs)


@pytest.fixture()
def make_client(index_dir, serve_encoder):
    """``make_client(**options)``: a TestClient (lifespan entered) over a fresh copy of the test index."""
    from textcl.serve import create_app

    clients = []

    def make(**options):
        client = local_client(create_app(index_dir, encoder=serve_encoder, **options), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}:\n{process_output(proc)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} did not become healthy within {timeout} s")


def process_output(proc: subprocess.Popen) -> str:
    """What a :func:`server_process` printed so far."""
    proc.stdout.flush()
    proc.stdout.seek(0)
    return proc.stdout.read().decode("utf-8", "replace")


@contextlib.contextmanager
def live_server(app, port: int | None = None):
    """Run ``app`` under uvicorn on 127.0.0.1 in a thread; yield its base URL; stop it (bounded)."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, timeout=30)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "uvicorn did not stop within 30 s"


@contextlib.contextmanager
def server_process(index_dir: Path, *args: str, port: int | None = None, env: dict | None = None):
    """``textcl serve`` as a subprocess in a session of its own; yields (proc, url). On exit the whole session is
    killed (SIGKILL), so ``--workers`` children do not outlive the test."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "textcl.cli", "serve", str(index_dir), "--port", str(port), "--log-level",
           "warning", *args]
    out = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would stall the server
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})},
                            start_new_session=True)
    proc.stdout = out
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, timeout=90, proc=proc)
        yield proc, url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the server and any workers it started
        except ProcessLookupError:
            pass
        proc.wait(30)
        out.close()
