"""Word edits: deletion, local shuffling, and repetition (ESimCSE).

Each works on the units of :mod:`textcl.augment.units` (words by default, characters for CJK).
"""
from __future__ import annotations

from typing import Any

from textcl.augment.rng import SeedStream
from textcl.augment.base import TextAugmenter, check_choice, check_positive_int, check_probability
from textcl.augment.units import LEVELS, split_units


class WordDeletion(TextAugmenter):
    """Delete each word independently with probability ``rate``; the view is a subsequence of the words.

    If every word is deleted, the view is the original text.

    Args:
        rate: probability of deleting a word, in ``[0, 1]``.
        level: ``"auto"``, ``"word"`` or ``"char"`` (see :mod:`textcl.augment.units`).
    """

    name = "word_deletion"

    def __init__(self, rate: float = 0.1, level: str = "auto"):
        self.rate = check_probability("rate", rate)
        self.level = check_choice("level", level, LEVELS)

    def augment_one(self, text: str, rng: SeedStream) -> str:
        units, joiner = split_units(text, self.level)
        rate = self.rate
        kept = [u for u, r in zip(units, rng.randoms(len(units))) if r >= rate]
        return joiner.join(kept) if kept else text

    def options(self) -> dict[str, Any]:
        return {"rate": self.rate, "level": self.level}


class WordSwap(TextAugmenter):
    """Shuffle words locally: no word moves more than ``window`` positions.

    Word ``i`` gets the key ``i + u_i`` with ``u_i ~ U[0, window + 1)`` and the words are sorted by key
    (the word-shuffle noise of Lample et al., 2018), so nearby words swap and distant ones keep their order.

    Args:
        window: the largest displacement of a word, ``>= 1``.
        level: ``"auto"``, ``"word"`` or ``"char"``.
    """

    name = "word_swap"

    def __init__(self, window: int = 2, level: str = "auto"):
        self.window = check_positive_int("window", window)
        self.level = check_choice("level", level, LEVELS)

    def augment_one(self, text: str, rng: SeedStream) -> str:
        units, joiner = split_units(text, self.level)
        span, noise = self.window + 1, rng.randoms(len(units))
        order = sorted(range(len(units)), key=lambda i: i + span * noise[i])
        return joiner.join([units[i] for i in order])

    def options(self) -> dict[str, Any]:
        return {"window": self.window, "level": self.level}


class WordRepetition(TextAugmenter):
    """Duplicate a few words in place (ESimCSE, Wu et al., 2022), so both views' lengths differ.

    With ``n`` words, ``m ~ U{0, ..., max(2, int(rate * n))}`` (capped at ``n``) distinct positions are
    drawn and each of those words is written twice. This counters the length bias of dropout-only
    positives (which always have equal length).

    Args:
        rate: the duplication rate (ESimCSE's ``dup_rate``; 0.32 in the paper), in ``[0, 1]``.
        level: ``"auto"``, ``"word"`` or ``"char"``.
    """

    name = "word_repetition"

    def __init__(self, rate: float = 0.32, level: str = "auto"):
        self.rate = check_probability("rate", rate)
        self.level = check_choice("level", level, LEVELS)

    def augment_one(self, text: str, rng: SeedStream) -> str:
        units, joiner = split_units(text, self.level)
        n = len(units)
        if n == 0:
            return text
        m = min(n, rng.randint(0, max(2, int(self.rate * n))))
        repeated = set(rng.sample(range(n), m))
        out: list[str] = []
        for i, unit in enumerate(units):
            out.append(unit)
            if i in repeated:
                out.append(unit)
        return joiner.join(out)

    def options(self) -> dict[str, Any]:
        return {"rate": self.rate, "level": self.level}
