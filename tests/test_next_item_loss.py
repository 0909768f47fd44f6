"""The next-item loss: logQ correction and accidental-hit masking, each against a hand-computed softmax."""
from __future__ import annotations

import math

import pytest
import torch

from textcl.losses import InfoNCE
from textcl.losses.next_item import NextItemLoss, accidental_hits, catalogue_softmax, next_item_softmax
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


# ------------------------------------------------------------------ the whole catalogue (negatives: catalogue)
CAT = torch.tensor([[9.0, 9.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # cached vectors of 4 items


def test_the_catalogue_softmax_by_hand_with_a_history_mask():
    columns = torch.tensor([1, 2, 1])  # rows 0 and 2 picked item 1, row 1 item 2
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[1, 0] = True   # row 1's user picked item 0 before: not a negative
    mask[2, 1] = True   # a row's own column is never left out, whatever the mask says
    rows = [[9, 2, 0, 1], [3, 1], [18, 2, 3, 2]]  # U @ CAT.T, row 1 without column 0 (its columns 1, 2, 3: 0, 3, 1)
    rows[1] = [0, 3, 1]
    expected = (ce(rows[0], 1) + ce(rows[1], 1) + ce(rows[2], 1)) / 3
    got = catalogue_softmax(U, CAT, columns, temperature=1.0, similarity="dot", mask=mask)
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_the_catalogue_loss_adds_the_catalogue_softmax_to_the_in_batch_one():
    keys, history = torch.tensor([7, 8, 9]), torch.tensor([[7], [8], [9]])
    columns, mask = torch.tensor([1, 2, 3]), torch.zeros(3, 4, dtype=torch.bool)
    plain = NextItemLoss(1.0, "dot", logq_correction=False)(U, V, positive_keys=keys, history_keys=history)
    both = NextItemLoss(1.0, "dot", logq_correction=False, negatives="catalogue")(
        U, V, positive_keys=keys, history_keys=history, catalogue=CAT, positive_columns=columns, catalogue_mask=mask)
    extra = catalogue_softmax(U, CAT, columns, temperature=1.0, similarity="dot")
    assert float(both) == pytest.approx(float(plain) + float(extra), abs=1e-6)


def test_the_catalogue_softmax_sends_no_gradient_to_the_cache():
    users, cache = U.clone().requires_grad_(), CAT.clone().requires_grad_()
    catalogue_softmax(users, cache, torch.tensor([0, 2, 1]), temperature=1.0, similarity="dot").backward()
    assert cache.grad is None and users.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"columns": torch.tensor([0, 4, 1])}, r"columns: expected a \(3,\) integer tensor of catalogue rows in \[0, 4\)"),
    ({"columns": torch.tensor([0, 1])}, r"columns: expected a \(3,\)"),
    ({"catalogue": torch.zeros(4, 3)}, r"catalogue: expected an \(N, 2\) tensor, got \(4, 3\)"),
    ({"mask": torch.zeros(3, 3, dtype=torch.bool)}, r"mask: expected a \(3, 4\) bool tensor"),
])
def test_bad_catalogue_inputs_are_named(kwargs, message):
    args = {"catalogue": CAT, "columns": torch.tensor([0, 1, 2]), **kwargs}
    with pytest.raises(ValueError, match=message):
        catalogue_softmax(U, args.pop("catalogue"), args.pop("columns"), **args)


def test_the_catalogue_loss_names_what_it_misses():
    with pytest.raises(ValueError, match="negatives: expected 'batch' or 'catalogue', got 'queue'"):
        NextItemLoss(1.0, negatives="queue")
    loss = NextItemLoss(1.0, logq_correction=False, negatives="catalogue")
    with pytest.raises(ValueError, match="catalogue, positive_columns: negatives='catalogue' needs"):
        loss(U, V, positive_keys=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="catalogue_mask: mask_hits needs"):
        loss(U, V, catalogue=CAT, positive_columns=torch.tensor([0, 1, 2]), positive_keys=torch.tensor([1, 2, 3]))
