"""On-disk IVF: trained once, filled shard by shard, lists merged into one memory-mapped file.

With nprobe = nlist an IVF search is exhaustive, so an on-disk index built from 3 shards must return exactly
the ids and scores of the same factory built in memory from all vectors at once (and IVF-Flat those of Flat).
"""
from __future__ import annotations

import shutil
import zlib

import faiss
import numpy as np
import pytest

from _index_fakes import clustered
from textcl.data.records import Document
from textcl.errors import ConfigError
from textcl.index import IndexCorruptedError, IndexStateError, SearchIndex, build_streaming
from textcl.index import ondisk
from textcl.index.errors import DimensionMismatchError

DIM, NLIST = 32, 16
SHARDS = [(0, 1000), (1000, 2500), (2500, 3000)]  # unequal, so lists interleave differently per shard


def vectors(n=3000, seed=0):
    return clustered(n, DIM, 40, seed=seed, spread=0.6)


def ids_of(n):
    return np.arange(n, dtype=np.int64) * 7 + 5  # not 0..n-1: the ids travel through the lists


def chunks(x, ids, lo, hi, size=256):
    for a in range(lo, hi, size):
        b = min(a + size, hi)
        yield ids[a:b], x[a:b]


def build_folder(tmp_path, factory, x, ids, name="idx"):
    trained = tmp_path / "trained.faiss"
    ondisk.train_ondisk(factory, x, trained)
    shards = []
    for i, (lo, hi) in enumerate(SHARDS):
        shards.append(tmp_path / f"shard{i}.faiss")
        assert ondisk.fill_shard(trained, chunks(x, ids, lo, hi), shards[-1]) == hi - lo
    assert ondisk.merge_shards(trained, shards, tmp_path / name) == len(x)
    return tmp_path / name, trained, shards


def exhaustive(index, q, k=10):
    faiss.extract_index_ivf(index).nprobe = NLIST
    return index.search(q, k)


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,SQ8", "IVF16,PQ8x4", "PCAR32,IVF16,SQ8"])
def test_three_shards_on_disk_equal_one_index_in_memory(tmp_path, factory):
    x, q = vectors(), vectors(50, seed=1)
    ids = ids_of(len(x))
    folder, _, _ = build_folder(tmp_path, factory, x, ids)
    memory = ondisk.make_ivf(factory, DIM)  # trained independently, on the same sample: k-means is seeded
    memory.train(x)
    memory.add_with_ids(x, ids)
    disk = ondisk.read_ondisk(folder)
    assert ondisk.is_ondisk(disk) and not ondisk.is_ondisk(memory)
    d_scores, d_ids = exhaustive(disk, q)
    m_scores, m_ids = exhaustive(memory, q)
    np.testing.assert_array_equal(d_ids, m_ids)
    np.testing.assert_array_equal(d_scores, m_scores)
    if factory.endswith("Flat"):
        flat = faiss.IndexIDMap(faiss.IndexFlatIP(DIM))
        flat.add_with_ids(x, ids)
        f_scores, f_ids = flat.search(q, 10)
        np.testing.assert_array_equal(d_ids, f_ids)
        np.testing.assert_allclose(d_scores, f_scores, rtol=0, atol=1e-6)  # BLAS vs per-vector sums


def test_lists_file_is_the_one_faiss_merge_ondisk_writes(tmp_path, capfd):
    from faiss.contrib.ondisk import merge_ondisk

    x = vectors()
    folder, trained, shards = build_folder(tmp_path, "IVF16,SQ8", x, ids_of(len(x)))
    reference = faiss.read_index(str(trained))
    merge_ondisk(reference, [str(s) for s in shards], str(tmp_path / "faiss.ivfdata"))
    capfd.readouterr()  # FAISS prints "resizing ..." to stdout; merge_shards prints nothing
    assert (tmp_path / "faiss.ivfdata").read_bytes() == (folder / ondisk.LISTS_FILE).read_bytes()


def test_moved_or_copied_folder_opens_its_own_lists(tmp_path, capfd):
    x, q = vectors(), vectors(20, seed=1)
    folder, _, _ = build_folder(tmp_path, "IVF16,SQ8", x, ids_of(len(x)))
    before = exhaustive(ondisk.read_ondisk(folder), q)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(folder), str(moved))
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    shutil.rmtree(moved)  # the header names no path that still exists
    after = exhaustive(ondisk.read_ondisk(copy), q)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    assert capfd.readouterr().out == ""  # no FAISS chatter on stdout (it would corrupt `search --json`)


def test_chunked_groups_whole_chunks_into_shards():
    stream = ((np.arange(i * 100, (i + 1) * 100), np.zeros((100, 2))) for i in range(7))
    sizes = [sum(len(ids) for ids, _ in shard) for shard in ondisk.chunked(stream, 250)]
    assert sizes == [300, 300, 100]


# ---------------------------------------------------------------- bad inputs
def test_fill_and_merge_bad_inputs(tmp_path):
    x = vectors(2000)
    trained = tmp_path / "trained.faiss"
    ondisk.train_ondisk("IVF16,Flat", x, trained)
    bad = [(np.arange(10), x[:10]), (np.arange(10, 20), x[10:20, :16])]
    with pytest.raises(DimensionMismatchError, match=r"s\.faiss: chunk 1: vectors of shape \(10, 16\), but the "
                                                     r"trained index .*trained\.faiss holds 32-d vectors"):
        ondisk.fill_shard(trained, bad, tmp_path / "s.faiss")
    assert not (tmp_path / "s.faiss").exists()  # nothing half-written
    with pytest.raises(ConfigError, match="chunk 0: 9 ids for 10 vectors"):
        ondisk.fill_shard(trained, [(np.arange(9), x[:10])], tmp_path / "s.faiss")
    with pytest.raises(ConfigError, match=r"ids must be >= 0 .* got -1"):
        ondisk.fill_shard(trained, [(np.arange(-1, 9), x[:10])], tmp_path / "s.faiss")

    untrained = tmp_path / "untrained.faiss"
    faiss.write_index(ondisk.make_ivf("IVF16,Flat", DIM), str(untrained))
    with pytest.raises(IndexStateError, match="untrained.faiss: the index is not trained; train it with train_ondisk"):
        ondisk.fill_shard(untrained, [(np.arange(10), x[:10])], tmp_path / "s.faiss")
    with pytest.raises(IndexStateError, match="no trained index; write one with train_ondisk first"):
        ondisk.fill_shard(tmp_path / "missing.faiss", [], tmp_path / "s.faiss")
    with pytest.raises(ConfigError, match="needs at least 624 vectors to train"):
        ondisk.train_ondisk("IVF16,Flat", x[:100], tmp_path / "small.faiss")
    with pytest.raises(ConfigError, match="'HNSW32' has no inverted lists to keep on disk"):
        ondisk.make_ivf("HNSW32", DIM)

    # a shard filled from another training (another quantizer) is refused by name
    other = tmp_path / "other.faiss"
    ondisk.train_ondisk("IVF16,Flat", vectors(2000, seed=5), other)
    ondisk.fill_shard(trained, [(np.arange(1000), x[:1000])], tmp_path / "a.faiss")
    ondisk.fill_shard(other, [(np.arange(1000, 2000), x[1000:])], tmp_path / "b.faiss")
    with pytest.raises(ConfigError, match=r"b\.faiss: not filled from .*trained\.faiss"):
        ondisk.merge_shards(trained, [tmp_path / "a.faiss", tmp_path / "b.faiss"], tmp_path / "out")


# ---------------------------------------------------------------- as a SearchIndex folder
class RandomEncoder:
    """A unit vector per text, seeded by its crc32: no ties, stable across processes."""

    dim = DIM
    name = "random"

    def encode(self, texts, batch_size: int = 32):
        out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(DIM) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def docs(n=2000):
    return [Document(f"d{i}", f"document number {i}", {"i": i}) for i in range(n)]


QUERIES = ["document number 7", "a query", "another query", "document number 1999"]


def build(tmp_path, name, **kw):
    return build_streaming(iter(docs()), RandomEncoder(), tmp_path / name, chunk_size=300, show_progress=False, **kw)


@pytest.mark.parametrize("factory", ["IVF16,SQ8", "IVF16,PQ8x4+rescore"])
def test_search_index_on_disk_equals_in_memory_and_survives_moves(tmp_path, factory):
    memory = build(tmp_path, "mem", factory=factory)
    disk = build(tmp_path, "disk", factory=factory, on_disk=True)
    expected = memory.search(QUERIES, k=10, nprobe=NLIST)
    assert disk.search(QUERIES, k=10, nprobe=NLIST) == expected
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == [
        "docs.sqlite", "index.faiss", "index.ivfdata", "manifest.json"] + (["vectors.f32"] if "+" in factory else [])
    manifest = SearchIndex.read_manifest(tmp_path / "disk")
    assert manifest["lists"]["file"] == "index.ivfdata"
    assert manifest["lists"]["bytes"] == (tmp_path / "disk" / "index.ivfdata").stat().st_size
    assert disk.info()["memory_bytes_per_vector"] == 0.0 and disk.info()["n_vectors"] == 2000

    moved = tmp_path / "sub" / "moved"
    moved.parent.mkdir()
    shutil.move(str(tmp_path / "disk"), str(moved))
    reopened = SearchIndex.load(moved, encoder=RandomEncoder())
    assert reopened.search(QUERIES, k=10, nprobe=NLIST) == expected
    reopened.save(tmp_path / "resaved")  # the lists file is hard-linked (or copied) into the new folder
    shutil.rmtree(moved)
    again = SearchIndex.load(tmp_path / "resaved", encoder=RandomEncoder())
    assert again.search(QUERIES, k=10, nprobe=NLIST) == expected
    assert again.info()["factory"] == factory


def test_on_disk_auto_picks_ivf_sq8(tmp_path):
    index = build(tmp_path, "auto", factory="auto", on_disk=True)
    assert index.factory == "IVF32,SQ8"  # a power of two near 4 sqrt(2000), >= 39 training vectors per list
    assert index.search("document number 3", k=1, nprobe=32)[0][0].id == "d3"


def test_on_disk_index_is_read_only_but_deletes_by_tombstone(tmp_path):
    build(tmp_path, "disk", factory="IVF16,Flat", on_disk=True)
    lists = (tmp_path / "disk" / "index.ivfdata").read_bytes()
    index = SearchIndex.load(tmp_path / "disk", encoder=RandomEncoder())
    with pytest.raises(IndexStateError, match=r"cannot add documents: this index keeps its inverted lists on disk "
                                              r"\(index.ivfdata\) and is read-only after the build"):
        index.add(["new text"], ["new"])
    with pytest.raises(IndexStateError, match="cannot upsert documents: .* read-only"):
        index.upsert(["document number 7, changed"], ["d7"])
    assert index.get("d7").text == "document number 7" and len(index) == 2000  # nothing removed

    assert index.search("document number 7", k=1, nprobe=NLIST)[0][0].id == "d7"
    assert index.delete(["d7"]) == 1
    assert all(h.id != "d7" for h in index.search("document number 7", k=10, nprobe=NLIST)[0])
    index.save(tmp_path / "disk")  # over the folder it maps
    reloaded = SearchIndex.load(tmp_path / "disk", encoder=RandomEncoder())
    assert reloaded.info()["n_tombstones"] == 1 and len(reloaded) == 1999
    assert all(h.id != "d7" for h in reloaded.search("document number 7", k=10, nprobe=NLIST)[0])
    assert (tmp_path / "disk" / "index.ivfdata").read_bytes() == lists  # the lists were never written


def test_on_disk_folder_bad_states(tmp_path):
    encoder = RandomEncoder()
    with pytest.raises(ConfigError, match="'Flat' has no inverted lists to keep on disk"):
        build_streaming(iter(docs(10)), encoder, tmp_path / "flat", factory="Flat", on_disk=True)
    assert not (tmp_path / "flat.partial").exists()  # refused before anything was embedded

    build(tmp_path, "disk", factory="IVF16,SQ8", on_disk=True)
    lists = tmp_path / "disk" / "index.ivfdata"
    data = lists.read_bytes()
    lists.write_bytes(data[:-100])
    with pytest.raises(IndexCorruptedError, match=r"index.ivfdata: .* bytes, manifest says .*; the file is truncated"):
        SearchIndex.load(tmp_path / "disk")
    lists.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(IndexCorruptedError, match="index.ivfdata: checksum mismatch"):
        SearchIndex.load(tmp_path / "disk")
    lists.unlink()
    with pytest.raises(IndexCorruptedError, match="index.ivfdata: missing from the index folder"):
        SearchIndex.load(tmp_path / "disk")


def test_cli_build_on_disk_search_delete_add(tmp_path, monkeypatch, capsys):
    import json

    import textcl.commands.index as cmd
    from textcl.cli import main

    monkeypatch.setattr(cmd, "load_encoder", lambda name, backend=None: RandomEncoder())
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in docs()))
    (tmp_path / "more.jsonl").write_text(json.dumps({"id": "new", "text": "a new document"}) + "\n")
    ix = str(tmp_path / "ix")
    assert main(["index", "build", "--model", "m", "--input", str(tmp_path / "docs.jsonl"), "--out", ix,
                 "--factory", "IVF16,SQ8", "--on-disk"]) == 0
    assert (tmp_path / "ix" / "index.ivfdata").exists()
    capsys.readouterr()
    assert main(["index", "search", ix, "document number 7", "--nprobe", "16", "-k", "3", "--json"]) == 0
    [line] = capsys.readouterr().out.splitlines()  # JSON only: nothing else on stdout
    assert json.loads(line)["hits"][0]["id"] == "d7"
    assert main(["index", "delete", ix, "d7"]) == 0
    assert main(["index", "add", ix, "--input", str(tmp_path / "more.jsonl")]) == 2
    assert "read-only after the build" in capsys.readouterr().err
    assert main(["index", "info", ix]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["lists"]["file"] == "index.ivfdata" and info["n_docs"] == 1999 and info["n_tombstones"] == 1
    assert main(["index", "build", "--model", "m", "--input", str(tmp_path / "docs.jsonl"), "--out",
                 str(tmp_path / "hnsw"), "--factory", "HNSW32", "--on-disk"]) == 2
    assert "'HNSW32' has no inverted lists to keep on disk" in capsys.readouterr().err


@pytest.mark.parametrize("factory", ["IVF16,PQ8x4fs", "IVF16,PQ8x4fs,RFlat"])
def test_fast_scan_and_refined_factories_are_refused_before_any_work(factory):
    from textcl.index import ondisk as od

    with pytest.raises(ConfigError, match="an on-disk index needs plain inverted lists"):
        od.make_ivf(factory, 16)
