"""Span crops: a contiguous piece of the text as a view, and DeCLUTR's anchor/positive spans of a document."""
from __future__ import annotations

from typing import Any, Callable

from textcl.augment.rng import SeedStream
from textcl.augment.base import (
    TextAugmenter,
    check_choice,
    check_positive_int,
    check_probability,
)
from textcl.augment.units import LEVELS, split_units
from textcl.errors import ConfigError


def crop_length(n_units: int, ratio: float) -> int:
    """How many of ``n_units`` a crop of ``ratio`` keeps: ``round(ratio * n_units)``, at least 1."""
    return max(1, min(n_units, round(ratio * n_units)))


class SpanCrop(TextAugmenter):
    """Keep one contiguous span covering a ratio of the text drawn uniformly from ``[min_ratio, max_ratio]``.

    The span has ``round(ratio * n)`` units of the ``n`` in the text (at least one) and starts at a uniformly
    drawn position. A crop is always a contiguous subsequence of the original's units.

    Args:
        min_ratio, max_ratio: bounds of the kept fraction, ``0 < min_ratio <= max_ratio <= 1``.
        level: ``"word"``, ``"char"``, ``"auto"`` (see :mod:`textcl.augment.units`) or ``"token"``, which
            crops on the subword tokens of ``tokenizer`` and returns the exact substring they cover: the way
            to crop any language, spaces or not.
        tokenizer: for ``level="token"``: a Hugging Face *fast* tokenizer (it must return offsets), or a
            name/path that ``AutoTokenizer.from_pretrained`` loads.

    Example::

        >>> crop = SpanCrop(min_ratio=0.5, max_ratio=0.5)
        >>> crop(["one two three four five six seven eight nine ten"], seeds=[3])  # 5 contiguous words
    """

    name = "span_crop"

    def __init__(
        self,
        min_ratio: float = 0.6,
        max_ratio: float = 0.9,
        level: str = "auto",
        tokenizer: Any = None,
    ):
        self.min_ratio = check_probability("min_ratio", min_ratio)
        self.max_ratio = check_probability("max_ratio", max_ratio)
        if self.min_ratio <= 0:
            raise ConfigError("min_ratio", f"must be > 0, got {min_ratio!r}")
        if self.min_ratio > self.max_ratio:
            raise ConfigError("min_ratio", f"must be <= max_ratio ({max_ratio!r}), got {min_ratio!r}")
        self.level = check_choice("level", level, LEVELS + ("token",))
        self._tokenizer_spec = tokenizer
        self.tokenizer = None
        if level == "token":
            if tokenizer is None:
                raise ConfigError("tokenizer", "level 'token' needs a tokenizer (a fast tokenizer or a name)")
            self.tokenizer = _load_tokenizer(tokenizer)
        elif tokenizer is not None:
            raise ConfigError("tokenizer", f"is only used with level 'token', not {level!r}")

    def augment_one(self, text: str, rng: SeedStream) -> str:
        ratio = rng.uniform(self.min_ratio, self.max_ratio)
        if self.level == "token":
            return self._crop_tokens(text, ratio, rng)
        units, joiner = split_units(text, self.level)
        n = len(units)
        if n == 0:
            return text
        k = crop_length(n, ratio)
        start = rng.randrange(n - k + 1)
        return joiner.join(units[start : start + k])

    def _crop_tokens(self, text: str, ratio: float, rng: SeedStream) -> str:
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        n = len(offsets)
        if n == 0:
            return text
        k = crop_length(n, ratio)
        start = rng.randrange(n - k + 1)
        return text[offsets[start][0] : offsets[start + k - 1][1]].strip()

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"min_ratio": self.min_ratio, "max_ratio": self.max_ratio, "level": self.level}
        if self.level == "token":
            opts["tokenizer"] = self._tokenizer_spec
        return opts


def _load_tokenizer(spec: Any) -> Callable:
    if not isinstance(spec, str):
        if not getattr(spec, "is_fast", False):
            raise ConfigError("tokenizer", "must be a fast tokenizer: crops need its offset mapping")
        return spec
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, use_fast=True)
    except OSError as exc:
        raise ConfigError("tokenizer", f"cannot load tokenizer {spec!r}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("tokenizer", f"{spec!r} has no fast tokenizer; crops need its offset mapping")
    return tokenizer


# --- document mode (DeCLUTR) ----------------------------------------------------------------------------


def sample_span_pairs(
    n_units: int,
    rng: SeedStream,
    *,
    num_anchors: int = 1,
    num_positives: int = 1,
    min_length: int = 32,
    max_length: int = 512,
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """DeCLUTR span sampling over a document of ``n_units`` units; returns ``[((a0, a1), (p0, p1)), ...]``.

    Half-open ``[start, end)`` spans. Per anchor: its length is ``min_length + floor(b * (max_length -
    min_length))`` with ``b ~ Beta(4, 2)`` (long anchors), each positive's length uses ``b ~ Beta(2, 4)``
    (short positives), both capped at ``n_units``. An anchor starts uniformly in the document; a positive
    starts uniformly in ``[a0 - len_p, a1]`` (clipped to the document), so it overlaps the anchor, is
    adjacent to it, or lies inside it (subsumed). Lengths are clipped to the document, so short documents
    still give pairs. ``num_anchors * num_positives`` pairs in all, anchor-major.
    """
    check_positive_int("min_length", min_length)
    check_positive_int("max_length", max_length)
    if min_length > max_length:
        raise ConfigError("min_length", f"must be <= max_length ({max_length}), got {min_length}")
    if n_units <= 0:
        return []
    spread = max_length - min_length
    pairs = []
    for _ in range(num_anchors):
        len_a = min(n_units, min_length + int(rng.betavariate(4, 2) * spread))
        a0 = rng.randrange(n_units - len_a + 1)
        a1 = a0 + len_a
        for _ in range(num_positives):
            len_p = min(n_units, min_length + int(rng.betavariate(2, 4) * spread))
            lo = max(0, a0 - len_p)
            hi = min(a1, n_units - len_p)
            p0 = rng.randint(lo, hi)  # lo <= hi always: a0 - len_p <= a1, and len_p <= n_units
            pairs.append(((a0, a1), (p0, p0 + len_p)))
    return pairs


def document_span_pairs(
    document: str,
    seed: int,
    *,
    num_anchors: int = 1,
    num_positives: int = 1,
    min_length: int = 32,
    max_length: int = 512,
    level: str = "auto",
) -> list[tuple[str, str]]:
    """DeCLUTR's positives from one document: ``[(anchor, positive), ...]`` as text spans.

    Lengths are in units of ``level`` (words by default); see :func:`sample_span_pairs` for the sampling.
    DeCLUTR (Giorgi et al., 2021) used documents of at least ``2 * max_length`` tokens with
    ``min_length=32, max_length=512``; shorter documents still work here, the spans are capped at the
    document's length. An empty or blank document gives no pairs.
    """
    check_choice("level", level, LEVELS)
    units, joiner = split_units(document, level)
    rng = SeedStream.from_seed(seed)
    spans = sample_span_pairs(
        len(units),
        rng,
        num_anchors=num_anchors,
        num_positives=num_positives,
        min_length=min_length,
        max_length=max_length,
    )
    return [(joiner.join(units[a0:a1]), joiner.join(units[p0:p1])) for (a0, a1), (p0, p1) in spans]
