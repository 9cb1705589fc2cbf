"""Zero-copy views of arrow arrays as numpy arrays, shared by matching and balancing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def to_binary(texts: Sequence[str] | pa.Array | pa.ChunkedArray) -> pa.LargeBinaryArray:
    """UTF-8 bytes of each string as one large binary array (lone surrogates pass through)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if isinstance(texts, pa.Array):
        return texts.cast(pa.large_binary())
    try:
        return pa.array(texts, type=pa.large_string()).cast(pa.large_binary())
    except (UnicodeEncodeError, pa.ArrowException):
        return pa.array([t.encode("utf-8", "surrogatepass") for t in texts], type=pa.large_binary())


def binary_parts(array: pa.LargeBinaryArray) -> tuple[np.ndarray, np.ndarray]:
    """A large binary array's value offsets (int64[n + 1]) and its data bytes, without copying."""
    _, offsets, data = array.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    return offsets, (np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8))


def list_parts(lists: Sequence[Sequence[int]] | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64[n + 1], from 0) and flat integer values of a list-of-ints column, without
    copying the values; null lists are empty."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    if not isinstance(lists, pa.Array):
        lists = pa.array(lists, type=pa.large_list(pa.int64()))
    if not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)):
        raise TypeError(f"expected a list array of entry ids, got {lists.type}")
    if not pa.types.is_integer(lists.type.value_type):
        raise TypeError(f"expected integer entry ids, got {lists.type.value_type}")
    if lists.null_count:
        lists = lists.fill_null(pa.scalar([], type=lists.type))
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values = lists.values.slice(offsets[0], offsets[-1] - offsets[0])
    if values.null_count:
        raise TypeError("entry id lists hold null ids")
    return offsets - offsets[0], values.to_numpy()
