"""Vectorised 64-bit hashing: a counter-based mixer (matching's token hashes and tables are compiled,
in ``metaclip_tasks/curation/_match.c``).

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
