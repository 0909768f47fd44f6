"""Seeds and per-text random streams.

Each text's randomness is a counter-based stream (SplitMix64): number ``j`` of the stream of seed ``s`` is a
pure function of ``(s, j)``. So a view depends on its seed alone, never on the batch it was made in, and a
batch's streams are computed at once with numpy instead of seeding one Mersenne Twister per text (~6 µs
each, more than the edits themselves).
"""
from __future__ import annotations

from random import Random as _Random
from array import array
from typing import Sequence

import numpy as np

_M64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB
_TO_UNIT = 2.0**-53
BUFFER = 32  # numbers precomputed per text; a text needing more computes the rest on demand
_CHUNK = 4096  # texts per numpy block, to bound memory on huge batches


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * _C1) & _M64
    z = ((z ^ (z >> 27)) * _C2) & _M64
    return z ^ (z >> 31)


def _key(seed: int) -> int:
    return _mix64((int(seed) + _GAMMA) & _M64)


def _u01(key: int, j: int) -> float:
    return (_mix64((key + (j + 1) * _GAMMA) & _M64) >> 11) * _TO_UNIT


def derive_seed(seed: int, *keys: int) -> int:
    """Mix ``seed`` with integer ``keys`` into a 63-bit seed; the same inputs always give the same seed.

    Nearby inputs (index 7 and 8, view 0 and 1) give unrelated seeds, so their views are independent.
    """
    h = _key(int(seed) & _M64)
    for k in keys:
        h = _key(h ^ (int(k) & _M64))
    return h >> 1


def view_seed(seed: int, epoch: int, index: int, view: int) -> int:
    """The seed of view ``view`` of dataset example ``index`` in ``epoch``, under the run's global ``seed``."""
    return derive_seed(seed, epoch, index, view)


class SeedStream:
    """The stream of one seed, with the ``random.Random`` methods that augmenters use.

    ``random``, ``uniform``, ``randrange``, ``randint``, ``choice``, ``sample``, ``shuffle``, ``choices``,
    ``betavariate`` and ``gauss`` behave as ``random.Random``'s (they are its pure-Python algorithms, fed
    by this stream); :meth:`randoms` draws many floats at once. Build one with ``SeedStream.from_seed(seed)``;
    an augmenter's batch call builds them all at once with :func:`seed_streams`. (Not a ``random.Random``
    subclass: each of those carries 2.5 KB of Mersenne Twister state, which costs more to allocate than an
    augmentation.)
    """

    __slots__ = ("_key", "_buf", "_off", "_n", "_i")

    def __init__(self, key: int, buffer: Sequence[float], offset: int = 0, size: int | None = None):
        self._key = key
        self._buf = buffer
        self._off = offset
        self._n = len(buffer) - offset if size is None else size
        self._i = 0

    @classmethod
    def from_seed(cls, seed: int) -> "SeedStream":
        key = _key(int(seed) & _M64)
        return cls(key, [_u01(key, j) for j in range(BUFFER)])

    def random(self) -> float:
        i = self._i
        self._i = i + 1
        if i < self._n:
            return self._buf[self._off + i]
        return _u01(self._key, i)

    def randoms(self, n: int) -> Sequence[float]:
        """The next ``n`` floats in ``[0, 1)``."""
        i = self._i
        self._i = i + n
        if i + n <= self._n:
            return self._buf[self._off + i : self._off + i + n]
        return [self.random_at(j) for j in range(i, i + n)]

    def random_at(self, j: int) -> float:
        return self._buf[self._off + j] if j < self._n else _u01(self._key, j)

    # random.Random's pure-Python algorithms, all built on random()
    _randbelow = _Random._randbelow_without_getrandbits
    uniform = _Random.uniform
    randrange = _Random.randrange
    randint = _Random.randint
    choice = _Random.choice
    choices = _Random.choices
    sample = _Random.sample
    shuffle = _Random.shuffle
    betavariate = _Random.betavariate
    gammavariate = _Random.gammavariate
    expovariate = _Random.expovariate
    gauss = _Random.gauss
    normalvariate = _Random.normalvariate


def seed_streams(seeds: Sequence[int]) -> list[SeedStream]:
    """One :class:`SeedStream` per seed, the first ``BUFFER`` numbers of each computed with numpy."""
    streams: list[SeedStream] = []
    steps = (np.arange(1, BUFFER + 1, dtype=np.uint64) * np.uint64(_GAMMA))[None, :]
    s30, s27, s31, s11 = (np.uint64(k) for k in (30, 27, 31, 11))
    c1, c2, gamma = np.uint64(_C1), np.uint64(_C2), np.uint64(_GAMMA)
    for start in range(0, len(seeds), _CHUNK):
        z = np.array([int(s) & _M64 for s in seeds[start : start + _CHUNK]], dtype=np.uint64) + gamma
        z = (z ^ (z >> s30)) * c1  # the key of each seed, as _key computes it
        z = (z ^ (z >> s27)) * c2
        z ^= z >> s31
        keys = z.tolist()
        z = z[:, None] + steps
        z = (z ^ (z >> s30)) * c1
        z = (z ^ (z >> s27)) * c2
        z ^= z >> s31
        flat = array("d", ((z >> s11).astype(np.float64) * _TO_UNIT).tobytes())
        streams.extend(SeedStream(k, flat, BUFFER * r, BUFFER) for r, k in enumerate(keys))
    return streams
