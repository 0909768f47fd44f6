"""The few tests on the real packaged all-MiniLM-L6-v2 (marked ``minilm``)."""
import json

import numpy as np
import pytest

from textcl.cli import main

pytestmark = pytest.mark.minilm


def test_stsb_test_reproduces_the_published_figure(minilm_path, tmp_path, monkeypatch):
    out = tmp_path / "out.json"
    assert main(["eval", "sts", "--model", "sentence-transformers/all-MiniLM-L6-v2", "--data", "stsb-test",
                 "--json", str(out), "--bootstrap", "200"]) == 0
    m = json.loads(out.read_text())["sets"]["stsb-test"]
    assert m["n"] == 1379
    assert m["spearman"] == pytest.approx(82.03, abs=0.01)


def test_matches_sentence_transformers_encode(minilm_path):
    from sentence_transformers import SentenceTransformer

    from textcl.data.wiki import wiki_sentences
    from textcl.models import Encoder

    texts = wiki_sentences()[:200]
    ours = Encoder.load(minilm_path).encode(texts, batch_size=32)
    theirs = SentenceTransformer(str(minilm_path), device="cpu").encode(texts, batch_size=32)
    cos = (ours * theirs).sum(1) / np.linalg.norm(theirs, axis=1)
    assert 1.0 - cos.min() < 1e-4
