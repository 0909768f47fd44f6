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
CAT = torch.tensor([[9.0, 9.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # a stale cache of 4 items


def test_the_catalogue_softmax_by_hand_with_fresh_batch_items_and_a_history_mask():
    # rows 0 and 2 picked item 0, row 1 item 2: columns 0 and 2 take the fresh vectors V[0] and V[1]
    columns = torch.tensor([0, 2, 0])
    # candidates: [V[0], CAT[1], V[1], CAT[3]] = [(1, 0), (2, 0), (0, 1), (1, 1)]
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[1, 3] = True   # row 1's user picked item 3 before: not a negative
    mask[2, 0] = True   # a row's own column is never left out, whatever the mask says
    rows = [[1, 2, 0, 1], [0, 0, 1], [1, 2, 1, 2]]  # U @ candidates, row 1 without column 3
    expected = (ce(rows[0], 0) + ce(rows[1], 2) + ce(rows[2], 0)) / 3
    got = catalogue_softmax(U, V, CAT, columns, temperature=1.0, similarity="dot", mask=mask)
    assert float(got) == pytest.approx(expected, abs=1e-6)
    loss = NextItemLoss(1.0, "dot", logq_correction=False, negatives="catalogue")
    assert float(loss(U, V, catalogue=CAT, positive_columns=columns, catalogue_mask=mask)) == pytest.approx(expected)


def test_the_gradient_reaches_the_batch_items_and_never_the_cache():
    users, items = U.clone().requires_grad_(), V.clone().requires_grad_()
    cache = CAT.clone().requires_grad_()
    catalogue_softmax(users, items, cache, torch.tensor([0, 2, 1]), temperature=1.0, similarity="dot").backward()
    assert cache.grad is None and users.grad.abs().sum() > 0 and items.grad.abs().sum() > 0
    # rows sharing an item: the column holds the first row's vector, so the second row's gets no gradient
    items = V.clone().requires_grad_()
    catalogue_softmax(U, items, CAT, torch.tensor([0, 2, 0]), temperature=1.0, similarity="dot").backward()
    assert items.grad[2].abs().sum() == 0 and items.grad[0].abs().sum() > 0


def test_a_catalogue_equal_to_the_fresh_vectors_is_the_full_softmax():
    torch.manual_seed(0)
    users, items = torch.randn(5, 8), torch.randn(7, 8)  # 7 catalogue items, 5 rows picking items 6, 1, 3, 1, 0
    columns = torch.tensor([6, 1, 3, 1, 0])
    got = catalogue_softmax(users, items[columns], items, columns, temperature=0.1, similarity="cosine")
    logits = torch.nn.functional.normalize(users, dim=-1) @ torch.nn.functional.normalize(items, dim=-1).T / 0.1
    assert float(got) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, columns)), abs=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"columns": torch.tensor([0, 4, 1])}, r"columns: expected a \(3,\) integer tensor of catalogue rows in \[0, 4\)"),
    ({"columns": torch.tensor([0, 1])}, r"columns: expected a \(3,\)"),
    ({"catalogue": torch.zeros(4, 3)}, r"catalogue: expected an \(N, 2\) tensor, got \(4, 3\)"),
    ({"mask": torch.zeros(3, 3, dtype=torch.bool)}, r"mask: expected a \(3, 4\) bool tensor"),
])
def test_bad_catalogue_inputs_are_named(kwargs, message):
    args = {"catalogue": CAT, "columns": torch.tensor([0, 1, 2]), **kwargs}
    with pytest.raises(ValueError, match=message):
        catalogue_softmax(U, V, args.pop("catalogue"), args.pop("columns"), **args)


def test_the_catalogue_loss_refuses_logq_and_missing_inputs():
    with pytest.raises(ValueError, match="logq_correction: the catalogue softmax samples no negatives"):
        NextItemLoss(1.0, negatives="catalogue", logq_correction=True)
    with pytest.raises(ValueError, match="negatives: expected 'batch' or 'catalogue', got 'queue'"):
        NextItemLoss(1.0, negatives="queue")
    loss = NextItemLoss(1.0, logq_correction=False, negatives="catalogue")
    with pytest.raises(ValueError, match="catalogue, positive_columns: negatives='catalogue' needs"):
        loss(U, V)
    with pytest.raises(ValueError, match="catalogue_mask: mask_hits needs"):
        loss(U, V, catalogue=CAT, positive_columns=torch.tensor([0, 1, 2]))
