"""evaluate_sts: the report schema, unique encoding, and the CLI's JSON output."""
import json

import numpy as np
import pytest

from textcl.cli import main
from textcl.data.sts import STSData
from textcl.eval.sts import compare_sts, evaluate_sts


class CountingEncoder:
    """Embeds 'word count' texts as [len(words), 1]; records every text it was asked to encode."""

    name = "counting"

    def __init__(self):
        self.calls = []

    def encode(self, texts, **kwargs):
        self.calls.append(list(texts))
        return np.array([[len(t.split()), 1.0] for t in texts], dtype=np.float32)


def make_set(name="toy"):
    s1 = ["a", "a b", "a b c", "a"]
    s2 = ["a b c d", "a b", "a", "a"]
    return STSData(name, s1, s2, np.array([1.0, 4.0, 2.0, 5.0]))


def test_each_unique_sentence_is_encoded_once():
    enc = CountingEncoder()
    evaluate_sts(enc, [make_set("x"), make_set("y")], n_bootstrap=0)
    assert len(enc.calls) == 1
    assert sorted(enc.calls[0]) == ["a", "a b", "a b c", "a b c d"]


def test_report_schema_and_values():
    report = evaluate_sts(CountingEncoder(), [make_set("x"), make_set("y")], n_bootstrap=50)
    assert set(report) == {"model", "similarity", "sets", "all"}
    assert set(report["sets"]) == {"x", "y"}
    for m in [*report["sets"].values(), report["all"]]:
        assert set(m) == {"spearman", "pearson", "n", "ci95"} and len(m["ci95"]) == 2
    assert report["sets"]["x"]["n"] == 4 and report["all"]["n"] == 8
    # cosine of [w1, 1] and [w2, 1]: pairs (1,4), (2,2), (3,1), (1,1) -> 0.857, 1.0, 0.894, 1.0
    # prediction ranks [1, 3.5, 2, 3.5] vs gold ranks [1, 3, 2, 4]: centred dot 4.5, variances 4.5 and 5
    assert report["sets"]["x"]["spearman"] == pytest.approx(100 * 4.5 / np.sqrt(4.5 * 5.0))


def test_dot_similarity_differs_from_cosine():
    cos = evaluate_sts(CountingEncoder(), make_set(), n_bootstrap=0)["sets"]["toy"]["spearman"]
    dot = evaluate_sts(CountingEncoder(), make_set(), similarity="dot", n_bootstrap=0)["sets"]["toy"]["spearman"]
    assert cos != dot


def test_unknown_similarity():
    with pytest.raises(ValueError, match="similarity must be one of cosine, dot, euclidean, manhattan"):
        evaluate_sts(CountingEncoder(), make_set(), similarity="l2")


def test_compare_reports_difference_and_p_value():
    report = compare_sts(CountingEncoder(), CountingEncoder(), make_set(), n_bootstrap=20)
    m = report["sets"]["toy"]
    assert m["diff"] == 0 and m["p_value"] == 1.0 and m["spearman_a"] == m["spearman_b"]


def test_cli_writes_the_json_schema(tiny_bert_dir, tmp_path, capsys):
    data = tmp_path / "pairs.tsv"
    data.write_text("a cat sits\ta cat is sitting\t4.5\ndog\tcar\t0.5\nthe man\ta man\t4.0\nsun\tmoon\t1.0\n")
    out = tmp_path / "out" / "m.json"
    assert main(["eval", "sts", "--model", str(tiny_bert_dir), "--data", str(data), "--json", str(out),
                 "--bootstrap", "100"]) == 0
    report = json.loads(out.read_text())
    assert set(report["sets"]["pairs"]) == {"spearman", "pearson", "n", "ci95"}
    assert report["sets"]["pairs"]["n"] == 4
    assert "spearman" in capsys.readouterr().out


def test_cli_bad_data_exits_2_with_file_and_line(tiny_bert_dir, tmp_path, capsys):
    data = tmp_path / "bad.tsv"
    data.write_text("a\tb\t1\nc\td\tx\n")
    assert main(["eval", "sts", "--model", str(tiny_bert_dir), "--data", str(data)]) == 2
    assert f"{data}:2: score 'x' is not a number" in capsys.readouterr().err


def test_cli_encode_writes_npy(tiny_bert_dir, tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("first text\n\nsecond text\n")
    out = tmp_path / "e.npy"
    assert main(["encode", "--model", str(tiny_bert_dir), "--input", str(src), "--out", str(out)]) == 0
    arr = np.load(out)
    assert arr.shape == (2, 32) and arr.dtype == np.float32


def test_json_has_null_ci_without_bootstrap_and_no_nan(tiny_bert_dir, tmp_path):
    data = tmp_path / "one.tsv"
    data.write_text("a cat\ta cat\t5.0\n")  # a single pair: Spearman is undefined (NaN)
    out = tmp_path / "m.json"
    assert main(["eval", "sts", "--model", str(tiny_bert_dir), "--data", str(data), "--json", str(out),
                 "--bootstrap", "0"]) == 0
    text = out.read_text()
    assert "NaN" not in text
    report = json.loads(text)
    assert report["sets"]["one"]["ci95"] is None and report["sets"]["one"]["spearman"] is None
