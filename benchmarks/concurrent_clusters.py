"""Three match tasks at once on one machine (three mapped tasks under the LocalExecutor): local
Dask clusters sharing the cores (``cluster.dask_client``) against a cluster of the whole machine
per task (what each task started before).

Each task is its own process that matches one snapshot of ``--copies`` x the 10,000 real captions
(``--shards`` shards) against the 500k-entry benchmark metadata on a local cluster; the wall time
of all three, the most Dask workers alive at once and their summed peak memory are printed.

    .venv/bin/python -m benchmarks.concurrent_clusters [--copies 10 --shards 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.match_snapshot import write_source
from benchmarks.metadata_500k import benchmark_metadata
from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.stage import run
from metaclip_tasks.stages import METADATA_IMPORT, PAIRS_IMPORT, MetadataImportParams, PairsImportParams

SNAPSHOTS = ("CC-MAIN-2023-06", "CC-MAIN-2023-14", "CC-MAIN-2023-23")
TASK = """
import logging, os, sys
from dask.distributed import Client, LocalCluster
from metaclip_tasks.stages import plan
from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.runtime.cluster import dask_client
store = ArtifactStore(sys.argv[1])
pairs, meta = plan.latest_pairs(store, sys.argv[2]), store.list("metadata")[0]
if sys.argv[3] == "shared":
    context = dask_client(work=len(pairs.data_files()))
else:  # before: a LocalCluster of the whole machine per task
    import dask
    dask.config.set({"distributed.worker.multiprocessing-method": "fork"})
    context = Client(LocalCluster(n_workers=os.cpu_count(), threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=logging.WARNING))
with context as client:
    plan.match(store, pairs, meta, client)
"""


def _run(root: Path, mode: str) -> tuple[float, int, float]:
    """(seconds, most workers alive at once, their summed peak RSS in GB) for three tasks at once."""
    start = time.perf_counter()
    tasks = [subprocess.Popen([sys.executable, "-c", TASK, str(root), s, mode]) for s in SNAPSHOTS]
    peak_workers, peak_rss = 0, 0.0
    while any(t.poll() is None for t in tasks):
        workers = [w for t in tasks for w in _dask_workers(t.pid)]
        peak_workers = max(peak_workers, len(workers))
        peak_rss = max(peak_rss, sum(_rss(w) for w in workers) / 1e9)
        time.sleep(0.2)
    assert all(t.returncode == 0 for t in tasks)
    return time.perf_counter() - start, peak_workers, peak_rss


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def _dask_workers(pid: int) -> list[psutil.Process]:
    """A task's Dask worker processes (they name themselves ``dask worker [address]``)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    workers = []
    for child in children:
        try:
            if " ".join(child.cmdline()).startswith("dask worker"):
                workers.append(child)
        except psutil.Error:  # gone meanwhile
            pass
    return workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=10, help="copies of the 10,000 captions per snapshot")
    parser.add_argument("--shards", type=int, default=2, help="shards per snapshot")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source, n = write_source(tmp, args.copies)
        (tmp / "metadata.json").write_text(json.dumps(benchmark_metadata()))
        print(f"3 tasks at once, each {n:,} pairs in {args.shards} shards; {os.cpu_count()} cores; 500k-entry metadata")
        print("| local clusters | wall time | Dask workers at once | their peak memory |")
        print("| --- | ---: | ---: | ---: |")
        for mode, label in (
            ("whole", "one of the whole machine per task (before)"),
            ("shared", "sharing the cores (now)"),
        ):
            root = tmp / mode
            store = ArtifactStore(root)
            run(store, METADATA_IMPORT, MetadataImportParams(str(tmp / "metadata.json")))
            for s in SNAPSHOTS:
                run(store, PAIRS_IMPORT, PairsImportParams(s, (str(source),), rows_per_shard=-(-n // args.shards)))
            seconds, workers, gb = _run(root, mode)
            print(f"| {label} | {seconds:.1f} s | {workers} | {gb:.2f} GB |")


if __name__ == "__main__":
    main()
