"""info_nce / nt_xent / InfoNCE: hand-computed cases, equivalences, and bad inputs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from textcl.losses import InfoNCE, info_nce, nt_xent, pairwise_similarity

E = math.e
I2 = torch.eye(2)


def test_two_by_two_by_hand():
    # cos = identity; at temperature 0.5 the logits are [[2, 0], [0, 2]] -> each row: log(1 + e^-2).
    loss = info_nce(I2, I2, temperature=0.5)
    assert loss.item() == pytest.approx(math.log(1 + E**-2), abs=1e-6)


def test_lower_temperature_sharpens_a_separable_batch():
    for t in (1.0, 0.5, 0.1):
        assert info_nce(I2, I2, temperature=t).item() == pytest.approx(math.log(1 + math.exp(-1 / t)), abs=1e-6)


def test_temperature_is_a_scale_on_dot_logits():
    torch.manual_seed(0)
    a, p = torch.randn(5, 4), torch.randn(5, 4)
    assert torch.allclose(info_nce(a, p, similarity="dot", temperature=0.25),
                          info_nce(a * 4, p, similarity="dot", temperature=1.0), atol=1e-6)


def test_symmetric_averages_both_directions_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # anchors -> positives: rows [1, 1] (target 0) and [0, 0] (target 1): log 2 each.
    forward = math.log(2)
    # positives -> anchors: p0 vs [1, 0] target 0; p1 vs [1, 0] target 1.
    backward = (math.log(1 + E**-1) + math.log(1 + E)) / 2
    assert info_nce(a, p, temperature=1.0).item() == pytest.approx(forward, abs=1e-6)
    assert info_nce(a, p, temperature=1.0, symmetric=True).item() == pytest.approx((forward + backward) / 2, abs=1e-6)


def test_hard_negatives_come_after_all_positives_and_are_shared():
    n = torch.tensor([[[-1.0, 0.0]], [[0.0, -1.0]]])  # (B=2, k=1, d)
    # Row 0 candidates [p0, p1, n0, n1] -> cos [1, 0, -1, 0], target 0; row 1 mirrors it.
    expected = -1 + math.log(E + 1 + E**-1 + 1)
    assert info_nce(I2, I2, n, temperature=1.0).item() == pytest.approx(expected, abs=1e-6)


def test_hard_negative_weight_is_added_to_own_hard_negative_logits_only():
    n = torch.tensor([[[-1.0, 0.0]], [[0.0, -1.0]]])
    w = math.log(3.0)  # SimCSE: weight = logit of weight -> own hard negative's exp(logit) times 3
    expected = -1 + math.log(E + 1 + 3 * E**-1 + 1)
    got = info_nce(I2, I2, n, temperature=1.0, hard_negative_weight=w)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_shared_negatives_are_extra_columns():
    torch.manual_seed(1)
    a, p, m = torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 4)
    logits = F.normalize(a, dim=-1) @ F.normalize(torch.cat([p, m]), dim=-1).T / 0.1
    expected = F.cross_entropy(logits, torch.arange(3))
    assert torch.allclose(info_nce(a, p, m, temperature=0.1), expected, atol=1e-6)


def test_mask_removes_a_candidate_but_never_the_positive():
    torch.manual_seed(2)
    a, p = torch.randn(3, 4), torch.randn(3, 4)
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 2] = True
    logits = pairwise_similarity(a, p) / 0.05
    row0 = F.cross_entropy(logits[0:1, :2], torch.tensor([0]))
    rest = F.cross_entropy(logits[1:], torch.tensor([1, 2]), reduction="sum")
    assert torch.allclose(info_nce(a, p, mask=mask), (row0 + rest) / 3, atol=1e-5)
    assert torch.allclose(info_nce(a, p, mask=torch.eye(3, dtype=torch.bool)), info_nce(a, p), atol=1e-6)


def test_euclidean_similarity_is_negative_distance():
    torch.manual_seed(3)
    a, p = torch.randn(4, 3), torch.randn(4, 3)
    expected = F.cross_entropy(-torch.cdist(a, p) / 0.5, torch.arange(4))
    assert torch.allclose(info_nce(a, p, similarity="euclidean", temperature=0.5), expected, atol=1e-5)


def test_nt_xent_matches_the_simclr_formula_row_by_row():
    torch.manual_seed(4)
    a, p = torch.randn(3, 4), torch.randn(3, 4)
    z = F.normalize(torch.cat([a, p]), dim=-1)
    t, n = 0.5, 6
    total = 0.0
    for i in range(n):
        j = (i + 3) % n
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / den)
    assert nt_xent(a, p, temperature=t).item() == pytest.approx(total / n, abs=1e-5)
    assert InfoNCE(t, nt_xent=True)(a, p).item() == pytest.approx(total / n, abs=1e-5)


def test_nt_xent_has_2n_minus_2_negatives_hence_higher_loss_than_symmetric_infonce():
    torch.manual_seed(5)
    a, p = torch.randn(4, 8), torch.randn(4, 8)
    assert nt_xent(a, p) > info_nce(a, p, symmetric=True)


def test_module_matches_functional_and_gradients_flow():
    torch.manual_seed(6)
    a = torch.randn(4, 8, requires_grad=True)
    p, n = torch.randn(4, 8), torch.randn(4, 2, 8)
    mod = InfoNCE(0.1, "dot", symmetric=True, hard_negative_weight=0.5)
    expected = info_nce(a, p, n, temperature=0.1, similarity="dot", symmetric=True, hard_negative_weight=0.5)
    got = mod(a, p, n)
    assert torch.allclose(got, expected, atol=1e-6)
    got.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_learnable_temperature_is_log_parameterised_and_clamped():
    mod = InfoNCE(0.05, learnable_temperature=True, max_scale=100.0)
    assert mod.logit_scale.item() == pytest.approx(math.log(20.0))
    a, p = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.allclose(mod(a, p), info_nce(a, p, temperature=0.05), atol=1e-5)
    mod(a, p).backward()
    assert mod.logit_scale.grad is not None and mod.logit_scale.grad != 0
    with torch.no_grad():
        mod.logit_scale.fill_(math.log(1000.0))
    assert float(mod.temperature.detach()) == pytest.approx(0.01)
    assert mod.get_config_dict()["temperature"] == pytest.approx(0.01)


def test_learnable_temperature_past_its_bound_still_gets_a_gradient_and_comes_back():
    """A scale pushed past max_scale keeps a gradient (a clamp inside the graph made it exactly zero, so the
    parameter stuck), and clamp_parameters_ bounds the parameter itself, as CLIP does after each step."""
    torch.manual_seed(0)
    mod = InfoNCE(0.05, learnable_temperature=True, max_scale=100.0)
    with torch.no_grad():
        mod.logit_scale.fill_(math.log(150.0))
    # random embeddings: the loss falls as the temperature rises, so the gradient pushes the scale down
    a, p = torch.randn(16, 8), torch.randn(16, 8)
    mod(a, p).backward()
    assert mod.logit_scale.grad is not None and float(mod.logit_scale.grad) > 0
    opt = torch.optim.SGD([mod.logit_scale], lr=0.5)
    opt.step()
    assert mod.logit_scale.item() < math.log(150.0)
    with torch.no_grad():
        mod.logit_scale.fill_(math.log(150.0))
    mod.clamp_parameters_()
    assert mod.logit_scale.item() == pytest.approx(math.log(100.0))


def test_config_dict_and_citation():
    cfg = InfoNCE(0.07, "cosine", symmetric=True).get_config_dict()
    assert cfg == {"temperature": 0.07, "similarity": "cosine", "symmetric": True, "nt_xent": False,
                   "hard_negative_weight": 0.0, "learnable_temperature": False, "max_scale": 100.0,
                   "gather_across_devices": False}
    assert "SimCSE" in InfoNCE.citation and "@" in InfoNCE.citation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"similarity": "l2"}, "similarity"),
        ({"symmetric": "yes"}, "symmetric"),
        ({"nt_xent": True, "hard_negative_weight": 1.0}, "hard_negative_weight"),
        ({"hard_negative_weight": float("inf")}, "hard_negative_weight"),
        ({"learnable_temperature": True, "temperature": 0.001}, "temperature"),
        ({"max_scale": -1.0}, "max_scale"),
    ],
)
def test_module_rejects_bad_options_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InfoNCE(**kwargs)


def test_bad_inputs_name_the_argument():
    a = torch.randn(4, 8)
    with pytest.raises(ValueError, match="positives: expected shape \\(4, 8\\)"):
        info_nce(a, torch.randn(3, 8))
    with pytest.raises(ValueError, match="anchors: expected a \\(B, d\\)"):
        info_nce(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="negatives: expected embedding size 8"):
        info_nce(a, a, torch.randn(4, 1, 7))
    with pytest.raises(ValueError, match="negatives: per-anchor negatives need 4 rows"):
        info_nce(a, a, torch.randn(3, 1, 8))
    with pytest.raises(ValueError, match="mask: expected a bool tensor of shape \\(4, 8\\)"):
        info_nce(a, a, torch.randn(4, 1, 8), mask=torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="hard_negative_weight"):
        info_nce(a, a, torch.randn(6, 8), hard_negative_weight=1.0)
    with pytest.raises(ValueError, match="similarity"):
        info_nce(a, a, similarity="manhattan")
    with pytest.raises(ValueError, match="positive_keys: expected shape \\(4,\\)"):
        InfoNCE()(a, a, positive_keys=torch.arange(3))
    with pytest.raises(ValueError, match="negative_keys: expected shape \\(4, 2\\)"):
        InfoNCE()(a, a, torch.randn(4, 2, 8), negative_keys=torch.arange(4))
    with pytest.raises(ValueError, match="negatives: NT-Xent"):
        InfoNCE(nt_xent=True)(a, a, torch.randn(4, 1, 8))


def test_bf16_autocast_gives_a_close_finite_loss():
    torch.manual_seed(7)
    a, p, n = torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 1, 16)
    mask = torch.zeros(8, 16, dtype=torch.bool)
    mask[0, 1] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = info_nce(a, p, n, mask=mask, symmetric=True)
    assert low.dtype == torch.float32 and torch.isfinite(low)
    assert low.item() == pytest.approx(info_nce(a, p, n, mask=mask, symmetric=True).item(), rel=0.05)


def test_cosine_distill_by_hand():
    from textcl.losses import CosineDistill, cosine_distill

    student = torch.tensor([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]], requires_grad=True)
    teacher = torch.tensor([[5.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    # same direction (length ignored): 0; orthogonal: 1; opposite: 2 -> mean 1
    assert cosine_distill(student, teacher).item() == pytest.approx(1.0)
    assert CosineDistill(weight=3.0)(student, teacher).item() == pytest.approx(3.0)
    cosine_distill(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None
    with pytest.raises(ValueError, match=r"one shape \(b, d\), got \(3, 2\) and \(2, 2\)"):
        cosine_distill(student, teacher[:2])
