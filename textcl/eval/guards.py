"""Guard sets: evaluations off the task's domain, scored before, during and after training, to show what
fine-tuning cost elsewhere (``eval.guard``).

A guard is any set textcl evaluates: a named or local STS set (Spearman x100), a BEIR folder (nDCG@10 x100),
or one built from the packaged data:

- ``wiki-description-lead``: a Wikipedia article's short description ("Italian Renaissance painting") as the
  query, its lead section as the one relevant document, over 1,004 articles (every 10th of the packaged
  10,033, from the first). Asymmetric retrieval of encyclopedic text, which STS fine-tuning never sees.
- ``wiki-sentence-rest``: an article's first sentence as the query, the rest of its lead as the relevant
  document, over the same articles that have two sentences or more (941).
- ``wiki-description-lead-b``, ``wiki-sentence-rest-b``: the same on other articles (every 10th from the
  6th): where ``train.wise_alpha: auto`` chose on the first pair, these report on articles no choice saw.

``data.mix`` never trains on the guards' articles (:func:`textcl.data.wiki.wiki_sentences`), and a run whose
``data.path`` is ``packaged:wiki`` cannot take a Wikipedia guard (it trains on those articles).
- ``stsb-dev-forums``: the 375 STS-B dev pairs from the answers-forums source (genre main-forums), which
  STS-B train does not hold (its only forum pairs are deft-forum). Read from the packaged STS-B files, which
  keep the genre and source columns; the hub's copy drops them. It is part of ``stsb-dev``, so a run that
  selects on (or trains or tests on) STS-B dev cannot take it: a guard sharing pairs with a task set is refused
  (:func:`check_held_out`).

(Title -> lead retrieval is not offered: the lead repeats the title, and MiniLM scores nDCG@10 99.8 on it
before any training, so a guard built on it could not fall.)

Scores carry a 95% bootstrap CI when asked: over pairs for STS, over queries for retrieval.
"""
from __future__ import annotations

import functools
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textcl.data.beir import BeirData, load_beir
from textcl.data.sts import STSData, load_sts
from textcl.errors import ConfigError, TextclError
from textcl.eval.stats import bootstrap_indices

BUILTIN_GUARDS = ("wiki-description-lead", "wiki-sentence-rest", "wiki-description-lead-b", "wiki-sentence-rest-b",
                  "stsb-dev-forums")
WIKI_GUARDS = tuple(g for g in BUILTIN_GUARDS if g.startswith("wiki-"))
#: a Matryoshka row of a run's reports, ``<set>@<d>d`` (``Evaluator.at_dims``); a guard such as ``X ndcg@10`` is not
MATRYOSHKA_ROW = re.compile(r"@\d+d$")


@dataclass
class Guard:
    """One guard set: ``sts`` (scored by Spearman x100) or ``beir`` (scored by nDCG@10 x100)."""

    name: str
    sts: STSData | None = None
    beir: BeirData | None = None

    @property
    def metric(self) -> str:
        return "Spearman x100 (cosine)" if self.sts is not None else "nDCG@10 x100"

    def evaluate(self, encoder, *, n_bootstrap: int = 0, batch_size: int = 64) -> dict:
        """``{"score", "n"}`` and, with ``n_bootstrap``, ``ci95`` (low, high) on the same x100 scale."""
        if self.sts is not None:
            from textcl.eval.sts import evaluate_sts

            m = evaluate_sts(encoder, [self.sts], n_bootstrap=n_bootstrap, batch_size=batch_size)["sets"][self.sts.name]
            out = {"score": m["spearman"], "n": m["n"]}
            if m.get("ci95"):
                out["ci95"] = list(m["ci95"])
            return out
        from textcl.eval.retrieval import evaluate_retrieval

        r = evaluate_retrieval(encoder, self.beir, batch_size=batch_size, per_query=bool(n_bootstrap))
        out = {"score": 100.0 * r["ndcg@10"], "n": r["n_queries"]}
        if n_bootstrap:
            per = np.asarray([q["ndcg@10"] for q in r["per_query"].values()], dtype=np.float64)
            means = per[bootstrap_indices(len(per), n_bootstrap)].mean(axis=1)
            low, high = np.quantile(means, [0.025, 0.975])
            out["ci95"] = [100.0 * float(low), 100.0 * float(high)]
        return out


def _wiki_articles(offset: int) -> list[dict]:
    from textcl.data.wiki import GUARD_STRIDE, wiki_articles

    return wiki_articles()[offset::GUARD_STRIDE]


def _beir(pairs: list[tuple[str, str]]) -> BeirData:
    """One query per pair, its own document the only relevant one."""
    return BeirData({f"d{i}": {"title": "", "text": d} for i, (_, d) in enumerate(pairs)},
                    {f"q{i}": q for i, (q, _) in enumerate(pairs)},
                    {f"q{i}": {f"d{i}": 1} for i in range(len(pairs))})


def _stsb_genre(split: str, source: str, name: str) -> STSData:
    from textcl.data.sts import read_packaged_stsb_source

    try:
        return read_packaged_stsb_source(split, source, name)
    except TextclError as exc:
        raise TextclError(f"guard {name!r}: {exc}") from exc


@functools.lru_cache(maxsize=None)
def _builtin(name: str) -> Guard:
    from textcl.data.wiki import GUARD_OFFSETS

    offset = GUARD_OFFSETS[1] if name.endswith("-b") else GUARD_OFFSETS[0]
    if name.startswith("wiki-description-lead"):
        pairs = [(v["description"].strip(), v["extract"].strip()) for v in _wiki_articles(offset)
                 if (v.get("description") or "").strip()]
        return Guard(name, beir=_beir(pairs))
    if name.startswith("wiki-sentence-rest"):
        from textcl.data.wiki import split_sentences

        pairs = []
        for v in _wiki_articles(offset):
            sentences = split_sentences(v["extract"])
            if len(sentences) >= 2:
                pairs.append((sentences[0], " ".join(sentences[1:])))
        return Guard(name, beir=_beir(pairs))
    return Guard(name, sts=_stsb_genre("dev", "answers-forums", name))


def load_guard(spec: str | os.PathLike, field: str = "eval.guard") -> Guard:
    """A guard by name (:data:`BUILTIN_GUARDS`, or an STS set name such as ``sickr``), a BEIR folder
    (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``) or a local STS file."""
    text = os.fspath(spec)
    if text in BUILTIN_GUARDS:
        return _builtin(text)
    path = Path(text).expanduser()
    try:
        if path.is_dir():
            if not (path / "corpus.jsonl").exists():
                raise ConfigError(field, f"{text!r} is a folder without corpus.jsonl: expected a BEIR folder "
                                         "(corpus.jsonl, queries.jsonl, qrels/test.tsv) or an STS file")
            guard = Guard(f"{path.name} ndcg@10", beir=load_beir(path, "test"))
        else:
            sts = load_sts(path if path.exists() else text)
            guard = Guard(sts.name, sts=sts)
    except ConfigError:
        raise
    except (TextclError, OSError) as exc:
        raise ConfigError(field, f"{text!r}: {exc}; the built-in guards are {', '.join(BUILTIN_GUARDS)}") from exc
    if guard.name == "all" or MATRYOSHKA_ROW.search(guard.name):  # they name other rows of the reports
        raise ConfigError(field, f"{text!r}: a guard cannot be named {guard.name!r} (reserved for SentEval's "
                                 "'all' and Matryoshka rows); rename the file")
    return guard


def _text_key(text: str) -> str:
    """A text as the overlap check compares it: Unicode NFKC, case folded, runs of whitespace as one space, ends
    stripped (so "The  cat" and "the cat\u00a0" are one text: a copy that differs only so is still a copy)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def pair_keys(sentences1, sentences2) -> set[tuple[str, str]]:
    """Each pair as an order-free key of its texts (:func:`_text_key`), to find the pairs two sets share."""
    return {(a, b) if a <= b else (b, a)
            for a, b in ((_text_key(x), _text_key(y)) for x, y in zip(sentences1, sentences2))}


def beir_pair_keys(b: BeirData) -> list[set[tuple[str, str]]]:
    """A retrieval set's (query, relevant document) pairs, each as the set of its :func:`pair_keys` forms: a
    titled document both as its text and as title + text (as retrieval scores it, and as a BEIR export writes it
    out)."""
    out = []
    for q, rel in b.qrels.items():
        for d, grade in rel.items():
            if grade > 0 and q in b.queries and d in b.corpus:
                docs = _doc_forms(b.corpus[d])
                out.append(pair_keys([b.queries[q]] * len(docs), docs))
    return out


def _doc_forms(doc: dict) -> list[str]:
    return [doc["text"]] + ([f"{doc['title']} {doc['text']}"] if doc.get("title") else [])


def guard_pair_keys(g: Guard) -> list[set[tuple[str, str]]]:
    """A guard's pairs, each as the set of its :func:`pair_keys` forms: an STS set's sentence pairs, or a
    retrieval set's (query, relevant document) pairs (:func:`beir_pair_keys`)."""
    if g.sts is not None:
        return [pair_keys([a], [b]) for a, b in zip(g.sts.sentences1, g.sts.sentences2)]
    return beir_pair_keys(g.beir)


def text_keys(texts) -> set[str]:
    """Each text as the overlap check compares it (:func:`_text_key`)."""
    return {_text_key(t) for t in texts}


def guard_text_keys(g: Guard) -> list[set[str]]:
    """A guard's distinct texts, each as the set of its :func:`_text_key` forms: an STS set's sentences, or a
    retrieval set's queries that have a relevant document and those documents (a titled document in both
    forms)."""
    if g.sts is not None:
        return [{t} for t in sorted(text_keys(list(g.sts.sentences1) + list(g.sts.sentences2)))]
    b = g.beir
    forms = {_text_key(b.queries[q]): {_text_key(b.queries[q])} for q, rel in b.qrels.items()
             if q in b.queries and any(grade > 0 for grade in rel.values())}
    for rel in b.qrels.values():
        for d, grade in rel.items():
            if grade > 0 and d in b.corpus:
                keys = {_text_key(t) for t in _doc_forms(b.corpus[d])}
                forms.setdefault(_text_key(b.corpus[d]["text"]), set()).update(keys)
    return list(forms.values())


def check_held_out(guards: list[Guard], task_sets: list[tuple[str, str, set]], field: str = "eval.guard",
                   task_texts: list[tuple[str, str, set]] = ()) -> None:
    """Refuse a guard that shares pairs with a set that trains, selects or tests the model (an STS guard's
    sentence pairs, a retrieval guard's query -> relevant document pairs): ``task_sets`` holds ``(its field,
    its name, its pair_keys)``. Such a guard is no measure of what fine-tuning cost off the task (a selection
    set's pairs are what the best step was chosen for), and with ``train.wise_alpha: auto`` a test set's pairs
    would help choose the merge the test then scores. ``task_texts`` holds ``(its field, its name, its
    text_keys)`` for what trains on single texts (unlabeled rows; a mix's dropout views or distilled texts): a
    guard sharing a text with them is refused too, since training holds those very texts in place."""
    for g in guards:
        mine = guard_pair_keys(g)
        for where, name, keys in task_sets:
            shared = sum(1 for forms in mine if forms & keys)
            if shared:
                raise ConfigError(field, f"{g.name} shares {shared} of its {len(mine)} pairs with {name} ({where}): "
                                         "a guard measures what fine-tuning cost off the task, and these pairs are "
                                         f"the task's; drop {g.name} from eval.guard, or take {name} out of {where}")
        if not task_texts:
            continue
        texts = guard_text_keys(g)
        for where, name, keys in task_texts:
            shared = [forms for forms in texts if forms & keys]
            if shared:
                first = min(min(forms & keys) for forms in shared)
                raise ConfigError(field, f"{g.name} shares {len(shared)} of its {len(texts)} texts with {name} "
                                         f"({where}), such as {first[:80]!r}: a guard measures what fine-tuning cost "
                                         "off the task, and training on its texts holds them in place; drop "
                                         f"{g.name} from eval.guard, or take its texts out of {name}")


def load_guards(specs, field: str = "eval.guard") -> list[Guard]:
    guards = [load_guard(s, f"{field}[{i}]") for i, s in enumerate(specs)]
    names = [g.name for g in guards]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(field, f"{', '.join(twice)} given twice")
    return guards
