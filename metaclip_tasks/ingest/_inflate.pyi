"""Whole gzip members inflated by libdeflate, compiled (metaclip_tasks/ingest/_inflate.c)."""

from typing import Final

from _typeshed import ReadableBuffer, WriteableBuffer

MORE: Final[int]
ROOM: Final[int]
BAD: Final[int]
STATUSES: Final[tuple[str, ...]]

def inflate(
    compressed: ReadableBuffer, start: int, out: WriteableBuffer, filled: int, final: bool, /
) -> tuple[int, int, int]:
    """Whole gzip members of compressed[start:] inflated into out[filled:]: (start, filled, status)."""
