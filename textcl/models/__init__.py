"""Encoders: a Hugging Face transformer with pooling, saved in the sentence-transformers format."""
from textcl.models.dense import DenseLayer
from textcl.models.encoder import Encoder
from textcl.models.pooling import POOLING_MODES, pool
from textcl.models.resolve import DEFAULT_MODEL, packaged_minilm_path, resolve_model

__all__ = ["DEFAULT_MODEL", "DenseLayer", "Encoder", "POOLING_MODES", "packaged_minilm_path", "pool", "resolve_model"]
