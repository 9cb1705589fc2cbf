"""Downloading source files (Wikipedia dumps, page-view files), resumably and with checksums.

Bytes go to ``<dest>.part``, which is renamed to ``dest`` only once complete and verified, so an
interrupted download leaves a ``.part`` that the next attempt (or call) continues with an HTTP
range request instead of starting again: the English dump alone is over 20 GB.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import time
from pathlib import Path

import requests
import urllib3

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.metadata.titles import pageview_file_name

DUMPS = "https://dumps.wikimedia.org"
_DIGEST_LENGTHS = {"sha1": 40, "sha256": 64}
_HEX = re.compile(r"[0-9a-fA-F]+")
_DUMP_DATE = re.compile(r"latest|\d{8}")
_PARTIAL = re.compile(r"bytes (\d+)-\d+/(?:\d+|\*)")  # a 206's Content-Range
_UNSATISFIABLE = re.compile(r"bytes \*/(\d+)")  # a 416's Content-Range


class _Retry(Exception):
    """A failure worth another attempt: a 5xx answer or a short or inconsistent body."""


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha1: str | None = None,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60,
    chunk_size: int = 1 << 20,
    backoff: float = 1.0,
) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``), check the digests given, and return ``dest``.

    An existing ``dest`` that matches the digests (or any, when none is given) is returned as is.
    Connection errors, timeouts, 5xx answers and cut-short bodies are retried up to ``retries``
    times in a row, waiting ``backoff`` seconds, doubled each time; an attempt that received bytes
    resets the count.  Other 4xx answers, a digest mismatch (which deletes the ``.part``) and
    running out of retries (which keeps it, to resume later) raise a ``CurationError``.
    """
    dest = Path(dest)
    expected = {name: digest.lower() for name, digest in (("sha1", sha1), ("sha256", sha256)) if digest is not None}
    for name, digest in expected.items():
        if len(digest) != _DIGEST_LENGTHS[name] or not _HEX.fullmatch(digest):
            raise CurationError(f"{name} {digest!r} for {dest} is not {_DIGEST_LENGTHS[name]} hexadecimal digits")
    if dest.is_file() and (not expected or _digests(dest, expected) == expected):
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    with requests.Session() as session:
        while True:
            before = _size(part)
            try:
                if _attempt(session, url, part, timeout, chunk_size):
                    break
            except (_Retry, requests.RequestException, urllib3.exceptions.HTTPError) as e:
                failures = 1 if _size(part) > before else failures + 1
                if failures > retries:
                    raise CurationError(f"download of {url} failed after {retries} retries: {e}") from e
                time.sleep(backoff * 2 ** (failures - 1))
    actual = _digests(part, expected)
    for name, digest in expected.items():
        if actual[name] != digest:
            part.unlink()
            raise CurationError(f"{dest} downloaded from {url} has {name} {actual[name]}, expected {digest}")
    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    return dest


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _attempt(session: requests.Session, url: str, part: Path, timeout: float, chunk_size: int) -> bool:
    """One request continuing ``part``: True once it is complete, False to start again from zero."""
    offset = _size(part)
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={offset}-"} if offset else {})
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        status = response.status_code
        if status == 416 and offset:  # nothing left after offset: complete, or .part too long
            match = _UNSATISFIABLE.fullmatch(response.headers.get("Content-Range", ""))
            if match and int(match[1]) == offset:
                return True
            part.unlink()
            return False
        if status >= 500:
            raise _Retry(f"HTTP {status} {response.reason}")
        if status not in (200, 206):
            raise CurationError(f"download of {url} failed: HTTP {status} {response.reason}")
        start = 0
        if status == 206:
            match = _PARTIAL.fullmatch(response.headers.get("Content-Range", ""))
            if not match or int(match[1]) != offset:
                part.unlink(missing_ok=True)
                content_range = response.headers.get("Content-Range")
                raise _Retry(f"HTTP 206 with Content-Range {content_range!r}, not from byte {offset}")
            start = offset
        length = response.headers.get("Content-Length")
        with open(part, "ab" if start else "wb") as f:  # a 200 answers a Range with the whole file
            f.writelines(response.raw.stream(chunk_size, decode_content=False))
    if length is not None and _size(part) != start + int(length):  # urllib3 1.x lets short bodies pass
        raise _Retry(f"received {_size(part) - start} of {length} bytes")
    return True


def _digests(path: Path, expected: dict[str, str]) -> dict[str, str]:
    """The file's hex digests, for the algorithms named in ``expected``, in one pass."""
    hashes = {name: hashlib.new(name) for name in expected}
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            for h in hashes.values():
                h.update(block)
    return {name: h.hexdigest() for name, h in hashes.items()}


def wikipedia_dump_url(dump_date: str = "latest", lang: str = "en") -> str:
    """The articles dump (``pages-articles.xml.bz2``) of one language's Wikipedia."""
    return f"{_dump_dir(dump_date, lang)}/{lang}wiki-{dump_date}-pages-articles.xml.bz2"


def wikipedia_sha1sums_url(dump_date: str = "latest", lang: str = "en") -> str:
    """The SHA-1 list of that dump's files, for ``parse_sha1sums``."""
    return f"{_dump_dir(dump_date, lang)}/{lang}wiki-{dump_date}-sha1sums.txt"


def _dump_dir(dump_date: str, lang: str) -> str:
    if not _DUMP_DATE.fullmatch(dump_date):
        raise CurationError(f"dump date {dump_date!r} is neither 'latest' nor YYYYMMDD")
    return f"{DUMPS}/{lang}wiki/{dump_date}"


def parse_sha1sums(text: str) -> dict[str, str]:
    """File name -> SHA-1 from ``sha1sum`` output (``<digest>  <name>`` lines), blank lines ignored."""
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().removeprefix("*")  # sha1sum's binary-mode marker
        if len(digest) != 40 or not _HEX.fullmatch(digest) or not name:
            raise CurationError(f"sha1sums line {number} is not '<sha1>  <file name>': {line!r}")
        sums[name] = digest.lower()
    return sums


def pageviews_url(day: datetime.date, hour: int) -> str:
    """One hour's page-view file on Wikimedia's server."""
    return f"{DUMPS}/other/pageviews/{day:%Y}/{day:%Y-%m}/{pageview_file_name(day, hour)}"
