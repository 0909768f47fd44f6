"""Streaming build: chunked embedding to a memmap; a killed build resumes and equals an uninterrupted one."""
from __future__ import annotations

import numpy as np
import pytest

from _index_fakes import FailingEncoder, HashEncoder
from textcl.index import DuplicateIdError, EmptyCorpusError, SearchIndex, build_streaming
from textcl.data.records import Document

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def docs(n=1000):
    rng = np.random.default_rng(0)
    return [Document(f"d{i}", " ".join(rng.choice(WORDS, 6)), {"i": i}) for i in range(n)]


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat"])
def test_resumed_build_equals_uninterrupted(tmp_path, factory):
    full = build_streaming(iter(docs()), HashEncoder(), tmp_path / "full", factory=factory, chunk_size=128,
                           show_progress=False)
    with pytest.raises(KeyboardInterrupt):
        build_streaming(iter(docs()), FailingEncoder(ok_calls=3), tmp_path / "resumed", factory=factory,
                        chunk_size=128, show_progress=False)
    assert (tmp_path / "resumed.partial" / "vectors.f32").exists() and not (tmp_path / "resumed").exists()
    encoder = HashEncoder()
    resumed = build_streaming(iter(docs()), encoder, tmp_path / "resumed", factory=factory, chunk_size=128,
                              show_progress=False)
    assert encoder.calls == 8 - 3  # ceil(1000/128) = 8 chunks; the 3 finished before the kill are kept
    assert not (tmp_path / "resumed.partial").exists()
    queries = ["alpha beta gamma", "sigma rho pi", "kappa"]
    assert resumed.search(queries, k=20) == full.search(queries, k=20)
    assert (tmp_path / "resumed" / "index.faiss").read_bytes() == (tmp_path / "full" / "index.faiss").read_bytes()
    assert resumed.info() == full.info()


def test_streaming_matches_in_memory_build(tmp_path):
    d = docs(300)
    streamed = build_streaming(iter(d), HashEncoder(), tmp_path / "s", chunk_size=64, show_progress=False)
    memory = SearchIndex.build([x.text for x in d], [x.id for x in d], [x.metadata for x in d], encoder=HashEncoder())
    assert streamed.search(["alpha", "mu nu"], k=10) == memory.search(["alpha", "mu nu"], k=10)


def test_streaming_bad_inputs(tmp_path):
    with pytest.raises(EmptyCorpusError, match="empty corpus"):
        build_streaming(iter([]), HashEncoder(), tmp_path / "e", show_progress=False)
    with pytest.raises(DuplicateIdError, match="'d0' appears twice"):
        build_streaming(iter(docs(3) + docs(3)), HashEncoder(), tmp_path / "dup", show_progress=False)


def test_resume_only_from_the_same_unchanged_input(tmp_path):
    import json

    from textcl.data.documents import read_documents

    def write(path, prefix, n):
        path.write_text("".join(json.dumps({"id": f"{prefix}{d.id}", "text": d.text}) + "\n" for d in docs(n)))
        return path

    def killed(src, out, ok_calls):
        with pytest.raises(KeyboardInterrupt):
            build_streaming(read_documents(src), FailingEncoder(ok_calls), out, chunk_size=64, show_progress=False,
                            source=src)

    def build(src, out):
        encoder = HashEncoder()
        index = build_streaming(read_documents(src), encoder, out, chunk_size=64, show_progress=False, source=src)
        return index, encoder.calls

    a, b = write(tmp_path / "a.jsonl", "a", 300), write(tmp_path / "b.jsonl", "b", 200)
    killed(a, tmp_path / "ix", 2)
    index, calls = build(b, tmp_path / "ix")  # another input: starts afresh
    assert calls == 4 and len(index) == 200 and index.get("bd0") is not None and index.get("ad0") is None
    killed(a, tmp_path / "ix2", 2)
    index, calls = build(a, tmp_path / "ix2")  # the same input: resumes after the 2 finished chunks
    assert calls == 5 - 2 and len(index) == 300
    killed(a, tmp_path / "ix3", 2)
    write(a, "c", 250)  # the same path, changed
    index, calls = build(a, tmp_path / "ix3")
    assert calls == 4 and len(index) == 250 and index.get("cd0") is not None
