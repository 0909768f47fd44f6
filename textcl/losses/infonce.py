"""InfoNCE, the contrastive loss behind SimCSE, CLIP and MultipleNegativesRankingLoss; NT-Xent beside it.

The functional core (:func:`info_nce`, :func:`nt_xent`) works on embedding tensors; :class:`InfoNCE` is the
thin module that holds the options, builds false-negative masks from keys, learns the temperature if asked,
and gathers candidates across devices.

Layout of the candidates (columns of the logits) for anchor ``i``::

    [ positive_0 … positive_{P-1} | negatives ]        target column: offset + i

``P`` is the batch (the global batch when gathered), so every anchor's positive sits at its own global index
and the hard negatives come after *all* positives. Per-anchor hard negatives ``(B, k, d)`` are flattened in
row order (anchor 0's k, then anchor 1's k, …) and, as in SimCSE and sentence-transformers, serve as
negatives for *every* anchor.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .gather import all_gather_no_grad, all_gather_with_grad, gather_sizes, world_info
from .guide import guided_mask
from .masking import _mask, check_group_ids

__all__ = ["SIMILARITIES", "pairwise_similarity", "info_nce", "nt_xent", "InfoNCE"]

SIMILARITIES = ("cosine", "dot", "euclidean")


def pairwise_similarity(a: torch.Tensor, b: torch.Tensor, similarity: str = "cosine") -> torch.Tensor:
    """``(n, d) × (m, d) -> (n, m)``: cosine, dot product, or negative euclidean distance."""
    if similarity == "cosine":
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    if similarity == "dot":
        return a @ b.T
    if similarity == "euclidean":
        # |a-b|^2 = |a|^2 + |b|^2 - 2ab, without an (n, m, d) intermediate. The clamp keeps sqrt's gradient
        # finite at zero distance (an anchor against itself in NT-Xent, excluded but still differentiated).
        sq = (a * a).sum(-1)[:, None] + (b * b).sum(-1)[None, :] - 2.0 * (a @ b.T)
        return -sq.clamp_min(1e-12).sqrt()
    raise ValueError(f"similarity: expected one of {SIMILARITIES}, got {similarity!r}")


def _row_losses(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature,
    similarity: str,
    exclude: torch.Tensor | None = None,
    bias_cols: torch.Tensor | None = None,
    bias: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy of each query row over ``candidates`` (``(n,)``), ``exclude`` columns removed.

    ``bias_cols`` ``(n, k)``: columns whose logit gets ``+ bias`` (after the temperature), for hard negatives.
    """
    logits = pairwise_similarity(queries, candidates, similarity) / temperature
    if bias_cols is not None and bias != 0.0:
        add = torch.zeros_like(logits)
        add.scatter_(1, bias_cols, bias)
        logits = logits + add
    if exclude is not None:
        exclude = exclude.clone()
        exclude[torch.arange(len(labels), device=labels.device), labels] = False  # never the positive
        logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits.float(), labels, reduction="none")


def _info_nce_rows(anchors, positives_all, negatives_all, offset, *, temperature, similarity,
                   hard_negative_weight, mask):
    """Rows of local ``anchors`` against ``[positives_all, negatives_all]``; anchor i's positive at offset+i."""
    b, p = anchors.shape[0], positives_all.shape[0]
    rows = torch.arange(b, device=anchors.device)
    candidates, bias_cols = positives_all, None
    if negatives_all is not None:
        if negatives_all.dim() == 3:
            k = negatives_all.shape[1]
            candidates = torch.cat([positives_all, negatives_all.reshape(-1, negatives_all.shape[-1])])
            bias_cols = p + (offset + rows)[:, None] * k + torch.arange(k, device=anchors.device)[None, :]
        else:
            candidates = torch.cat([positives_all, negatives_all])
    return _row_losses(anchors, candidates, rows + offset, temperature=temperature, similarity=similarity,
                       exclude=mask, bias_cols=bias_cols, bias=hard_negative_weight)


def _nt_xent_rows(anchors, positives, anchors_all, positives_all, offset, *, temperature, similarity, mask):
    """Local rows ``[anchors; positives]`` against ``[anchors_all; positives_all]`` minus each row itself."""
    b, p = anchors.shape[0], anchors_all.shape[0]
    rows = torch.arange(b, device=anchors.device) + offset
    labels = torch.cat([rows + p, rows])
    selfcol = torch.cat([rows, rows + p])
    exclude = torch.zeros(2 * b, 2 * p, dtype=torch.bool, device=anchors.device) if mask is None else mask.clone()
    exclude[torch.arange(2 * b, device=anchors.device), selfcol] = True
    return _row_losses(torch.cat([anchors, positives]), torch.cat([anchors_all, positives_all]), labels,
                       temperature=temperature, similarity=similarity, exclude=exclude)


def _check_temperature(temperature):
    if isinstance(temperature, torch.Tensor):
        return
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature: expected a positive finite number, got {temperature!r}")


def _check_embeddings(anchors, positives):
    for name, t in (("anchors", anchors), ("positives", positives)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected a (B, d) tensor, got {got}")
    if positives.shape != anchors.shape:
        raise ValueError(f"positives: expected shape {tuple(anchors.shape)} (as anchors), got {tuple(positives.shape)}")


def _check_negatives(negatives, b, d):
    if negatives is None:
        return
    if not isinstance(negatives, torch.Tensor) or negatives.dim() not in (2, 3):
        got = tuple(negatives.shape) if isinstance(negatives, torch.Tensor) else type(negatives).__name__
        raise ValueError(f"negatives: expected (B, k, d) per-anchor or (M, d) shared, got {got}")
    if negatives.shape[-1] != d:
        raise ValueError(f"negatives: expected embedding size {d} (as anchors), got {negatives.shape[-1]}")
    if negatives.dim() == 3 and negatives.shape[0] != b:
        raise ValueError(f"negatives: per-anchor negatives need {b} rows (as anchors), got {negatives.shape[0]}")


def _check_mask(name, mask, shape):
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != shape:
        got = (tuple(mask.shape), mask.dtype) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name}: expected a bool tensor of shape {shape}, got {got}")


def _num_candidates(b, negatives):
    if negatives is None:
        return b
    return b + (negatives.shape[0] * negatives.shape[1] if negatives.dim() == 3 else negatives.shape[0])


def info_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 0.05,
    similarity: str = "cosine",
    symmetric: bool = False,
    hard_negative_weight: float = 0.0,
    mask: torch.Tensor | None = None,
    reverse_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE with in-batch negatives, optional hard or shared negatives, and an optional exclusion mask.

    For anchor ``i`` the logits are ``sim(a_i, c) / temperature`` over the candidates
    ``c = [p_0 … p_{B-1}, negatives…]`` and the target is ``p_i``; the loss is the mean cross-entropy.

    Args:
        anchors: ``(B, d)``.
        positives: ``(B, d)``; ``positives[i]`` is the positive of ``anchors[i]``.
        negatives: ``(B, k, d)`` hard negatives of each anchor (all ``B*k`` are negatives for every anchor, as
            in SimCSE), or ``(M, d)`` negatives shared by the batch (a MoCo queue). Candidates are
            ``B + B*k`` or ``B + M``.
        temperature: divides the similarities (float > 0, or a tensor for a learned one).
        similarity: ``"cosine"`` (default), ``"dot"``, or ``"euclidean"`` (negative euclidean distance).
        symmetric: also score each positive against all anchors (no hard negatives in that direction, as in
            CLIP) and return the average of the two directions.
        hard_negative_weight: SimCSE's ``hard_negative_weight``, an *additive* term on the logit (after the
            temperature) of each anchor's *own* hard negatives, i.e. a multiplicative weight ``exp(w)`` on
            their ``exp(logit)``. 0 = plain InfoNCE; SimCSE's ablation found 0 best. Only with ``(B, k, d)``.
        mask: ``(B, C)`` bool, ``True`` = do not use that candidate as a negative (e.g. from
            :func:`~textcl.losses.false_negative_mask`). The positive column is never excluded.
        reverse_mask: ``(B, B)`` bool for the symmetric direction (row = positive ``j``, column = anchor
            ``i``). Defaults to ``mask[:, :B].T``.

    Returns:
        Scalar loss.

    References:
        van den Oord et al., *Representation Learning with Contrastive Predictive Coding*, 2018;
        Gao et al., *SimCSE*, EMNLP 2021 (arXiv:2104.08821).

    Example:
        >>> a, p = torch.randn(4, 8), torch.randn(4, 8)
        >>> loss = info_nce(a, p, temperature=0.05)
        >>> loss.shape
        torch.Size([])
    """
    _check_embeddings(anchors, positives)
    b, d = anchors.shape
    _check_negatives(negatives, b, d)
    _check_temperature(temperature)
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity: expected one of {SIMILARITIES}, got {similarity!r}")
    if hard_negative_weight != 0.0 and negatives is not None and negatives.dim() == 2:
        raise ValueError("hard_negative_weight: applies to per-anchor (B, k, d) negatives, not shared (M, d) ones")
    _check_mask("mask", mask, (b, _num_candidates(b, negatives)))
    _check_mask("reverse_mask", reverse_mask, (b, b))
    loss = _info_nce_rows(anchors, positives, negatives, 0, temperature=temperature, similarity=similarity,
                          hard_negative_weight=float(hard_negative_weight), mask=mask).mean()
    if symmetric:
        if reverse_mask is None and mask is not None:
            reverse_mask = mask[:, :b].T
        back = _info_nce_rows(positives, anchors, None, 0, temperature=temperature, similarity=similarity,
                              hard_negative_weight=0.0, mask=reverse_mask).mean()
        loss = (loss + back) / 2
    return loss


def nt_xent(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    *,
    temperature: float | torch.Tensor = 0.05,
    similarity: str = "cosine",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """NT-Xent (SimCLR): each of the ``2B`` views against the other ``2B - 1``; ``2B - 2`` negatives each.

    With ``z = [anchors; positives]`` (``(2B, d)``), row ``r`` of ``sim(z, z) / temperature`` minus its own
    column is scored with target ``r + B (mod 2B)``; the loss is the mean over the ``2B`` rows, so it is
    symmetric by construction.

    Args:
        anchors, positives: ``(B, d)`` the two views.
        temperature, similarity: as in :func:`info_nce` (SimCLR used cosine with 0.1–0.5).
        mask: ``(2B, 2B)`` bool over ``z`` × ``z``, ``True`` = not a negative (positives are never excluded).

    References:
        Chen et al., *A Simple Framework for Contrastive Learning of Visual Representations*, ICML 2020.
    """
    _check_embeddings(anchors, positives)
    _check_temperature(temperature)
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity: expected one of {SIMILARITIES}, got {similarity!r}")
    b = anchors.shape[0]
    _check_mask("mask", mask, (2 * b, 2 * b))
    return _nt_xent_rows(anchors, positives, anchors, positives, 0, temperature=temperature,
                         similarity=similarity, mask=mask).mean()


class InfoNCE(nn.Module):
    """InfoNCE / MultipleNegativesRanking / SimCSE loss, with NT-Xent, false-negative masking, a learnable
    temperature and cross-device negatives as options.

    Args:
        temperature: softmax temperature (SimCSE: 0.05). With ``learnable_temperature`` it is the initial value.
        similarity: ``"cosine"``, ``"dot"`` or ``"euclidean"`` (negative distance).
        symmetric: average with the positives→anchors direction (CLIP-style).
        nt_xent: SimCLR's NT-Xent instead: the other view's same-side embeddings are negatives too (``2N-2``
            per row) and the loss is symmetric. Takes no hard negatives.
        hard_negative_weight: additive logit bonus for each anchor's own hard negatives (SimCSE semantics,
            see :func:`info_nce`).
        learnable_temperature: learn ``logit_scale = log(1 / temperature)`` (CLIP); the scale is clamped to
            ``max_scale`` in the forward pass.
        max_scale: upper bound on ``1 / temperature`` when learnt (CLIP: 100).
        gather_across_devices: all-gather positives, hard negatives, keys (and anchors when needed) from every
            rank, with gradient, so each anchor sees the global batch as negatives. Shared ``(M, d)``
            negatives are *not* gathered: they are taken to be the same on every rank (a MoCo queue).
            With DDP's gradient averaging this equals one process on the concatenated batch; the local loss is
            scaled by ``W * B_local / B_global`` so that also holds when ranks hold different batch sizes.
            Without a process group it does nothing.

    Inputs:
        ===================  ==============  =====================================================
        anchors              ``(B, d)``      e.g. first dropout view / query / ``sent0``
        positives            ``(B, d)``      second view / document / ``sent1``
        negatives            ``(B, k, d)``   per-anchor hard negatives (``hard_neg``), or ``(M, d)`` shared
        anchor_keys          ``(B,)`` int    optional text keys (:func:`text_keys`) of the anchors
        positive_keys        ``(B,)`` int    optional text keys of the positives
        negative_keys        ``(B, k)``/``(M,)``  optional text keys of the negatives
        group_ids            ``(B,)`` int    optional group of each pair (``group_keys``); ``NO_GROUP`` = none
        guide_anchors        ``(B, g)``      optional guide-model embeddings of the anchors (no gradient)
        guide_positives      ``(B, g)``      the guide's embeddings of the positives
        guide_negatives      ``(B, k, g)``   the guide's embeddings of the hard negatives (with negatives)
        ===================  ==============  =====================================================

        With keys, a candidate is not a negative for anchor ``i`` when its text equals the text of anchor
        ``i`` or of its positive; with ``group_ids``, when its pair is in anchor ``i``'s group. The positive
        is never masked. For unsupervised SimCSE (the same text twice) pass the same keys for both.
        With guide embeddings, a candidate the guide rates above the anchor's positive minus ``guide_margin``
        is not a negative either (GISTEmbed, :func:`~textcl.losses.guide.guided_mask`).

    References:
        van den Oord et al. 2018 (CPC); Chen et al. 2020 (SimCLR); Gao et al. 2021 (SimCSE);
        Radford et al. 2021 (CLIP, learnable temperature).

    Relations:
        Equals sentence-transformers' ``MultipleNegativesRankingLoss`` with ``scale = 1 / temperature``
        (cosine, not symmetric); with ``symmetric=True`` its ``MultipleNegativesSymmetricRankingLoss``
        (up to the reverse direction using no hard negatives). For large batches on small memory wrap the step
        in :func:`~textcl.losses.cached_backward`.

    Example:
        >>> loss_fn = InfoNCE(temperature=0.05)
        >>> a, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 1, 8)
        >>> loss = loss_fn(a, p, n)
    """

    citation = """
@inproceedings{gao2021simcse,
    title = "{SimCSE}: Simple Contrastive Learning of Sentence Embeddings",
    author = "Gao, Tianyu and Yao, Xingcheng and Chen, Danqi",
    booktitle = "Empirical Methods in Natural Language Processing (EMNLP)",
    year = "2021",
}
@article{oord2018representation,
    title = "Representation Learning with Contrastive Predictive Coding",
    author = "van den Oord, Aaron and Li, Yazhe and Vinyals, Oriol",
    journal = "arXiv preprint arXiv:1807.03748",
    year = "2018",
}
"""

    def __init__(
        self,
        temperature: float = 0.05,
        similarity: str = "cosine",
        *,
        symmetric: bool = False,
        nt_xent: bool = False,
        hard_negative_weight: float = 0.0,
        learnable_temperature: bool = False,
        max_scale: float = 100.0,
        gather_across_devices: bool = False,
        guide_margin: float = 0.0,
    ):
        super().__init__()
        _check_temperature(temperature)
        if isinstance(temperature, torch.Tensor):
            raise ValueError("temperature: expected a number; use learnable_temperature=True to learn it")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity: expected one of {SIMILARITIES}, got {similarity!r}")
        for name, flag in (("symmetric", symmetric), ("nt_xent", nt_xent),
                           ("learnable_temperature", learnable_temperature),
                           ("gather_across_devices", gather_across_devices)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name}: expected True or False, got {flag!r}")
        if not isinstance(hard_negative_weight, (int, float)) or not math.isfinite(hard_negative_weight):
            raise ValueError(f"hard_negative_weight: expected a finite number, got {hard_negative_weight!r}")
        if nt_xent and hard_negative_weight != 0.0:
            raise ValueError("hard_negative_weight: NT-Xent takes no hard negatives; leave it at 0 with nt_xent=True")
        if not isinstance(max_scale, (int, float)) or not math.isfinite(max_scale) or max_scale <= 0:
            raise ValueError(f"max_scale: expected a positive finite number, got {max_scale!r}")
        if learnable_temperature and 1.0 / temperature > max_scale:
            raise ValueError(f"temperature: {temperature} is below 1/max_scale = {1.0 / max_scale:g}")
        self.similarity = similarity
        self.symmetric = symmetric
        self.nt_xent = nt_xent
        self.hard_negative_weight = float(hard_negative_weight)
        self.learnable_temperature = learnable_temperature
        self.max_scale = float(max_scale)
        self.gather_across_devices = gather_across_devices
        self.guide_margin = float(guide_margin)
        self._temperature = float(temperature)
        if learnable_temperature:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @property
    def temperature(self) -> float | torch.Tensor:
        """The temperature in use: a float, or a 0-d tensor (with gradient) when learnt.

        A learnt scale above ``max_scale`` is used at ``max_scale``, but its gradient passes through unchanged
        (a clamp inside the graph would make it exactly zero, and the parameter could never come back); the
        trainer bounds the parameter itself after each optimizer step (:meth:`clamp_parameters_`), as CLIP does.
        """
        if self.learnable_temperature:
            scale = self.logit_scale.exp()
            bounded = scale - (scale - scale.clamp(max=self.max_scale)).detach()
            return 1.0 / bounded
        return self._temperature

    @torch.no_grad()
    def clamp_parameters_(self) -> None:
        """Bound the learnt scale in place at ``log(max_scale)`` (call after each optimizer step)."""
        if self.learnable_temperature:
            self.logit_scale.clamp_(max=math.log(self.max_scale))

    def get_config_dict(self) -> dict:
        """The options, for model cards and recipes (the current temperature when learnt)."""
        t = self.temperature
        return {
            "temperature": float(t) if not isinstance(t, torch.Tensor) else float(t.detach()),
            "similarity": self.similarity,
            "symmetric": self.symmetric,
            "nt_xent": self.nt_xent,
            "hard_negative_weight": self.hard_negative_weight,
            "learnable_temperature": self.learnable_temperature,
            "max_scale": self.max_scale,
            "gather_across_devices": self.gather_across_devices,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config_dict().items())

    def forward(
        self,
        anchors: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor | None = None,
        *,
        anchor_keys: torch.Tensor | None = None,
        positive_keys: torch.Tensor | None = None,
        negative_keys: torch.Tensor | None = None,
        group_ids: torch.Tensor | None = None,
        guide_anchors: torch.Tensor | None = None,
        guide_positives: torch.Tensor | None = None,
        guide_negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._check_inputs(anchors, positives, negatives, anchor_keys, positive_keys, negative_keys, group_ids)
        guided = guide_anchors is not None
        if guided and (guide_positives is None or (negatives is not None) != (guide_negatives is not None)):
            raise ValueError("guide_anchors: give guide_positives too, and guide_negatives exactly when negatives "
                             "are given")
        if guided and self.nt_xent:
            raise ValueError("guide_anchors: guided filtering does not combine with NT-Xent")
        dev = anchors.device
        # Keys travel with the embeddings (NCCL gathers only device tensors).
        anchor_keys, positive_keys, negative_keys, group_ids = (
            None if t is None else t.to(dev) for t in (anchor_keys, positive_keys, negative_keys, group_ids))
        g = _GlobalBatch(anchors, positives, negatives, anchor_keys, positive_keys, negative_keys, group_ids,
                         gather=self.gather_across_devices, need_anchors=self.symmetric or self.nt_xent,
                         guide=(guide_anchors, guide_positives, guide_negatives) if guided else None)
        b, p = anchors.shape[0], g.positives.shape[0]
        keyed = any(t is not None for t in (anchor_keys, positive_keys, negative_keys, group_ids))
        row_keys = [positive_keys, anchor_keys]  # a candidate with either text is no negative for the row
        options = dict(temperature=self.temperature, similarity=self.similarity)
        # Each rank returns sum(rows) * W / total_rows: the local mean when ranks hold equal batches, and in
        # every case DDP's average over ranks is the global mean (see textcl.losses.gather).
        scale = g.world / g.total

        if self.nt_xent:
            mask = None
            if keyed:
                half = torch.cat([_mask(b, p, row_keys, g.anchor_keys, group_ids, g.group_ids, None, device=dev),
                                  _mask(b, p, row_keys, g.positive_keys, group_ids, g.group_ids, None, device=dev)],
                                 dim=1)
                mask = torch.cat([half, half])
            rows = _nt_xent_rows(anchors, positives, g.anchors, g.positives, g.offset, mask=mask, **options)
            return rows.sum() * scale / 2

        mask = None
        if keyed:
            blocks = [_mask(b, p, row_keys, g.positive_keys, group_ids, g.group_ids, g.offset, device=dev)]
            if negatives is not None:
                flat = None if g.negative_keys is None else g.negative_keys.reshape(-1)
                n_neg = g.negatives.shape[0] * (g.negatives.shape[1] if g.negatives.dim() == 3 else 1)
                blocks.append(_mask(b, n_neg, row_keys, flat, None, None, None, device=dev))
            mask = torch.cat(blocks, dim=1)
        if guided:  # GISTEmbed: candidates the guide rates above the positive are no negatives
            candidates = g.guide_positives if g.guide_negatives is None else torch.cat(
                [g.guide_positives, g.guide_negatives.reshape(-1, g.guide_negatives.shape[-1])])
            gmask = guided_mask(guide_anchors, guide_positives, candidates, g.offset, self.guide_margin)
            mask = gmask if mask is None else mask | gmask
        rows = _info_nce_rows(anchors, g.positives, g.negatives, g.offset, mask=mask,
                              hard_negative_weight=self.hard_negative_weight, **options)
        if not self.symmetric:
            return rows.sum() * scale
        reverse = None
        if keyed:  # row = positive j, whose own positive is anchor j
            reverse = _mask(b, p, [anchor_keys, positive_keys], g.anchor_keys, group_ids, g.group_ids, g.offset,
                            device=dev)
        if guided:  # row = positive j against the anchors, whose own target is anchor j
            gmask = guided_mask(guide_positives, guide_anchors, g.guide_anchors, g.offset, self.guide_margin)
            reverse = gmask if reverse is None else reverse | gmask
        back = _info_nce_rows(positives, g.anchors, None, g.offset, mask=reverse, hard_negative_weight=0.0,
                              **options)
        return (rows.sum() + back.sum()) * scale / 2

    def _check_inputs(self, anchors, positives, negatives, anchor_keys, positive_keys, negative_keys, group_ids):
        _check_embeddings(anchors, positives)
        b, d = anchors.shape
        _check_negatives(negatives, b, d)
        if self.nt_xent and negatives is not None:
            raise ValueError("negatives: NT-Xent (nt_xent=True) takes no extra negatives")
        if self.hard_negative_weight != 0.0 and negatives is not None and negatives.dim() == 2:
            raise ValueError("hard_negative_weight: applies to per-anchor (B, k, d) negatives, not shared (M, d) ones")
        for name, keys in (("anchor_keys", anchor_keys), ("positive_keys", positive_keys), ("group_ids", group_ids)):
            if keys is not None and (not isinstance(keys, torch.Tensor) or tuple(keys.shape) != (b,)):
                got = tuple(keys.shape) if isinstance(keys, torch.Tensor) else type(keys).__name__
                raise ValueError(f"{name}: expected shape ({b},), got {got}")
        check_group_ids("group_ids", group_ids)
        if negative_keys is not None:
            if negatives is None:
                raise ValueError("negative_keys: given without negatives")
            want = tuple(negatives.shape[:-1])
            if not isinstance(negative_keys, torch.Tensor) or tuple(negative_keys.shape) != want:
                got = (tuple(negative_keys.shape) if isinstance(negative_keys, torch.Tensor)
                       else type(negative_keys).__name__)
                raise ValueError(f"negative_keys: expected shape {want} (as negatives without d), got {got}")


class _GlobalBatch:
    """The candidates every rank scores against: local tensors gathered in rank order (with gradient for
    embeddings, without for keys), or the local ones when not gathering. Shared (M, d) negatives and their
    keys stay as they are (the same on every rank)."""

    def __init__(self, anchors, positives, negatives, anchor_keys, positive_keys, negative_keys, group_ids, *,
                 gather: bool, need_anchors: bool, guide=None):
        self.world = world_info()[1] if gather else 1
        per_anchor = negatives is not None and negatives.dim() == 3
        self.guide_anchors, self.guide_positives, self.guide_negatives = guide or (None, None, None)
        if self.world == 1:
            self.anchors, self.positives, self.negatives = anchors, positives, negatives
            self.anchor_keys, self.positive_keys, self.negative_keys = anchor_keys, positive_keys, negative_keys
            self.group_ids, self.offset, self.total = group_ids, 0, anchors.shape[0]
            return
        sizes = gather_sizes(anchors.shape[0], device=anchors.device)
        self.total = sum(sizes)
        self.positives, self.offset = all_gather_with_grad(positives, sizes=sizes)
        self.anchors = all_gather_with_grad(anchors, sizes=sizes)[0] if need_anchors else None
        self.negatives = all_gather_with_grad(negatives, sizes=sizes)[0] if per_anchor else negatives

        def keys(t, per_row=True):
            return all_gather_no_grad(t, sizes=sizes) if t is not None and per_row else t

        self.anchor_keys, self.positive_keys, self.group_ids = keys(anchor_keys), keys(positive_keys), keys(group_ids)
        self.negative_keys = keys(negative_keys, per_row=per_anchor)
        if guide is not None:  # the guide's embeddings of every rank's rows, without gradient
            self.guide_anchors, self.guide_positives = keys(guide[0]), keys(guide[1])
            self.guide_negatives = keys(guide[2], per_row=per_anchor)
