"""Pair uids: the compiled column hash equals MetaCLIP's definition, sha224(url)[:24], URL by URL."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaclip_tasks.ingest.uids import url_uid, url_uids


def metaclip_uid(url: str) -> str:
    """MetaCLIP's own definition, written out."""
    return hashlib.sha224(url.encode("utf-8")).hexdigest()[:24]


def test_url_uid_is_metaclips() -> None:
    url = "https://example.com/a.jpg"
    assert url_uid(url) == metaclip_uid(url)


@settings(max_examples=200, deadline=None)
@given(
    urls=st.lists(st.text(), max_size=40),
    start=st.integers(0, 40),
    length=st.integers(0, 40),
    large=st.booleans(),
    chunks=st.integers(1, 3),
)
def test_the_column_hash_is_metaclips_for_any_slice_type_and_chunking(urls, start, length, large, chunks) -> None:
    column = pa.array(urls, pa.large_string() if large else pa.string()).slice(start, length)
    expected = [metaclip_uid(u) for u in column.to_pylist()]
    if chunks > 1:  # the same URLs in several chunks
        cut = len(column) // chunks
        column = pa.chunked_array([column.slice(0, cut), column.slice(cut)], column.type)
    uids = url_uids(column)
    assert uids.type == pa.string()
    uids.validate(full=True)
    assert uids.to_pylist() == expected


def test_a_null_url_or_a_column_that_is_not_text_is_an_error() -> None:
    with pytest.raises(ValueError, match="1 of 2 URLs are null"):
        url_uids(pa.array(["http://a/1.jpg", None]))
    with pytest.raises(TypeError, match="URLs must be strings, not int64"):
        url_uids(pa.array([1, 2]))
