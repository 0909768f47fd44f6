"""``TokenCounter``: how many tokens each input holds for a model, before it is truncated.

The embeddings API reports real token counts (``usage``) and tells which inputs the model's limit cuts
(or refuses them, with ``truncate: false``) before they are queued, so counting runs on the request's own
thread-pool thread while the batcher's thread runs the model. A fast tokenizer's Rust core is copied for
this, without truncation or padding: the encoder's own tokenizer changes its truncation settings on each
call and must not be used from two threads at once. A slow (Python) tokenizer is copied and used under a
lock.
"""
from __future__ import annotations

import copy
import threading
from typing import Sequence

import numpy as np


class TokenCounter:
    """Counts tokens as ``encoder`` tokenizes (lower-cased when the model is, special tokens included);
    ``limit`` is the model's ``max_seq_length``."""

    def __init__(self, encoder):
        self.limit = int(encoder.max_seq_length)
        self.lower = bool(getattr(encoder, "do_lower_case", False))
        self._tokenizer = self._rust = None
        self._lock = threading.Lock()
        backend = getattr(encoder.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers import Tokenizer

            self._rust = Tokenizer.from_str(backend.to_str())
            self._rust.no_truncation()
            self._rust.no_padding()
        else:
            self._tokenizer = copy.deepcopy(encoder.tokenizer)

    def count(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens in each text, untruncated, as an (n,) int64 array."""
        texts = [t.lower() for t in texts] if self.lower else list(texts)
        if self._rust is not None:
            encodings = self._rust.encode_batch(texts, add_special_tokens=True)
            return np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        with self._lock:
            ids = self._tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(texts))
