"""Ranking metrics with exactly the trec_eval / pytrec_eval definitions that BEIR reports.

Inputs are plain dicts: ``qrels[qid][doc_id] = grade`` (int) and ``run[qid][doc_id] = score`` (float).

Conventions (those of trec_eval, checked against pytrec_eval):

* **Order.** A run is ranked by score, descending; **ties are broken by document id, descending**
  (reverse string order), as trec_eval does. The order of the input dict never matters.
* **Relevant** means grade >= 1 for the binary metrics (recall, MRR, MAP); nDCG uses the grade itself as
  the gain (linear gain, not 2**grade - 1) with discount ``log2(rank + 1)``, and grades <= 0 gain nothing.
  Ideal DCG@k sorts all judged grades of the query (retrieved or not) and keeps the top k.
* **Recall@k** = relevant docs in the top k / all relevant docs in qrels.
  **MAP@k** = sum over relevant docs in the top k of precision at their rank, divided by *all* relevant docs
  in qrels (not by min(k, ...)). **MRR@k** = 1 / rank of the first relevant doc in the top k, else 0.
* **Queries with no relevant document** (in qrels but all grades 0) score 0 on every metric and count in
  the mean. **Queries absent from qrels are skipped** (pytrec_eval drops them); so are qrels queries with
  no run. The mean is over the queries that remain.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

METRICS = ("ndcg", "mrr", "recall", "map")


def ranked(doc_scores: Mapping[str, float]) -> list[str]:
    """Doc ids in trec_eval order: score descending, then doc id descending."""
    return [d for d, _ in sorted(doc_scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def ndcg_at_k(ranking: list[str], grades: Mapping[str, int], k: int) -> float:
    dcg = sum(max(grades.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranking: list[str], grades: Mapping[str, int], k: int) -> float:
    for i, d in enumerate(ranking[:k]):
        if grades.get(d, 0) >= 1:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranking: list[str], grades: Mapping[str, int], k: int) -> float:
    n_rel = sum(1 for g in grades.values() if g >= 1)
    if n_rel == 0:
        return 0.0
    return sum(1 for d in ranking[:k] if grades.get(d, 0) >= 1) / n_rel


def map_at_k(ranking: list[str], grades: Mapping[str, int], k: int) -> float:
    n_rel = sum(1 for g in grades.values() if g >= 1)
    if n_rel == 0:
        return 0.0
    hits, total = 0, 0.0
    for i, d in enumerate(ranking[:k]):
        if grades.get(d, 0) >= 1:
            hits += 1
            total += hits / (i + 1)
    return total / n_rel


_FUNCS = {"ndcg": ndcg_at_k, "mrr": mrr_at_k, "recall": recall_at_k, "map": map_at_k}


def per_query_metrics(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
                      k_values: Iterable[int] = (1, 10, 100)) -> dict[str, dict[str, float]]:
    """qid -> {"ndcg@10": ..., "mrr@10": ..., "recall@1": ..., "map@100": ...} for qids in both inputs."""
    ks = sorted(set(int(k) for k in k_values))
    out: dict[str, dict[str, float]] = {}
    for qid, doc_scores in run.items():
        if qid not in qrels:
            continue
        ranking = ranked(doc_scores)
        out[qid] = {f"{m}@{k}": _FUNCS[m](ranking, qrels[qid], k) for m in METRICS for k in ks}
    return out


def retrieval_metrics(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
                      k_values: Iterable[int] = (1, 10, 100)) -> dict[str, float]:
    """Mean of :func:`per_query_metrics` over the evaluated queries, plus ``n_queries``."""
    per_query = per_query_metrics(qrels, run, k_values)
    keys = [f"{m}@{k}" for m in METRICS for k in sorted(set(int(k) for k in k_values))]
    n = len(per_query)
    means = {key: (sum(q[key] for q in per_query.values()) / n if n else 0.0) for key in keys}
    means["n_queries"] = n
    return means
