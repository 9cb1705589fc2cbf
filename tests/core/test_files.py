"""Files written through files.HashingWriter: described as written, and a local file's pages sent
to disk as it is closed (so a publish's fsync waits for little)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from metaclip_tasks.core import files


@pytest.fixture
def writebacks(monkeypatch) -> list[int]:
    started: list[int] = []
    monkeypatch.setattr(files, "start_writeback", lambda fd: started.append(os.fstat(fd).st_size))
    return started


def test_a_local_file_starts_going_to_disk_as_it_is_closed(tmp_path: Path, writebacks) -> None:
    with files.HashingWriter(str(tmp_path / "a" / "part.bin")) as out:
        out.write(b"x" * 70_000)
        out.write(b"y")
    assert writebacks == [70_001]  # once, after everything was flushed to the file
    assert out.stored.sha256 == hashlib.sha256(b"x" * 70_000 + b"y").hexdigest() and out.stored.bytes == 70_001


def test_an_object_store_file_is_only_uploaded(s3_bucket: str, writebacks) -> None:
    with files.HashingWriter(f"{s3_bucket}/files/part.bin") as out:
        out.write(b"z" * 1000)
    assert writebacks == []
    fs, path = files.filesystem(out.uri)
    assert fs.cat(path) == b"z" * 1000


def test_the_writeback_hint_never_fails(tmp_path: Path) -> None:
    read, write = os.pipe()  # not a file: the kernel refuses the hint, which is ignored
    try:
        files.start_writeback(write)
    finally:
        os.close(read)
        os.close(write)
    with open(tmp_path / "f", "wb") as f:
        f.write(b"data")
        f.flush()
        files.start_writeback(f.fileno())
    assert (tmp_path / "f").read_bytes() == b"data"
