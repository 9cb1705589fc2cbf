"""The match stage of metaclip_match_snapshot on Dask against the single-core matcher.

A snapshot of ``--copies`` x the 10,000 real captions (fresh URLs per copy) in ``--shards``
parquet shards is matched against the 500k-entry benchmark metadata:

* single core: one Matcher, ``match_shard`` over every shard in turn, in this process;
* Dask: ``pipeline.match_snapshot`` (the DAG task's body) on a LocalCluster of ``--workers``
  single-threaded process workers, each building its matcher once.

Both write the same matched shards; pairs/s and their ratio (the parallel efficiency) are printed.

    .venv/bin/python -m benchmarks.match_snapshot [--copies 20 --shards 8 --workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.metadata_500k import CAPTIONS, benchmark_metadata
from metaclip_tasks import pipeline
from metaclip_tasks.artifacts import ArtifactStore
from metaclip_tasks.cluster import dask_client
from metaclip_tasks.matching import Matcher, match_shard
from metaclip_tasks.metadata.store import save_metadata

SNAPSHOT = "CC-MAIN-2023-06"


def write_snapshot(root: Path, copies: int, shards: int) -> int:
    captions = pq.read_table(CAPTIONS, columns=["URL", "TEXT"]).rename_columns(["url", "text"])
    parts = []
    for c in range(copies):
        urls = pa.array([f"{u}#copy{c}" for u in captions.column("url").to_pylist()])
        parts.append(captions.set_column(0, "url", urls))
    table = pa.concat_tables(parts)
    directory = pipeline.pairs_dir(root, SNAPSHOT)
    directory.mkdir(parents=True)
    step = -(-len(table) // shards)
    for i in range(shards):
        pq.write_table(table.slice(i * step, step), directory / f"part-{i:05d}.parquet")
    return len(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=20, help="copies of the 10,000 captions")
    parser.add_argument("--shards", type=int, default=8, help="parquet shards in the snapshot")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (one thread each)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pairs = write_snapshot(tmp / "root", args.copies, args.shards)
        entries = benchmark_metadata()
        save_metadata(tmp / "metadata.json", entries)
        print(f"{pairs:,} pairs in {args.shards} shards; metadata: {len(entries):,} entries")

        start = time.perf_counter()
        matcher = Matcher(entries)
        build = time.perf_counter() - start
        start = time.perf_counter()
        for shard in pipeline.snapshot_shards(tmp / "root", SNAPSHOT):
            match_shard(shard, tmp / "single" / shard.name, matcher)
        single = pairs / (time.perf_counter() - start)
        print(f"single core, match_shard in turn:   {single:>10,.0f} pairs/s  (matcher built once in {build:.1f} s)")

        with dask_client(n_workers=args.workers) as client:
            for label in ("Dask, cold (workers build matchers)", "Dask, warm (matchers reused)"):
                store = ArtifactStore(tmp / "root")  # pairs live here; each round publishes a fresh version
                metadata = pipeline.import_metadata(store, tmp / "metadata.json")
                start = time.perf_counter()
                artifact = pipeline.match_snapshot(store, SNAPSHOT, metadata, client, url_column="url")
                rate = pairs / (time.perf_counter() - start)
                print(f"{label + ':':<36}{rate:>10,.0f} pairs/s  = {rate / single:.2f}x single core "
                      f"({rate / single / args.workers:.0%} efficiency on {args.workers} workers)")  # fmt: skip
                _remove(store, artifact)


def _remove(store: ArtifactStore, artifact) -> None:
    """Forget a published version so the next round does the work again."""
    store.fs.rm(artifact.uri, recursive=True)


if __name__ == "__main__":
    main()
