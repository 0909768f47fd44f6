"""Each approximate FAISS factory reaches its recall@10 bound (vs exact search) on a small clustered set."""
from __future__ import annotations

import numpy as np
import pytest

from _index_fakes import clustered
from textcl.index import SearchIndex


@pytest.fixture(scope="module")
def data():
    x = clustered(5000, 32, 30, seed=0)
    rng = np.random.default_rng(1)
    q = x[rng.choice(len(x), 200, replace=False)] + 0.1 * rng.standard_normal((200, 32)).astype(np.float32)
    ids = [str(i) for i in range(len(x))]
    _, exact = SearchIndex.build(ids, ids, embeddings=x).search_vectors(q, 10)
    return x, q, ids, exact


# Bounds sit ~0.05 under the measured recall (HNSW 0.99, IVF 1.0, SQ8 0.96, IVF-SQ8 0.98, IVF-PQ4bit 0.53).
@pytest.mark.parametrize("factory, params, bound", [
    ("HNSW32", {"ef_search": 64}, 0.95),
    ("IVF32,Flat", {"nprobe": 4}, 0.95),
    ("SQ8", {}, 0.90),
    ("IVF32,SQ8", {"nprobe": 4}, 0.93),
    ("IVF32,PQ16x4", {"nprobe": 4}, 0.45),
])
def test_ann_factory_reaches_recall_bound(data, factory, params, bound):
    x, q, ids, exact = data
    index = SearchIndex.build(ids, ids, embeddings=x, factory=factory)
    _, got = index.search_vectors(q, 10, **params)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)])
    assert recall >= bound, f"{factory}: recall@10 {recall:.3f} < {bound}"


def test_nprobe_trades_recall_for_speed(data):
    x, q, ids, exact = data
    index = SearchIndex.build(ids, ids, embeddings=x, factory="IVF32,Flat")
    recalls = []
    for nprobe in (1, 32):
        _, got = index.search_vectors(q, 10, nprobe=nprobe)
        recalls.append(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)]))
    assert recalls[1] == 1.0 and recalls[0] < recalls[1]  # nprobe = nlist is exhaustive
