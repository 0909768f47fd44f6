"""The training data shapes users bring, built from the packaged Wikipedia leads and cached in benchmarks/.cache.

- ``sentences``: the packaged Wikipedia sentences, one per line (unsupervised SimCSE).
- ``pairs``: a short query (the article's title, 3-7 tokens) -> a long passage (the rest of the lead after
  its first sentence; median 74 MiniLM tokens, 13% over 128).
- ``short_pairs``: title -> the lead's first sentence (median 28 tokens), for large cached batches.
- ``uniform_pairs``: title -> the whole lead, only leads longer than 128 MiniLM tokens: every document is cut at
  the length limit, so sorting by length saves no padding (the shape of articles cut to ``max_seq_len``).
- ``triples``: ``pairs`` plus one hard negative mined with the packaged MiniLM (``textcl mine``'s function,
  ranks 10-50, margin 0.05, candidates: the training passages).
- ``scored``: STS-B train pairs (sentence1, sentence2, score 0-5) from the packaged genuine STS-B, shuffled
  with a fixed seed (the file is sorted by genre).
- ``heldout``: a BEIR folder whose queries are the titles of 500 articles that no training file contains,
  each with its passage as the one relevant document, in a corpus of those 500 passages and 1,500 training
  passages as distractors.
- ``heldout_all``: the same 500 queries, each with two relevant documents, its article's first sentence and the
  rest of its lead, in a corpus that holds both passages of the 1,500 distractor articles too.

Articles are shuffled once with a fixed seed; the last 500 (with at least two sentences) are held out.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("TEXTCL_SHAPES_CACHE") or Path(__file__).resolve().parent / ".cache" / "shapes")
HELDOUT = 500
DISTRACTORS = 1500


def _articles() -> list[tuple[str, str, str]]:
    """(title, first sentence, rest of the lead) of each lead with at least two sentences, shuffled."""
    from textcl.data.wiki import split_sentences, wiki_leads

    rows = []
    for title, lead in wiki_leads():
        sentences = split_sentences(lead)
        if len(sentences) >= 2:
            rows.append((title, sentences[0], " ".join(sentences[1:])))
    order = np.random.default_rng(0).permutation(len(rows))
    return [rows[i] for i in order]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    from textcl._io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def sentences(n: int) -> Path:
    """A .txt of the first ``n`` packaged Wikipedia sentences."""
    path = CACHE / f"sentences-{n}.txt"
    if not path.exists():
        from textcl._io import atomic_write_text
        from textcl.data.wiki import wiki_sentences

        atomic_write_text(path, "".join(s + "\n" for s in wiki_sentences()[:n]))
    return path


def pairs(n: int | None = None) -> Path:
    """JSONL of (title -> rest of lead) training pairs, the first ``n`` (all ~8,900 when None)."""
    path = CACHE / f"pairs-{n or 'all'}.jsonl"
    if not path.exists():
        _write_jsonl(path, [{"anchor": t, "positive": rest} for t, _, rest in _articles()[:-HELDOUT][:n]])
    return path


def short_pairs(n: int | None = None) -> Path:
    """JSONL of (title -> first sentence) training pairs."""
    path = CACHE / f"short-pairs-{n or 'all'}.jsonl"
    if not path.exists():
        _write_jsonl(path, [{"anchor": t, "positive": first} for t, first, _ in _articles()[:-HELDOUT][:n]])
    return path


def uniform_pairs(n: int | None = None, min_tokens: int = 128) -> Path:
    """JSONL of (title -> whole lead) pairs whose lead is longer than ``min_tokens`` MiniLM tokens."""
    path = CACHE / f"uniform-pairs-{min_tokens}-{n or 'all'}.jsonl"
    if not path.exists():
        from transformers import AutoTokenizer

        from textcl.models import packaged_minilm_path

        tok = AutoTokenizer.from_pretrained(str(packaged_minilm_path()))
        rows = []
        for t, first, rest in _articles()[:-HELDOUT]:
            lead = f"{first} {rest}"
            if len(tok(lead, add_special_tokens=True)["input_ids"]) > min_tokens:
                rows.append({"anchor": t, "positive": lead})
                if n is not None and len(rows) == n:
                    break
        _write_jsonl(path, rows)
    return path


def scored(n: int) -> Path:
    """JSONL of ``n`` shuffled STS-B train rows with ``sentence1``, ``sentence2`` and ``score``."""
    path = CACHE / f"scored-{n}.jsonl"
    if not path.exists():
        from textcl.data.sts import load_sts

        rows = load_sts("stsb-train").pairs()
        order = np.random.default_rng(0).permutation(len(rows))[:n]
        _write_jsonl(path, [{"sentence1": rows[i].sentence1, "sentence2": rows[i].sentence2, "score": rows[i].score}
                            for i in order])
    return path


def triples(n: int) -> Path:
    """JSONL of (title, passage, mined hard negative) for the first ``n`` training pairs that get one."""
    path = CACHE / f"triples-{n}.jsonl"
    if path.exists():
        return path
    from textcl.index.mining import mine_hard_negatives
    from textcl.models import Encoder, packaged_minilm_path

    train = _articles()[:-HELDOUT]
    candidates = [(t, rest) for t, _, rest in train[: int(n * 1.2) + 50]]
    encoder = Encoder.load(packaged_minilm_path(), max_seq_length=128, device="cpu")
    found = mine_hard_negatives(candidates, encoder, rank_range=(10, 50), margin=0.05, batch_size=64)
    if len(found) < n:
        raise SystemExit(f"mined only {len(found)} triples, wanted {n}")
    return _write_jsonl(path, found[:n])


def _write_beir(folder: Path, corpus: list[dict], queries: list[str], qrels: list[tuple[int, str]]) -> Path:
    """A BEIR folder: queries ``q{i}``, each (query index, corpus id) in ``qrels`` relevant with score 1."""
    _write_jsonl(folder / "corpus.jsonl", corpus)
    _write_jsonl(folder / "queries.jsonl", [{"_id": f"q{i}", "text": t} for i, t in enumerate(queries)])
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\t{doc}\t1" for i, doc in qrels]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _heldout_beir(name: str, documents) -> Path:
    """A held-out BEIR folder under the cache, built once: ``documents(i, first, rest, held_out)`` gives an
    article's (corpus id, text, relevant) entries; queries are the held-out titles."""
    folder = CACHE / name
    if (folder / "qrels" / "test.tsv").exists():
        return folder
    rows = _articles()
    test, distractors = rows[-HELDOUT:], rows[:DISTRACTORS]
    corpus, qrels = [], []
    for held_out, articles in ((True, test), (False, distractors)):
        for i, (_, first, rest) in enumerate(articles):
            for doc, text, relevant in documents(i, first, rest, held_out):
                corpus.append({"_id": doc, "title": "", "text": text})
                if relevant:
                    qrels.append((i, doc))
    return _write_beir(folder, corpus, [t for t, _, _ in test], qrels)


def heldout() -> Path:
    """The held-out BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)."""
    return _heldout_beir("heldout-beir", lambda i, first, rest, held: [(f"{'d' if held else 'x'}{i}", rest, held)])


def heldout_all() -> Path:
    """The held-out BEIR folder in which both passages of an article (first sentence, rest) are relevant."""
    return _heldout_beir("heldout-all-beir", lambda i, first, rest, held: [
        (f"{'f' if held else 'y'}{i}", first, held), (f"{'d' if held else 'x'}{i}", rest, held)])
