"""The vectorised hashing helpers against plain Python definitions."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from metaclip_tasks.hashing import ByteHasher, IntHashIndex, splitmix64

U64 = st.integers(0, 2**64 - 1)


def python_splitmix64(z: int) -> int:
    m = 2**64 - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


@given(st.lists(U64, max_size=20))
def test_splitmix64(values: list[int]) -> None:
    assert splitmix64(np.array(values, dtype=np.uint64)).tolist() == [python_splitmix64(v) for v in values]


@given(st.binary(max_size=60), st.data())
def test_byte_hashes_are_the_polynomial(data: bytes, draw) -> None:
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), min_size=2, max_size=8)))
    starts, ends = np.array(cuts[:-1]), np.array(cuts[1:])
    hasher = ByteHasher(0x100000001B3)
    got = hasher.hash_ranges(np.frombuffer(data, np.uint8), starts, ends).tolist()
    want = [sum(b * hasher.base**j for j, b in enumerate(data[s:e])) % 2**64 for s, e in zip(starts, ends)]
    assert got == want


@settings(max_examples=50)
@given(st.sets(U64, max_size=300), st.lists(U64, max_size=50))
def test_int_hash_index_is_a_dict(keys: set[int], others: list[int]) -> None:
    keys_list = sorted(keys)
    index = IntHashIndex(np.array(keys_list, dtype=np.uint64), np.arange(len(keys_list)))
    table = {k: i for i, k in enumerate(keys_list)}
    queries = keys_list + others
    assert index.lookup(np.array(queries, dtype=np.uint64)).tolist() == [table.get(q, -1) for q in queries]
