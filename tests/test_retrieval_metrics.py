"""Retrieval metrics: hand-computed cases with the trec_eval / pytrec_eval conventions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from textcl.eval.retrieval_metrics import per_query_metrics, ranked, retrieval_metrics

L3 = math.log2(3)
# q1: graded qrels; ties at 0.5 between "a" (grade 2) and "b" (grade 1); "z" relevant but never retrieved.
QRELS = {"q1": {"a": 2, "b": 1, "c": 0, "z": 1}, "q2": {"x": 0}}
RUN = {"q1": {"a": 0.5, "b": 0.5, "c": 0.9, "d": 0.1}, "q2": {"x": 1.0, "y": 0.5}, "q3": {"a": 1.0}}


def test_ties_are_broken_by_doc_id_descending_like_trec_eval():
    assert ranked(RUN["q1"]) == ["c", "b", "a", "d"]
    assert ranked({"a": 1.0, "c": 1.0, "b": 1.0}) == ["c", "b", "a"]


def test_hand_computed_graded_case():
    m = per_query_metrics(QRELS, RUN, k_values=(1, 2, 10))["q1"]
    # ranking c(0) b(1) a(2) d(-); 3 relevant docs (a, b, z); ideal gains 2, 1, 1.
    assert m["ndcg@1"] == 0.0
    assert m["ndcg@2"] == pytest.approx((1 / L3) / (2 + 1 / L3))
    assert m["ndcg@10"] == pytest.approx((1 / L3 + 2 / 2) / (2 + 1 / L3 + 1 / 2))
    assert (m["mrr@1"], m["mrr@2"], m["mrr@10"]) == (0.0, 0.5, 0.5)
    assert (m["recall@1"], m["recall@2"], m["recall@10"]) == (0.0, pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert m["map@2"] == pytest.approx((1 / 2) / 3)  # divided by all 3 relevant, not by min(k, 3)
    assert m["map@10"] == pytest.approx((1 / 2 + 2 / 3) / 3)


def test_query_without_relevant_doc_scores_zero_and_counts_unjudged_query_is_skipped():
    per_q = per_query_metrics(QRELS, RUN, k_values=(10,))
    assert set(per_q) == {"q1", "q2"}  # q3 is not in qrels
    assert all(v == 0.0 for v in per_q["q2"].values())
    mean = retrieval_metrics(QRELS, RUN, k_values=(10,))
    assert mean["n_queries"] == 2
    assert mean["recall@10"] == pytest.approx((2 / 3 + 0) / 2)


def test_perfect_run_scores_one():
    qrels = {"q": {"a": 3, "b": 1}}
    m = retrieval_metrics(qrels, {"q": {"a": 0.9, "b": 0.8, "c": 0.1}}, k_values=(1, 10))
    assert m["ndcg@10"] == m["mrr@1"] == m["recall@10"] == m["map@10"] == 1.0
    assert m["recall@1"] == 0.5 and m["ndcg@1"] == 1.0


def test_agrees_with_pytrec_eval_on_random_runs_with_ties():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(40)]
    qrels = {f"q{i}": {d: int(rng.integers(0, 4)) for d in rng.choice(docs, 6, replace=False)} for i in range(30)}
    run = {q: {d: float(rng.integers(0, 5)) / 4 for d in rng.choice(docs, 25, replace=False)} for q in qrels}
    ours = per_query_metrics(qrels, run, k_values=(1, 10, 100))
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.1,10,100", "recall.1,10,100", "map_cut.10,100"})
    theirs = ev.evaluate(run)
    for q in qrels:
        for k in (1, 10, 100):
            assert ours[q][f"ndcg@{k}"] == pytest.approx(theirs[q][f"ndcg_cut_{k}"], abs=1e-9)
            assert ours[q][f"recall@{k}"] == pytest.approx(theirs[q][f"recall_{k}"], abs=1e-9)
        assert ours[q]["map@100"] == pytest.approx(theirs[q]["map_cut_100"], abs=1e-9)
        top10 = {d: s for d, s in run[q].items() if d in ranked(run[q])[:10]}
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate({q: top10})[q]["recip_rank"]
        assert ours[q]["mrr@10"] == pytest.approx(rr, abs=1e-9)
