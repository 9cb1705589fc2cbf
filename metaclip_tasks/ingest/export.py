"""An artifact's rows copied out of the store as a plain parquet dataset (``metaclip ingest -o OUT``).

OUT must be new, or an earlier export (it has :data:`MARKER`): a command never replaces what it did
not write.  It may not hold or sit inside an input or the artifact root.  Locally the export is
written under a hidden temporary name and renamed into place; elsewhere the marker is written last.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence

from metaclip_tasks.core import files
from metaclip_tasks.core.artifacts import Artifact
from metaclip_tasks.core.errors import CurationError

MARKER = "_metaclip_export.json"  # names starting with _ are skipped by parquet dataset readers


def _inside(a: str, b: str) -> bool:
    """Whether location ``a`` is ``b`` or below it."""
    a, b = a.rstrip("/"), b.rstrip("/")
    return a == b or a.startswith(b + "/")


def _canonical(uri: str) -> str:
    fs, path = files.filesystem(uri)
    return os.path.realpath(path) if files.is_local(fs) else files.unstrip(fs, path)


def check_export(out: str, inputs: Sequence[str], root: str) -> None:
    """Refuse an output that is not ours to write: an existing non-export, an input's place, the store's."""
    target = _canonical(out)
    for place in [*inputs, root]:
        where = _canonical(place)
        if _inside(target, where) or _inside(where, target):
            what = "the artifact root" if place == root else f"input {place}"
            raise CurationError(f"output {out} overlaps {what}: choose a new directory")
    fs, path = files.filesystem(out)
    if fs.exists(path) and not fs.isfile(files.join(path, MARKER)) and (fs.isfile(path) or fs.ls(path)):
        raise CurationError(f"output {out} exists and was not written by metaclip: choose a new directory")


def export_pairs(artifact: Artifact, out: str) -> str:
    """Copy the artifact's parquet parts (verified as they are read) to ``out``; returns ``out``."""
    fs, path = files.filesystem(out)
    local = files.is_local(fs)
    work = (
        os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp-{os.getpid()}")
        if local
        else path
    )
    described = []
    for stored in artifact.data_files():
        with files.open_read(stored, "pairs shard") as src, files.HashingWriter(files.join(work, stored.name)) as dst:
            shutil.copyfileobj(src, dst, files.CHUNK)
        described.append({"name": stored.name, "bytes": dst.size, "sha256": dst.stored.sha256})
    marker = {
        "stage": artifact.stage,
        "version": artifact.version,
        "artifact": artifact.uri,
        "stats": artifact.stats,
        "files": described,
    }
    with files.open_write(files.join(work, MARKER)) as f:
        f.write((json.dumps(marker, indent=2, sort_keys=True) + "\n").encode())
    if local:
        old = f"{work}.old"
        if os.path.exists(path):
            os.rename(path, old)  # an earlier export (checked): ours to replace
        os.rename(work, path)
        shutil.rmtree(old, ignore_errors=True)
    return out
