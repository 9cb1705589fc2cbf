"""Wikipedia titles by page views, the metadata's fourth source: counting hourly files, the threshold."""

from __future__ import annotations

import datetime
import gzip
from pathlib import Path

import pytest

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.metadata.titles import count_pageviews, pageview_file_name, select_titles


def write_hour(path: Path, lines: list[str]) -> Path:
    """An hourly page-view file holding ``lines``, gzipped when its name ends in ``.gz``."""
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def test_views_are_summed_across_files_hours_and_desktop_and_mobile(tmp_path: Path) -> None:
    hours = [
        write_hour(tmp_path / "pageviews-20240101-000000.gz", ["en Albert_Einstein 40 0", "en.m Albert_Einstein 5 0"]),
        write_hour(tmp_path / "pageviews-20240101-010000.gz", ["en Albert_Einstein 30 0", "en Physics 2 0"]),
        write_hour(tmp_path / "pageviews-20240102-000000", ["en.m Physics 3 0", "en Albert_Einstein 1 0"]),
    ]
    assert count_pageviews(hours) == {"Albert Einstein": 76, "Physics": 5}
    assert count_pageviews(hours, projects=("en.m",)) == {"Albert Einstein": 5, "Physics": 3}


def test_other_projects_namespaces_and_empty_titles_are_dropped(tmp_path: Path) -> None:
    hour = write_hour(
        tmp_path / "h.gz",
        [
            "de Albert_Einstein 100 0",
            "en.wikt Albert_Einstein 100 0",
            "commons.m Albert_Einstein 100 0",
            "en Special:Search 100 0",
            "en File:Einstein.jpg 100 0",
            "en Star_Wars:_Episode_IV 100 0",
            "en _ 100 0",
            "en __Padded_title_ 7 0",
            "en Padded_title 1 0",
            "en Zürich 4 0",
        ],
    )
    assert count_pageviews([hour]) == {"Padded title": 8, "Zürich": 4}


def test_malformed_lines_are_skipped(tmp_path: Path) -> None:
    hour = tmp_path / "h"
    hour.write_bytes(
        b"en Good 3 0\n"
        b"en Too few\n"
        b"en Too many fields 3 0\n"
        b"en  Double_space 3 0\n"
        b"en Word\tTab 3 0\n"
        b"en NotANumber x 0\n"
        b"en Negative -3 0\n"
        b"en Fraction 1.5 0\n"
        b"en Bad\xffUtf8 3 0\n"
        b"\n"
        b"en Good 4 0"  # no final newline
    )
    views = count_pageviews([hour])
    assert views == {"Good": 7, "Word\tTab": 3} and views.malformed == 8  # counted, never silently dropped


def test_missing_and_corrupt_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CurationError, match=r"page-view file .*nowhere\.gz does not exist"):
        count_pageviews([tmp_path / "nowhere.gz"])
    (tmp_path / "broken.gz").write_bytes(gzip.compress(b"en A 1 0\n" * 1000)[:-20])
    with pytest.raises(CurationError, match=r"page-view file .*broken\.gz cannot be read"):
        count_pageviews([tmp_path / "broken.gz"])


def test_threshold_and_deterministic_order() -> None:
    views = {"b": 70, "a": 70, "c": 69, "d": 500, "e": 0}
    assert select_titles(views) == [("d", 500), ("a", 70), ("b", 70)]
    assert select_titles(views, min_views=1) == [("d", 500), ("a", 70), ("b", 70), ("c", 69)]
    assert select_titles({}) == []


def test_pageview_file_name() -> None:
    assert pageview_file_name(datetime.date(2024, 3, 5), 7) == "pageviews-20240305-070000.gz"
    assert pageview_file_name(datetime.date(2024, 12, 31), 23) == "pageviews-20241231-230000.gz"
    with pytest.raises(CurationError, match="hour 24"):
        pageview_file_name(datetime.date(2024, 3, 5), 24)
