"""Compressed first passes (binary, SQ8) with float rescoring from vectors.f32: hand-computable cases,
equivalence with exact Flat search, persistence, writes, filters, and each bad input with its message."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from _index_fakes import HashEncoder
from textcl.errors import ConfigError
from textcl.index import IndexCorruptedError, SearchIndex, build_streaming
from textcl.index.compressed import binarize, hamming
from textcl.data.records import Document


def unit(rows) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, dim)))


def texts(n: int, prefix: str = "t") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


# ---------------------------------------------------------------- hand-computable
def test_sign_bits_and_hamming_distance_of_known_codes():
    codes = binarize(np.array([[1, -1, 1, -1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1], [-1, 0, -2, 0, -1, -1, -1, -1]]))
    assert codes.tolist() == [[0b10101111], [0b11111111], [0b00000000]]  # 0 counts as negative
    assert hamming(codes, codes).tolist() == [[0, 2, 6], [2, 0, 8], [6, 8, 0]]


# q is all-positive (code 11111111). a and b have the same code as q (Hamming 0), c differs in one bit, d in two,
# so binary ranks a = b > c > d. The exact cosines are a 1, c 6.9/sqrt(8 * 7.01) = 0.92, d 4/8 = 0.5 and
# b 10.7/sqrt(8 * 100.07) = 0.38: b, all weight on one axis, is last. Rescoring restores a > c > d > b.
FOUR = unit([[1, 1, 1, 1, 1, 1, 1, 1],
             [10, .1, .1, .1, .1, .1, .1, .1],
             [1, 1, 1, 1, 1, 1, 1, -.1],
             [1, 1, 1, 1, 1, 1, -1, -1]])
Q = unit([[1, 1, 1, 1, 1, 1, 1, 1]])


def test_binary_ties_and_misranks_and_rescoring_restores_the_exact_order():
    binary = SearchIndex.build(list("abcd"), list("abcd"), embeddings=FOUR, factory="binary")
    [hits] = binary.search(Q, k=4)
    assert [h.score for h in hits] == [1.0, 1.0, 0.75, 0.5]  # 1 - 2 * hamming / 8
    assert sorted(h.id for h in hits[:2]) == ["a", "b"] and [h.id for h in hits[2:]] == ["c", "d"]

    rescored = SearchIndex.build(list("abcd"), list("abcd"), embeddings=FOUR, factory="binary+rescore2")
    [hits] = rescored.search(Q, k=2)  # 2 * 2 candidates: a, b, c, d; exact top 2: a, c
    assert [h.id for h in hits] == ["a", "c"]
    assert [h.score for h in hits] == pytest.approx([1.0, 6.9 / np.sqrt(8 * 7.01)], abs=1e-6)
    [hits] = rescored.search(Q, k=4)
    assert [h.id for h in hits] == ["a", "c", "d", "b"]
    assert hits[3].score == pytest.approx(10.7 / np.sqrt(8 * 100.07), abs=1e-6)
    [hits] = rescored.search(Q, k=2, rescore=1)  # only the 2 binary candidates a, b, re-ranked exactly
    assert [h.id for h in hits] == ["a", "b"] and hits[1].score == pytest.approx(0.378, abs=1e-3)
    [hits] = rescored.search(Q, k=4, rescore=0)  # the first pass's own scores
    assert [h.score for h in hits] == [1.0, 1.0, 0.75, 0.5]


# ---------------------------------------------------------------- equivalence with exact search
@pytest.mark.parametrize("factory", ["binary+rescore20", "sq8+rescore20", "SQ8+rescore", "HNSW32,SQ8+rescore20"])
def test_rescoring_every_vector_returns_exactly_flats_ids_and_scores(factory):
    x, q = random_unit(200, 64), random_unit(25, 64, seed=1)
    flat = SearchIndex.build(texts(200), embeddings=x)
    index = SearchIndex.build(texts(200), embeddings=x, factory=factory)
    scores, ids = index.search_vectors(q, 10, rescore=20, ef_search=400)  # 10 * 20 candidates: the whole corpus
    exact_scores, exact_ids = flat.search_vectors(q, 10)
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-6, rtol=0)


def test_ivf_sq8_first_pass_rescored_equals_flat_when_every_list_is_probed():
    x, q = random_unit(400, 32), random_unit(10, 32, seed=1)
    index = SearchIndex.build(texts(400), embeddings=x, factory="IVF4,SQ8+rescore40")
    scores, ids = index.search_vectors(q, 10, nprobe=4)
    exact_scores, exact_ids = SearchIndex.build(texts(400), embeddings=x).search_vectors(q, 10)
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-6, rtol=0)


def test_k_larger_than_the_corpus_pads_like_flat():
    x = random_unit(5, 16)
    scores, ids = SearchIndex.build(texts(5), embeddings=x, factory="binary+rescore").search_vectors(x[:2], 8)
    exact_scores, exact_ids = SearchIndex.build(texts(5), embeddings=x).search_vectors(x[:2], 8)
    np.testing.assert_array_equal(ids, exact_ids)
    assert (ids[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    np.testing.assert_allclose(scores[:, :5], exact_scores[:, :5], atol=1e-6)


# ---------------------------------------------------------------- persistence and memory
def test_save_load_round_trip_and_what_the_manifest_records(tmp_path):
    x, q = random_unit(120, 64), random_unit(6, 64, seed=1)
    index = SearchIndex.build(texts(120), embeddings=x, factory="binary+rescore4")
    before = index.search_vectors(q, 10)
    index.save(tmp_path / "ix")
    assert sorted(os.listdir(tmp_path / "ix")) == ["docs.sqlite", "index.faiss", "manifest.json", "vectors.f32"]
    assert (tmp_path / "ix" / "vectors.f32").stat().st_size == 120 * 64 * 4
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["rescore"] == 4 and manifest["factory"] == "binary+rescore4"
    assert manifest["vectors"]["rows"] == 120 and manifest["vectors"]["dtype"] == "float32"
    assert "first MiB and the last MiB" in manifest["vectors"]["checksum"]["policy"]
    assert manifest["memory_bytes_per_vector"] == 64 / 8 + 8  # 8 B of sign bits + 8 B id
    index_bytes = (tmp_path / "ix" / "index.faiss").stat().st_size
    assert manifest["disk_bytes_per_vector"] == pytest.approx((index_bytes + 120 * 64 * 4) / 120, abs=0.01)
    loaded = SearchIndex.load(tmp_path / "ix")
    after = loaded.search_vectors(q, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    assert loaded.rescore == 4 and loaded.info()["memory_bytes_per_vector"] == 16


def test_memory_per_vector_is_at_least_16x_less_than_float32_for_binary():
    x = random_unit(50, 384)
    flat = SearchIndex.build(texts(50), embeddings=x).info()["memory_bytes_per_vector"]
    binary = SearchIndex.build(texts(50), embeddings=x, factory="binary+rescore").info()["memory_bytes_per_vector"]
    sq8 = SearchIndex.build(texts(50), embeddings=x, factory="SQ8").info()["memory_bytes_per_vector"]
    assert binary == 48 + 8 and flat >= 4 * 384 + 8 and flat / binary >= 16
    assert sq8 < flat / 3.5


def test_bare_binary_and_sq8_save_no_vector_file_and_refuse_a_rescore_override(tmp_path):
    x = random_unit(40, 16)
    for factory in ("binary", "sq8"):
        index = SearchIndex.build(texts(40), embeddings=x, factory=factory)
        index.save(tmp_path / factory)
        assert not (tmp_path / factory / "vectors.f32").exists()
        loaded = SearchIndex.load(tmp_path / factory)
        np.testing.assert_array_equal(loaded.search_vectors(x[:3], 5)[1], index.search_vectors(x[:3], 5)[1])
        with pytest.raises(ConfigError, match=r"keeps no float vectors to rescore with; build it with a compressed first pass and \+rescore"):
            loaded.search_vectors(x[:3], 5, rescore=4)


# ---------------------------------------------------------------- writes
def _same_as_flat(index: SearchIndex, final: dict[str, np.ndarray], q: np.ndarray, k: int = 10) -> None:
    ids = list(final)
    flat = SearchIndex.build(ids, ids, embeddings=np.stack([final[i] for i in ids]))
    got = index.search(q, k=k, rescore=1000)
    want = flat.search(q, k=k)
    assert [[h.id for h in row] for row in got] == [[h.id for h in row] for row in want]
    np.testing.assert_allclose([[h.score for h in row] for row in got], [[h.score for h in row] for row in want],
                               atol=1e-6)


@pytest.mark.parametrize("factory", ["binary+rescore", "SQ8+rescore", "HNSW32,SQ8+rescore"])
def test_add_delete_upsert_through_saves_equal_flat_on_the_final_set(tmp_path, factory):
    x, q = random_unit(260, 32), random_unit(8, 32, seed=1)
    final = {f"d{i}": x[i] for i in range(150)}
    index = SearchIndex.build(list(final), list(final), embeddings=x[:150], factory=factory)
    index.delete(["d3", "d7", "d100"])
    for key in ("d3", "d7", "d100"):
        del final[key]
    _same_as_flat(index, final, q)

    index.save(tmp_path / "ix")  # the fresh rows (workdir) go to the folder
    index = SearchIndex.load(tmp_path / "ix")
    new = {f"d{i}": x[i] for i in range(150, 200)}
    index.add(list(new), list(new), embeddings=np.stack(list(new.values())))
    final.update(new)
    index.upsert(["d0", "d150"], ["d0", "d150"], embeddings=x[200:202])  # new vectors for old ids
    final.update({"d0": x[200], "d150": x[201]})
    _same_as_flat(index, final, q)

    index.save(tmp_path / "ix")  # the same folder: its file is linked and only the new rows are appended
    rows = (tmp_path / "ix" / "vectors.f32").stat().st_size // (32 * 4)
    assert rows == json.loads((tmp_path / "ix" / "manifest.json").read_text())["vectors"]["rows"] == 150 + 50 + 2
    index.delete(["d1"])
    del final["d1"]
    index.add(["late"], ["late"], embeddings=x[202:203])
    final["late"] = x[202]
    index.save(tmp_path / "ix")  # saved again: the base is now the file this index saved itself
    index.save(tmp_path / "copy")  # another folder: copied, not linked
    assert os.stat(tmp_path / "copy" / "vectors.f32").st_ino != os.stat(tmp_path / "ix" / "vectors.f32").st_ino
    for folder in ("ix", "copy"):
        _same_as_flat(SearchIndex.load(tmp_path / folder), final, q)
    _same_as_flat(index, final, q)


def test_a_reader_of_the_old_folder_is_unaffected_by_a_save_that_appends(tmp_path):
    x, q = random_unit(60, 16), random_unit(4, 16, seed=1)
    SearchIndex.build(texts(50), embeddings=x[:50], factory="binary+rescore").save(tmp_path / "ix")
    reader = SearchIndex.load(tmp_path / "ix")
    before = reader.search_vectors(q, 10, rescore=100)
    writer = SearchIndex.load(tmp_path / "ix")
    writer.add(texts(10, "new"), texts(10, "new"), embeddings=x[50:])
    writer.save(tmp_path / "ix")
    after = reader.search_vectors(q, 10, rescore=100)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])


# ---------------------------------------------------------------- doc store, filters, text queries
def test_metadata_filter_among_and_text_queries():
    enc = HashEncoder(dim=64)
    docs = {f"d{i}": f"word{i % 7} word{i % 5} word{i % 3} topic{i % 2}" for i in range(60)}
    meta = [{"lang": "en" if i % 2 else "de"} for i in range(60)]
    flat = SearchIndex.build(list(docs.values()), list(docs), meta, encoder=enc)
    index = SearchIndex.build(list(docs.values()), list(docs), meta, encoder=enc, factory="binary+rescore10")
    sql = "SELECT int_id FROM docs WHERE json_extract(metadata, '$.lang') = 'en'"
    among = [r[0] for r in index.store.query(sql)]
    q = enc.encode(["word1 word2 topic1", "word4 topic0"])
    scores, ids = index.search_vectors(q, 5, among=among)
    exact_scores, exact_ids = flat.search_vectors(q, 5, among=[r[0] for r in flat.store.query(sql)])
    assert set(ids.ravel().tolist()) <= set(among)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-6)
    hits = index.search(["word1 word2 topic1"], k=3)[0]  # bag-of-words scores tie: compare scores, not ids
    assert [h.score for h in hits] == pytest.approx([h.score for h in flat.search(["word1 word2 topic1"], k=3)[0]],
                                                    abs=1e-6)
    assert hits[0].id == "d37" and hits[0].metadata == {"lang": "en"} and hits[0].text == docs["d37"]


def test_streaming_build_links_its_embeddings_as_the_vector_file(tmp_path):
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    docs = [Document(f"d{i}", " ".join(rng.choice(words, 5)), {"i": i}) for i in range(300)]
    streamed = build_streaming(iter(docs), HashEncoder(), tmp_path / "s", factory="binary+rescore",
                               chunk_size=64, show_progress=False)
    memory = SearchIndex.build([d.text for d in docs], [d.id for d in docs], [d.metadata for d in docs],
                               encoder=HashEncoder(), factory="binary+rescore")
    assert (tmp_path / "s" / "vectors.f32").stat().st_size == 300 * 64 * 4
    assert not (tmp_path / "s.partial").exists()
    queries = ["alpha beta", "kappa lambda mu"]
    assert streamed.search(queries, k=10) == memory.search(queries, k=10)


def test_cli_search_rescore_and_info_report_bytes_per_vector(tmp_path, monkeypatch, capsys):
    import textcl.commands.index as cmd
    from textcl.cli import main

    monkeypatch.setattr(cmd, "load_encoder", lambda name, backend=None: HashEncoder())
    (tmp_path / "docs.txt").write_text("the cat sat on the mat\na dog chased the ball\nrain and storms\n")
    assert main(["index", "build", "--model", "m", "--input", str(tmp_path / "docs.txt"), "--out",
                 str(tmp_path / "ix"), "--factory", "binary+rescore4"]) == 0
    capsys.readouterr()
    assert main(["index", "search", str(tmp_path / "ix"), "cat on the mat", "-k", "1", "--rescore", "2",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["text"] == "the cat sat on the mat"
    assert main(["index", "info", str(tmp_path / "ix")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rescore"] == 4 and info["memory_bytes_per_vector"] == 16 and info["disk_bytes_per_vector"] > 256


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("factory, message", [
    ("Flat+rescore", r"'Flat\+rescore': \+rescore is pointless on 'Flat', which already scores with the exact "
                     r"float32 vectors"),
    ("HNSW32+rescore4", r"\+rescore is pointless on 'HNSW32'"),
    ("IVF4,Flat+rescore", r"\+rescore is pointless on 'IVF4,Flat'"),
    ("binary+rescorex", r"\+rescore must end the string, as \+rescore or \+rescore<r>.*valid forms: Flat, HNSW32"),
    ("SQ8+faster", r"'SQ8\+faster' is not a FAISS index_factory string"),  # other '+' are FAISS's to judge
    ("binary+rescore0", r"the rescoring factor must be >= 1, got 0"),
    ("auto+rescore", r"auto picks its own index"),
    ("Flatt", r"'Flatt' is not a FAISS index_factory string .*valid forms: .*binary\+rescore, sq8\+rescore4"),
])
def test_bad_factories_and_their_messages(factory, message):
    with pytest.raises(ConfigError, match=message):
        SearchIndex.build(texts(10), embeddings=random_unit(10, 16), factory=factory)


def test_binary_needs_a_dimension_divisible_by_8():
    with pytest.raises(ConfigError, match=r"'binary\+rescore' packs 8 dimensions per byte: the dimension must be a "
                                          r"multiple of 8, got 12"):
        SearchIndex.build(texts(10), embeddings=random_unit(10, 12), factory="binary+rescore")


def test_bad_rescore_overrides():
    index = SearchIndex.build(texts(10), embeddings=random_unit(10, 16), factory="SQ8+rescore")
    with pytest.raises(ConfigError, match=r"expected an integer >= 0 \(0: the first pass's scores\), got -1"):
        index.search_vectors(random_unit(1, 16), 3, rescore=-1)
    flat = SearchIndex.build(texts(10), embeddings=random_unit(10, 16))
    with pytest.raises(ConfigError, match=r"index 'Flat' keeps no float vectors to rescore with"):
        flat.search(random_unit(1, 16), rescore=2)


def test_a_truncated_or_corrupted_vector_file_is_refused_on_load(tmp_path):
    SearchIndex.build(texts(30), embeddings=random_unit(30, 16), factory="binary+rescore").save(tmp_path / "ix")
    vpath = tmp_path / "ix" / "vectors.f32"
    data = vpath.read_bytes()
    vpath.write_bytes(data[:-4])
    with pytest.raises(IndexCorruptedError, match=r"vectors.f32: 1,916 bytes, manifest says 30 rows \(1,920 bytes\)"):
        SearchIndex.load(tmp_path / "ix")
    vpath.write_bytes(b"\0\0\0\0" + data[4:])
    with pytest.raises(IndexCorruptedError, match=r"vectors.f32: checksum mismatch \(first/last MiB differ"):
        SearchIndex.load(tmp_path / "ix")
    vpath.unlink()
    with pytest.raises(IndexCorruptedError, match=r"vectors.f32: missing from the index folder"):
        SearchIndex.load(tmp_path / "ix", verify=False)
