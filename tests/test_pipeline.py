"""The pipeline's Dask side: a configured scheduler is used, and each worker builds its matcher once."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dask.distributed import LocalCluster

from metaclip_tasks import pipeline
from metaclip_tasks.artifacts import ArtifactStore
from metaclip_tasks.cluster import dask_client
from metaclip_tasks.errors import CurationError


def _snapshot(root: Path, snapshot: str, shards: int) -> None:
    directory = pipeline.pairs_dir(root, snapshot)
    directory.mkdir(parents=True)
    for i in range(shards):
        texts = [f"a red car number {i}", "black dog", "nothing"]
        urls = [f"https://x/{snapshot}/{i}/{k}.jpg" for k in range(3)]
        pq.write_table(pa.table({"url": urls, "text": texts}), directory / f"part-{i}.parquet")


def test_configured_scheduler_and_one_matcher_per_worker(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "m.json").write_text('["red", "car", "red car", "dog", "black dog"]')
    store = ArtifactStore(tmp_path)
    metadata = pipeline.import_metadata(store, tmp_path / "m.json")
    _snapshot(tmp_path, "CC-MAIN-2023-06", 6)
    _snapshot(tmp_path, "CC-MAIN-2023-14", 6)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        with dask_client() as client:
            assert client.scheduler.address == cluster.scheduler_address

            def matchers() -> dict:
                """Per worker: metadata version -> id of the matcher it holds."""
                return client.run(lambda: {k: id(m) for k, m in pipeline._MATCHERS.items()})

            first = pipeline.match_snapshot(store, "CC-MAIN-2023-06", metadata, client)
            built = matchers()
            pipeline.match_snapshot(store, "CC-MAIN-2023-14", metadata, client)
            assert matchers() == built  # the same matcher objects served the second snapshot
            assert all(set(ids) <= {metadata.version} for ids in built.values())
            assert first.stats["pairs_matched"] == 12 and first.stats["matches"] == 6 * 3 + 6 * 2


def test_stage_input_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(CurationError, match="no parquet shards of pairs for CC-MAIN-2023-06 in"):
        pipeline.snapshot_shards(tmp_path, "CC-MAIN-2023-06")
    with pytest.raises(CurationError, match="unknown Common Crawl snapshot"):
        pipeline.snapshot_shards(tmp_path, "CC-MAIN-2023-07")
