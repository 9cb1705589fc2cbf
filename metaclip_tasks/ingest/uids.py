"""Pair uids: MetaCLIP's id of an image–text pair, the first 24 hex digits of sha224(url).

Ingestion gives every pair its uid and matching keys its output by it; a column of URLs is hashed
in one call to compiled code (:mod:`metaclip_tasks.ingest._uids`, OpenSSL's libcrypto), not a Python call
per URL.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from metaclip_tasks.ingest._uids import HEX_DIGITS, sha224_hex24

UID_CHARS = HEX_DIGITS  # MetaCLIP's uid: the first 24 hex digits of sha224(url)


def url_uid(url: str) -> str:
    """MetaCLIP's pair id: the first 24 hex characters of sha224(url)."""
    return hashlib.sha224(url.encode("utf-8")).hexdigest()[:UID_CHARS]


def url_uids(urls: pa.Array | pa.ChunkedArray) -> pa.Array:
    """:func:`url_uid` of each URL of a string column, as a string array; a null URL is an error."""
    if urls.null_count:
        raise ValueError(f"{urls.null_count} of {len(urls)} URLs are null: a pair without a URL has no uid")
    column = urls.combine_chunks() if isinstance(urls, pa.ChunkedArray) else urls
    column = column.cast(pa.large_string()) if pa.types.is_string(column.type) else column
    if not pa.types.is_large_string(column.type):
        raise TypeError(f"URLs must be strings, not {column.type}")
    _, offsets, data = column.buffers()
    at = np.frombuffer(offsets, np.int64, len(column) + 1, column.offset * 8)
    digits = sha224_hex24(data if data is not None else b"", np.ascontiguousarray(at))
    starts = pa.py_buffer(np.arange(0, UID_CHARS * (len(column) + 1), UID_CHARS, dtype=np.int32))
    return pa.Array.from_buffers(pa.string(), len(column), [None, starts, pa.py_buffer(digits)])
