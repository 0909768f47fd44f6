"""Hard-negative mining: positives and near-duplicates excluded, rank range respected, triples written."""
from __future__ import annotations

import json

import pytest

from _index_fakes import HashEncoder
from textcl.errors import ConfigError
from textcl.data.pairs import read_pairs
from textcl.index.mining import mine_hard_negatives, parse_range, write_triples

PAIRS = [("red apple fruit", "a red apple is a fruit")]
CORPUS = [
    "a red apple is a fruit",          # the positive
    "A red apple  is a FRUIT",         # the positive, differently cased/spaced
    "red apple fruit basket",          # scores above the positive: a likely unlabeled positive
    "a red apple",                     # shares words
    "green fruit",                     # weaker
    "cars and trucks",                 # unrelated
]


def test_excludes_positive_its_copies_and_near_duplicates():
    triples = mine_hard_negatives(PAIRS, HashEncoder(), CORPUS, rank_range=(1, 6), margin=0.0, num_negatives=10)
    negatives = [t["negative"] for t in triples]
    assert "a red apple is a fruit" not in negatives and "A red apple  is a FRUIT" not in negatives
    assert "red apple fruit basket" not in negatives  # cos(anchor, c) > cos(anchor, positive) - margin
    assert negatives[0] == "a red apple"  # hardest surviving candidate first
    assert all(set(t) == {"anchor", "positive", "negative"} for t in triples)


def test_rank_range_and_skips():
    triples = mine_hard_negatives(PAIRS, HashEncoder(), CORPUS, rank_range=(6, 6), margin=0.0)
    assert len(triples) <= 1
    from textcl.index.mining import MiningStats

    stats = MiningStats()
    assert mine_hard_negatives(PAIRS, HashEncoder(), CORPUS[:2], rank_range=(1, 2), stats=stats) == []
    assert (stats.pairs, stats.skipped) == (1, 1)


def test_parse_range_and_io(tmp_path):
    assert parse_range("10-50") == (10, 50)
    with pytest.raises(ConfigError, match="expected LO-HI"):
        parse_range("50-10")
    (tmp_path / "p.jsonl").write_text('{"anchor": "a", "positive": "b"}\n{"query": "c", "positive": "d"}\n')
    assert read_pairs(tmp_path / "p.jsonl") == [("a", "b"), ("c", "d")]
    n = write_triples([{"anchor": "a", "positive": "b", "negative": "c"}], tmp_path / "t.jsonl")
    assert n == 1 and json.loads((tmp_path / "t.jsonl").read_text()) == {"anchor": "a", "positive": "b", "negative": "c"}
