"""Turn a micro-batch of example indices into what a step needs: the views' tokens and the keys that
keep duplicates and same-group rows out of the negatives."""
from __future__ import annotations

import numpy as np
import torch

from textcl.models import Encoder
from textcl.train.build import Run


class Batcher:
    """``batcher(idx, epoch) -> (batch, keys)``.

    ``batch``: ``{"anchor", "positive", "negative"}``, each tokenized features ``{input_ids, attention_mask
    [, token_type_ids]}`` of shape (B, L) on the run's device (``negative`` is None without hard negatives).
    ``keys``: the optional ``anchor_keys``, ``positive_keys`` (B,), ``negative_keys`` (B, 1) and
    ``group_ids`` (B,) int64 tensors of :func:`textcl.losses.false_negative_mask` (group ids from
    :func:`textcl.losses.group_keys`).

    Each view is augmented with a seed of (seed, epoch, example, view), so a resumed run sees the same views.
    """

    def __init__(self, run: Run):
        self.run = run

    def features(self, texts: list[str], encoder: Encoder, seeds: list[int] | None) -> dict[str, torch.Tensor]:
        """Tokens of ``texts`` cut at ``model.max_seq_len``, token-augmented when ``seeds`` are given."""
        run = self.run
        feats = encoder.tokenize(texts, max_length=run.config.model.max_seq_len)
        if run.token_aug is not None and seeds is not None:
            feats["input_ids"], feats["attention_mask"] = run.token_aug(feats["input_ids"], feats["attention_mask"],
                                                                        seeds)
        return {k: v.to(run.acc.device) for k, v in feats.items()}

    def __call__(self, idx: np.ndarray, epoch: int):
        from textcl.augment import view_seed
        from textcl.losses import group_keys, text_keys

        run, c = self.run, self.run.config
        device = run.acc.device
        seed = c.train.seed
        exs = [run.examples[i] for i in idx]
        same_texts = c.data.kind == "unlabeled"  # both views come from the one text
        anchors = [e.anchor for e in exs]
        positives = anchors if same_texts else [e.positive for e in exs]
        s0 = [view_seed(seed, epoch, int(i), 0) for i in idx]
        s1 = [view_seed(seed, epoch, int(i), 1) for i in idx]
        a_views = run.text_aug(anchors, s0) if run.text_aug is not None else anchors
        p_views = run.text_aug(positives, s1) if run.text_aug is not None else positives
        anchor_feats = self.features(a_views, run.encoder, s0)
        if p_views is a_views and run.token_aug is None and run.doc_model is run.model:
            positive_feats = anchor_feats  # plain dropout views: the same tokens, encoded twice
        else:
            positive_feats = self.features(p_views, run.doc_encoder, s1)
        batch = {"anchor": anchor_feats, "positive": positive_feats, "negative": None}
        if run.task is not None:  # data.kind interactions: item ids, history ids and logQ for the next-item loss
            return batch, self.item_keys(exs)
        keys = {}
        if c.loss.mask_false_negatives and c.loss.name == "infonce":  # CoSENT and AnglE take no keys
            anchor_keys = text_keys(anchors).to(device)
            keys = {"anchor_keys": anchor_keys,
                    "positive_keys": anchor_keys if same_texts else text_keys(positives).to(device)}
        if c.data.group_field is not None:  # same group: not each other's negatives
            keys["group_ids"] = group_keys([e.group for e in exs]).to(device)
        negatives = None
        if exs[0].negative is not None:
            negatives = [e.negative for e in exs]
            batch["negative"] = self.features(negatives, run.doc_encoder, None)
            if keys:
                keys["negative_keys"] = text_keys(negatives).to(device)[:, None]
        if c.data.kind == "scored":
            keys["scores"] = torch.tensor([e.score for e in exs], dtype=torch.float32, device=device)
        if run.guide is not None:
            keys.update(self.guide_keys(a_views, p_views, negatives))
        return batch, keys

    def item_keys(self, exs) -> dict:
        """``positive_keys`` (B,) of the items, ``history_keys`` (B, H) and ``positive_logq`` (B,), on the run's
        device. A row's history keys are the batch's items that the user picked at any time before the row's
        item (the whole training sequence before it, not only the items of its history text), padded with the
        row's own item key: all that the accidental-hit mask needs, at most B wide. With ``negatives: catalogue``,
        :meth:`catalogue_keys` too."""
        from textcl.losses import text_keys

        device, task = self.run.acc.device, self.run.task
        firsts = [task.first_at[e.user] for e in exs]
        in_batch = sorted({e.item for e in exs})
        rows = [[i for i in in_batch if first.get(i, e.position) < e.position] for first, e in zip(firsts, exs)]
        width = max(1, max(len(r) for r in rows))
        padded = [r + [e.item] * (width - len(r)) for r, e in zip(rows, exs)]
        history = text_keys([i for row in padded for i in row]).view(len(exs), width)
        keys = {"positive_keys": text_keys([e.item for e in exs]).to(device), "history_keys": history.to(device),
                "positive_logq": torch.tensor([self.run.item_logq[e.item] for e in exs], dtype=torch.float32,
                                              device=device)}
        if self.run.catalogue is not None:
            keys.update(self.catalogue_keys(exs, firsts))
        return keys

    def catalogue_keys(self, exs, firsts: list[dict]) -> dict:
        """``negatives: catalogue``: the cached ``catalogue`` (N, d), ``positive_columns`` (B,) and
        ``catalogue_mask`` (B, N), True at every item the row's user picked before the row's item (anywhere in
        their training sequence), on the run's device."""
        cache, device = self.run.catalogue, self.run.acc.device
        columns = cache.columns([e.item for e in exs])
        mask = torch.zeros(len(exs), len(cache.item_ids), dtype=torch.bool)
        for row, (first, e) in enumerate(zip(firsts, exs)):
            seen = [cache.column[i] for i, t in first.items() if t < e.position]
            if seen:
                mask[row, seen] = True
        return {"catalogue": cache.embeddings, "positive_columns": columns.to(device),
                "catalogue_mask": mask.to(device)}

    def guide_keys(self, anchors: list[str], positives: list[str], negatives: list[str] | None) -> dict:
        """The frozen guide's embeddings of the views, (B, g) each and (B, 1, g) for hard negatives: computed
        without gradient, in bf16 where the device has it natively."""
        from textcl.models.precision import native_bf16

        guide, device = self.run.guide, self.run.acc.device
        texts = anchors + positives + (negatives or [])
        emb = torch.from_numpy(guide.encode(texts, batch_size=len(texts), normalize=True,
                                            bf16=native_bf16(device.type))).to(device)
        b = len(anchors)
        out = {"guide_anchors": emb[:b], "guide_positives": emb[b:2 * b]}
        if negatives is not None:
            out["guide_negatives"] = emb[2 * b:][:, None, :]
        return out
