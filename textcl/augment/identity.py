"""``Identity``: the text itself as both views; the encoder's dropout makes them differ (unsupervised SimCSE)."""
from __future__ import annotations

from typing import Any, Sequence

from textcl.augment.rng import SeedStream
from textcl.augment.base import TextAugmenter, check_probability, check_seeds


class Identity(TextAugmenter):
    """Pass texts through unchanged: the two views differ only by dropout noise in the encoder.

    Args:
        dropout: the dropout rate the encoder should use while encoding the views (SimCSE uses 0.1, the
            BERT default). ``None`` keeps the model's own rate. The trainer reads this attribute; the
            augmenter itself does nothing with it.

    Example::

        >>> Identity(dropout=0.1)(["A man is playing a guitar."], seeds=[0])
        ['A man is playing a guitar.']
    """

    name = "identity"

    def __init__(self, dropout: float | None = None):
        self.dropout = None if dropout is None else check_probability("dropout", dropout, allow_one=False)

    def augment_one(self, text: str, rng: SeedStream) -> str:
        return text

    def __call__(self, texts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        check_seeds(texts, seeds)
        return list(texts)

    def options(self) -> dict[str, Any]:
        return {"dropout": self.dropout}
