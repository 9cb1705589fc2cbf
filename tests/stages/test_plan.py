"""The decisions between stages, without Airflow: a snapshot's newest pairs, a pool's matched
snapshots, t for a pool, a curated subset, the t ablation's values."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.snapshots import Pool, snapshot_for_date
from metaclip_tasks.core.stage import run
from metaclip_tasks.curation.balancing import t_for_tail_ratio
from metaclip_tasks.curation.counting import load_counts
from metaclip_tasks.stages import PAIRS_IMPORT, PairsImportParams, plan


def test_the_newest_pairs_of_a_snapshot_are_matched(small_chain, tmp_path) -> None:
    assert plan.latest_pairs(small_chain.store, "CC-MAIN-2023-06") == small_chain.pairs
    pq.write_table(pa.table({"url": ["https://x/new.jpg"], "text": ["a red dog"]}), tmp_path / "new.parquet")
    newer = run(small_chain.store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (str(tmp_path / "new.parquet"),)))
    assert plan.latest_pairs(small_chain.store, "CC-MAIN-2023-06") == newer
    matched = plan.match_snapshot(small_chain.store, "CC-MAIN-2023-06", small_chain.meta)
    assert matched.input("pairs") == newer and matched.stats["pairs_matched"] == 1
    with pytest.raises(CurationError, match="no pairs of CC-MAIN-2023-14 under .*: import them first"):
        plan.latest_pairs(small_chain.store, "CC-MAIN-2023-14")


def test_a_pool_needs_every_snapshot_matched(small_chain) -> None:
    pool = Pool("two", ("CC-MAIN-2023-06", "CC-MAIN-2023-14"), 0.3)
    assert plan.pool_matched(small_chain.store, pool, small_chain.meta, required=False) is None
    with pytest.raises(CurationError, match="pool two: 1 snapshots are not matched yet: CC-MAIN-2023-14"):
        plan.pool_matched(small_chain.store, pool, small_chain.meta)
    assert plan.pool_matched(small_chain.store, small_chain.pool, small_chain.meta) == [small_chain.matched]


def test_t_for_a_pool(small_chain) -> None:
    counts = small_chain.counts
    vector = load_counts(counts.stored("counts.npy"))
    assert plan.pool_t(counts, None, None) == counts.stats["t"] == t_for_tail_ratio(vector, 0.3)
    assert plan.pool_t(counts, 7, None) == 7
    assert plan.pool_t(counts, None, 0.05) == t_for_tail_ratio(vector, 0.05)
    with pytest.raises(CurationError, match=r"give t \(7\) or target_tail_ratio \(0.05\), not both"):
        plan.pool_t(counts, 7, 0.05)
    assert plan.ablation_ts(counts, [50, 7, 7], []) == [7, 50]
    for ts, ratios in (([], []), ([7], [0.1])):
        with pytest.raises(CurationError, match="give t_values or tail_ratios"):
            plan.ablation_ts(counts, ts, ratios)


def test_a_subset_is_a_balance_of_the_counted_pool(small_chain, tmp_path, monkeypatch) -> None:
    pools = tmp_path / "pools.toml"
    pools.write_text('[small]\nsnapshots = ["CC-MAIN-2023-06"]\ntarget_tail_ratio = 0.3\n')
    monkeypatch.setenv("METACLIP_POOLS", str(pools))
    subset = plan.Subset("small", 20, None, 0, small_chain.meta.version)
    assert plan.check_subset(small_chain.store, subset).name == "small"
    curated = plan.curated_subset(small_chain.store, subset)
    assert curated == small_chain.curated and curated.cache_hit
    with pytest.raises(CurationError, match="unknown pool 'nope'"):
        plan.check_subset(small_chain.store, plan.Subset("nope"))
    with pytest.raises(CurationError, match="parameter seed must be >= 0"):
        plan.curated_subset(small_chain.store, plan.Subset("small", 20, None, -1, small_chain.meta.version))


def test_a_runs_snapshot_is_the_one_asked_for_else_its_logical_dates_crawl() -> None:
    assert plan.run_snapshot("CC-MAIN-2023-06", date(2024, 1, 1)) == "CC-MAIN-2023-06"
    assert plan.run_snapshot(None, date(2023, 2, 10)) == snapshot_for_date(date(2023, 2, 10))
    with pytest.raises(CurationError, match="^a manual run needs the snapshot parameter$"):
        plan.run_snapshot(None, None)
    with pytest.raises(CurationError, match="CC-MAIN-1999"):
        plan.run_snapshot("CC-MAIN-1999-01", None)
