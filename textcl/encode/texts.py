"""A list of texts encoded across the processes of a launch, along the encoder's own batches."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

import textcl.encode.dist as _dist
from textcl.encode.dist import Launch
from textcl.encode.shards import balanced_bounds, encode_shard, prepare_work, shard_pieces

#: rows per resumable chunk (rounded down to whole batches): a state write per chunk is noise next to the
#: encoding, and a kill loses at most one chunk (seconds on a CPU)
CHUNK_ROWS = 2048


def encode_sharded(encoder, texts: Sequence[str], work: str | Path, launch: Launch, *, dim: int, key: dict,
                   batch_size: int = 64, chunk_rows: int = CHUNK_ROWS, show_progress: bool = False,
                   **encode_kwargs) -> np.ndarray | None:
    """Encode ``texts`` with every process of ``launch``; rank 0 gets the (n, ``dim``) float32 embeddings in
    input order, the other ranks None. Every rank must call it with the same arguments.

    ``encoder``: a :class:`~textcl.models.Encoder` (it needs ``encode_order``); ``encode_kwargs`` go to its
    ``encode`` (``normalize``, ``bf16``). The rows are taken in the order ``encoder.encode`` runs them (by
    token length) and cut into its batches of ``batch_size``; each rank takes a contiguous run of whole
    batches of about equal cost (rows x padded length, :func:`balanced_bounds`) and encodes it in chunks of
    about ``chunk_rows`` rows into its shard in ``work`` (resumable; see :mod:`textcl.encode.shards`).

    Guarantee: every batch is exactly the batch one process runs, so the result equals
    ``encoder.encode(texts, batch_size=batch_size, **encode_kwargs)`` in one process bit for bit, whatever the
    number of processes, provided they run on the same kind of device. (On CPU, one and two threads per
    process gave the same bits here; tests/test_encode_sharded.py and benchmarks/bench_shard_encode.py
    compare them. Regrouping rows into other batches does change the last bit of some vectors, hence the
    shards of whole batches.)

    ``key``: JSON values identifying the input, model and settings; with the world size, the number of
    texts and ``batch_size`` it decides whether leftover shards in ``work`` are resumed or discarded.
    The caller removes ``work`` once it has saved the result.
    """
    n = len(texts)
    prompt = {"prompt_name": encode_kwargs["prompt_name"]} if "prompt_name" in encode_kwargs else {}
    order, lengths = encoder.encode_order(texts, **prompt)  # the prompted texts' lengths, as encode sorts them
    cuts = list(range(0, n, batch_size)) + [n]
    # a batch costs its rows times its padded length, the length of its first (longest) row
    costs = [(b - a) * max(1, int(lengths[order[a]])) for a, b in zip(cuts, cuts[1:])]
    u0, u1 = balanced_bounds(costs, launch.world)[launch.rank]
    per_chunk = max(1, chunk_rows // batch_size)
    chunks = [(cuts[u], cuts[min(u + per_chunk, u1)]) for u in range(u0, u1, per_chunk)]
    key = {**key, "world": launch.world, "n": n, "batch_size": batch_size}
    prepare_work(work, key, launch)

    def encode_rows(a: int, b: int) -> np.ndarray:
        return encoder.encode([texts[i] for i in order[a:b]], batch_size=batch_size, **encode_kwargs)

    encode_shard(work, launch, chunks, dim, key, encode_rows, show_progress=show_progress and launch.is_main,
                 desc=f"encoding (rank 0 of {launch.world})")
    _dist.barrier(launch)
    if not launch.is_main:
        return None
    out = np.empty((n, dim), dtype=np.float32)
    for lo, hi, vecs in shard_pieces(work, launch.world, dim, n):
        out[order[lo:hi]] = vecs
    return out
