"""Metadata files: a non-empty JSON list of non-blank strings, read from any fsspec URI, checked."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.metadata.store import check_entries, load_metadata, metadata_report


def test_load_and_report(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(json.dumps(["a", "b", "a", "black cat", "café"], ensure_ascii=False))
    assert load_metadata(str(tmp_path / "m.json")) == ["a", "b", "a", "black cat", "café"]
    assert load_metadata(f"file://{tmp_path}/m.json") == ["a", "b", "a", "black cat", "café"]
    assert metadata_report(["a", "b", "a", "black cat"]) == {"entries": 4, "distinct": 3, "duplicated_entries": 1}


def test_read_through_fsspec() -> None:
    with fsspec.open("memory://metaclip-test-store/entries.json", "w") as f:
        f.write('["cat", "dog"]')
    try:
        assert load_metadata("memory://metaclip-test-store/entries.json") == ["cat", "dog"]
    finally:
        fsspec.filesystem("memory").rm("/metaclip-test-store", recursive=True)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CurationError, match="metadata file .*m.json does not exist"):
        load_metadata(str(tmp_path / "m.json"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "holds no entries"),
        ('["cat", " ", "dog"]', r"entry 1 is blank \(' '\); a blank entry would match every text"),
        ('["cat", "dog", ""]', r"entry 2 is blank \(''\)"),
        ('["\\t\\n"]', r"entry 0 is blank"),
        ('["cat", 3]', "entry 1 is 3, not a string"),
        ('["cat", null]', "entry 1 is null, not a string"),
        ('{"cat": 1}', "holds a JSON dict, not a list of strings"),
        ('"cat"', "holds a JSON str, not a list of strings"),
        ('["cat", ', "is not valid JSON"),
    ],
    ids=["empty", "blank", "empty-string", "whitespace", "int", "null", "dict", "string", "broken"],
)
def test_bad_lists_are_refused_naming_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(CurationError, match=f"metadata file {path}.*{message}"):
        load_metadata(str(path))


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_bytes(b'["caf\xe9"]')
    with pytest.raises(CurationError, match="m.json is not valid JSON"):
        load_metadata(str(tmp_path / "m.json"))


def test_check_entries_names_the_first_bad_entry() -> None:
    assert check_entries(["a", "b"], "the list") == ["a", "b"]
    with pytest.raises(CurationError, match="the list holds no entries"):
        check_entries([], "the list")
    with pytest.raises(CurationError, match=r"the list: entry 3 is blank"):
        check_entries(["a", "b", "c", "  ", ""], "the list")
