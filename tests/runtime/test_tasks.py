"""The stages on Dask: a configured scheduler is used, each worker builds its matcher once, the
output does not depend on the workers, local clusters never start more workers than cores, and
the shards' results come back in batches."""

from __future__ import annotations

import os
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dask.distributed import LocalCluster

from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.snapshots import Pool
from metaclip_tasks.core.stage import run
from metaclip_tasks.runtime.cluster import core_slots, dask_client
from metaclip_tasks.runtime.tasks import in_completion_order
from metaclip_tasks.stages import METADATA_IMPORT, PAIRS_IMPORT, MetadataImportParams, PairsImportParams, plan
from metaclip_tasks.stages import match as match_stages


def _snapshot(tmp: Path, store: ArtifactStore, snapshot: str, shards: int):
    directory = tmp / "raw" / snapshot
    directory.mkdir(parents=True)
    for i in range(shards):
        texts = [f"a red car number {i}", "black dog", "nothing"]
        urls = [f"https://x/{snapshot}/{i}/{k}.jpg" for k in range(3)]
        pq.write_table(pa.table({"url": urls, "text": texts}), directory / f"part-{i}.parquet")
    return run(store, PAIRS_IMPORT, PairsImportParams(snapshot, (str(directory),)))


@pytest.mark.cluster
def test_configured_scheduler_and_one_matcher_per_worker(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "m.json").write_text('["red", "car", "red car", "dog", "black dog"]')
    store = ArtifactStore(tmp_path / "root")
    metadata = run(store, METADATA_IMPORT, MetadataImportParams(str(tmp_path / "m.json")))
    first_pairs = _snapshot(tmp_path, store, "CC-MAIN-2023-06", 6)
    _snapshot(tmp_path, store, "CC-MAIN-2023-14", 6)
    assert first_pairs.stats["shards"] == 6 and first_pairs.stats["pairs"] == 18
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        with dask_client() as client:
            assert client.scheduler.address == cluster.scheduler_address

            def matchers() -> dict:
                """Per worker: (metadata version, backend) -> id of the matcher it holds."""
                return client.run(lambda: {k: id(m) for k, m in match_stages.WORKER_MATCHERS.items()})

            first = plan.match_snapshot(store, "CC-MAIN-2023-06", metadata, client)
            built = matchers()
            plan.match_snapshot(store, "CC-MAIN-2023-14", metadata, client)
            assert matchers() == built  # the same matcher objects served the second snapshot
            assert all(set(ids) <= {(metadata.version, "tokens")} for ids in built.values())
    assert first.stats["pairs_matched"] == 12 and first.stats["matches"] == 6 * 3 + 6 * 2
    assert first.stats["snapshot"] == "CC-MAIN-2023-06" and len(first.data_files()) == 6
    rows = pd.read_parquet(first.path("data"))  # the rows read as one dataset
    assert len(rows) == 12 and list(rows.columns) == ["uid", "url", "text", "matched_entry_ids"]


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    directory = tmp_path / "raw4" / "CC-MAIN-2023-06"
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        texts = [f"a red car number {i}", "black dog", "nothing", "red dog"] * 5
        pq.write_table(
            pa.table({"url": [f"https://x/{i}/{k}.jpg" for k in range(20)], "text": texts}), directory / f"p{i}.parquet"
        )
    return directory


@pytest.mark.cluster
def test_the_output_does_not_depend_on_the_workers(tmp_path: Path, raw: Path) -> None:
    """Matching and balancing in this process and on a 2-worker cluster give byte-identical artifacts."""
    (tmp_path / "m.json").write_text('["red", "car", "red car", "dog", "black dog", "number"]')
    manifests = []
    for name, workers in (("serial", 0), ("dask", 2)):
        store = ArtifactStore(tmp_path / name)
        meta = run(store, METADATA_IMPORT, MetadataImportParams(str(tmp_path / "m.json")))
        pairs = run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (str(raw),)))
        with dask_client(work=workers) if workers else nullcontext() as client:
            matched = plan.match(store, pairs, meta, client)
            counts = plan.count_pool(store, Pool("p", ("CC-MAIN-2023-06",), 0.3), meta, [matched])
            curated = plan.balance(store, counts, 2, 7, client)
        manifests.append({a.stage: (a.version, a.manifest["files"], a.stats) for a in (matched, counts, curated)})
    assert manifests[0] == manifests[1]


def test_concurrent_local_clusters_share_the_cores(tmp_path: Path, monkeypatch) -> None:
    """Three tasks at once (three mapped tasks under the LocalExecutor) hold at most one worker per core."""
    monkeypatch.setenv("METACLIP_DASK_SLOTS", str(tmp_path / "slots"))
    cores = os.cpu_count() or 1
    held, peak, lock = [0], [0], threading.Lock()

    def task() -> None:
        with core_slots(cores) as n:
            with lock:
                held[0] += n
                peak[0] = max(peak[0], held[0])
            time.sleep(0.3)
            with lock:
                held[0] -= n

    threads = [threading.Thread(target=task) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= peak[0] <= cores
    if cores > 1:
        with core_slots(1) as one, core_slots(cores + 3) as rest:
            assert (one, rest) == (1, cores - 1)


def _square_after(i: int, seconds: float) -> int:
    time.sleep(seconds)
    if i < 0:
        raise ValueError(f"task {i} failed")
    return i * i


@pytest.mark.cluster
def test_results_are_fetched_in_batches_once_each_and_a_failure_at_once() -> None:
    """The driver fetches the shards' results a batch at a time (one round trip a batch), releases
    them, and a failed task's error comes as it ends, not once the batch fills."""
    with dask_client(work=2) as client:
        futures = client.map(_square_after, range(19), seconds=0.01, pure=False)
        assert dict(in_completion_order(client, futures, batch=8)) == {i: i * i for i in range(19)}
        deadline = time.monotonic() + 10
        while {f.key for f in futures} & set(client.futures) and time.monotonic() < deadline:
            time.sleep(0.05)  # a release reaches the client's event loop soon after
        assert not {f.key for f in futures} & set(client.futures)  # none held once yielded
        futures = client.map(_square_after, [-1, *range(1, 7)], [0.0] + [3.0] * 6, pure=False)
        began, seen = time.monotonic(), []
        with pytest.raises(ValueError, match="task -1 failed"):
            for index, _ in in_completion_order(client, futures, batch=8):
                seen.append(index)
        assert seen == [] and time.monotonic() - began < 3.0  # before any slow task ended
