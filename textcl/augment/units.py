"""Splitting a text into the units that augmenters crop, delete, swap or repeat.

- ``"word"``: whitespace-separated words; a view joins its words with single spaces.
- ``"char"``: characters (code points), for scripts written without spaces; a view keeps the characters as
  they are (spaces included, stripped at the ends).
- ``"auto"``: ``"char"`` when most non-space characters are East Asian wide/fullwidth (Chinese, Japanese,
  Korean), else ``"word"``. Thai, Lao, Khmer, … are not wide: choose ``"char"`` (or a tokenizer) for them.
"""
from __future__ import annotations

import re
from typing import Sequence

LEVELS = ("auto", "word", "char")

# Approximately the East Asian wide (W) and fullwidth (F) characters: Hangul Jamo, CJK radicals to Yi
# (CJK punctuation, kana, ideographs), Hangul syllables, CJK compatibility, vertical and fullwidth
# forms, Tangut and kana supplements, emoji, and the supplementary ideograph planes. A regex keeps
# this check at C speed; a few wide symbols elsewhere (e.g. U+231A) are not counted.
_WIDE = re.compile(
    "[\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe10-\ufe19\ufe30-\ufe6f"
    "\uff00-\uff60\uffe0-\uffe6\U00016fe0-\U00018cff\U0001aff0-\U0001b2ff\U0001f000-\U0001faff"
    "\U00020000-\U0003fffd]"
)
_SPACE = re.compile(r"\s")


def mostly_wide(text: str) -> bool:
    """True when more than half of the non-space characters are East Asian wide or fullwidth."""
    if text.isascii() or _WIDE.search(text) is None:
        return False
    wide = len(_WIDE.findall(text))
    return 2 * wide > len(text) - len(_SPACE.findall(text))


def split_units(text: str, level: str) -> tuple[Sequence[str], str]:
    """``(units, joiner)``: ``joiner.join(units)`` rebuilds the text (word level: with single spaces).

    At char level the units are the stripped string itself (a sequence of characters).
    """
    if level == "word" or (level == "auto" and not mostly_wide(text)):
        return text.split(), " "
    return text.strip(), ""
