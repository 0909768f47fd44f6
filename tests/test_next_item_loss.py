"""The next-item loss: logQ correction and accidental-hit masking, each against a hand-computed softmax."""
from __future__ import annotations

import math

import pytest
import torch

from textcl.losses import InfoNCE
from textcl.losses.next_item import NextItemLoss, accidental_hits, next_item_softmax
from textcl.recommend.split import log_sampling_probability

U = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
V = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])  # dot: [[1, 0, 0], [0, 1, 2], [1, 1, 2]]


def ce(row, target):
    return -row[target] + math.log(sum(math.exp(x) for x in row))


def test_plain_equals_infonce_and_the_hand_computed_softmax():
    rows = [[1, 0, 0], [0, 1, 2], [1, 1, 2]]
    expected = sum(ce(r, i) for i, r in enumerate(rows)) / 3
    got = next_item_softmax(U, V, temperature=1.0, similarity="dot")
    assert float(got) == pytest.approx(expected, abs=1e-6)
    assert float(got) == pytest.approx(float(InfoNCE(1.0, "dot")(U, V)), abs=1e-6)


def test_logq_lowers_each_candidate_by_its_log_probability():
    q = [0.5, 0.25, 0.25]
    rows = [[x - math.log(q[j]) for j, x in enumerate(r)] for r in [[1, 0, 0], [0, 1, 2], [1, 1, 2]]]
    expected = sum(ce(r, i) for i, r in enumerate(rows)) / 3
    got = next_item_softmax(U, V, temperature=1.0, similarity="dot", item_logq=torch.log(torch.tensor(q)))
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_a_repeated_item_and_a_history_item_are_not_negatives():
    keys = torch.tensor([7, 8, 7])           # rows 0 and 2 picked the same item
    history = torch.tensor([[7, 7], [8, 7], [7, 7]])  # row 1 has item 7 in its history; the rest padding
    hits = accidental_hits(keys, history)
    assert hits.tolist() == [[False, False, True], [True, False, True], [True, False, False]]
    # row 0 keeps columns 0, 1; row 1 only its own column 1; row 2 columns 1 and 2 (its own)
    expected = (ce([1, 0], 0) + ce([1], 0) + ce([1, 2], 1)) / 3
    loss = NextItemLoss(1.0, "dot", logq_correction=False)(U, V, positive_keys=keys, history_keys=history)
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_log_sampling_probability_and_bad_inputs():
    logq = log_sampling_probability({"a": 3, "b": 1}, ["a", "b"])
    assert logq == pytest.approx({"a": math.log(0.75), "b": math.log(0.25)})
    with pytest.raises(ValueError, match=r"counts: item 'c' has no training interaction"):
        log_sampling_probability({"a": 3}, ["a", "c"])
    with pytest.raises(ValueError, match=r"item_logq: expected a \(3,\) tensor, got \(2,\)"):
        next_item_softmax(U, V, item_logq=torch.zeros(2))
    with pytest.raises(ValueError, match=r"item_logq: expected finite log probabilities"):
        next_item_softmax(U, V, item_logq=torch.tensor([0.0, 0.5, -1.0]))
    with pytest.raises(ValueError, match=r"positive_logq: logq_correction needs"):
        NextItemLoss()(U, V, positive_keys=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"history_keys: expected a \(3, H\) tensor"):
        accidental_hits(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3]))
