"""Exact de-duplication of pairs by (url, text) (paper A.2: "de-duplication" before balancing).

A pair's key is a 128-bit hash of its URL and text (blake2b; a collision among 10^12 pairs has
probability ~10^-15).  Which copy is kept is fixed by an order, never by timing: within a
snapshot the first in file order; across a pool's snapshots the earliest crawl's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from metaclip_tasks.core import files
from metaclip_tasks.core.shards import ShardReader

KEY_DTYPE = np.dtype("S16")


def pair_keys(
    urls: pa.Array | pa.ChunkedArray | Sequence[str], texts: pa.Array | pa.ChunkedArray | Sequence[str]
) -> np.ndarray:
    """The key of each (url, text) pair."""
    urls = urls.to_pylist() if hasattr(urls, "to_pylist") else urls
    texts = texts.to_pylist() if hasattr(texts, "to_pylist") else texts
    out = np.empty(len(urls), dtype=KEY_DTYPE)
    for i, (url, text) in enumerate(zip(urls, texts, strict=True)):
        head = url.encode("utf-8", "surrogatepass")  # length-prefixed: no two (url, text) give the same bytes
        data = len(head).to_bytes(8, "little") + head + text.encode("utf-8", "surrogatepass")
        out[i] = hashlib.blake2b(data, digest_size=16).digest()
    return out


def first_occurrences(keys: Sequence[np.ndarray]) -> list[np.ndarray]:
    """For parts taken in order, a mask per part of the rows whose key no earlier row has."""
    if not len(keys):
        return []
    joined = np.concatenate(keys)
    first = np.zeros(len(joined), dtype=bool)
    first[np.unique(joined, return_index=True)[1]] = True
    return np.split(first, np.cumsum([len(k) for k in keys])[:-1])


def shard_keys(part: files.Stored) -> np.ndarray:
    """The (url, text) key of each row of a pairs or matched shard."""
    with ShardReader(part, ["url", "text"]) as reader:
        keys = [pair_keys(b.column("url"), b.column("text")) for b in reader.batches()]
    return np.concatenate(keys) if keys else np.empty(0, dtype=KEY_DTYPE)
