"""STS loaders: every local layout, the packaged STS-B, and bad input with file:line errors."""
import json

import numpy as np
import pytest

from textcl.data.sts import from_hf_dataset, load_sts, read_sts_file
from textcl.errors import DataFormatError, UnknownDatasetError


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def check_two_pairs(data):
    assert data.sentences1 == ["a cat sits", "dog"]
    assert data.sentences2 == ["a cat is sitting", "car"]
    np.testing.assert_array_equal(data.scores, [4.5, 0.25])


def test_headerless_three_column_tsv(tmp_path):
    check_two_pairs(read_sts_file(write(tmp_path, "p.tsv", "a cat sits\ta cat is sitting\t4.5\ndog\tcar\t0.25\n")))


def test_csv_with_header_and_quotes(tmp_path):
    path = write(tmp_path, "p.csv", 'score,sentence1,sentence2\n4.5,a cat sits,a cat is sitting\n0.25,dog,car\n')
    check_two_pairs(read_sts_file(path))


def test_tsv_with_header(tmp_path):
    path = write(tmp_path, "p.tsv", "sentence1\tsentence2\tscore\na cat sits\ta cat is sitting\t4.5\ndog\tcar\t0.25\n")
    check_two_pairs(read_sts_file(path))


def test_jsonl(tmp_path):
    rows = [{"sentence1": "a cat sits", "sentence2": "a cat is sitting", "score": 4.5},
            {"sentence1": "dog", "sentence2": "car", "score": 0.25}]
    check_two_pairs(read_sts_file(write(tmp_path, "p.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")))


def test_original_stsb_layout_with_extra_columns(tmp_path):
    text = ("main-captions\tMSRvid\t2012test\t0001\t4.5\ta cat sits\ta cat is sitting\n"
            "main-news\theadlines\t2015\t0002\t0.25\tdog\tcar\tsource-a\tsource-b\n")
    check_two_pairs(read_sts_file(write(tmp_path, "sts-x.csv", text)))


def test_packaged_stsb_is_the_genuine_benchmark():
    sizes = {name: len(load_sts(name)) for name in ("stsb-train", "stsb-dev", "stsb-test")}
    assert sizes == {"stsb-train": 5749, "stsb-dev": 1500, "stsb-test": 1379}
    test = load_sts("stsb-test")
    assert test.sentences1[0] == "A girl is styling her hair." and test.scores[0] == 2.5


def test_hub_dataset_scores_are_rescaled_to_0_5():
    from datasets import Dataset

    ds = Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": [0.5, 1.0]})
    data = from_hf_dataset(ds, "stsb-test", scale=5.0)
    np.testing.assert_allclose(data.scores, [2.5, 5.0])


def test_unknown_set_lists_known_names():
    with pytest.raises(UnknownDatasetError, match="unknown STS set 'stsb-tset'; known sets: stsb-train, stsb-dev, "
                                                  "stsb-test, sickr, sts12"):
        load_sts("stsb-tset")


@pytest.mark.parametrize("text, line, message", [
    ("a\tb\t1\nonly two\tfields\n", 2, "expected 3 tab-separated fields"),
    ("a\tb\t1\nc\td\thigh\n", 2, "score 'high' is not a number"),
    ("a\tb\t1\nc\td\t7.5\n", 2, r"score 7.5 is outside the data's range \[0, 5\]"),
    ("a\tb\t-1\n", 1, "outside the data's range"),
    ("a\tb\tnan\n", 1, "outside the data's range"),
])
def test_bad_rows_name_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, "bad.tsv", text)
    with pytest.raises(DataFormatError, match=message) as err:
        read_sts_file(path)
    assert str(err.value).startswith(f"{path}:{line}: ")


def test_stsb_row_missing_sentence(tmp_path):
    path = write(tmp_path, "sts.csv", "g\ts\t2012\t1\t3.0\ta\tb\ng\ts\t2012\t2\t3.0\ta\tb\nx\ty\tz\tw\t1\tq\n")
    with pytest.raises(DataFormatError, match=rf"{path}:3: expected at least 7 tab-separated fields"):
        read_sts_file(path)


def test_bad_json_line(tmp_path):
    path = write(tmp_path, "p.jsonl", '{"sentence1": "a", "sentence2": "b", "score": 1}\n{"sentence1": "a",\n')
    with pytest.raises(DataFormatError, match=rf"{path}:2: not valid JSON"):
        read_sts_file(path)


def test_jsonl_missing_field(tmp_path):
    path = write(tmp_path, "p.jsonl", '{"sentence1": "a", "score": 1}\n')
    with pytest.raises(DataFormatError, match=rf"{path}:1: missing field\(s\) sentence2"):
        read_sts_file(path)


def test_short_csv_row(tmp_path):
    path = write(tmp_path, "p.csv", "sentence1,sentence2,score\na,b,1\nc,d\n")
    with pytest.raises(DataFormatError, match=rf"{path}:3: expected 3 fields"):
        read_sts_file(path)


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.tsv", "\n\n")
    with pytest.raises(DataFormatError, match="the file is empty"):
        read_sts_file(path)


def test_unrecognised_layout(tmp_path):
    path = write(tmp_path, "x.tsv", "one\ttwo\n")
    with pytest.raises(DataFormatError, match=rf"{path}:1: unrecognised STS layout"):
        read_sts_file(path)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes(b"a\tb\t1\ncaf\xe9\tb\t2\n")
    with pytest.raises(DataFormatError, match=rf"{path}:2: not valid UTF-8"):
        read_sts_file(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        load_sts(tmp_path / "nope.tsv")
