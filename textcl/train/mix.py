"""A general-domain term mixed into every step (``data.mix``) on texts from another source (the packaged
Wikipedia sentences by default, less the articles the Wikipedia guard sets are built from), added to the
task's loss with a weight. Its ``objective``:

- ``infonce``: InfoNCE on two dropout views of each text. The SimCSE objective on general text keeps the
  sentence space spread out where the task never looks.
- ``pairs``: InfoNCE over (query, passage) pairs of general text, the batch's other passages as negatives:
  rehearsal of retrieval while the task trains. ``packaged:wiki`` gives a Wikipedia article's short description
  -> its lead and its first sentence -> the rest of its lead (:func:`textcl.data.wiki.wiki_pairs`); a file
  gives its (anchor, positive) rows, read as ``data.kind: pairs`` reads them.
- ``distill``: ``1 - cos`` between each text's vector and the vector the starting weights give it
  (:func:`textcl.losses.cosine_distill`): the texts stay where the model put them before fine-tuning. The
  starting weights are copied when the run is built, before a resumed run loads its checkpoint, so a resumed
  run distils towards the same start.

Each step draws ``batch_size`` texts (or pairs) from a generator seeded by (seed, step, process), so a resumed
run draws the same texts and nothing is checkpointed.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from textcl.models.features import pad_features


class MixTerm:
    """``term(run, step) -> loss`` (a scalar with gradient) over the step's b texts: ``weight * InfoNCE(z1, z2)``
    where z1, z2 (b, d) are two dropout forwards through ``run.model`` (objective infonce; objective pairs: the
    b queries' and the b passages' embeddings), or ``weight * mean(1 - cos(z, t))`` where z (b, d) is one
    forward through ``run.model`` without dropout and t (b, d) the ``teacher``'s (the starting weights, in eval
    mode, no gradient; objective distill)."""

    def __init__(self, config, texts: list, seed: int, teacher: torch.nn.Module | None = None):
        """``texts``: the texts to draw from, or (objective pairs) (query, passage, group) triples: two rows of
        one group (one Wikipedia article), or with the same query or passage, are not each other's negatives."""
        if config.objective == "distill" and teacher is None:
            raise ValueError("data.mix objective distill needs the teacher (the starting weights)")
        self.config = config
        self.texts = texts
        self.seed = int(seed)
        self.teacher = teacher

    @classmethod
    def load(cls, config, seed: int, encoder: torch.nn.Module | None = None) -> "MixTerm":
        """The term of ``data.mix``; ``encoder`` (objective distill) is copied as the teacher, so call this
        before the model trains or loads a checkpoint."""
        from textcl.config import DataConfig
        from textcl.data.pairs import load_examples

        teacher = None
        if config.objective == "distill" and encoder is not None:  # without one, __init__ refuses
            teacher = copy.deepcopy(encoder).eval().requires_grad_(False)
        pairs = config.objective == "pairs"
        if config.path == "packaged:wiki":  # never the articles the Wikipedia guard sets are built from
            from textcl.data.wiki import wiki_pairs, wiki_sentences

            return cls(config, wiki_pairs(without_guards=True) if pairs else wiki_sentences(without_guards=True),
                       seed, teacher)
        kind = "pairs" if pairs else "unlabeled"
        examples = load_examples(dataclasses.replace(DataConfig(), kind=kind, path=config.path))
        return cls(config, [(e.anchor, e.positive, i) if pairs else e.anchor for i, e in enumerate(examples)], seed,
                   teacher)

    def texts_for(self, step: int, process: int = 0) -> list:
        """The ``batch_size`` texts (or pairs) of optimizer step ``step`` on process ``process`` (distinct rows)."""
        rng = np.random.default_rng([self.seed, int(step), int(process)])
        size = min(self.config.batch_size, len(self.texts))
        return [self.texts[i] for i in rng.choice(len(self.texts), size=size, replace=False)]

    def __call__(self, run, step: int) -> torch.Tensor:
        from textcl.losses.distill import cosine_distill
        from textcl.losses.infonce import info_nce

        encoder = run.encoder
        texts = self.texts_for(step, run.acc.process_index)
        pad_id = encoder.tokenizer.pad_token_id or 0
        if self.config.objective == "pairs":
            return self.config.weight * self._pairs(run, texts, pad_id)
        feats = encoder.tokenize(texts, max_length=run.config.model.max_seq_len)
        feats = {k: v.to(run.acc.device) for k, v in feats.items()}
        if self.teacher is not None:
            self.teacher.to(run.acc.device)  # a no-op after the first step
            with torch.no_grad(), run.acc.autocast():
                t = self.teacher(feats)
            # the student without dropout too: the term then measures how far the weights moved the texts (0 at
            # the start), not dropout noise, whose pull to the clean vectors would reshape the model on its own
            run.model.eval()
            try:
                z = run.model(feats)
            finally:
                run.model.train()
            return self.config.weight * cosine_distill(z, t)
        z = run.model(pad_features([feats, feats], pad_id))  # one forward, two dropout masks per text
        z1, z2 = z.split(len(texts))
        return self.config.weight * info_nce(z1.float(), z2.float(), temperature=self.config.temperature)

    def _pairs(self, run, rows: list[tuple], pad_id: int) -> torch.Tensor:
        """InfoNCE of the b queries against the b passages (the query tower and, with ``model.two_tower``, the
        document tower, as the task's own pairs run), same-group and duplicate rows masked."""
        from textcl.losses import text_keys
        from textcl.losses.infonce import info_nce

        encoder = run.encoder
        parts = [{k: v.to(run.acc.device) for k, v in
                  encoder.tokenize([row[j] for row in rows], max_length=run.config.model.max_seq_len).items()}
                 for j in (0, 1)]
        if run.config.model.two_tower:
            q, p = run.model(parts[0]), run.doc_model(parts[1])
        else:  # one forward: the queries' and the passages' rows together
            q, p = run.model(pad_features(parts, pad_id)).split(len(rows))
        same = torch.zeros(len(rows), len(rows), dtype=torch.bool)
        for keys in (text_keys([r[0] for r in rows]), text_keys([r[1] for r in rows]),
                     torch.tensor([hash(r[2]) for r in rows])):
            same |= keys[:, None] == keys[None, :]
        same.fill_diagonal_(False)
        return info_nce(q.float(), p.float(), temperature=self.config.temperature, mask=same.to(q.device))
