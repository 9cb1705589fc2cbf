"""The WAT record framing and scan of ingestion, compiled (metaclip_tasks/ingest/_watscan.c)."""

from typing import Any, Final

from _typeshed import ReadableBuffer

NEED: Final[int]
FULL: Final[int]
PARSE: Final[int]
ODD: Final[int]
STATUSES: Final[tuple[str, ...]]

def scan(
    data: ReadableBuffer, page: int, pages: list[Any], urls: list[Any], alts: list[Any], titles: list[Any], /
) -> tuple[bool, bool, int, str | None] | None:
    """A WAT record's (html, base, images, page URL), its alt-text image links appended; None when not certain."""

def frame(
    data: ReadableBuffer,
    pos: int,
    limit: int,
    page_urls: list[Any],
    bases: list[Any],
    pages: list[Any],
    urls: list[Any],
    alts: list[Any],
    titles: list[Any],
    /,
) -> tuple[int, int, int, int, int, int, int]:
    """data[pos:]'s whole WARC records, their pages scanned into the lists: (pos, records, pages, images, status,
    block, block_end)."""
