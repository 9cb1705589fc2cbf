"""Every file the pipeline reads or writes goes through fsspec: a local path, ``s3://``, ``gs://``...

A URI is a plain string; the file system comes from it (``fsspec.core.url_to_fs``), so a Dask
worker on another machine opens the same URI.  Credentials and endpoints come from the
backend's standard settings (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Self

import fsspec
from fsspec import AbstractFileSystem

from metaclip_tasks.core import checked
from metaclip_tasks.core.errors import CurationError

CHUNK = 1 << 20


def filesystem(uri: str | os.PathLike) -> tuple[AbstractFileSystem, str]:
    """The file system of ``uri`` and the path within it."""
    try:
        return fsspec.core.url_to_fs(os.fspath(uri))
    except (ImportError, ValueError) as e:
        raise CurationError(f"cannot open {uri}: {e}") from e


def is_local(fs: AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def join(uri: str, *names: str) -> str:
    """``uri/name/...`` (URIs are joined with ``/`` on every file system)."""
    return "/".join([uri.rstrip("/"), *names])


def unstrip(fs: AbstractFileSystem, path: str) -> str:
    """A file system path back as a URI that :func:`filesystem` resolves to the same file system."""
    return fs.unstrip_protocol(path) if not is_local(fs) else path


def open_read(source: str | Stored, what: str = "file") -> IO[bytes]:
    """A file opened for reading: a URI (a missing file is an error naming it), or an artifact's
    file, verified against its manifest first."""
    if isinstance(source, Stored):
        verify(source)
    fs, path = filesystem(location(source))
    if not fs.isfile(path):
        raise CurationError(f"{what} {location(source)} does not exist")
    return fs.open(path, "rb")


def location(source: str | Stored) -> str:
    """The URI of a file given by URI or as an artifact's stored file."""
    return source.uri if isinstance(source, Stored) else source


def open_write(uri: str) -> IO[bytes]:
    """``uri`` opened for writing, its parent directory made first on local file systems."""
    fs, path = filesystem(uri)
    if is_local(fs):
        fs.makedirs(fs._parent(path), exist_ok=True)
    return fs.open(path, "wb")


def describe(fs: AbstractFileSystem, path: str) -> tuple[int, str]:
    """Size and sha256 of one file, streamed."""
    digest = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def fingerprint(uri: str, tail_bytes: int = 65536) -> dict[str, Any]:
    """A cheap identity of an input's content, not of its location: a file's size and a hash of its
    last bytes (a parquet file's footer, which changes whenever its content does); a directory's
    files by their names inside it."""
    fs, path = filesystem(uri)
    if fs.isdir(path):
        base = path.rstrip("/")
        return {
            "files": [
                {"name": p[len(base) + 1 :], **fingerprint(unstrip(fs, p), tail_bytes)} for p in sorted(fs.find(path))
            ]
        }
    if not fs.isfile(path):
        raise CurationError(f"input {uri} does not exist")
    size = int(fs.size(path))
    with fs.open(path, "rb") as f:
        f.seek(max(0, size - tail_bytes))
        tail = f.read()
    return {"bytes": size, "tail_sha256": hashlib.sha256(tail).hexdigest()}


def expand(sources: Sequence[str], suffix: str | tuple[str, ...] = ".parquet") -> list[str]:
    """Input URIs: each source a file, a directory (its ``*suffix`` files) or a glob; sorted per
    source, hidden files skipped.  Nothing found for a source is an error naming it."""
    if isinstance(sources, str) or not sources:
        raise CurationError("no input files given")
    found: list[str] = []
    for source in sources:
        fs, path = filesystem(source)
        if fs.isdir(path):
            matches = [p for p in fs.find(path) if p.endswith(suffix)]
        elif any(c in path for c in "*?["):
            matches = [p for p in fs.glob(path) if fs.isfile(p)]
        else:
            matches = [path] if fs.isfile(path) else []
        matches = sorted(p for p in matches if not p.rsplit("/", 1)[-1].startswith((".", "_")))
        if not matches:
            kinds = " or ".join(suffix) if isinstance(suffix, tuple) else suffix
            raise CurationError(
                f"input {source} holds no {kinds} file" if fs.isdir(path) else f"input {source} does not exist"
            )
        found.extend(unstrip(fs, p) for p in matches)
    if len(set(found)) != len(found):
        raise CurationError("an input file is given twice")
    return found


def _sync_file_range() -> Callable[..., int] | None:
    """Linux's ``sync_file_range`` from the C library, or None elsewhere."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


SYNC_FILE_RANGE_CALL = _sync_file_range()  # None where the platform has no sync_file_range
SYNC_FILE_RANGE_WRITE = 2  # start writing the range's dirty pages; do not wait for them


def start_writeback(fd: int) -> None:
    """Start writing a local file's dirty pages to disk now, without waiting: a publish's fsync of
    every file then finds them written instead of flushing a whole stage's output at once (the
    match stage's publish: ~30 ms after its last task, ~6 ms with this).  A hint: errors are ignored."""
    if SYNC_FILE_RANGE_CALL is not None:
        SYNC_FILE_RANGE_CALL(fd, 0, 0, SYNC_FILE_RANGE_WRITE)


class HashingWriter:
    """A file opened for writing that counts and hashes what goes through it, so a file written
    on a Dask worker is described (bytes, sha256) without reading it back from the store; a local
    file's pages start going to disk as it is closed (:func:`start_writeback`)."""

    def __init__(self, uri: str, on_close: Callable[[Stored], object] | None = None) -> None:
        self.uri = uri
        self._local = is_local(filesystem(uri)[0])
        self._file = open_write(uri)
        self._digest = hashlib.sha256()
        self._on_close = on_close
        self.size = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self._digest.update(view)
        self.size += view.nbytes
        return self._file.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._file.flush()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self._file.closed:
            try:
                if self._local:
                    self._file.flush()
                    start_writeback(self._file.fileno())
            finally:
                self._file.close()
            if self._on_close is not None:
                self._on_close(self.stored)

    @property
    def stored(self) -> Stored:
        """What was written: its URI, size and sha256."""
        return Stored(self.uri, self.size, self._digest.hexdigest())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Stored:
    """A file as a manifest describes it: where it is and what it is (size and sha256); written on
    a worker and recorded, or listed by an artifact and verified before it is read."""

    uri: str
    bytes: int
    sha256: str
    what: str = ""  # e.g. "matched a9f0fa17b14e06f5", for messages

    @property
    def name(self) -> str:
        return self.uri.rsplit("/", 1)[-1]


VERIFIED: set[tuple[str, int, str]] = set()  # files whose checksum this process has checked


def verify(stored: Stored, checksum: bool = True, *, recheck: bool = False) -> None:
    """Check a stored file against its manifest entry: its size always, its sha256 (streamed) once per
    process, and for a local file not again while it is unchanged since a process on this host hashed
    it (:mod:`metaclip_tasks.core.checked`); ``recheck`` hashes it in any case.  A difference is an error
    naming the artifact and the file."""
    fs, path = filesystem(stored.uri)
    where = f"{stored.what}: file {stored.uri}" if stored.what else f"file {stored.uri}"
    try:
        size = int(fs.size(path))
    except (FileNotFoundError, OSError):
        raise CurationError(f"{where} is missing (the manifest lists it)") from None
    if size != stored.bytes:
        raise CurationError(
            f"{where} has {size:,} bytes, its manifest says {stored.bytes:,}: it changed after it was published"
        )
    key = (stored.uri, stored.bytes, stored.sha256)
    if not checksum or (key in VERIFIED and not recheck):
        return
    local = is_local(fs)
    if local and not recheck and checked.is_checked(path, stored.sha256):
        VERIFIED.add(key)
        return
    before, started = (os.stat(path), time.time_ns()) if local else (None, 0)
    digest = describe(fs, path)[1]
    if digest != stored.sha256:
        raise CurationError(
            f"{where} has sha256 {digest[:16]}..., its manifest says {stored.sha256[:16]}...: "
            "it changed after it was published"
        )
    VERIFIED.add(key)
    if before is not None:
        checked.record(path, before, digest, started)
