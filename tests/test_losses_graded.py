"""CoSENT, AnglE, the Matryoshka wrapper and guided filtering: each against a slow reference written from the
definitions, plus the invariances and edge cases the definitions promise."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from textcl.losses import AnglE, CoSENT, InfoNCE, Matryoshka, angle, angle_similarity, cosent, guided_mask, info_nce


def _inputs(b=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    scores = torch.tensor([0.0, 1.5, 5.0, 3.2, 1.5, 4.4][:b], dtype=torch.float64)
    return a, p, scores


def _slow_cosent(sims, scores, scale):
    terms = [0.0]
    for i in range(len(scores)):
        for j in range(len(scores)):
            if scores[i] > scores[j]:
                terms.append(scale * (sims[j] - sims[i]))
    return torch.logsumexp(torch.stack([torch.as_tensor(t, dtype=torch.float64) for t in terms]), 0)


def _slow_cosine(a, p):
    return torch.stack([(a[i] @ p[i]) / (a[i].norm() * p[i].norm()) for i in range(len(a))])


def _slow_angle_sim(a, p):
    """Per pair: sum over dimensions k of Re + Im of z_a,k * conj(z_p,k) / |z_p|^2 / (|z_a| / |z_p|), where
    |z|^2 sums over all dimensions (the AnglE authors' normalisation), in Python complex."""
    h = a.shape[1] // 2
    out = []
    for i in range(len(a)):
        za = [complex(a[i, k], a[i, k + h]) for k in range(h)]
        zp = [complex(p[i, k], p[i, k + h]) for k in range(h)]
        sq_a, sq_p = sum(abs(z) ** 2 for z in za), sum(abs(z) ** 2 for z in zp)
        ratio = math.sqrt(sq_a) / math.sqrt(sq_p)
        q = [x * y.conjugate() / sq_p / ratio for x, y in zip(za, zp)]
        out.append(abs(sum(z.real + z.imag for z in q)))
    return out


def _grads(fn, a, p):
    a.grad = p.grad = None
    loss = fn(a, p)
    loss.backward()
    return loss.detach(), a.grad.clone(), p.grad.clone()


def test_cosent_equals_its_definition_values_and_gradients():
    a, p, scores = _inputs()
    fast = _grads(lambda a, p: cosent(a, p, scores, scale=20.0), a, p)
    slow = _grads(lambda a, p: _slow_cosent(_slow_cosine(a, p), scores, 20.0), a, p)
    for x, y in zip(fast, slow):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


def test_cosent_by_hand_two_pairs():
    # pair 0 scored higher but its cosine is 0 against pair 1's 1: log(1 + exp(20 * (1 - 0)))
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert cosent(a, p, torch.tensor([5.0, 1.0])).item() == pytest.approx(math.log(1 + math.exp(20.0)), rel=1e-6)
    assert cosent(a, p, torch.tensor([1.0, 1.0])).item() == 0.0  # equal scores: nothing to rank


@pytest.mark.parametrize("rescale", [lambda s: 3 * s + 1, torch.exp, lambda s: s ** 3 / 125, torch.argsort])
def test_cosent_is_invariant_to_a_monotone_rescaling_of_the_scores(rescale):
    a, p, scores = _inputs()
    if rescale is torch.argsort:  # ranks (ties broken consistently: equal scores keep equal ranks below)
        rescale = lambda s: torch.tensor([float((s < x).sum()) for x in s], dtype=s.dtype)  # noqa: E731
    torch.testing.assert_close(cosent(a, p, scores), cosent(a, p, rescale(scores)), atol=0, rtol=0)


def test_angle_similarity_equals_its_definition_and_is_bounded():
    a, p, _ = _inputs()
    torch.testing.assert_close(angle_similarity(a, p), torch.tensor(_slow_angle_sim(a.detach(), p.detach()),
                                                                     dtype=torch.float64), atol=1e-9, rtol=1e-9)
    # the maximum sqrt(2) at a = p + J p (each complex coordinate turned by 45 degrees)
    q = torch.tensor([[1.0, 2.0, -0.5, 0.3]], dtype=torch.float64)
    turned = torch.cat([q[:, :2] - q[:, 2:], q[:, 2:] + q[:, :2]], dim=1)
    assert float(angle_similarity(turned, q)) == pytest.approx(math.sqrt(2), rel=1e-12)
    # a positive with one complex coordinate at ~0: finite and bounded (per-dimension division blew up here)
    tiny = torch.tensor([[1.0, 1e-20, 0.5, 0.0]], dtype=torch.float64)
    assert float(angle_similarity(torch.tensor([[0.3, 2.0, 1.0, -1.0]], dtype=torch.float64), tiny)) <= math.sqrt(2)


def test_angle_term_equals_sentence_transformers_angle_loss():
    """AnglE with only the angle term is sentence-transformers' AnglELoss: the same similarity
    (util.pairwise_angle_sim) and the same CoSENT ranking at scale 20."""
    from sentence_transformers.losses import AnglELoss
    from sentence_transformers.util import pairwise_angle_sim

    a, p, scores = _inputs()
    torch.testing.assert_close(angle_similarity(a, p), pairwise_angle_sim(a, p), atol=1e-12, rtol=0)
    ours = angle(a, p, scores, cosine_weight=0.0, angle_weight=1.0, ibn_weight=0.0)
    theirs = AnglELoss(None).compute_loss_from_embeddings([a, p], scores)
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)


def _slow_angle_loss(a, p, scores, w_cos, w_angle, w_ibn, ibn_min):
    loss = w_cos * _slow_cosent(_slow_cosine(a, p), scores, 20.0)
    h = a.shape[1] // 2
    sims = []
    for i in range(len(a)):  # the angle similarity again, differentiably, one pair at a time
        re_a, im_a, re_p, im_p = a[i, :h], a[i, h:], p[i, :h], p[i, h:]
        m = (re_p ** 2 + im_p ** 2).sum()
        ratio = (re_a ** 2 + im_a ** 2).sum().sqrt() / m.sqrt()
        sims.append((((re_a * re_p + im_a * im_p) / m + (im_a * re_p - re_a * im_p) / m) / ratio).sum().abs())
    loss = loss + w_angle * _slow_cosent(torch.stack(sims), scores, 20.0)
    top = [i for i in range(len(scores)) if scores[i] >= ibn_min]
    rows = []
    for i in top:  # candidates: the top pairs' positives (target: its own), then every other positive
        cands = [p[j] for j in top] + [p[j] for j in range(len(scores)) if j not in top]
        logits = torch.stack([20.0 * (a[i] @ c) / (a[i].norm() * c.norm()) for c in cands])
        rows.append(-F.log_softmax(logits, 0)[top.index(i)])
    return loss + w_ibn * torch.stack(rows).mean()


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (0.0, 1.0, 0.0), (0.5, 0.02, 2.0)])
def test_angle_equals_its_definition_values_and_gradients(weights):
    a, p, scores = _inputs()
    w_cos, w_angle, w_ibn = weights
    fast = _grads(lambda a, p: angle(a, p, scores, cosine_weight=w_cos, angle_weight=w_angle, ibn_weight=w_ibn,
                                     ibn_min_score=4.0), a, p)
    slow = _grads(lambda a, p: _slow_angle_loss(a, p, scores, w_cos, w_angle, w_ibn, 4.0), a, p)
    for x, y in zip(fast, slow):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


def test_graded_losses_name_a_missing_or_misshaped_score():
    a, p, scores = _inputs()
    with pytest.raises(ValueError, match=r"scores: CoSENT needs a gold score per pair \(data.kind: scored\)"):
        CoSENT()(a, p)
    with pytest.raises(ValueError, match=r"scores: expected shape \(6,\), one gold score per pair, got \(5,\)"):
        AnglE()(a, p, scores=scores[:5])
    with pytest.raises(ValueError, match="d even"):
        angle_similarity(a[:, :7], p[:, :7])


@pytest.mark.parametrize("inner", [lambda: InfoNCE(0.05), lambda: CoSENT(), lambda: AnglE()])
def test_matryoshka_at_one_dimension_equals_the_wrapped_loss(inner):
    a, p, scores = _inputs()
    loss = inner()
    keys = {} if isinstance(loss, InfoNCE) else {"scores": scores}
    torch.testing.assert_close(Matryoshka(loss, [8])(a, p, **keys), loss(a, p, **keys), atol=0, rtol=0)
    torch.testing.assert_close(Matryoshka(loss, [4], [0.5])(a, p, **keys), 0.5 * loss(a[:, :4], p[:, :4], **keys),
                               atol=0, rtol=0)
    torch.testing.assert_close(Matryoshka(loss, [8, 4], [1.0, 2.0])(a, p, **keys),
                               loss(a, p, **keys) + 2 * loss(a[:, :4], p[:, :4], **keys), atol=1e-12, rtol=0)


def test_matryoshka_truncates_hard_negatives_and_names_a_bad_dimension():
    a, p, _ = _inputs()
    n = torch.randn(6, 1, 8, dtype=torch.float64)
    loss = InfoNCE(0.05)
    torch.testing.assert_close(Matryoshka(loss, [4])(a, p, n), loss(a[:, :4], p[:, :4], n[..., :4]), atol=0, rtol=0)
    with pytest.raises(ValueError, match="dims: 16 is larger than the embedding dimension 8"):
        Matryoshka(loss, [16, 4])(a, p)
    with pytest.raises(ValueError, match="weights: expected 2 non-negative numbers"):
        Matryoshka(loss, [8, 4], [1.0])


def test_guided_mask_by_hand_and_the_positive_is_never_masked():
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # row 0's positive at cos 0.707, row 1's at 1
    cands = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.1]])  # p0, p1, a hard negative
    mask = guided_mask(rows, targets, cands)
    # row 0: p1 has cos 0 (kept as a negative), the hard negative cos 0.995 > 0.707 (masked)
    # row 1: p0 cos 0.707 < 1 kept; p1 is its positive; the hard negative cos 0.0995 kept
    assert mask.tolist() == [[False, False, True], [False, False, False]]
    assert guided_mask(rows, targets, cands, margin=0.8).tolist() == [[False, True, True], [True, False, False]]
    same = torch.ones(3, 4)  # the guide rates everything equal: with any margin only the positive survives
    assert guided_mask(same, same, same, margin=1.0).diagonal().tolist() == [False, False, False]


def test_guided_infonce_equals_info_nce_with_the_guide_mask():
    a, p, _ = _inputs()
    g = torch.Generator().manual_seed(3)
    n = torch.randn(6, 1, 8, generator=g, dtype=torch.float64)
    ga, gp, gn = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((6, 5), (6, 5), (6, 1, 5)))
    mask = guided_mask(ga, gp, torch.cat([gp, gn[:, 0]]), margin=0.1)
    assert mask.any() and not mask.all()
    got = InfoNCE(0.05, guide_margin=0.1)(a, p, n, guide_anchors=ga, guide_positives=gp, guide_negatives=gn)
    # the loss is computed in float32 and the two paths sum in different orders: equal to a few ulps
    torch.testing.assert_close(got, info_nce(a, p, n, temperature=0.05, mask=mask), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="guide_negatives exactly when negatives"):
        InfoNCE(0.05)(a, p, n, guide_anchors=ga, guide_positives=gp)
