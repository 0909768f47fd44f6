"""Retrieval evaluation on a BEIR folder: nDCG@10, MRR@10, Recall@1/10/100, MAP@100.

Documents are encoded as ``title + " " + text`` (stripped), queries as their text, both L2-normalised;
search is exact (``Flat``) by default. With an approximate factory the output also carries
``ann_recall@10``: the mean fraction of the exact top 10 that the approximate index returns.
Metric definitions (ties, queries without relevant documents) are in :mod:`textcl.eval.retrieval_metrics`.
"""
from __future__ import annotations

import os
import time
from typing import Any, Iterable

import numpy as np

from textcl.data.beir import BeirData, doc_text, load_beir
from textcl.eval.retrieval_metrics import per_query_metrics, retrieval_metrics
from textcl.index.encoding import encode_texts, encoder_name
from textcl.index.faiss_index import SearchIndex


def _run_from(index: SearchIndex, qids: list[str], qvecs: np.ndarray, k: int, ignore: bool,
              nprobe: int | None, ef_search: int | None) -> tuple[dict[str, dict[str, float]], list[list[str]]]:
    hits = index.search(qvecs, k + 1 if ignore else k, nprobe=nprobe, ef_search=ef_search)
    run: dict[str, dict[str, float]] = {}
    top: list[list[str]] = []
    for qid, row in zip(qids, hits):
        if ignore:  # BEIR drops a document whose id equals the query id (e.g. ArguAna, Quora)
            row = [h for h in row if h.id != qid]
        row = row[:k]
        run[qid] = {h.id: h.score for h in row}
        top.append([h.id for h in row])
    return run, top


def evaluate_retrieval(encoder, data: str | os.PathLike | BeirData, split: str = "test", factory: str = "Flat",
                       k_values: Iterable[int] = (1, 10, 100), batch_size: int = 64,
                       ignore_identical_ids: bool = True, nprobe: int | None = None,
                       ef_search: int | None = None, per_query: bool = False,
                       show_progress: bool = False) -> dict[str, Any]:
    """Evaluate ``encoder`` (anything with ``encode(list[str]) -> (n, d) array``) on a BEIR folder or
    :class:`~textcl.data.beir.BeirData`.

    Returns ``{"ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100", ...}`` for every k in
    ``k_values`` (values in [0, 1]), plus ``n_queries``, ``n_docs``, ``factory``, ``model``, ``seconds``; and
    ``ann_recall@10`` when ``factory`` is not ``Flat``; and ``per_query`` when asked.
    """
    t0 = time.perf_counter()
    beir = data if isinstance(data, BeirData) else load_beir(data, split)
    k_values = sorted(set(int(k) for k in k_values) | {10})
    k_max = max(k_values)
    doc_ids = list(beir.corpus)
    docs = [doc_text(beir.corpus[d].get("title") or "", beir.corpus[d]["text"]) for d in doc_ids]
    doc_vecs = encode_texts(encoder, docs, batch_size, show_progress)
    qids = list(beir.queries)
    qvecs = encode_texts(encoder, [beir.queries[q] for q in qids], batch_size)

    exact = SearchIndex.build(docs, doc_ids, embeddings=doc_vecs, factory="Flat")
    exact_run, exact_top = _run_from(exact, qids, qvecs, k_max, ignore_identical_ids, None, None)
    result: dict[str, Any] = {}
    run = exact_run
    if factory != "Flat":
        ann = SearchIndex.build(docs, doc_ids, embeddings=doc_vecs, factory=factory)
        factory = ann.factory  # "auto" resolved
        run, ann_top = _run_from(ann, qids, qvecs, k_max, ignore_identical_ids, nprobe, ef_search)
        overlaps = [len(set(a[:10]) & set(e[:10])) / len(e[:10]) for a, e in zip(ann_top, exact_top) if e]
        result["ann_recall@10"] = float(np.mean(overlaps)) if overlaps else 0.0
        ann.close()
    exact.close()
    result.update(retrieval_metrics(beir.qrels, run, k_values))
    result.update({"n_docs": len(doc_ids), "factory": factory, "split": split,
                   "model": encoder_name(encoder), "seconds": round(time.perf_counter() - t0, 3)})
    if per_query:
        result["per_query"] = per_query_metrics(beir.qrels, run, k_values)
    return result
