"""Hard-negative mining: positives and near-duplicates excluded, rank range respected, triples written."""
from __future__ import annotations

import json

import numpy as np
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


class AngleEncoder:
    """"angle 12" -> the unit vector at 12 degrees in the plane: rank by cosine is rank by angular distance."""

    dim = 2

    def encode(self, texts, batch_size: int = 32):
        radians = np.deg2rad([float(t.split()[1]) for t in texts])
        return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


# The anchor at 0 degrees, its positive at 1; candidates at 5, 10, ..., 50 degrees: the positive is rank 1,
# the candidate at 5*r degrees rank r + 1.
RANKED = [("angle 0", "angle 1")]
ARC = ["angle 1"] + [f"angle {5 * r}" for r in range(1, 11)]


def test_rank_range_keeps_exactly_the_ranks_asked_for():
    triples = mine_hard_negatives(RANKED, AngleEncoder(), ARC, rank_range=(3, 6), margin=0.0, num_negatives=10)
    assert [t["negative"] for t in triples] == ["angle 10", "angle 15", "angle 20", "angle 25"]  # ranks 3..6
    assert all((t["anchor"], t["positive"]) == RANKED[0] for t in triples)
    picked = mine_hard_negatives(RANKED, AngleEncoder(), ARC, rank_range=(3, 6), margin=0.0, num_negatives=2,
                                 strategy="random", seed=1)
    assert len(picked) == 2 and {t["negative"] for t in picked} <= {"angle 10", "angle 15", "angle 20", "angle 25"}
    [one] = mine_hard_negatives(RANKED, AngleEncoder(), ARC, rank_range=(11, 11), margin=0.0)
    assert one["negative"] == "angle 50"  # the last rank
    assert mine_hard_negatives(RANKED, AngleEncoder(), ARC, rank_range=(12, 20), margin=0.0) == []


def test_cli_mine_range(tmp_path, monkeypatch):
    import textcl.commands.index as cmd
    from textcl.cli import main

    monkeypatch.setattr(cmd, "load_encoder", lambda name, backend=None: AngleEncoder())
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"anchor": "angle 0", "positive": "angle 1"}) + "\n")
    (tmp_path / "corpus.txt").write_text("\n".join(ARC) + "\n")
    assert main(["mine", "--model", "m", "--pairs", str(tmp_path / "pairs.jsonl"), "--corpus",
                 str(tmp_path / "corpus.txt"), "--out", str(tmp_path / "t.jsonl"), "--range", "2-4", "--margin",
                 "0", "--num-negatives", "5"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["negative"] for r in rows] == ["angle 5", "angle 10", "angle 15"]  # ranks 2..4


def test_rank_range_and_skips():
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
