"""Common Crawl's files: a crawl's WARC or WAT file list, read from ``https://data.commoncrawl.org/``
or ``s3://commoncrawl/`` (or a mirror) through fsspec, and streamed reads with retries.

A crawl's files are listed in ``crawl-data/<crawl>/<format>.paths.gz`` (one path per line, relative
to the bucket); the files are immutable once published, so a path identifies its content.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from typing import IO, TypeVar

from fsspec.implementations.http import HTTPStreamFile

from metaclip_tasks import files
from metaclip_tasks.errors import CurationError
from metaclip_tasks.snapshots import check_snapshot

CC_BASE = "https://data.commoncrawl.org/"
LISTINGS = {"wat": "wat.paths.gz", "warc": "warc.paths.gz"}
T = TypeVar("T")


def listing_uri(crawl: str, fmt: str, base: str = CC_BASE) -> str:
    """Where a crawl's list of ``fmt`` files is."""
    if fmt not in LISTINGS:
        raise CurationError(f"format must be one of {', '.join(LISTINGS)}, got {fmt!r}")
    return files.join(base, "crawl-data", check_snapshot(crawl), LISTINGS[fmt])


def crawl_files(crawl: str, fmt: str, base: str = CC_BASE, max_files: int | None = None) -> list[str]:
    """The URIs of a crawl's ``fmt`` files in the listing's order (the first ``max_files`` of them)."""
    uri = listing_uri(crawl, fmt, base)
    try:
        with with_retries(lambda: open_stream(uri), f"the file list {uri}") as f, gzip.open(f, "rt", encoding="utf-8") as lines:
            paths = [line.strip() for line in lines if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise CurationError(f"cannot read the file list of {crawl} at {uri}: {e}") from e
    if not paths:
        raise CurationError(f"the file list of {crawl} at {uri} is empty")
    return [files.join(base, path) for path in paths[:max_files]]


def open_stream(uri: str) -> IO[bytes]:
    """``uri`` opened for one sequential read: HTTP(S) as a plain stream (no range requests)."""
    fs, path = files.filesystem(uri)
    if "http" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return files.open_read(uri, "input")
    try:
        return fs.open(path, "rb", block_size=0)
    except FileNotFoundError:
        raise CurationError(f"input {uri} does not exist (HTTP 404)") from None


def rewindable(stream: IO[bytes]) -> bool:
    """Whether ``stream`` can be read again from its start: a file, not an HTTP body streamed once
    (fsspec's streaming HTTP file says it is seekable, and refuses to seek back)."""
    return stream.seekable() and not isinstance(stream, HTTPStreamFile)


def transient(error: BaseException) -> bool:
    """A network or server hiccup worth retrying (not a missing file or bad data)."""
    if isinstance(error, (FileNotFoundError, PermissionError, CurationError)):
        return False
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"ClientError", "FSTimeoutError", "ServerTimeoutError", "ClientPayloadError", "EndpointConnectionError"})


def with_retries(fn: Callable[[], T], what: str, attempts: int = 4, delay: float = 2.0) -> T:
    """``fn()``, retried with exponential backoff (2, 4, 8 s) on transient errors."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as e:
            if not transient(e) or attempt == attempts - 1:
                if transient(e):
                    raise CurationError(f"{what}: still failing after {attempts} attempts: {e}") from e
                raise
            time.sleep(delay * 2**attempt)
    raise AssertionError("unreachable")
