"""SearchIndex: build, search, add/delete/upsert, persistence, and each bad input with its error."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _index_fakes import HashEncoder
from textcl.errors import ConfigError
from textcl.index import (DimensionMismatchError, DuplicateIdError, EmptyCorpusError, EmptyQueryError,
                          IndexCorruptedError, IndexStateError, SearchIndex, UnknownIdError, choose_factory)

DOCS = {
    "cat": "the cat sat on the mat",
    "dog": "a dog chased the ball in the park",
    "stock": "stock markets fell sharply today",
    "rain": "heavy rain and storms expected tomorrow",
    "piano": "she played the piano at the concert",
}


@pytest.fixture()
def index():
    return SearchIndex.build(list(DOCS.values()), list(DOCS), [{"n": i} for i in range(len(DOCS))],
                             encoder=HashEncoder())


def test_search_returns_best_match_with_text_score_and_metadata(index):
    [hits] = index.search(["cat on the mat"], k=2)
    assert hits[0].id == "cat" and hits[0].text == DOCS["cat"] and hits[0].metadata == {"n": 0}
    assert hits[0].score == pytest.approx(float(HashEncoder().encode(["cat on the mat"])[0]
                                                @ HashEncoder().encode([DOCS["cat"]])[0]), abs=1e-6)
    assert hits[0].score >= hits[1].score


def test_batch_search_and_k_larger_than_corpus_returns_what_exists(index):
    results = index.search(["piano concert", "markets stock"], k=50)
    assert [len(r) for r in results] == [5, 5]
    assert results[0][0].id == "piano" and results[1][0].id == "stock"
    assert sorted(h.id for h in results[0]) == sorted(DOCS)


def test_an_empty_or_blank_query_is_an_error_naming_its_position(index):
    with pytest.raises(EmptyQueryError, match=r"^the query is empty \(or only whitespace\)$"):
        index.search("")
    with pytest.raises(EmptyQueryError, match=r"^queries\[2\] is empty \(or only whitespace\)$"):
        index.search(["cat", "dog", " \t"])
    with pytest.raises(EmptyQueryError, match=r"^queries\[0\] is empty"):
        index.search(q for q in ["", "cat"])


def test_save_load_round_trip_gives_identical_results(index, tmp_path):
    queries = ["cat", "rain storms", "ball park"]
    before = index.search(queries, k=5)
    index.save(tmp_path / "ix")
    loaded = SearchIndex.load(tmp_path / "ix", encoder=HashEncoder())
    assert loaded.search(queries, k=5) == before
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["dim"] == 64 and manifest["normalize"] is True and manifest["n_docs"] == 5
    assert manifest["model"] == "hash-bow" and manifest["factory"] == "Flat" and len(manifest["index_sha256"]) == 64
    assert not [p.name for p in tmp_path.iterdir() if p.name != "ix"]  # no temporary leftovers


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_deleted_id_never_comes_back(factory, tmp_path):
    index = SearchIndex.build(list(DOCS.values()), list(DOCS), encoder=HashEncoder(), factory=factory)
    assert index.delete(["cat"]) == 1
    for hits in index.search(["the cat sat on the mat", "dog", "piano"], k=10):
        assert "cat" not in [h.id for h in hits] and len(hits) == 4
    index.save(tmp_path / "ix")
    loaded = SearchIndex.load(tmp_path / "ix", encoder=HashEncoder())
    assert all("cat" not in [h.id for h in hits] for hits in loaded.search(["the cat sat on the mat"], k=10))
    assert loaded.get("cat") is None and len(loaded) == 4
    if factory == "HNSW32":  # HNSW cannot remove vectors: the id is a tombstone
        assert loaded.info()["n_tombstones"] == 1


def test_upsert_replaces_text_and_vector(index):
    index.upsert(["quantum physics lecture notes"], ["cat"], [{"v": 2}])
    assert index.get("cat").text == "quantum physics lecture notes" and len(index) == 5
    [hits] = index.search(["quantum physics"], k=1)
    assert (hits[0].id, hits[0].metadata) == ("cat", {"v": 2})
    [hits] = index.search(["the cat sat on the mat"], k=5)
    assert [h.text for h in hits].count("quantum physics lecture notes") == 1
    assert DOCS["cat"] not in [h.text for h in hits]


def test_duplicate_ids_are_an_error_and_add_nothing(index):
    with pytest.raises(DuplicateIdError, match="already in the index: 'dog'.*use upsert"):
        index.add(["another dog"], ["dog"])
    with pytest.raises(DuplicateIdError, match="'x' appears twice"):
        index.add(["one", "two"], ["x", "x"])
    with pytest.raises(DuplicateIdError, match="appears twice"):
        SearchIndex.build(["a b", "c d"], ["same", "same"], encoder=HashEncoder())
    assert len(index) == 5 and index.info()["n_vectors"] == 5


def test_delete_unknown_id(index):
    with pytest.raises(UnknownIdError, match="not in the index: 'nope'"):
        index.delete(["nope"])
    assert index.delete(["nope"], missing_ok=True) == 0


def test_empty_corpus_and_search_before_build():
    with pytest.raises(EmptyCorpusError, match="empty corpus"):
        SearchIndex.build([], [], encoder=HashEncoder())
    with pytest.raises(IndexStateError, match="empty: build it or add documents before searching"):
        SearchIndex(64, encoder=HashEncoder()).search(["anything"])


def test_corrupted_or_truncated_index_file_is_a_checksum_error(index, tmp_path):
    path = index.save(tmp_path / "ix")
    data = (path / "index.faiss").read_bytes()
    (path / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexCorruptedError, match=r"index\.faiss: checksum mismatch.*truncated or corrupted"):
        SearchIndex.load(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptedError, match="manifest.json: not valid JSON"):
        SearchIndex.load(path)
    with pytest.raises(IndexCorruptedError, match="no such index folder"):
        SearchIndex.load(tmp_path / "missing")


def test_encoder_of_another_dimension_is_refused(index, tmp_path):
    path = index.save(tmp_path / "ix")
    with pytest.raises(DimensionMismatchError, match="64-dimensional vectors but the encoder 'hash-bow' produces 32"):
        SearchIndex.load(path, encoder=HashEncoder(dim=32))


def test_save_refuses_to_replace_a_folder_that_is_not_an_index(index, tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(ConfigError, match="not a textcl index folder"):
        index.save(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_doc_store_is_sqlite_queryable_by_metadata(index):
    rows = index.store.query("SELECT doc_id FROM docs WHERE json_extract(metadata, '$.n') >= ? ORDER BY doc_id", (3,))
    assert rows == [("piano",), ("rain",)]


def test_bad_factory_and_untrainable_ivf():
    x = np.eye(8, dtype=np.float32)
    with pytest.raises(ConfigError, match="not a FAISS index_factory string"):
        SearchIndex.build(["a"] * 8, [str(i) for i in range(8)], embeddings=x, factory="Bogus99")
    with pytest.raises(ConfigError, match="needs at least 39,936 vectors to train.*corpus has 8"):
        SearchIndex.build(["a"] * 8, [str(i) for i in range(8)], embeddings=x, factory="IVF1024,Flat")


def test_auto_rule():
    assert choose_factory(1_000, 384) == "Flat"
    assert choose_factory(100, 384) == "Flat"
    # 500k: 4 sqrt(n) = 2,828 -> 2,048 lists; codes (96 B) + ids (59 B) + floats (1,536 B) = 845 MB fit 4 GiB
    assert choose_factory(500_000, 384) == "IVF2048,PQ192x4fs,RFlat"
    assert choose_factory(5_000_000, 384, memory_budget=16 * 2**30) == "IVF8192,PQ192x4fs,RFlat"  # 8.5 GB
    # 5M at 4 GiB: the floats (7.7 GB) stay on disk and rescore; 775 MB of codes and ids fit
    assert choose_factory(5_000_000, 384) == "IVF8192,PQ192x4fs+rescore4"
    # 50M at 2 GiB: even 4-bit codes (7.8 GB) do not fit; PQ32 (40 B with ids) does
    assert choose_factory(50_000_000, 384, memory_budget=2 * 2**30) == "IVF32768,PQ32"
    assert choose_factory(500_000, 385) == "IVF2048,Flat"  # an odd dimension has no dim/2 sub-quantisers


def test_new_indexes_search_with_a_useful_breadth_unless_told_otherwise():
    import faiss

    from textcl.index.factory import DEFAULT_EF_SEARCH, DEFAULT_K_FACTOR, DEFAULT_NPROBE, make_index

    refined = make_index("IVF4096,PQ192x4fs,RFlat", 384)  # (kept alive: it owns the indexes inside it)
    ivf = faiss.extract_index_ivf(refined)
    assert (ivf.nlist, ivf.nprobe) == (4096, DEFAULT_NPROBE) == (4096, 64)
    assert faiss.downcast_index(refined.index).k_factor == DEFAULT_K_FACTOR
    small = make_index("IVF16,Flat", 8)
    assert faiss.extract_index_ivf(small).nprobe == 16  # never more than nlist
    graph = make_index("HNSW32", 8)
    assert faiss.downcast_index(graph.index).hnsw.efSearch == DEFAULT_EF_SEARCH == 128


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,PQ8x4fs,RFlat", "Flat"])
def test_deleting_from_an_inverted_file_keeps_every_other_id_right(factory):
    """IndexIDMap2.remove_ids compacts its id table as if the index below renumbered; an IVF does not, so
    deleted ids become tombstones there. Each remaining vector must still be found under its own id."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1_000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = SearchIndex.build(["t"] * 1_000, [f"d{i}" for i in range(1_000)], embeddings=x, factory=factory)
    deleted = [0, 1, 2, 17, 500, 998, 999]
    assert index.delete([f"d{i}" for i in deleted]) == len(deleted)
    kept = sorted(set(range(1_000)) - set(deleted))
    _, labels = index.search_vectors(x[[0, 1, 5, 500, 700]], k=1_000, nprobe=16)  # every list: all documents
    for row in labels:
        assert sorted(row[row >= 0].tolist()) == kept  # each kept id once, no deleted one
    hits = index.search(x[[0, 500]], k=1_000, nprobe=16)
    assert all(sorted(h.id for h in row) == sorted(f"d{i}" for i in kept) for row in hits)
    _, labels = index.search_vectors(x[kept], k=1, nprobe=16)
    assert labels[:, 0].tolist() == kept  # each kept vector is found under its own id


class BrokenEncoder(HashEncoder):
    def encode(self, texts, batch_size: int = 32):
        raise RuntimeError("encoder down")


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_failed_upsert_leaves_the_old_documents_searchable(factory):
    index = SearchIndex.build(list(DOCS.values()), list(DOCS), encoder=HashEncoder(), factory=factory)
    index.encoder = BrokenEncoder()
    with pytest.raises(RuntimeError, match="encoder down"):
        index.upsert(["quantum physics lecture notes", "new doc"], ["cat", "new"])
    index.encoder = HashEncoder()
    assert len(index) == 5 and index.get("cat").text == DOCS["cat"] and index.get("new") is None
    [hits] = index.search(["the cat sat on the mat"], k=1)
    assert (hits[0].id, hits[0].text) == ("cat", DOCS["cat"])


def test_cli_build_records_the_absolute_model_folder(tmp_path, monkeypatch):
    import textcl.commands.index as cmd
    from textcl.cli import main

    loaded = []
    monkeypatch.setattr(cmd, "load_encoder", lambda name, backend=None: loaded.append(name) or HashEncoder())
    (tmp_path / "work" / "my-model").mkdir(parents=True)
    (tmp_path / "docs.txt").write_text("the cat sat on the mat\na dog chased the ball\n")
    monkeypatch.chdir(tmp_path / "work")
    assert main(["index", "build", "--model", "my-model", "--input", "../docs.txt", "--out", "../ix"]) == 0
    model = json.loads((tmp_path / "ix" / "manifest.json").read_text())["model"]
    assert model == str((tmp_path / "work" / "my-model").resolve())
    monkeypatch.chdir(tmp_path)  # searching from elsewhere loads the recorded folder
    assert main(["index", "search", "ix", "cat"]) == 0 and loaded[-1] == model
    assert main(["index", "build", "--model", "org/hub-model", "--input", "docs.txt", "--out", "ix2"]) == 0
    assert json.loads((tmp_path / "ix2" / "manifest.json").read_text())["model"] == "org/hub-model"


def test_auto_with_the_floats_on_disk_builds_saves_loads_and_rescores(tmp_path):
    """60k vectors in 16 dims with a 5 MiB budget: 4-bit codes + ids (3.8 MB) fit, the floats (3.8 MB more) do
    not, so auto picks the +rescore form, which must carry its vector file through save and load."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60_000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [str(i) for i in range(len(x))]
    index = SearchIndex.build(["t"] * len(x), ids, embeddings=x, factory="auto", memory_budget=5 * 2**20)
    assert (index.factory, index.rescore) == ("IVF1024,PQ8x4fs+rescore4", 4)
    index.save(tmp_path / "idx")
    loaded = SearchIndex.load(tmp_path / "idx")
    assert (loaded.factory, loaded.rescore) == ("IVF1024,PQ8x4fs+rescore4", 4)
    # every list, 1,000 candidates: 4-bit codes of random 16-d vectors rank a vector's own code far down, so
    # the exact floats must decide
    scores, labels = loaded.search_vectors(x[:20], k=1, nprobe=1024, rescore=1000)
    assert labels[:, 0].tolist() == list(range(20))  # each vector finds itself
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
