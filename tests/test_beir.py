"""BEIR folder and document readers: the layout, and bad lines reported with file and line."""
from __future__ import annotations

import json

import pytest

from textcl.data.beir import doc_text, load_beir
from textcl.errors import DataFormatError
from textcl.data.documents import read_documents, read_queries


def write_beir(root, corpus, queries, qrels, split="test"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels").mkdir(exist_ok=True)
    rows = "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows, encoding="utf-8")
    return root


@pytest.fixture()
def beir_dir(tmp_path):
    return write_beir(tmp_path / "beir",
                      [{"_id": "d1", "title": "Cats", "text": "Cats purr."}, {"_id": "d2", "title": "", "text": "Dogs bark."}],
                      [{"_id": "q1", "text": "what purrs"}, {"_id": "q2", "text": "unjudged query"}],
                      [("q1", "d1", 2), ("q1", "d2", 0)])


def test_load_beir_keeps_only_judged_queries(beir_dir):
    data = load_beir(beir_dir)
    assert data.corpus["d1"]["title"] == "Cats" and data.corpus["d2"]["text"] == "Dogs bark."
    assert data.queries == {"q1": "what purrs"}
    assert data.qrels == {"q1": {"d1": 2, "d2": 0}}


def test_doc_text_is_title_space_text_stripped():
    assert doc_text("Cats", "Cats purr.") == "Cats Cats purr."
    assert doc_text("", "Dogs bark.") == "Dogs bark."


def test_non_json_and_non_utf8_lines_name_file_and_line(beir_dir):
    with open(beir_dir / "corpus.jsonl", "ab") as fh:
        fh.write(b"{oops\n")
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:3: not valid JSON"):
        load_beir(beir_dir)
    (beir_dir / "corpus.jsonl").write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:2: not valid UTF-8"):
        load_beir(beir_dir)


def test_bad_qrels(beir_dir):
    (beir_dir / "qrels" / "test.tsv").write_text("q\td\ts\nq1\td1\t1\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:1: expected the header"):
        load_beir(beir_dir)
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:2: expected 3 tab-separated columns"):
        load_beir(beir_dir)
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq9\td1\t1\n")
    with pytest.raises(DataFormatError, match="not in queries.jsonl, e.g. 'q9'"):
        load_beir(beir_dir)
    with pytest.raises(FileNotFoundError, match=r"qrels/dev\.tsv: missing.*splits present: test"):
        load_beir(beir_dir, split="dev")


def test_missing_field(beir_dir):
    (beir_dir / "queries.jsonl").write_text('{"_id": "q1"}\n')
    with pytest.raises(DataFormatError, match=r"queries\.jsonl:1: missing field 'text'"):
        load_beir(beir_dir)


def test_read_documents_formats(tmp_path, beir_dir):
    (tmp_path / "d.jsonl").write_text('{"id": "a", "title": "T", "text": "x y", "lang": "en"}\n\n{"text": "z"}\n')
    assert [(d.id, d.text, d.metadata) for d in read_documents(tmp_path / "d.jsonl")] == [
        ("a", "T x y", {"title": "T", "lang": "en"}), ("3", "z", {})]
    (tmp_path / "d.txt").write_text("first doc\n\nsecond doc\n")
    assert [(d.id, d.text) for d in read_documents(tmp_path / "d.txt")] == [("1", "first doc"), ("3", "second doc")]
    (tmp_path / "d.csv").write_text('id,text,topic\nk1,"hello, world",greeting\n')
    assert [(d.id, d.text, d.metadata) for d in read_documents(tmp_path / "d.csv")] == [
        ("k1", "hello, world", {"topic": "greeting"})]
    assert [d.id for d in read_documents(beir_dir)] == ["d1", "d2"]
    assert read_queries("a literal query") == ["a literal query"]


def test_read_documents_bad_inputs(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: expected a JSON object"):
        list(read_documents(tmp_path / "bad.jsonl"))
    (tmp_path / "bad.txt").write_bytes(b"fine\n\xff\xfe\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:2: not valid UTF-8"):
        list(read_documents(tmp_path / "bad.txt"))
    (tmp_path / "bad.csv").write_text("id,body\n1,x\n")
    with pytest.raises(DataFormatError, match=r"bad\.csv:1: the header needs a 'text' column"):
        list(read_documents(tmp_path / "bad.csv"))
    (tmp_path / "bad.xml").write_text("<doc/>")
    with pytest.raises(DataFormatError, match=r"unknown document format .\.xml."):
        list(read_documents(tmp_path / "bad.xml"))
