"""Vectorised 64-bit hashing: a counter-based mixer, byte-string hashes and an integer hash index.

Everything here works on whole numpy arrays at once and is deterministic across processes,
machines and numpy versions (plain unsigned 64-bit arithmetic, which wraps modulo 2**64).
"""

from __future__ import annotations

import numpy as np

_U64 = np.uint64
GOLDEN = _U64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective, well-mixing map of uint64 values."""
    z = np.asarray(x, dtype=_U64)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


class ByteHasher:
    """Polynomial hashes (mod 2**64) of many byte ranges of one buffer at once."""

    def __init__(self, base: int) -> None:
        self.base = base | 1
        self._pow = np.ones(1, dtype=_U64)

    def _powers(self, n: int) -> np.ndarray:
        pow_ = self._pow
        if len(pow_) < n:
            pow_ = np.ones(max(n, 2 * len(pow_)), dtype=_U64)
            np.cumprod(np.full(len(pow_) - 1, self.base, dtype=_U64), out=pow_[1:])
            self._pow = pow_  # replaced whole: safe for concurrent readers
        return pow_

    def hash_ranges(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """``sum(data[j] * base**(j - start))`` over ``start <= j < end``, for each range."""
        starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
        lengths = ends - starts
        if not len(lengths) or not lengths.any():
            return np.zeros(len(lengths), dtype=_U64)
        first = np.cumsum(lengths) - lengths  # where each range starts among the gathered bytes
        shift = np.repeat(starts - first, lengths)
        index = np.arange(int(lengths.sum())) + shift  # positions in ``data`` of every range's bytes
        position = index - np.repeat(starts, lengths)  # ... and within its range
        terms = data[index].astype(_U64) * self._powers(int(lengths.max()))[position]
        nonempty = lengths > 0
        hashes = np.zeros(len(lengths), dtype=_U64)
        hashes[nonempty] = np.add.reduceat(terms, first[nonempty])
        return hashes


class IntHashIndex:
    """An immutable open-addressing hash table from distinct uint64 keys to non-negative int64 values.

    Keys and values sit side by side in one ``(size, 2)`` table, so a look-up touches one
    cache line; ``lookup`` resolves a whole array of keys with a few vectorised probes.
    """

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=_U64).view(np.int64)
        values = np.asarray(values, dtype=np.int64)
        if len(np.unique(keys)) != len(keys):
            raise ValueError("IntHashIndex keys must be distinct")
        if np.any(values < 0):
            raise ValueError("IntHashIndex values must be non-negative")
        self._bits = max(4, int(np.ceil(np.log2(max(len(keys), 1) * 2))))  # load factor <= 1/2
        size = 1 << self._bits
        self._table = np.zeros((size, 2), dtype=np.int64)
        self._table[:, 1] = -1  # an empty slot
        home = self._home(keys)
        pending, probe = np.arange(len(keys)), np.zeros(len(keys), dtype=np.int64)
        self._max_probe = 0
        while len(pending):
            slot = (home[pending] + probe[pending]) & (size - 1)
            free = self._table[slot, 1] < 0
            # the first pending key aimed at a free slot takes it; the others probe further
            _, first = np.unique(np.where(free, slot, -1), return_index=True)
            winners = first[free[first]]
            self._table[slot[winners], 0] = keys[pending[winners]]
            self._table[slot[winners], 1] = values[pending[winners]]
            self._max_probe = max(self._max_probe, int(probe[pending[winners]].max(initial=0)))
            won = np.zeros(len(pending), dtype=bool)
            won[winners] = True
            pending = pending[~won]
            probe[pending] += 1

    def _home(self, keys: np.ndarray) -> np.ndarray:
        # Fibonacci hashing: the top bits of key * golden ratio depend on every key bit
        return ((keys.view(_U64) * GOLDEN) >> _U64(64 - self._bits)).astype(np.intp)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """The value of each key, or -1 where the key is absent."""
        keys = np.asarray(keys, dtype=_U64).view(np.int64)
        mask = (1 << self._bits) - 1
        slot = self._home(keys)
        row = np.take(self._table, slot, axis=0)
        result = np.where(row[:, 0] == keys, row[:, 1], -1)  # an empty slot's value is -1 too
        pending = np.flatnonzero((result < 0) & (row[:, 1] >= 0))
        slot = slot[pending]
        for _ in range(self._max_probe):
            if not len(pending):
                break
            slot = (slot + 1) & mask
            row = np.take(self._table, slot, axis=0)
            hit = row[:, 0] == keys[pending]
            result[pending[hit]] = row[hit, 1]
            keep = ~hit & (row[:, 1] >= 0)
            pending, slot = pending[keep], slot[keep]
        return result
