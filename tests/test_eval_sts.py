"""evaluate_sts: the report schema, unique encoding, undefined correlations, and the CLI's JSON output."""
import json

import numpy as np
import pytest

from textcl.cli import main
from textcl.data.sts import STSData
from textcl.eval.sts import compare_sts, evaluate_sts, format_sts_table
from textcl.versions import environment


class CountingEncoder:
    """Embeds 'word count' texts as [len(words), 1]; records every text it was asked to encode."""

    name = "counting"

    def __init__(self):
        self.calls = []

    def encode(self, texts, **kwargs):
        self.calls.append(list(texts))
        return np.array([[len(t.split()), 1.0] for t in texts], dtype=np.float32)


class ConstantEncoder:
    """Embeds every text as [1, 0]: every cosine is exactly 1.0."""

    name = "constant"

    def encode(self, texts, **kwargs):
        return np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (len(texts), 1))


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


def test_all_is_the_spearman_of_the_concatenated_pairs():
    """SentEval's "all" over three sets of different sizes and gold scales: scipy's Spearman of every pair's
    gold score against its cosine, computed here by hand, not the mean (or any weighting) of the sets'."""
    from fractions import Fraction

    from scipy.stats import spearmanr

    sets = [make_set("x"),
            STSData("y", ["a b c d e", "a", "a b", "a b c d", "a b c"], ["a", "a b c", "a b c d e f", "a b", "a b c"],
                    np.array([0.1, 0.9, 0.3, 0.2, 0.5])),
            STSData("z", ["a b", "a b c d e f"], ["a b c", "a"], np.array([3.0, 2.5]))]
    report = evaluate_sts(CountingEncoder(), sets, n_bootstrap=0)

    def squared_cosine(s1, s2):  # exact, so that equal cosines tie as they must; same ranks as the cosine (> 0)
        m, n = len(s1.split()), len(s2.split())
        return float(Fraction((m * n + 1) ** 2, (m * m + 1) * (n * n + 1)))

    gold = np.concatenate([d.scores for d in sets])
    pred = [squared_cosine(a, b) for d in sets for a, b in zip(d.sentences1, d.sentences2)]
    assert pred.count(1.0) == 3  # three pairs of equal texts tie at cosine 1
    expected = 100 * spearmanr(gold, pred).statistic
    assert report["all"]["spearman"] == pytest.approx(expected, rel=1e-9) and report["all"]["n"] == 11
    per_set = [report["sets"][d.name]["spearman"] for d in sets]
    assert abs(expected - np.mean(per_set)) > 5  # the mean of the sets' would be caught
    assert abs(expected - np.average(per_set, weights=[len(d.scores) for d in sets])) > 5


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
    assert format_sts_table(report).splitlines()[-1].split() == [
        "toy", "4", "94.87", "94.87", "+0.00", "[0.00,", "0.00]", "1.000"]


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


# x: Spearman of make_set() under CountingEncoder and cosine (see test_report_schema_and_values)
X_SPEARMAN = 100 * 4.5 / np.sqrt(4.5 * 5.0)
EQUAL_GOLD = STSData("same", ["a", "a b", "a b c"], ["a", "a", "a"], np.array([3.0, 3.0, 3.0]))
# the same pair twice: cos([2, 1], [1, 1]) = 3 / sqrt(10) = 0.9486833 for both
EQUAL_PRED = STSData("twice", ["a b", "a b"], ["a", "a"], np.array([1.0, 4.0]))


def test_undefined_sets_are_nan_with_a_reason_and_left_out_of_all():
    report = evaluate_sts(CountingEncoder(), [make_set("x"), EQUAL_GOLD, EQUAL_PRED], n_bootstrap=20)
    same, twice = report["sets"]["same"], report["sets"]["twice"]
    assert same["undefined"] == "all 3 gold scores are equal (3.0)" and same["n"] == 3
    assert twice["undefined"] == "all 2 predicted similarities are equal (0.948683)"
    for m in (same, twice):
        assert np.isnan(m["spearman"]) and np.isnan(m["pearson"]) and m["ci95"] is None
    assert set(report["sets"]["x"]) == {"spearman", "pearson", "n", "ci95"}
    everything = report["all"]  # the pairs of x alone
    assert everything["excluded"] == ["same", "twice"] and everything["n"] == 4
    assert everything["spearman"] == pytest.approx(X_SPEARMAN) == report["sets"]["x"]["spearman"]
    assert format_sts_table(report).splitlines()[-3:] == [
        "same: the correlation is undefined: all 3 gold scores are equal (3.0)",
        "twice: the correlation is undefined: all 2 predicted similarities are equal (0.948683)",
        "all: same, twice excluded (undefined correlation)",
    ]
    row = next(line for line in format_sts_table(report).splitlines() if line.startswith("same "))
    assert row.split() == ["same", "3", "undefined", "undefined", "-"]


def test_all_is_undefined_when_every_set_is():
    report = evaluate_sts(CountingEncoder(), [EQUAL_GOLD, EQUAL_PRED], n_bootstrap=0)
    assert report["all"]["undefined"] == "no set has a defined correlation" and report["all"]["n"] == 0
    assert report["all"]["excluded"] == ["same", "twice"] and np.isnan(report["all"]["spearman"])


def test_compare_names_the_model_whose_predictions_are_constant():
    report = compare_sts(CountingEncoder(), ConstantEncoder(), [make_set("x"), EQUAL_GOLD], n_bootstrap=20)
    x = report["sets"]["x"]
    assert x["undefined"] == "model B: all 4 predicted similarities are equal (1.0)"
    assert x["spearman_a"] == pytest.approx(X_SPEARMAN) and np.isnan(x["spearman_b"]) and x["ci95"] is None
    assert np.isnan(x["diff"]) and np.isnan(x["p_value"])
    assert report["sets"]["same"]["undefined"] == "all 3 gold scores are equal (3.0)"
    assert report["all"]["excluded"] == ["x", "same"] and report["all"]["n"] == 0
    assert "x: the correlation is undefined: model B: all 4 predicted similarities are equal (1.0)" in \
        format_sts_table(report)


def test_cli_reports_an_undefined_set_excludes_it_from_all_and_writes_null(tiny_bert_dir, tmp_path, capsys):
    good = tmp_path / "pairs.tsv"
    good.write_text("a cat sits\ta cat is sitting\t4.5\ndog\tcar\t0.5\nthe man\ta man\t4.0\nsun\tmoon\t1.0\n")
    one = tmp_path / "one.tsv"
    one.write_text("a cat\ta cat\t5.0\n")
    out = tmp_path / "m.json"
    assert main(["eval", "sts", "--model", str(tiny_bert_dir), "--data", str(good), "--data", str(one),
                 "--json", str(out), "--bootstrap", "0"]) == 0
    printed = capsys.readouterr().out
    assert "one: the correlation is undefined: only 1 pair" in printed
    assert "all: one excluded (undefined correlation)" in printed
    text = out.read_text()
    assert "NaN" not in text
    report = json.loads(text)
    assert report["sets"]["one"] == {"spearman": None, "pearson": None, "n": 1, "ci95": None,
                                     "undefined": "only 1 pair"}
    assert report["all"]["excluded"] == ["one"] and report["all"]["n"] == 4
    assert report["all"]["spearman"] == report["sets"]["pairs"]["spearman"]
    assert report["versions"] == environment()


def test_cli_every_gold_set_undefined_fails_before_loading_the_model(tmp_path, capsys):
    one = tmp_path / "one.tsv"
    one.write_text("a cat\ta cat\t5.0\n")
    same = tmp_path / "same.tsv"
    same.write_text("a\tb\t2.5\nc\td\t2.5\ne\tf\t2.5\n")
    out = tmp_path / "m.json"
    argv = ["eval", "sts", "--model", str(tmp_path / "no-such-model"), "--data", str(one), "--data", str(same),
            "--json", str(out)]
    assert main(argv) == 2
    assert capsys.readouterr().err == ("textcl: error: the correlation is undefined for every set: one: only 1 pair; "
                                       "same: all 3 gold scores are equal (2.5)\n")
    assert not out.exists()


def test_cli_constant_predictions_everywhere_exit_2_after_writing_the_json(tmp_path, capsys, monkeypatch):
    from textcl.models import Encoder

    monkeypatch.setattr(Encoder, "load", lambda *args, **kwargs: ConstantEncoder())
    data = tmp_path / "pairs.tsv"
    data.write_text("a\tb\t1.0\nc\td\t2.0\ne\tf\t4.0\n")
    out = tmp_path / "m.json"
    assert main(["eval", "sts", "--model", "any", "--data", str(data), "--json", str(out)]) == 2
    captured = capsys.readouterr()
    assert "pairs: the correlation is undefined: all 3 predicted similarities are equal (1.0)" in captured.out
    assert captured.err == ("textcl: error: the correlation is undefined for every set: pairs: all 3 predicted "
                            "similarities are equal (1.0)\n")
    assert json.loads(out.read_text())["sets"]["pairs"]["spearman"] is None
