"""Metadata files: a JSON list of entry strings, in entry-id order, on any fsspec storage."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from metaclip_tasks.core import files
from metaclip_tasks.core.errors import CurationError


def load_metadata(source: str | files.Stored) -> list[str]:
    """Read and check a metadata file (any fsspec URI, or an artifact's verified file): a non-empty
    JSON list of non-blank strings."""
    uri = files.location(source)
    with files.open_read(source, "metadata file") as f:
        raw = f.read()
    try:
        entries = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CurationError(f"metadata file {uri} is not valid JSON: {e}") from e
    return check_entries(entries, f"metadata file {uri}")


def check_entries(entries: object, what: str) -> list[str]:
    """``entries`` if it is a non-empty list of non-blank strings, else an error naming the first bad one."""
    if not isinstance(entries, list):
        raise CurationError(f"{what} holds a JSON {type(entries).__name__}, not a list of strings")
    if not entries:
        raise CurationError(f"{what} holds no entries")
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise CurationError(f"{what}: entry {i} is {json.dumps(entry)[:60]}, not a string")
        if not entry.strip():
            raise CurationError(f"{what}: entry {i} is blank ({entry!r}); a blank entry would match every text")
        try:
            entry.encode("utf-8")
        except UnicodeEncodeError:
            raise CurationError(f"{what}: entry {i} ({entry!r}) holds a lone surrogate, not text") from None
    return entries


def metadata_report(entries: Sequence[str]) -> dict[str, int]:
    """What a user importing a list should know: its size and duplicates."""
    counts = Counter(entries)
    return {
        "entries": len(entries),
        "distinct": len(counts),
        "duplicated_entries": sum(1 for c in counts.values() if c > 1),
    }
