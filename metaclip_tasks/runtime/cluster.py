"""Dask clusters for the stages: a configured scheduler, or a local cluster sized to the work.

Local clusters share the machine: each worker holds one of ``os.cpu_count()`` core slots (a
POSIX lock on a file per core), so tasks running at once (three mapped match tasks under the
LocalExecutor) together start at most one worker per core, and a task starts no more workers
than it has shards.  A task that finds every slot taken waits for one.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from operator import add
from pathlib import Path
from typing import IO, Any

import dask
import pyarrow as pa
from dask.distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from metaclip_tasks.core.settings import dask_slots_dir, scheduler_address


def _slots_dir() -> Path:
    path = dask_slots_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


_HELD: set[Path] = set()  # the core slots this process holds: POSIX locks are the process's, not a thread's
_HELD_GUARD = threading.Lock()
WAIT_SECONDS = 0.5


def _try_slot(path: Path) -> IO[str] | None:
    """The slot's file, locked by this process, or None when another process holds it."""
    f = open(path, "w")  # noqa: SIM115 (held open while the slot is: the lock lives with it)
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        f.close()  # this process held no lock on the file: closing releases nothing of its own
        if e.errno in (errno.EACCES, errno.EAGAIN):
            return None
        raise
    return f


@contextmanager
def core_slots(want: int) -> Iterator[int]:
    """Hold up to ``want`` of the machine's core slots (at least one, waiting if needed); yields how many.

    A slot is a POSIX record lock (``lockf``) on a file per core: unlike ``flock``, it is not
    inherited by the Dask workers the holder forks, so a task killed while its workers linger
    releases its slots at once (with ``flock`` orphaned workers held them, and every later task on
    the machine waited for ever)."""
    cores = os.cpu_count() or 1
    directory = _slots_dir()
    held: dict[Path, IO[str]] = {}
    try:
        while not held:
            with _HELD_GUARD:
                for path in (directory / f"core-{i}.lock" for i in range(cores)):
                    if len(held) >= want:
                        break
                    if path not in _HELD and (f := _try_slot(path)) is not None:
                        held[path] = f
                        _HELD.add(path)
            if not held:  # every core is busy: wait for one
                time.sleep(WAIT_SECONDS)
        yield len(held)
    finally:
        with _HELD_GUARD:
            for path, f in held.items():
                _HELD.discard(path)
                f.close()


class ArrowOnWorkers(WorkerPlugin):
    """Arrow on every worker of the cluster: its CPU pool sized to the worker's threads, and its memory
    pool jemalloc unless $ARROW_DEFAULT_MEMORY_POOL names one.

    - Dask gives each worker its threads and sets OMP_NUM_THREADS=1 for the libraries a task calls,
      but Arrow sizes its pool once per process (a forked worker keeps its parent's: one thread per
      core): two single-threaded workers on two cores decoded parquet on two threads each.
    - A fresh worker's task thread starts with an empty heap; with Arrow's default mimalloc its first
      tasks fault in their buffers page by page, and a 2-worker match of 500k pairs ran at
      1.20-1.27x one core cold, against 1.44-1.49x with jemalloc."""

    name = "metaclip-arrow"

    def setup(self, worker: Any) -> None:
        pa.set_cpu_count(max(1, worker.state.nthreads))
        if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
            return
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except NotImplementedError:  # a pyarrow built without jemalloc: its default stays
            pass


# A local cluster's workers share the machine's cores with the driver, its scheduler and their nannies:
# Dask's interactive diagnostics (a 10 ms sampling profiler in each worker, a 20 ms event-loop tick,
# 100 ms memory polls) took ~10% of a core with the cluster idle, ~2% with these (the dashboard
# still updates every second; a runaway worker is still stopped within half a second).
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.multiprocessing-method": "fork",
    "distributed.worker.daemon": False,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "1s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


@contextmanager
def dask_client(address: str | None = None, work: int | None = None) -> Iterator[Client]:
    """A client of the scheduler at ``address`` (or ``$DASK_SCHEDULER_ADDRESS``), else of a
    process-based ``LocalCluster`` of single-threaded workers: one per free core, at most ``work``.

    Local workers are forked, not spawned: spawn re-imports the parent's ``__main__``, which
    under Airflow's LocalExecutor is ``bin/airflow``, and the nannies never start; Dask's
    diagnostics run at a batch job's pace (:data:`LOCAL_CLUSTER_CONFIG`).
    """
    address = address or scheduler_address()
    if address:
        with Client(address) as client:
            client.register_plugin(ArrowOnWorkers())
            yield client
        return
    want = max(1, min(work or os.cpu_count() or 1, os.cpu_count() or 1))
    with (
        core_slots(want) as workers,
        dask.config.set(LOCAL_CLUSTER_CONFIG),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: never clashes with another cluster
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(ArrowOnWorkers())
        yield client


def tree_sum(client: Client, futures: list) -> object:
    """Sum futures pairwise on the cluster (a tree reduction): never gathers them all at once."""
    if not futures:
        raise ValueError("nothing to sum")
    while len(futures) > 1:
        paired = [client.submit(add, a, b, pure=False) for a, b in zip(futures[::2], futures[1::2])]
        futures = paired + ([futures[-1]] if len(futures) % 2 else [])
    return futures[0].result()
