"""Shared fixtures of the embeddings API tests (this module holds no tests itself).

``wide_model_dir`` is a random BERT saved as a sentence-transformers folder, 128 wide (so that a
``dimensions=64`` cut exists), with a 64-token limit (so that truncation is easy to reach) and two prompts,
``query: `` and ``passage: ``. Like conftest's tiny BERT it has no semantics: a text's nearest neighbour is
itself, and vectors are compared with ``Encoder.encode``'s.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_serve_support import local_client  # noqa: F401

PROMPTS = {"query": "query: ", "passage": "passage: "}
WIDTH = 128
LIMIT = 64


@pytest.fixture(scope="session")
def wide_model_dir(tmp_path_factory, tiny_bert_dir) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from textcl.models import Encoder

    tokenizer = BertTokenizerFast.from_pretrained(str(tiny_bert_dir))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=LIMIT)
    torch.manual_seed(1)
    encoder = Encoder(BertModel(config), tokenizer, pooling="mean", normalize=True, name="wide")
    out = encoder.save(tmp_path_factory.mktemp("wide") / "model")
    settings = out / "config_sentence_transformers.json"
    st_config = json.loads(settings.read_text(encoding="utf-8"))
    st_config["prompts"] = PROMPTS
    settings.write_text(json.dumps(st_config), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def wide_encoder(wide_model_dir):
    from textcl.models import Encoder

    return Encoder.load(str(wide_model_dir))


@pytest.fixture()
def embed_client(wide_encoder):
    """``embed_client(**options)``: a TestClient (lifespan entered) serving the wide model as ``wide``."""
    from textcl.serve import create_app

    clients = []

    def make(**options):
        options.setdefault("models", ["wide=unused-path"])
        encoders = {"wide": wide_encoder, **options.pop("encoders", {})}
        client = local_client(create_app(encoders=encoders, **options), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
