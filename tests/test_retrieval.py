"""evaluate_retrieval and the index / eval CLI, end to end on small BEIR folders."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _index_fakes import HashEncoder
from test_beir import write_beir
from textcl.cli import main
from textcl.eval.retrieval import evaluate_retrieval
from textcl.versions import environment

CORPUS = [
    {"_id": "cat", "title": "Cat", "text": "the cat sat on the mat"},
    {"_id": "dog", "title": "", "text": "a dog chased the ball in the park"},
    {"_id": "stock", "title": "Markets", "text": "stock markets fell sharply today"},
    {"_id": "rain", "title": "", "text": "heavy rain and storms expected tomorrow"},
]
QUERIES = [{"_id": "q1", "text": "cat mat"}, {"_id": "q2", "text": "stock markets"}, {"_id": "q3", "text": "zzz"}]
QRELS = [("q1", "cat", 1), ("q2", "stock", 2), ("q2", "rain", 1), ("q3", "dog", 0)]


@pytest.fixture()
def beir(tmp_path):
    return write_beir(tmp_path / "beir", CORPUS, QUERIES, QRELS)


def test_evaluate_retrieval_hand_checked(beir):
    r = evaluate_retrieval(HashEncoder(), beir, k_values=(1, 10, 100))
    # q1 finds cat first; q2 finds stock first and rain (no shared words, score 0) somewhere in the top 4;
    # q3 has no relevant document: zeros that count in the mean over 3 queries.
    assert r["n_queries"] == 3 and r["n_docs"] == 4 and r["factory"] == "Flat"
    assert r["recall@1"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert r["recall@10"] == r["recall@100"] == pytest.approx(2 / 3)
    assert r["mrr@10"] == pytest.approx(2 / 3)
    assert "ann_recall@10" not in r


class AngleEncoder:
    """"angle 29.875" -> the unit vector at 29.875 degrees in the plane: cosine order is angular distance."""

    dim = 2

    def encode(self, texts, batch_size: int = 32):
        radians = np.deg2rad([float(t.split()[1]) for t in texts])
        return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_ann_factory_reports_recall_against_exact(tmp_path):
    """Two arcs of documents, A at 10..30 degrees and B at 50.6..70.6 (step 0.125): IVF2 puts each arc in its
    own list (centroids at 20 and 60.6). A query at 40 is nearer A's centroid (20 vs 20.6 degrees), so with
    nprobe 1 the index returns A's ten nearest (30, 29.875, ..., 28.875), where the exact top 10 is A's seven
    nearest (30 .. 29.25: 10 to 10.75 degrees away) and B's three (50.6, 50.725, 50.85: 10.6 to 10.85): 7 of 10.
    A query at 20 has its exact top 10 inside A: 10 of 10. The report's recall: (0.7 + 1.0) / 2."""
    angles = [10 + 0.125 * i for i in range(161)] + [50.6 + 0.125 * i for i in range(161)]
    corpus = [{"_id": f"{a:.3f}", "title": "", "text": f"angle {a}"} for a in angles]
    queries = [{"_id": "q40", "text": "angle 40"}, {"_id": "q20", "text": "angle 20"}]
    beir = write_beir(tmp_path / "arcs", corpus, queries, [("q40", "50.600", 1), ("q20", "20.000", 1)])
    r = evaluate_retrieval(AngleEncoder(), beir, factory="IVF2,Flat", nprobe=1)
    assert r["factory"] == "IVF2,Flat" and r["n_docs"] == 322
    assert r["ann_recall@10"] == pytest.approx((0.7 + 1.0) / 2)
    # the metrics are the approximate index's: q40's relevant document, in B, is not found
    assert r["recall@10"] == pytest.approx((0 + 1) / 2)
    exact = evaluate_retrieval(AngleEncoder(), beir)
    assert exact["recall@10"] == pytest.approx(1.0) and "ann_recall@10" not in exact
    r = evaluate_retrieval(AngleEncoder(), beir, factory="IVF2,Flat", nprobe=2)  # both lists: exact again
    assert r["ann_recall@10"] == pytest.approx(1.0) and r["recall@10"] == pytest.approx(1.0)


def test_cli_index_build_search_add_delete_info(tmp_path, tiny_bert_dir, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": c["_id"], "text": c["text"]}) + "\n" for c in CORPUS))
    out = tmp_path / "ix"
    assert main(["index", "build", "--model", str(tiny_bert_dir), "--input", str(docs), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["index", "search", str(out), "the cat sat on the mat", "-k", "9", "--json"]) == 0
    hits = {h["id"]: h for h in json.loads(capsys.readouterr().out)["hits"]}
    assert len(hits) == 4 and hits["cat"]["text"] == "the cat sat on the mat"
    assert hits["cat"]["score"] == pytest.approx(1.0, abs=1e-4)  # random tiny BERT: identical text, cosine 1
    more = tmp_path / "more.txt"
    more.write_text("a new line of text\n")
    assert main(["index", "add", str(out), "--input", str(more)]) == 0
    assert main(["index", "add", str(out), "--input", str(more)]) == 2  # duplicate id "1"
    assert "already in the index: '1'" in capsys.readouterr().err
    assert main(["index", "delete", str(out), "cat"]) == 0
    capsys.readouterr()
    assert main(["index", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_docs"] == 4 and info["model"] == str(tiny_bert_dir)
    assert main(["index", "search", str(out), "the cat sat on the mat", "-k", "10", "--json"]) == 0
    assert "cat" not in [h["id"] for h in json.loads(capsys.readouterr().out)["hits"]]


def test_cli_eval_retrieval_writes_json(beir, tmp_path, tiny_bert_dir):
    out = tmp_path / "m.json"
    assert main(["eval", "retrieval", "--model", str(tiny_bert_dir), "--data", str(beir), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    for key in ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["n_queries"] == 3
    assert metrics["versions"] == environment()


def test_cli_bad_input_is_a_clean_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n')
    assert main(["index", "build", "--model", "unused", "--input", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert main(["index", "search", str(tmp_path / "nothing"), "q"]) == 2
    err = capsys.readouterr().err
    assert "no such index folder" in err
