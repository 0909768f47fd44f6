"""Bad input on the command line, each with its exact message: unwritable output paths (checked before any
work: the model named here does not exist, so a later check would fail on the model instead), empty search
queries, and ``textcl --version``."""
from __future__ import annotations

import os
from importlib import metadata

import pytest

import textcl
from textcl.cli import main
from textcl.versions import environment


@pytest.fixture()
def cwd(tmp_path, monkeypatch):
    """cwd = tmp_path with a folder ``adir``, a file ``file.txt``, an input ``in.txt``, a recipe ``r.yaml``
    and a folder ``ro`` that os.access calls read-only (as ``chmod 555`` would for anyone but root)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "ro").mkdir()
    (tmp_path / "file.txt").write_text("x\n")
    (tmp_path / "in.txt").write_text("a sentence\n")
    (tmp_path / "r.yaml").write_text("train:\n  batch_size: 4\n")
    (tmp_path / "r-file-out.yaml").write_text("output_dir: file.txt\ntrain:\n  batch_size: 4\n")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == "ro" else real_access(p, mode))
    return tmp_path


BAD_OUTPUTS = [
    (["eval", "sts", "--model", "no-model", "--data", "stsb-test", "--json", "adir"],
     "--json adir: is a folder; give a file name"),
    (["eval", "sts", "--model", "no-model", "--data", "stsb-test", "--json", "ro/m.json"],
     "--json ro/m.json: the folder ro is not writable"),
    (["eval", "retrieval", "--model", "no-model", "--data", "no-beir", "--json", "file.txt/m.json"],
     "--json file.txt/m.json: file.txt is a file, not a folder"),
    (["encode", "--model", "no-model", "--input", "in.txt", "--out", "adir"],
     "--out adir: is a folder; give a file name"),
    (["encode", "--model", "no-model", "--input", "in.txt", "--out", "out/"],
     "--out out/: ends with a slash; give a file name"),
    (["mine", "--model", "no-model", "--pairs", "no-pairs.jsonl", "--out", "ro/t.jsonl"],
     "--out ro/t.jsonl: the folder ro is not writable"),
    (["index", "build", "--model", "no-model", "--input", "in.txt", "--out", "file.txt"],
     "--out file.txt: is a file, not a folder"),
    (["index", "add", "ro", "--input", "in.txt"], "index ro: the folder ro is not writable"),
    (["index", "delete", "ro/ix", "some-id"], "index ro/ix: the folder ro is not writable"),
    (["augment", "backtranslate", "--input", "in.txt", "--via", "de", "--out", "adir"],
     "--out adir: is a folder; give a file name"),
    (["augment", "backtranslate", "--input", "in.txt", "--via", "de", "--out", "p.txt", "--cache", "adir"],
     "--cache adir: is a folder; give a file name"),
    (["train", "r.yaml", "--out", "file.txt"], "--out file.txt: is a file, not a folder"),
    (["train", "r-file-out.yaml"], "r-file-out.yaml: output_dir file.txt: is a file, not a folder"),
]


@pytest.mark.parametrize("argv, message", BAD_OUTPUTS, ids=[" ".join(a[:2]) + " " + a[-1] for a, _ in BAD_OUTPUTS])
def test_an_unwritable_output_fails_before_the_work(cwd, capsys, argv, message):
    assert main(argv) == 2
    assert capsys.readouterr().err == f"textcl: error: {message}\n"


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_index_search_refuses_an_empty_query(cwd, capsys, query):
    assert main(["index", "search", "no-index", query]) == 2
    assert capsys.readouterr().err == ("textcl: error: the query is empty (or only whitespace): give some text, "
                                       "or a file of queries\n")


def test_index_search_refuses_a_query_file_with_an_empty_query_or_none(cwd, capsys):
    (cwd / "q.jsonl").write_text('{"text": "a real question"}\n{"text": "  "}\n')
    assert main(["index", "search", "no-index", "q.jsonl"]) == 2
    assert capsys.readouterr().err == "textcl: error: q.jsonl:2: the query text is empty (or only whitespace)\n"
    (cwd / "q.txt").write_text("\n  \n")
    assert main(["index", "search", "no-index", "q.txt"]) == 2
    assert capsys.readouterr().err == "textcl: error: q.txt: no queries: the file holds no non-blank line\n"


def test_version_prints_textcl_and_its_libraries(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    versions = environment()
    assert lines[0] == f"textcl {textcl.__version__}"
    assert [line.split(maxsplit=1) for line in lines[1:]] == [
        [name, version or "not installed"] for name, version in versions.items() if name != "textcl"]
    assert list(versions) == ["textcl", "python", "torch", "transformers", "sentence-transformers", "faiss"]


def test_environment_gives_none_for_a_missing_library(monkeypatch):
    import textcl.versions

    def version(name):
        if name.startswith("faiss"):
            raise metadata.PackageNotFoundError(name)
        return "9.9"

    monkeypatch.setattr(textcl.versions.metadata, "version", version)
    assert environment() == {"textcl": textcl.__version__, "python": environment()["python"], "torch": "9.9",
                             "transformers": "9.9", "sentence-transformers": "9.9", "faiss": None}
