"""Hard-negative mining: for each (anchor, positive) pair, find a document the encoder ranks high for the
anchor that is not a positive.

Rule, for an anchor ``a`` with positive ``p`` and a candidate ``c`` at rank ``r`` (1-based) of ``a``'s search:

* keep only ``lo <= r <= hi`` (``--range lo-hi``; skipping the top ranks avoids unlabeled positives);
* drop every positive of ``a`` (all pairs sharing the anchor), compared by whitespace- and
  case-normalised text;
* drop near-duplicates of the positive: ``cos(a, c) > cos(a, p) - margin``;
* of the survivors, take the ``num_negatives`` best ranked (``strategy="top"``) or a seeded random
  choice (``strategy="random"``). Pairs with no survivor are skipped and counted.

Output (what ``textcl train`` reads as triples): JSON Lines, one object per triple::

    {"anchor": "...", "positive": "...", "negative": "..."}
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from textcl._io import atomic_path
from textcl.errors import ConfigError
from textcl.index.encoding import encode_texts
from textcl.index.faiss_index import SearchIndex
from textcl.text import normalize_text

@dataclass
class MiningStats:
    pairs: int = 0
    triples: int = 0
    skipped: int = 0  # pairs left without any candidate after the exclusions


def parse_range(text: str) -> tuple[int, int]:
    """``"10-50"`` -> (10, 50): 1-based inclusive ranks."""
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ConfigError("range", f"{text!r}: expected LO-HI with 1 <= LO <= HI, e.g. 10-50")
    return int(match.group(1)), int(match.group(2))


def mine_hard_negatives(pairs: Sequence[tuple[str, str]], encoder, corpus: Iterable[str] | SearchIndex | None = None,
                        rank_range: tuple[int, int] = (10, 50), margin: float = 0.05, num_negatives: int = 1,
                        strategy: str = "top", factory: str = "Flat", batch_size: int = 64, seed: int = 0,
                        stats: MiningStats | None = None) -> list[dict[str, str]]:
    """Triples ``{"anchor", "positive", "negative"}`` mined with ``encoder``.

    ``corpus``: candidate negatives (texts, or a built :class:`SearchIndex`); by default the distinct
    positives of all pairs. See the module docstring for the exclusion rule.
    """
    if strategy not in ("top", "random"):
        raise ConfigError("strategy", f"{strategy!r}: expected 'top' or 'random'")
    lo, hi = rank_range
    stats = stats if stats is not None else MiningStats()
    stats.pairs = len(pairs)
    if not pairs:
        return []
    if isinstance(corpus, SearchIndex):
        index = corpus
    else:
        texts = list(dict.fromkeys(corpus if corpus is not None else (p for _, p in pairs)))
        index = SearchIndex.build(texts, [str(i) for i in range(len(texts))], encoder=encoder, factory=factory,
                                  batch_size=batch_size)
    positives: dict[str, set[str]] = {}
    for a, p in pairs:
        positives.setdefault(a, set()).add(normalize_text(p))
    anchors = list(dict.fromkeys(a for a, _ in pairs))
    a_vecs = encode_texts(encoder, anchors, batch_size)
    row_of = {a: i for i, a in enumerate(anchors)}
    p_vecs = encode_texts(encoder, [p for _, p in pairs], batch_size)
    pos_scores = np.einsum("ij,ij->i", a_vecs[[row_of[a] for a, _ in pairs]], p_vecs)
    hits = index.search(a_vecs, k=hi)
    rng = np.random.default_rng(seed)
    triples = []
    for (a, p), pos_score in zip(pairs, pos_scores):
        ranked = hits[row_of[a]][lo - 1 : hi]
        ok = [h.text for h in ranked if normalize_text(h.text) not in positives[a] and h.score <= pos_score - margin]
        if not ok:
            stats.skipped += 1
            continue
        if strategy == "random":
            ok = [ok[i] for i in sorted(rng.choice(len(ok), size=min(num_negatives, len(ok)), replace=False))]
        for neg in ok[:num_negatives]:
            triples.append({"anchor": a, "positive": p, "negative": neg})
    stats.triples = len(triples)
    return triples


def write_triples(triples: Iterable[dict[str, str]], path: str | os.PathLike) -> int:
    """Write triples as JSON Lines, atomically; return how many."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for t in triples:
            fh.write(json.dumps({"anchor": t["anchor"], "positive": t["positive"], "negative": t["negative"]},
                                ensure_ascii=False) + "\n")
            n += 1
    return n
