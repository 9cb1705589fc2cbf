"""Metadata files: loading checks, saving atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaclip_tasks.errors import CurationError
from metaclip_tasks.metadata.store import load_metadata, metadata_report, save_metadata


def test_round_trip_and_report(tmp_path: Path) -> None:
    save_metadata(tmp_path / "m.json", ["a", "b", "a", " "])
    assert load_metadata(tmp_path / "m.json") == ["a", "b", "a", " "]
    assert metadata_report(["a", "b", "a", " "]) == {"entries": 4, "distinct": 3, "duplicated_entries": 1, "empty_entries": 1}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CurationError, match="m.json does not exist"):
        load_metadata(tmp_path / "m.json")
