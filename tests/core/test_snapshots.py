"""Common Crawl ids, dates and pools."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.snapshots import (
    DEFAULT_POOLS_FILE,
    PAPER_POOL2_RANGE,
    SNAPSHOTS,
    check_snapshot,
    get_pool,
    load_pools,
    snapshot_date,
    snapshot_for_date,
    snapshots_between,
)


def test_the_paper_range_is_91_crawls_in_order() -> None:
    pool2 = snapshots_between(*PAPER_POOL2_RANGE)
    assert len(pool2) == 91 and pool2[0] == "CC-MAIN-2013-20" and pool2[-1] == "CC-MAIN-2023-14"
    days = [snapshot_date(s) for s in SNAPSHOTS]
    assert days == sorted(days) and len(set(days)) == len(days)
    assert sum(date(2013, 1, 1) <= d <= date(2023, 4, 30) for d in days) == 91
    assert {"CC-MAIN-2020-34", "CC-MAIN-2024-22"} <= set(SNAPSHOTS)  # the crawls of the shared WARC samples


def test_ids_and_dates_map_both_ways() -> None:
    assert snapshot_date("CC-MAIN-2013-20") == date(2013, 5, 13)
    assert snapshot_date("CC-MAIN-2023-14") == date(2023, 4, 3)
    for snapshot in SNAPSHOTS:
        assert snapshot_for_date(snapshot_date(snapshot)) == snapshot
        assert snapshot_for_date(snapshot_date(snapshot) + timedelta(days=6)) == snapshot  # any day of that week
    with pytest.raises(CurationError, match="no Common Crawl main crawl started in the ISO week of 2013-01-07"):
        snapshot_for_date(date(2013, 1, 7))


def test_bad_ids_are_named() -> None:
    with pytest.raises(CurationError, match="'CC-2020' is not a Common Crawl id"):
        check_snapshot("CC-2020")
    with pytest.raises(CurationError, match="unknown Common Crawl snapshot 'CC-MAIN-2020-01'"):
        check_snapshot("CC-MAIN-2020-01")


def test_packaged_pools() -> None:
    pools = load_pools(DEFAULT_POOLS_FILE)
    assert len(pools["pool1"].snapshots) == 15  # Jan 2021 .. Jan 2023, the paper's Pool 1
    assert pools["pool1"].snapshots[0] == "CC-MAIN-2021-04" and pools["pool1"].snapshots[-1] == "CC-MAIN-2022-49"
    assert len(pools["pool2"].snapshots) == 91 and pools["pool2"].target_tail_ratio == 0.06


def test_pool_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "pools.toml"
    bad.write_text('[p]\nsnapshots = ["CC-MAIN-1999-01"]\n')
    with pytest.raises(CurationError, match="unknown Common Crawl snapshot 'CC-MAIN-1999-01'"):
        load_pools(bad)
    bad.write_text("[p]\ndescription = 'x'\n")
    with pytest.raises(CurationError, match="needs 'snapshots' or 'first' and 'last'"):
        load_pools(bad)
    bad.write_text('[p]\nsnapshots = ["CC-MAIN-2023-06"]\n')
    with pytest.raises(CurationError, match=r"unknown pool 'q' \(known: p\)"):
        get_pool("q", bad)
