"""Full-ranking recommendation metrics: hand-computed ranks, metric values, bootstrap CIs, chunking, popularity."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from textcl.recommend.metrics import per_user_metrics, rank_of_target, ranking_metrics, score_users
from textcl.recommend.popularity import popularity_metrics, popularity_scores

L = math.log2

# 3 users x 5 items.
SCORES = torch.tensor([
    [0.9, 0.1, 0.5, 0.7, 0.3],  # target 2 (0.5): item 0 (0.9) is above but excluded, item 3 (0.7) above -> rank 1
    [0.2, 0.6, 0.6, 0.1, 0.8],  # target 1 (0.6): item 2 ties (counts above), item 4 (0.8) above     -> rank 2
    [0.4, 0.3, 0.2, 0.1, 0.0],  # target 0 (top): listed in exclude itself, which is ignored          -> rank 0
])
TARGETS = torch.tensor([2, 1, 0])
EXCLUDE = [torch.tensor([0]), torch.tensor([], dtype=torch.long), torch.tensor([0, 1])]


def test_hand_computed_ranks_exclusion_tie_and_target_never_excluded():
    assert rank_of_target(SCORES, TARGETS, EXCLUDE).tolist() == [1, 2, 0]
    # without exclusion user 0's target drops below item 0 too
    assert rank_of_target(SCORES, TARGETS).tolist() == [2, 2, 0]
    # a list of plain ints works, and a (U, I) bool mask means the same
    assert rank_of_target(SCORES, TARGETS, [[0], [], [0, 1]]).tolist() == [1, 2, 0]
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 0] = mask[2, 0] = mask[2, 1] = True
    assert rank_of_target(SCORES, TARGETS, mask).tolist() == [1, 2, 0]


def test_ties_are_pessimistic_so_constant_scores_rank_last():
    scores = torch.zeros(2, 5)
    assert rank_of_target(scores, torch.tensor([0, 3]), [[1], []]).tolist() == [3, 4]
    m = ranking_metrics(rank_of_target(torch.zeros(4, 20), torch.tensor([0, 5, 10, 19])), k=10)
    assert m["recall@10"] == m["ndcg@10"] == m["mrr@10"] == 0.0


def test_nan_scores_count_as_lowest():
    nan = float("nan")
    scores = torch.tensor([[nan, 0.5, nan, 0.1], [0.3, nan, 0.2, 0.1], [nan, nan, nan, nan]])
    # user 0: target NaN is tied with item 2's NaN and below the rest; user 1: NaN item 1 ranks below; user 2: worst
    assert rank_of_target(scores, torch.tensor([0, 2, 3])).tolist() == [3, 1, 3]


def test_hand_computed_metrics_of_the_3x5_case():
    ranks = rank_of_target(SCORES, TARGETS, EXCLUDE)
    m = ranking_metrics(ranks, k=10)
    assert m["n_users"] == 3 and "ci95" not in m
    assert m["recall@10"] == pytest.approx(1.0, abs=1e-9)
    assert m["ndcg@10"] == pytest.approx((1 / L(3) + 0.5 + 1.0) / 3, abs=1e-9)
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1 / 3 + 1.0) / 3, abs=1e-9)
    m2 = ranking_metrics(ranks, k=2)  # rank 2 falls out of the top 2
    assert m2["recall@2"] == pytest.approx(2 / 3, abs=1e-9)
    assert m2["ndcg@2"] == pytest.approx((1 / L(3) + 1.0) / 3, abs=1e-9)
    assert m2["mrr@2"] == pytest.approx((1 / 2 + 1.0) / 3, abs=1e-9)


@pytest.mark.parametrize("rank, ndcg, mrr", [(0, 1.0, 1.0), (1, 1 / L(3), 0.5), (2, 0.5, 1 / 3),
                                             (9, 1 / L(11), 0.1), (10, 0.0, 0.0)])
def test_single_rank_values(rank, ndcg, mrr):
    m = ranking_metrics(torch.tensor([rank]), k=10)
    assert m["ndcg@10"] == pytest.approx(ndcg, abs=1e-9)
    assert m["mrr@10"] == pytest.approx(mrr, abs=1e-9)
    assert m["recall@10"] == (1.0 if rank < 10 else 0.0)


def test_target_ranked_10th_is_a_hit_and_11th_is_not():
    scores = -torch.arange(20, dtype=torch.float32).repeat(2, 1)  # item j has the j-th highest score
    ranks = rank_of_target(scores, torch.tensor([9, 10]))
    assert ranks.tolist() == [9, 10]
    per_user = per_user_metrics(ranks, k=10)
    assert per_user["recall@10"].tolist() == [1.0, 0.0]
    assert per_user["ndcg@10"][0] == pytest.approx(1 / L(11), abs=1e-9) and per_user["ndcg@10"][1] == 0.0
    assert per_user["mrr@10"].tolist() == pytest.approx([0.1, 0.0], abs=1e-9)
    # excluding one item above the 11th-ranked target lifts it into the top 10
    assert rank_of_target(scores, torch.tensor([9, 10]), [[], [3]]).tolist() == [9, 9]


def test_bootstrap_ci_contains_point_and_is_reproducible():
    ranks = torch.tensor([0, 1, 2, 3, 5, 8, 12, 40, 0, 2, 15, 1])
    a = ranking_metrics(ranks, k=10, n_bootstrap=300, seed=7)
    b = ranking_metrics(ranks, k=10, n_bootstrap=300, seed=7)
    c = ranking_metrics(ranks, k=10, n_bootstrap=300, seed=8)
    assert a == b
    assert a["ci95"] != c["ci95"]
    assert set(a["ci95"]) == {"recall@10", "ndcg@10", "mrr@10"}
    for name, (low, high) in a["ci95"].items():
        assert 0.0 <= low <= a[name] <= high <= 1.0
        assert low < high
    # every user alike: the interval collapses onto the value
    same = ranking_metrics(torch.zeros(5, dtype=torch.long), n_bootstrap=50)
    assert same["ci95"]["ndcg@10"] == [1.0, 1.0]


def _brute_force_ranks(scores, targets, exclude):
    out = []
    for u, t in enumerate(targets.tolist()):
        ex = set(exclude[u].tolist()) - {t}
        out.append(sum(1 for j in range(scores.shape[1]) if j != t and j not in ex and scores[u, j] >= scores[u, t]))
    return out


def test_chunked_ranks_equal_unchunked_and_brute_force():
    g = torch.Generator().manual_seed(0)
    n_users, n_items = 37, 50
    scores = torch.round(torch.rand(n_users, n_items, generator=g) * 10) / 10  # coarse: many ties
    targets = torch.randint(0, n_items, (n_users,), generator=g)
    exclude = [torch.randperm(n_items, generator=g)[: int(torch.randint(0, 10, (1,), generator=g))]
               for _ in range(n_users)]
    full = rank_of_target(scores, targets, exclude, chunk_size=n_users)
    assert full.tolist() == _brute_force_ranks(scores, targets, exclude)
    for chunk in (1, 4, 7, None, 1000):
        assert torch.equal(rank_of_target(scores, targets, exclude, chunk_size=chunk), full)
    mask = torch.zeros(n_users, n_items, dtype=torch.bool)
    for u, idx in enumerate(exclude):
        mask[u, idx] = True
    assert torch.equal(rank_of_target(scores, targets, mask, chunk_size=5), full)


def test_score_users_is_dot_product_and_cosine_when_normalised():
    users = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    assert torch.allclose(score_users(users, items), torch.tensor([[3.0, 8.0, 7.0], [1.0, 0.0, 1.0]]))
    cos = score_users(users, items, normalize=True)
    assert torch.allclose(cos, torch.tensor([[0.6, 0.8, 7 / (5 * math.sqrt(2))], [1.0, 0.0, 1 / math.sqrt(2)]]))


def test_popularity_on_a_hand_made_log():
    log = ["a", "b", "a", "c", "b", "a", "d", "c"]  # a: 3, b: 2, c: 2, d: 1, e: never
    counts = Counter(log)
    items = ["a", "b", "c", "d", "e"]
    assert popularity_scores(counts, items).tolist() == [3.0, 2.0, 2.0, 1.0, 0.0]
    targets = {"u1": "c", "u2": "d", "u3": "e"}
    seen = {"u1": ["a"],  # left: b (2, tie: above), c (2), d, e -> rank 1
            "u2": ["d", "b"],  # the target d is never excluded; b is: a and c above -> rank 2
            "u3": []}  # e has count 0: every other item ties or beats it -> rank 4
    m = popularity_metrics(counts, items, targets, seen, k=10)
    assert m["n_users"] == 3
    assert m["recall@10"] == pytest.approx(1.0, abs=1e-9)
    assert m["ndcg@10"] == pytest.approx((1 / L(3) + 1 / L(4) + 1 / L(6)) / 3, abs=1e-9)
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 5) / 3, abs=1e-9)
    m2 = popularity_metrics(counts, items, targets, seen, k=2)
    assert m2["recall@2"] == pytest.approx(1 / 3, abs=1e-9)
    boot = popularity_metrics(counts, items, targets, seen, n_bootstrap=100, seed=1)
    assert boot == popularity_metrics(counts, items, targets, seen, n_bootstrap=100, seed=1)
    assert boot["ci95"]["ndcg@10"][0] <= boot["ndcg@10"] <= boot["ci95"]["ndcg@10"][1]


def test_popularity_bad_input_names_the_argument():
    counts, items = {"a": 1}, ["a", "b"]
    with pytest.raises(ValueError, match=r"targets_by_user\['u'\]: item 'z' is not in items"):
        popularity_metrics(counts, items, {"u": "z"}, {"u": []})
    with pytest.raises(ValueError, match=r"seen_by_user\['u'\]: item 'q'"):
        popularity_metrics(counts, items, {"u": "a"}, {"u": ["q"]})
    with pytest.raises(ValueError, match="seen_by_user: no entry for user 'u'"):
        popularity_metrics(counts, items, {"u": "a"}, {})
    with pytest.raises(ValueError, match="items: expected distinct"):
        popularity_metrics(counts, ["a", "a"], {"u": "a"}, {"u": []})


def test_bad_input_raises_value_error_naming_argument_and_shape():
    with pytest.raises(ValueError, match=r"scores: expected a 2-D \(U, I\) tensor.*got shape \(5,\)"):
        rank_of_target(torch.zeros(5), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"targets: expected item indices in \[0, I\) = \[0, 5\), got 5 for user 1"):
        rank_of_target(SCORES, torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match=r"targets: expected item indices in \[0, I\) = \[0, 5\), got -1"):
        rank_of_target(SCORES, torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match=r"targets: expected a \(U,\) = \(3,\) tensor.*got shape \(2,\)"):
        rank_of_target(SCORES, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="targets: expected an integer"):
        rank_of_target(SCORES, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"exclude: expected a list of U = 3 .*got 2 entries"):
        rank_of_target(SCORES, TARGETS, [[0], [1]])
    with pytest.raises(ValueError, match=r"exclude: expected a \(U, I\) = \(3, 5\) bool mask.*shape \(3, 4\)"):
        rank_of_target(SCORES, TARGETS, torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"exclude\[1\]: expected item indices in \[0, I\) = \[0, 5\), got 7"):
        rank_of_target(SCORES, TARGETS, [[0], [7], []])
    with pytest.raises(ValueError, match="chunk_size"):
        rank_of_target(SCORES, TARGETS, chunk_size=0)
    with pytest.raises(ValueError, match=r"ranks: expected a non-empty \(U,\)"):
        ranking_metrics(torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"ranks: expected a non-empty \(U,\)"):
        ranking_metrics(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="ranks: expected non-negative integer"):
        ranking_metrics(np.array([0, -1]))
    with pytest.raises(ValueError, match="k: expected a cutoff"):
        ranking_metrics(torch.tensor([0]), k=0)
    with pytest.raises(ValueError, match=r"item_vecs: expected a 2-D \(I, d\) tensor with d = 2"):
        score_users(torch.zeros(3, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"user_vecs: expected a 2-D \(U, d\)"):
        score_users(torch.zeros(2), torch.zeros(4, 2))
