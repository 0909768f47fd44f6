"""A general-domain term mixed into every step (``data.mix``): InfoNCE on two dropout views of texts from
another source (the packaged Wikipedia sentences by default, less the articles the Wikipedia guard sets are
built from), added to the task's loss with a weight.

Fine-tuning on one task moves the model away from what it knew; the SimCSE objective on general text keeps
its sentence space spread out where the task never looks. Each step draws ``batch_size`` texts from a
generator seeded by (seed, step, process), so a resumed run draws the same texts and nothing is checkpointed.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from textcl.models.features import pad_features


class MixTerm:
    """``term(run, step) -> loss`` (a scalar with gradient): ``weight * InfoNCE(z1, z2)`` where z1, z2 (b, d)
    are two dropout forwards of the step's b texts through ``run.model``."""

    def __init__(self, config, texts: list[str], seed: int):
        self.config = config
        self.texts = texts
        self.seed = int(seed)

    @classmethod
    def load(cls, config, seed: int) -> "MixTerm":
        from textcl.config import DataConfig
        from textcl.data.pairs import load_examples

        if config.path == "packaged:wiki":  # never the articles the Wikipedia guard sets are built from
            from textcl.data.wiki import wiki_sentences

            return cls(config, wiki_sentences(without_guards=True), seed)
        examples = load_examples(dataclasses.replace(DataConfig(), kind="unlabeled", path=config.path))
        return cls(config, [e.anchor for e in examples], seed)

    def texts_for(self, step: int, process: int = 0) -> list[str]:
        """The ``batch_size`` texts of optimizer step ``step`` on process ``process`` (distinct rows)."""
        rng = np.random.default_rng([self.seed, int(step), int(process)])
        size = min(self.config.batch_size, len(self.texts))
        return [self.texts[i] for i in rng.choice(len(self.texts), size=size, replace=False)]

    def __call__(self, run, step: int) -> torch.Tensor:
        from textcl.losses.infonce import info_nce

        encoder = run.encoder
        texts = self.texts_for(step, run.acc.process_index)
        feats = encoder.tokenize(texts, max_length=run.config.model.max_seq_len)
        feats = {k: v.to(run.acc.device) for k, v in feats.items()}
        pad_id = encoder.tokenizer.pad_token_id or 0
        z = run.model(pad_features([feats, feats], pad_id))  # one forward, two dropout masks per text
        z1, z2 = z.split(len(texts))
        return self.config.weight * info_nce(z1.float(), z2.float(), temperature=self.config.temperature)
