"""Pooling modes against hand-computed tensors."""
import pytest
import torch

from textcl.models.pooling import pool

LAST = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])  # (1, 3, 2); the third token is padding
MASK = torch.tensor([[1, 1, 0]])


def test_mean_ignores_padding():
    assert pool("mean", LAST, MASK).tolist() == [[2.0, 3.0]]


def test_max_ignores_padding():
    assert pool("max", LAST, MASK).tolist() == [[3.0, 4.0]]


def test_cls_before_pooler_is_first_token():
    assert pool("cls_before_pooler", LAST, MASK).tolist() == [[1.0, 2.0]]


def test_cls_is_pooler_output():
    pooled = torch.tensor([[0.5, -0.5]])
    assert pool("cls", LAST, MASK, pooler_output=pooled).tolist() == [[0.5, -0.5]]


def test_first_last_avg_uses_first_layer_and_last_layer():
    embeddings = torch.full_like(LAST, 100.0)  # hidden_states[0] must not be used
    first = torch.tensor([[[0.0, 0.0], [2.0, 2.0], [9.0, 9.0]]])
    # (first + last) / 2 = [[0.5, 1], [2.5, 3], ...]; mean of the two real tokens = [1.5, 2.0]
    out = pool("first_last_avg", LAST, MASK, hidden_states=(embeddings, first, LAST))
    assert out.tolist() == [[1.5, 2.0]]


def test_max_with_negative_states_is_not_padding_zero():
    last = torch.tensor([[[-3.0], [-1.0], [0.0]]])
    assert pool("max", last, MASK).tolist() == [[-1.0]]


def test_unknown_mode_lists_modes():
    with pytest.raises(ValueError, match="pooling must be one of cls, cls_before_pooler, mean, max, first_last_avg"):
        pool("avg", LAST, MASK)


def test_cls_without_pooler_says_what_to_use():
    with pytest.raises(ValueError, match="use 'cls_before_pooler'"):
        pool("cls", LAST, MASK)
