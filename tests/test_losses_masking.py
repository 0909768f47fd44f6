"""False-negative masks: text keys, group ids, and how InfoNCE uses them."""
from __future__ import annotations

import pytest
import torch

from textcl.losses import InfoNCE, false_negative_mask, info_nce, nt_xent, text_keys


def test_text_keys_equal_for_equal_texts_only():
    k = text_keys(["a cat", "a dog", "a cat", "A  cat "])
    assert k.dtype == torch.long and k.shape == (4,)
    assert k[0] == k[2] and k[0] != k[1] and k[0] != k[3]
    kn = text_keys(["a cat", "A  cat "], normalize=True)
    assert kn[0] == kn[1]


def test_text_keys_are_fixed_values_not_the_salted_builtin_hash():
    # Golden values: the same in every process, run and version (Python's str hash changes per process), so
    # keys gathered from other ranks or restored from a checkpointed MoCo queue still compare equal.
    assert text_keys(["a cat", "ünï"]).tolist() == [-6711169336525982361, -7508194671148965544]


def test_text_keys_rejects_a_bare_string():
    with pytest.raises(TypeError, match="texts"):
        text_keys("a cat")


def test_identical_texts_are_masked_but_the_positive_is_not():
    keys = torch.tensor([7, 8, 7])
    assert false_negative_mask(keys, keys).tolist() == [
        [False, False, True], [False, False, False], [True, False, False]]


def test_groups_mask_same_group_and_minus_one_means_none():
    keys = torch.tensor([1, 2, 3, 4])
    groups = torch.tensor([0, 0, -1, -1])
    m = false_negative_mask(keys, keys, groups)
    assert m.tolist() == [[False, True, False, False], [True, False, False, False],
                          [False, False, False, False], [False, False, False, False]]


def test_anchor_keys_and_offset_into_gathered_candidates():
    # Local batch of 2 at global offset 2 among 4 gathered positives and 2 extra candidates.
    pos = torch.tensor([30, 40])
    anc = torch.tensor([99, 41])
    cand = torch.tensor([30, 99, 30, 40, 41, 5])
    m = false_negative_mask(pos, cand, anchor_keys=anc, positive_offset=2)
    assert m.tolist() == [[True, True, False, False, False, False],
                          [False, False, False, False, True, False]]


def test_false_negative_mask_errors_name_the_argument():
    with pytest.raises(ValueError, match="candidate_keys"):
        false_negative_mask(torch.tensor([1]), None)
    with pytest.raises(ValueError, match="group_ids: expected length 2"):
        false_negative_mask(torch.tensor([1, 2]), torch.tensor([1, 2]), torch.tensor([0]))
    with pytest.raises(ValueError, match="candidate_group_ids: required"):
        false_negative_mask(torch.tensor([1, 2]), torch.tensor([1, 2, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="positive_keys: expected a 1-D"):
        false_negative_mask(torch.zeros(2, 2), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="positive_offset"):
        false_negative_mask(torch.tensor([1, 2]), torch.tensor([1, 2]), positive_offset=1)


def test_duplicate_texts_in_unsup_simcse_batch_are_not_negatives():
    torch.manual_seed(0)
    a, p = torch.randn(3, 8), torch.randn(3, 8)
    keys = text_keys(["x", "y", "x"])
    got = InfoNCE(0.05)(a, p, anchor_keys=keys, positive_keys=keys)
    mask = torch.tensor([[False, False, True], [False, False, False], [True, False, False]])
    assert torch.allclose(got, info_nce(a, p, mask=mask), atol=1e-6)
    assert not torch.allclose(got, info_nce(a, p), atol=1e-4)  # the mask changed something


def test_hard_negative_equal_to_a_positive_text_is_masked():
    torch.manual_seed(1)
    a, p, n = torch.randn(2, 8), torch.randn(2, 8), torch.randn(2, 1, 8)
    pk = text_keys(["p0", "p1"])
    nk = torch.stack([text_keys(["p1"]), text_keys(["n1"])])  # anchor 0's hard negative is p1's text
    got = InfoNCE(0.05)(a, p, n, positive_keys=pk, negative_keys=nk)
    # Columns [p0, p1, n0, n1]; n0 has the text of p1 -> masked for anchor 1 (its positive), not anchor 0.
    mask = torch.tensor([[False, False, False, False], [False, False, True, False]])
    assert torch.allclose(got, info_nce(a, p, n, mask=mask), atol=1e-6)


def test_groups_and_symmetric_reverse_mask():
    torch.manual_seed(2)
    a, p = torch.randn(3, 8), torch.randn(3, 8)
    groups = torch.tensor([5, 5, -1])
    got = InfoNCE(0.1, symmetric=True)(a, p, group_ids=groups)
    mask = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    assert torch.allclose(got, info_nce(a, p, temperature=0.1, symmetric=True, mask=mask, reverse_mask=mask),
                          atol=1e-6)


def test_nt_xent_masks_same_text_in_both_views():
    torch.manual_seed(3)
    a, p = torch.randn(3, 8), torch.randn(3, 8)
    keys = text_keys(["x", "y", "x"])
    got = InfoNCE(0.1, nt_xent=True)(a, p, anchor_keys=keys, positive_keys=keys)
    z_keys = torch.cat([keys, keys])
    mask = z_keys[:, None] == z_keys[None, :]
    assert torch.allclose(got, nt_xent(a, p, temperature=0.1, mask=mask), atol=1e-6)
    assert not torch.allclose(got, nt_xent(a, p, temperature=0.1), atol=1e-4)


def test_group_keys_are_non_negative_for_real_group_names_and_none_is_no_group():
    from textcl.data.wiki import wiki_leads
    from textcl.losses import NO_GROUP, group_keys

    titles = [title for title, _ in wiki_leads()[:500]]
    keys = group_keys(titles + [None] + titles[:3])
    assert bool((keys[:500] >= 0).all()) and int(keys[500]) == NO_GROUP
    assert keys[501:].tolist() == keys[:3].tolist() and len(set(keys[:500].tolist())) == len(set(titles))


def test_a_signed_hash_as_group_ids_is_refused_by_name():
    from textcl.losses import InfoNCE, text_keys

    signed = text_keys([f"group {i}" for i in range(64)])
    assert bool((signed < -1).any())  # half of a signed hash is negative
    with pytest.raises(ValueError, match=r"group_ids: group ids must be >= 0, or NO_GROUP \(-1\).*got -\d+"):
        false_negative_mask(None, None, group_ids=signed)
    a = torch.randn(64, 8)
    with pytest.raises(ValueError, match=r"group_ids: group ids must be >= 0"):
        InfoNCE()(a, a, group_ids=signed)
