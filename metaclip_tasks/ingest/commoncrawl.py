"""Common Crawl's files: a crawl's WARC or WAT file list, read from ``https://data.commoncrawl.org/``
or ``s3://commoncrawl/`` (or a mirror) through fsspec, and streamed reads with retries.

A crawl's files are listed in ``crawl-data/<crawl>/<format>.paths.gz`` (one path per line, relative
to the bucket); the files are immutable once published, so a path identifies its content.
"""

from __future__ import annotations

import gzip
import io
import time
from collections.abc import Callable
from typing import IO, Any, TypeVar, cast

from fsspec import AbstractFileSystem

from metaclip_tasks.core import files
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.snapshots import check_snapshot

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
        with (
            with_retries(lambda: open_stream(uri), f"the file list {uri}") as f,
            gzip.open(f, "rt", encoding="utf-8") as lines,
        ):
            paths = [line.strip() for line in lines if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise CurationError(f"cannot read the file list of {crawl} at {uri}: {e}") from e
    if not paths:
        raise CurationError(f"the file list of {crawl} at {uri} is empty")
    return [files.join(base, path) for path in paths[:max_files]]


def open_stream(uri: str) -> IO[bytes]:
    """``uri`` opened for a sequential read: HTTP(S) as a plain stream (no range requests), which a
    seek to its start reads again from the start (:class:`HTTPBody`)."""
    fs, path = files.filesystem(uri)
    if "http" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return files.open_read(uri, "input")
    try:
        return cast(IO[bytes], HTTPBody(fs, path))  # a raw binary stream: read, seek(0), seekable
    except FileNotFoundError:
        raise CurationError(f"input {uri} does not exist (HTTP 404)") from None


class HTTPBody(io.RawIOBase):
    """An HTTP response body read front to back, as one GET; ``seek(0)`` sends the GET again.  (fsspec's
    streaming file says it is seekable, then refuses to seek back: a reader that reads a file again
    from its start, as the WAT reader does when it leaves a file to FastWARC, could not.)"""

    def __init__(self, fs: AbstractFileSystem, path: str) -> None:
        self._fs, self._path = fs, path
        self._body = fs.open(path, "rb", block_size=0)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._body.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._body.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Where it is already (a no-op), or the start: the body requested again."""
        here = self._body.tell()
        if (whence == io.SEEK_CUR and offset == 0) or (whence == io.SEEK_SET and offset == here):
            return here
        if whence == io.SEEK_SET and offset == 0:
            self._body.close()
            self._body = self._fs.open(self._path, "rb", block_size=0)
            return 0
        raise io.UnsupportedOperation("an HTTP body is read again from its start only")

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def transient(error: BaseException) -> bool:
    """A network or server hiccup worth retrying (not a missing file or bad data)."""
    if isinstance(error, (FileNotFoundError, PermissionError, CurationError)):
        return False
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(
        names & {"ClientError", "FSTimeoutError", "ServerTimeoutError", "ClientPayloadError", "EndpointConnectionError"}
    )


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
