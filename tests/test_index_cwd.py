"""An index loaded by a relative path keeps reading its own files after the working folder changes, even when
the new working folder holds another index under the same relative name."""
from __future__ import annotations

import numpy as np

from _index_fakes import HashEncoder
from textcl.data.records import Document
from textcl.index import SearchIndex, build_streaming

DIM = 16


def rows(seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((300, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_rescoring_reads_the_loaded_folders_vectors_after_a_chdir(tmp_path, monkeypatch):
    for project, seed in (("a", 0), ("b", 1)):
        SearchIndex.build([f"t{i}" for i in range(300)], [f"d{i}" for i in range(300)], embeddings=rows(seed),
                          factory="SQ8+rescore").save(tmp_path / project / "ix")
    monkeypatch.chdir(tmp_path / "a")
    index = SearchIndex.load("ix")
    monkeypatch.chdir(tmp_path / "b")  # b/ix/vectors.f32 holds other vectors
    scores, labels = index.search_vectors(rows(0)[:5], k=1)
    assert labels[:, 0].tolist() == list(range(5)) and np.allclose(scores[:, 0], 1.0, atol=1e-5)
    index.save(tmp_path / "a" / "copy")  # the copy holds a's vectors too
    scores, labels = SearchIndex.load(tmp_path / "a" / "copy").search_vectors(rows(0)[5:10], k=1)
    assert labels[:, 0].tolist() == list(range(5, 10)) and np.allclose(scores[:, 0], 1.0, atol=1e-5)


def test_an_on_disk_index_saves_its_own_lists_after_a_chdir(tmp_path, monkeypatch):
    for project, words in (("a", "alpha beta"), ("b", "gamma delta epsilon")):
        monkeypatch.chdir((tmp_path / project).mkdir() or tmp_path / project)
        docs = [Document(f"d{i}", f"{words} number {i} {i % 7} {i % 11}") for i in range(400)]
        build_streaming(iter(docs), HashEncoder(), "ix", factory="IVF4,Flat", on_disk=True, show_progress=False)
    monkeypatch.chdir(tmp_path / "a")
    index = SearchIndex.load("ix", encoder=HashEncoder())
    expected = index.search(["alpha number 7"], k=5, nprobe=4)
    monkeypatch.chdir(tmp_path / "b")
    index.delete(["d399"])
    index.save(tmp_path / "a" / "saved")  # links (or copies) the lists file a/ix/index.ivfdata
    saved = SearchIndex.load(tmp_path / "a" / "saved", encoder=HashEncoder())
    assert saved.search(["alpha number 7"], k=5, nprobe=4) == expected
