"""Metadata files: a JSON list of entry strings, in entry-id order."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from metaclip_tasks.errors import CurationError
from metaclip_tasks.storage import atomic_file


def load_metadata(path: str | os.PathLike) -> list[str]:
    """Read and check a metadata file: a JSON list whose items are all strings."""
    path = Path(path)
    if not path.is_file():
        raise CurationError(f"metadata file {path} does not exist")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CurationError(f"metadata file {path} is not valid JSON: {e}") from e
    if not isinstance(entries, list):
        raise CurationError(f"metadata file {path} holds a JSON {type(entries).__name__}, not a list of strings")
    bad = next((i for i, e in enumerate(entries) if not isinstance(e, str)), None)
    if bad is not None:
        raise CurationError(
            f"metadata file {path}: entry {bad} is {json.dumps(entries[bad])[:60]}, not a string"
        )
    return entries


def save_metadata(path: str | os.PathLike, entries: Sequence[str]) -> None:
    """Write entries as a JSON list, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(list(entries), ensure_ascii=False), encoding="utf-8")


def metadata_report(entries: Sequence[str]) -> dict[str, int]:
    """What a user importing a list should know: its size, duplicates and empty entries."""
    counts = Counter(entries)
    return {
        "entries": len(entries),
        "distinct": len(counts),
        "duplicated_entries": sum(1 for c in counts.values() if c > 1),
        "empty_entries": sum(1 for e in entries if not e.strip()),
    }
