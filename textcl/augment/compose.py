"""Combinators: ``Compose`` (a pipeline), ``OneOf`` (a random choice) and ``RandomApply`` (with probability p).

They thread the one random stream of each text through their children, so a pipeline's view still
depends only on the text and its seed. A child's blank output is replaced by its input before the next
child runs, so a pipeline never hands an empty string on.
"""
from __future__ import annotations

import bisect
import itertools
from typing import Any, Sequence

from textcl.augment.rng import SeedStream
from textcl.augment.base import TextAugmenter, check_probability, is_blank
from textcl.errors import ConfigError


def _check_children(field: str, augmenters: Sequence[Any], single: bool = False) -> list[TextAugmenter]:
    if isinstance(augmenters, (str, bytes)) or not isinstance(augmenters, Sequence):
        raise ConfigError(field, f"must be a list of augmenters, got {type(augmenters).__name__}")
    if not augmenters:
        raise ConfigError(field, "must name at least one augmenter")
    for i, aug in enumerate(augmenters):
        where = field if single else f"{field}[{i}]"
        if getattr(aug, "token_level", False):
            raise ConfigError(
                where,
                f"{type(aug).__name__} works on token ids after tokenization and cannot be combined with "
                "text augmenters; give it to the trainer separately",
            )
        if not isinstance(aug, TextAugmenter):
            raise ConfigError(where, f"is not a text augmenter: {aug!r}")
    return list(augmenters)


def _step(augmenter: TextAugmenter, text: str, rng: SeedStream) -> str:
    view = augmenter.augment_one(text, rng)
    return text if is_blank(view) else view


class Compose(TextAugmenter):
    """Apply the augmenters one after the other: ``Compose([a, b])`` views ``b(a(text))``.

    Example::

        >>> Compose([SpanCrop(0.6, 0.9), WordDeletion(0.1)])(texts, seeds)
    """

    name = "compose"

    def __init__(self, augmenters: Sequence[TextAugmenter]):
        self.augmenters = _check_children("augmenters", augmenters)

    def augment_one(self, text: str, rng: SeedStream) -> str:
        for augmenter in self.augmenters:
            text = _step(augmenter, text, rng)
        return text

    def get_config(self) -> dict[str, Any]:
        return {self.name: [a.get_config() for a in self.augmenters]}

    def __repr__(self) -> str:
        return f"Compose({self.augmenters!r})"


class OneOf(TextAugmenter):
    """Apply one augmenter per text, drawn with probabilities proportional to ``weights`` (default: equal).

    Example::

        >>> OneOf([WordDeletion(0.1), WordSwap(2)], weights=[3, 1])(texts, seeds)
    """

    name = "one_of"

    def __init__(self, augmenters: Sequence[TextAugmenter], weights: Sequence[float] | None = None):
        self.augmenters = _check_children("augmenters", augmenters)
        if weights is None:
            weights = [1.0] * len(self.augmenters)
        if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
            raise ConfigError("weights", f"must be a list of numbers, got {weights!r}")
        if len(weights) != len(self.augmenters):
            raise ConfigError(
                "weights", f"needs one weight per augmenter: {len(weights)} for {len(self.augmenters)}"
            )
        for w in weights:
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
                raise ConfigError("weights", f"must be non-negative numbers, got {list(weights)!r}")
        total = float(sum(weights))
        if total <= 0:
            raise ConfigError("weights", "must not all be zero")
        self.weights = [float(w) for w in weights]
        self._cumulative = [c / total for c in itertools.accumulate(self.weights)]

    def augment_one(self, text: str, rng: SeedStream) -> str:
        index = bisect.bisect_right(self._cumulative, rng.random())
        return _step(self.augmenters[min(index, len(self.augmenters) - 1)], text, rng)

    def get_config(self) -> dict[str, Any]:
        return {self.name: {"augmenters": [a.get_config() for a in self.augmenters], "weights": self.weights}}

    def __repr__(self) -> str:
        return f"OneOf({self.augmenters!r}, weights={self.weights!r})"


class RandomApply(TextAugmenter):
    """Apply ``augmenter`` with probability ``p``, else keep the text as it is.

    Example::

        >>> RandomApply(WordSwap(window=2), p=0.5)(texts, seeds)
    """

    name = "random_apply"

    def __init__(self, augmenter: TextAugmenter, p: float = 0.5):
        self.augmenter = _check_children("augmenter", [augmenter], single=True)[0]
        self.p = check_probability("p", p)

    def augment_one(self, text: str, rng: SeedStream) -> str:
        if rng.random() < self.p:
            return _step(self.augmenter, text, rng)
        return text

    def get_config(self) -> dict[str, Any]:
        return {self.name: {"p": self.p, "augmenter": self.augmenter.get_config()}}

    def __repr__(self) -> str:
        return f"RandomApply({self.augmenter!r}, p={self.p!r})"
