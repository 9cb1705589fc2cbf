"""The host's record of local files whose sha256 was checked, so a fresh process does not hash them again.

Every Dask worker of every task verifies the files it reads; without this record each fresh
worker hashes the 36 MB matcher again before its first task (~0.03 s of ~0.1 s).  A file is
recorded with its identity and times as it was hashed (device, inode, size, mtime and ctime in
nanoseconds): any write, ``chmod`` or ``touch`` changes its ctime, which no user can set back
(short of the system clock), so a file whose stat still matches is the bytes that were hashed
(the "stat cache" of git and DVC).  Like git, a file changed less than :data:`RACY_SECONDS`
before it was hashed is not recorded: a write within the file system's timestamp granularity
would leave its times unchanged.  Markers are never pruned: one empty file per version of a
file checked, in a folder the temporary directory's cleaner empties.
The record is a folder of empty marker files, ``$METACLIP_CHECKED_DIR`` or one in the temporary
directory, the user's own; one that others could write to (and so forge a check) is not used.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from metaclip_tasks.core.settings import checked_dir

RACY_SECONDS = 2


def _folder() -> Path | None:
    """The record's folder, made if absent (0700); None when it is not this user's, or others could write to it."""
    folder = checked_dir()
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:  # lstat: a symlink is no folder
        return None
    return folder


def _marker(st: os.stat_result, sha256: str) -> str:
    identity = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{sha256}"
    return hashlib.sha256(identity.encode()).hexdigest()[:40]


def is_checked(path: str, sha256: str) -> bool:
    """Whether a process on this host hashed the local file at ``path`` as it is now and found ``sha256``."""
    folder = _folder()
    try:
        return folder is not None and (folder / _marker(os.stat(path), sha256)).is_file()
    except OSError:
        return False


def record(path: str, before: os.stat_result, sha256: str, started_ns: int) -> None:
    """Remember that the local file at ``path`` (stat ``before`` its hashing began at ``started_ns``)
    has ``sha256``; a file that changed during or just before its hashing is not remembered."""
    folder = _folder()
    try:
        after = os.stat(path)
    except OSError:
        return
    unchanged = _marker(after, sha256) == _marker(before, sha256)
    settled = started_ns - max(before.st_mtime_ns, before.st_ctime_ns) > RACY_SECONDS * 1_000_000_000
    if folder is not None and unchanged and settled:
        try:
            (folder / _marker(before, sha256)).touch(mode=0o600)
        except OSError:  # a full or read-only temporary directory: the next process hashes again
            pass
