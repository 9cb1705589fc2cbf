"""The match stage (the ``match`` task of metaclip_match_snapshot) on Dask: one core against the
cluster, and the artifact root on local disk against S3 (moto's server on 127.0.0.1).

A snapshot of ``--copies`` x the 10,000 real captions (fresh URLs per copy) is imported as a
``pairs`` artifact of ``--shards`` shards into each root and matched against the 500k-entry
benchmark metadata:

* one core: the match stage in this process (no Dask), its matcher already built, Arrow on one
  thread (its pool would decode columns on every core); the CPU time it used over its wall time
  is shown;
* Dask: the same stage on a LocalCluster of ``--workers`` single-threaded process workers, whose
  workers read their shard from the root and write their matched shard straight back to it.
  "cold" includes each worker getting its matcher (verifying and memory-mapping the one saved
  beside the metadata, its ``matcher`` artifact; from S3, a copy per host first) and verifying
  the shards it reads; "warm" is the same cluster's second run.  "cold, new host": fresh workers
  on a host that has checked nothing, hashing every file they read; "cold": fresh workers on a
  host where an earlier process hashed the matcher and the shards (metaclip_tasks.core.checked: every
  task of a backfill after the first).  "first task" is the matcher step alone, timed in each
  worker of a fresh cluster (the slowest worker's is shown), on a new host and on a checked one.
  Each round runs one core, then a fresh cluster's cold run on a new host, then another fresh
  cluster's cold and warm runs, back to back: the ratios are the medians of each round's own (the
  machine's speed drifts by +-20% between rounds, and a round's runs share its speed); pairs/s
  are the medians over ``--rounds`` rounds.
* ceiling: the same shards' ``match_shard`` calls in ``--workers`` plain forked processes against
  one process (no stage, no Dask, nothing else running): what the machine's cores give this work.

Every run publishes byte-identical artifacts (checked); pairs/s and ratios are printed.

    .venv/bin/python -m benchmarks.match_snapshot [--copies 50 --shards 16 --workers 2 --rounds 9 --local-only
                                                    --without writeback --without lean-diagnostics
                                                    --without tally --without worker-threads]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.metadata_500k import CAPTIONS, benchmark_metadata
from metaclip_tasks.core import checked, files
from metaclip_tasks.core.artifacts import Artifact, ArtifactStore
from metaclip_tasks.core.stage import run
from metaclip_tasks.curation import shard_matching
from metaclip_tasks.curation.shard_matching import match_shard
from metaclip_tasks.dev.local_s3 import local_s3
from metaclip_tasks.metadata.build import ENTRIES
from metaclip_tasks.runtime import cluster
from metaclip_tasks.runtime.cluster import dask_client
from metaclip_tasks.stages import (
    MATCHER_BUILD,
    METADATA_IMPORT,
    PAIRS_IMPORT,
    MatcherBuildParams,
    MetadataImportParams,
    PairsImportParams,
    plan,
)
from metaclip_tasks.stages.match import WORKER_MATCHERS, local_matcher_file, saved_matcher, worker_matcher

SNAPSHOT = "CC-MAIN-2023-06"


def write_source(directory: Path, copies: int) -> tuple[Path, int]:
    captions = pq.read_table(CAPTIONS, columns=["URL", "TEXT"]).rename_columns(["url", "text"])
    parts = []
    for c in range(copies):
        urls = pa.array([f"{u}#copy{c}" for u in captions.column("url").to_pylist()])
        parts.append(captions.set_column(0, "url", urls))
    table = pa.concat_tables(parts)
    pq.write_table(table, directory / "pairs.parquet")
    return directory / "pairs.parquet", len(table)


def _timed_match(store: ArtifactStore, pairs: Artifact, meta: Artifact, client) -> tuple[float, Artifact]:
    start = time.perf_counter()
    matched = plan.match(store, pairs, meta, client)
    elapsed = time.perf_counter() - start
    store.fs.rm(store.fs._strip_protocol(matched.uri), recursive=True)  # forget it: the next round works again
    return elapsed, matched


def _forget_matchers() -> None:
    """Start the next cluster's workers (forked from this process) as fresh processes start: with no
    matcher and no file verified yet."""
    WORKER_MATCHERS.clear()
    files.VERIFIED.clear()


@contextlib.contextmanager
def host_record(folder: Path) -> Iterator[None]:
    """The host's record of checked files (metaclip_tasks.core.checked) in ``folder`` while inside: the
    clusters started inside fork their workers with it."""
    before = os.environ.get("METACLIP_CHECKED_DIR")
    os.environ["METACLIP_CHECKED_DIR"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            del os.environ["METACLIP_CHECKED_DIR"]
        else:
            os.environ["METACLIP_CHECKED_DIR"] = before


def check_on_host(stored: list[files.Stored]) -> None:
    """Hash local files as an earlier task on this host would have, once they are settled (a file
    changed less than checked.RACY_SECONDS before it is hashed is not recorded)."""
    time.sleep(checked.RACY_SECONDS + 0.1)
    for f in stored:
        files.verify(f, recheck=True)


def _matcher_seconds(entries: files.Stored, saved: tuple[files.Stored, ...], version: str) -> float:
    """How long this worker takes to get its matcher: what its first task spends before matching."""
    start = time.perf_counter()
    worker_matcher(entries, saved, version, "tokens")
    return time.perf_counter() - start


def _match_shards(
    shards: list[files.Stored], output: str, entries: files.Stored, saved: tuple[files.Stored, ...], version: str
) -> float:
    """``match_shard`` over some shards in this process, nothing else (no stage, no Dask): seconds."""
    matcher = worker_matcher(entries, saved, version, "tokens")
    start = time.perf_counter()
    for shard in shards:
        match_shard(shard, output, matcher)
    return time.perf_counter() - start


def ceiling(
    pairs: Artifact, meta: Artifact, saved: tuple[files.Stored, ...], tmp: Path, workers: int, rounds: int
) -> list[float]:
    """What the machine itself allows: the shards matched by ``workers`` plain forked processes (each a
    share of them, in parallel) against one process, per round (each process warmed by one run first)."""
    shards, args = pairs.data_files(), (meta.stored(ENTRIES), saved, meta.version)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.starmap(_match_shards, [(shards, str(tmp / f"ceiling-{w}.parquet"), *args) for w in range(workers)])
        ratios = []
        for _ in range(rounds):
            one = pool.starmap(_match_shards, [(shards, str(tmp / "ceiling-0.parquet"), *args)])[0]
            shares = [(shards[w::workers], str(tmp / f"ceiling-{w}.parquet"), *args) for w in range(workers)]
            ratios.append(one / max(pool.starmap(_match_shards, shares)))
    return ratios


def _dask_diagnostics() -> None:
    """Local clusters with Dask's default diagnostics (a 10 ms profiler per worker, a 20 ms tick, ...)."""
    for key in (
        "distributed.worker.profile.enabled",
        "distributed.admin.tick.interval",
        "distributed.admin.system-monitor.interval",
        "distributed.worker.memory.monitor-interval",
    ):
        del cluster.LOCAL_CLUSTER_CONFIG[key]


class _DenseEachBatch:
    """A shard's counts as match_shard made them before shard_matching.Tally: a dense vector per batch, added."""

    def __init__(self, num_entries: int) -> None:
        self.counts = np.zeros(num_entries, dtype=np.uint64)

    def add(self, ids: np.ndarray) -> None:
        self.counts += np.bincount(ids, minlength=len(self.counts)).astype(np.uint64)

    def sparse(self) -> tuple[np.ndarray, np.ndarray]:
        entries = np.flatnonzero(self.counts)
        return entries, self.counts[entries]


def _arrow_threads_per_core() -> None:
    """Workers with Arrow's pool of one thread per core, as before cluster.ArrowOnWorkers sized it."""
    setup = cluster.ArrowOnWorkers.setup

    def per_core(self: cluster.ArrowOnWorkers, worker: object) -> None:
        setup(self, worker)
        pa.set_cpu_count(os.cpu_count() or 1)

    cluster.ArrowOnWorkers.setup = per_core  # type: ignore[method-assign]


WITHOUT = {
    "writeback": lambda: setattr(files, "SYNC_FILE_RANGE_CALL", None),
    "lean-diagnostics": _dask_diagnostics,
    "tally": lambda: setattr(shard_matching, "Tally", _DenseEachBatch),
    "worker-threads": _arrow_threads_per_core,
}


def idle_cpu(client, seconds: float = 3.0) -> float:
    """The share of one core that the cluster's processes (this one, with the scheduler and nannies,
    and the workers) use while no task runs."""
    processes = [psutil.Process()] + [psutil.Process(pid) for pid in client.run(os.getpid).values()]
    used = [sum(p.cpu_times()[:2]) for p in processes]
    time.sleep(seconds)
    return sum(sum(p.cpu_times()[:2]) - u for p, u in zip(processes, used, strict=True)) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=50, help="copies of the 10,000 captions")
    parser.add_argument("--shards", type=int, default=16, help="shards of the pairs artifact")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (one thread each)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=9,
        help="rounds of one core, cold runs and a warm run, fresh clusters (medians shown)",
    )
    parser.add_argument("--local-only", action="store_true", help="the local root alone (no S3 row)")
    parser.add_argument(
        "--without",
        choices=sorted(WITHOUT),
        action="append",
        default=[],
        help="measure as before a change: no writeback as files close, Dask's own diagnostics, "
        "dense counts per batch, or workers' Arrow on a thread per core",
    )
    args = parser.parse_args()
    for change in args.without:
        WITHOUT[change]()
    pa.set_cpu_count(1)  # one core: Arrow would decode the one-core run's columns on every core (forks inherit it)

    s3 = contextlib.nullcontext() if args.local_only else local_s3("metaclip-bench")
    with tempfile.TemporaryDirectory() as tmp, s3 as bucket, host_record(Path(tmp) / "record"):  # none of the user's
        tmp = Path(tmp)
        source, n = write_source(tmp, args.copies)
        (tmp / "metadata.json").write_text(json.dumps(benchmark_metadata()))
        print(f"{n:,} pairs in {args.shards} shards; metadata: 500,000 entries")
        rows, published, idle = [], set(), 0.0
        roots = [("local disk", str(tmp / "root"))] + (
            [] if bucket is None else [("S3 (moto, 127.0.0.1)", f"{bucket}/root")]
        )
        for label, root in roots:
            store = ArtifactStore(root)
            pairs = run(
                store, PAIRS_IMPORT, PairsImportParams(SNAPSHOT, (str(source),), rows_per_shard=-(-n // args.shards))
            )
            meta = run(store, METADATA_IMPORT, MetadataImportParams(str(tmp / "metadata.json")))
            WORKER_MATCHERS.clear()
            _timed_match(store, pairs, meta, None)  # loads this process's matcher (and makes the matcher artifact)
            saved = saved_matcher(run(store, MATCHER_BUILD, MatcherBuildParams(), {"metadata": meta}))
            verified = set(files.VERIFIED)  # what one core has verified already: its runs are warm
            args_matcher = (meta.stored(ENTRIES), saved, meta.version)
            firsts = []
            for host in ("new", "checked"):
                with host_record(tmp / f"{label}-{host}"):
                    if host == "checked":  # an earlier task on this host checked the shards and the matcher
                        check_on_host(
                            [dataclasses.replace(f, uri=local_matcher_file(f)) for f in saved]
                            + (pairs.data_files() if store.local else [])
                        )
                    _forget_matchers()
                    with dask_client(work=args.workers) as client:
                        assert len(client.scheduler_info()["workers"]) == args.workers, (
                            "fewer free cores than --workers"
                        )
                        firsts.append(max(client.run(_matcher_seconds, *args_matcher).values()))
                        idle = idle_cpu(client) if host == "new" and label == "local disk" else idle
            times: dict[str, list[float]] = {"one core": [], "cold, new host": [], "cold": [], "warm": []}
            cores = []  # the one-core runs' CPU time over their wall time
            for r in range(args.rounds):
                files.VERIFIED.update(verified)
                worker_matcher(*args_matcher, "tokens")  # this process's, loaded
                used = sum(psutil.Process().cpu_times()[:2])
                elapsed, matched = _timed_match(store, pairs, meta, None)
                times["one core"].append(elapsed)
                cores.append((sum(psutil.Process().cpu_times()[:2]) - used) / elapsed)
                published.add(json.dumps(matched.manifest["files"]))
                for host in ("new", "checked"):
                    _forget_matchers()
                    with (
                        host_record(tmp / f"{label}-{host}" if host == "checked" else tmp / f"{label}-new-{r}"),
                        dask_client(work=args.workers) as client,
                    ):
                        elapsed, matched = _timed_match(store, pairs, meta, client)
                        times["cold, new host" if host == "new" else "cold"].append(elapsed)
                        if host == "checked":
                            elapsed, matched = _timed_match(store, pairs, meta, client)
                            times["warm"].append(elapsed)
                    published.add(json.dumps(matched.manifest["files"]))
            one = times.pop("one core")
            ratios = [statistics.median(o / t for o, t in zip(one, runs, strict=True)) for runs in times.values()]
            speeds = [n / statistics.median(runs) for runs in (one, *times.values())]
            rows.append((label, speeds, ratios, firsts, statistics.median(cores)))
            if label == "local disk":
                limits = ceiling(pairs, meta, saved, tmp, args.workers, args.rounds)
        assert len(published) == 1, "the roots and drivers published different matched shards"
        w = args.workers
        print(
            f"| root | one core (pairs/s) | Dask cold, new host ({w} workers) | Dask cold | Dask warm | cold, new host vs "
            "one core | cold vs one core | warm vs one core | first task's matcher (new host / checked) | cores the one-core "
            "run used |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for label, speeds, ratios, firsts, used in rows:
            print(
                f"| {label} | "
                + " | ".join(f"{v:,.0f}" for v in speeds)
                + " | "
                + " | ".join(f"{r:.2f}x" for r in ratios)
                + f" | {firsts[0]:.3f} s / {firsts[1]:.3f} s | {used:.2f} |"
            )
        print(f"the idle cluster's processes (driver, {w} workers): {idle:.1%} of a core")
        print(
            f"ceiling: match_shard in {w} plain processes vs one (local disk, no stage, no Dask): median "
            f"{statistics.median(limits):.2f}x, rounds " + ", ".join(f"{r:.2f}x" for r in limits)
        )
        if len(rows) == 2:
            (_, local, *_), (_, remote, *_) = rows
            print(f"S3 / local: one core {remote[0] / local[0]:.2f}x, Dask warm {remote[3] / local[3]:.2f}x")


if __name__ == "__main__":
    main()
