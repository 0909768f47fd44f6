"""Spearman, Pearson and bootstrap statistics on hand-computable cases."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from textcl.eval.stats import bootstrap_ci, paired_bootstrap, paired_mean_bootstrap, pearson, spearman, undefined_reason


def test_spearman_hand_case():
    # ranks differ by one swap: d^2 sums to 2, so rho = 1 - 6*2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_pearson_hand_case():
    # x centred: [-1, 0, 1], y centred: [-2, 0, 2] -> perfectly correlated; y flipped -> -1
    assert pearson([1, 2, 3], [0, 2, 4]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [4, 2, 0]) == pytest.approx(-1.0)
    # x = [0, 1, 2], y = [0, 2, 1]: cov = 0.5*... -> r = 0.5
    assert pearson([0, 1, 2], [0, 2, 1]) == pytest.approx(0.5)


def test_spearman_ties_use_average_ranks():
    gold, pred = [1, 2, 2, 3], [1, 2, 3, 4]
    assert spearman(gold, pred) == pytest.approx(spearmanr(gold, pred).statistic)
    # ranks of gold are [1, 2.5, 2.5, 4]: pearson with [1, 2, 3, 4] = 4.5 / sqrt(4.5 * 5)
    assert spearman(gold, pred) == pytest.approx(4.5 / np.sqrt(4.5 * 5.0))


def test_ci_of_a_perfectly_monotone_relation_is_a_point():
    x = np.arange(50.0)
    assert bootstrap_ci(x, x ** 3) == (pytest.approx(1.0), pytest.approx(1.0))


def test_ci_is_seeded_contains_the_estimate_and_narrows_with_n():
    rng = np.random.default_rng(1)
    gold = rng.normal(size=2000)
    pred = gold + rng.normal(size=2000)
    small = bootstrap_ci(gold[:200], pred[:200], seed=3)
    assert small == bootstrap_ci(gold[:200], pred[:200], seed=3)
    assert small != bootstrap_ci(gold[:200], pred[:200], seed=4)
    large = bootstrap_ci(gold, pred, seed=3)
    assert large[0] < spearman(gold, pred) < large[1]
    assert (large[1] - large[0]) < (small[1] - small[0]) * 0.6  # width shrinks like 1/sqrt(n)


def test_paired_bootstrap_detects_a_better_model():
    rng = np.random.default_rng(0)
    gold = rng.normal(size=500)
    better = gold + 0.3 * rng.normal(size=500)
    worse = gold + 1.5 * rng.normal(size=500)
    result = paired_bootstrap(gold, better, worse, seed=0)
    assert result["diff"] > 0 and result["p_value"] < 0.01 and result["low"] > 0


def test_paired_bootstrap_of_identical_predictions():
    gold = np.arange(20.0)
    pred = gold + np.sin(gold)
    result = paired_bootstrap(gold, pred, pred)
    assert result["diff"] == 0 and result["p_value"] == 1.0


@pytest.mark.parametrize("gold, pred, reason", [
    ([], None, "no pairs"),
    ([4.0], [0.3], "only 1 pair"),
    ([3.0, 3.0, 3.0, 3.0, 3.0], [0.1, 0.2, 0.3, 0.4, 0.5], "all 5 gold scores are equal (3.0)"),
    ([1.0, 2.0, 3.0], [0.5, 0.5, 0.5], "all 3 predicted similarities are equal (0.5)"),
    ([1.0, 2.0, 3.0], [0.1, float("nan"), 0.3], "1 of 3 predicted similarities are not finite"),
    ([1.0, 2.0, 3.0], None, None),
    ([1.0, 2.0, 3.0], [0.3, 0.2, 0.2], None),
])
def test_undefined_reason_says_why(gold, pred, reason):
    assert undefined_reason(gold, pred) == reason


def test_undefined_correlations_are_nan():
    assert np.isnan(spearman([3.0, 3.0, 3.0], [1, 2, 3])) and np.isnan(pearson([1, 2, 3], [0.5, 0.5, 0.5]))
    assert np.isnan(spearman([1.0], [2.0]))


def test_paired_mean_bootstrap_by_hand():
    b = np.array([0.2, 0.5, 0.9, 0.1])
    shifted = paired_mean_bootstrap(b + 0.25, b)  # every query 0.25 better: every resample says exactly 0.25
    assert shifted["diff"] == pytest.approx(0.25) and shifted["low"] == pytest.approx(0.25)
    assert shifted["high"] == pytest.approx(0.25) and shifted["p_value"] == 0.0
    same = paired_mean_bootstrap(b, b)
    assert (same["diff"], same["p_value"]) == (0.0, 1.0)
    mixed = paired_mean_bootstrap(np.array([1.0, 0.0]), np.array([0.0, 1.0]))  # +1 and -1: mean 0, CI [-1, 1]
    assert mixed["diff"] == 0.0 and mixed["low"] == -1.0 and mixed["high"] == 1.0
    with pytest.raises(ValueError, match=r"expected two non-empty \(n,\) arrays of one shape, got \(4,\) and \(3,\)"):
        paired_mean_bootstrap(b, b[:3])
