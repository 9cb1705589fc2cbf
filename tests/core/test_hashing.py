"""The vectorised hashing helper against its plain Python definition."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from metaclip_tasks.core.hashing import splitmix64

U64 = st.integers(0, 2**64 - 1)


def python_splitmix64(z: int) -> int:
    m = 2**64 - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


@given(st.lists(U64, max_size=20))
def test_splitmix64(values: list[int]) -> None:
    assert splitmix64(np.array(values, dtype=np.uint64)).tolist() == [python_splitmix64(v) for v in values]
