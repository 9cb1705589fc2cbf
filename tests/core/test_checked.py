"""The host's record of checked files: a fresh process skips hashing a local file another process
hashed, for as long as the file is unchanged; anything that changes it, or a record others could
write, means hashing again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from metaclip_tasks.cli import main
from metaclip_tasks.core import checked, files
from metaclip_tasks.core.errors import CurationError


def _stored(path: Path) -> files.Stored:
    data = path.read_bytes()
    return files.Stored(str(path), len(data), hashlib.sha256(data).hexdigest(), "pairs 0123")


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The paths files.verify hashes, in a fresh process (nothing checked by this process yet)."""
    calls: list[str] = []
    real = files.describe
    monkeypatch.setattr(files, "describe", lambda fs, path: calls.append(path) or real(fs, path))
    monkeypatch.setattr(files, "VERIFIED", set())
    return calls


@pytest.fixture
def record(tmp_path: Path, monkeypatch) -> Path:
    """An empty record of this test's own, files counting as settled at once (no racy window)."""
    folder = tmp_path / "checked"
    monkeypatch.setenv("METACLIP_CHECKED_DIR", str(folder))
    monkeypatch.setattr(checked, "RACY_SECONDS", 0)
    return folder


def test_a_fresh_process_trusts_what_another_hashed_while_the_file_is_unchanged(tmp_path, record, hashed) -> None:
    path = tmp_path / "shard.parquet"
    path.write_bytes(b"x" * 5000)
    stored = _stored(path)
    files.verify(stored)
    assert hashed == [str(path)] and len(list(record.iterdir())) == 1
    files.VERIFIED.clear()  # another process on the host
    files.verify(stored)
    assert hashed == [str(path)]
    assert oct(record.stat().st_mode & 0o777) == "0o700"


def test_a_same_size_edit_with_its_times_put_back_is_hashed_and_refused(tmp_path, record, hashed) -> None:
    path = tmp_path / "shard.parquet"
    path.write_bytes(b"x" * 5000)
    stored = _stored(path)
    files.verify(stored)
    before = path.stat()
    path.write_bytes(b"y" + b"x" * 4999)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime back as it was: the ctime moves on
    files.VERIFIED.clear()
    with pytest.raises(
        CurationError, match=r"pairs 0123: file .*shard.parquet has sha256 .*changed after it was published"
    ):
        files.verify(stored)
    assert hashed == [str(path), str(path)]


def test_a_file_changed_just_before_it_was_hashed_is_not_recorded(tmp_path, record, monkeypatch, hashed) -> None:
    monkeypatch.setattr(checked, "RACY_SECONDS", 2)  # the default: a write within a timestamp's granularity
    path = tmp_path / "shard.parquet"
    path.write_bytes(b"x" * 5000)
    files.verify(_stored(path))
    assert not record.exists() or not list(record.iterdir())
    files.VERIFIED.clear()
    files.verify(_stored(path))
    assert hashed == [str(path), str(path)]  # both verifications hash it


def test_a_record_others_can_write_is_not_used(tmp_path, record, hashed) -> None:
    path = tmp_path / "shard.parquet"
    path.write_bytes(b"x" * 5000)
    stored = _stored(path)
    files.verify(stored)
    record.chmod(0o777)
    files.VERIFIED.clear()
    files.verify(stored)
    assert hashed == [str(path), str(path)]  # hashed again: the record may have been forged
    assert len(list(record.iterdir())) == 1  # and nothing added to it


def test_the_verify_command_hashes_every_file_whatever_was_recorded(small_chain, record, hashed, capsys) -> None:
    root = str(small_chain.root)
    assert main(["artifacts", "--root", root, "verify"]) == 0
    first = len(hashed)
    assert first == sum(len(a.manifest["files"]) for a in small_chain.store.list()) and list(record.iterdir())
    files.VERIFIED.clear()
    assert main(["artifacts", "--root", root, "verify"]) == 0
    assert len(hashed) == 2 * first
    assert "FAILED" not in capsys.readouterr().out
