"""Dask clusters for the stages: a configured scheduler, or a local cluster sized to the machine."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import dask
from dask.distributed import Client, LocalCluster


@contextmanager
def dask_client(address: str | None = None, n_workers: int | None = None) -> Iterator[Client]:
    """A client of the scheduler at ``address`` (or ``$DASK_SCHEDULER_ADDRESS``), else of a
    process-based ``LocalCluster`` with one single-threaded worker per core.

    Local workers are forked, not spawned: spawn re-imports the parent's ``__main__``, which
    under Airflow's LocalExecutor is ``bin/airflow``, and the nannies never start.
    """
    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        with Client(address) as client:
            yield client
        return
    with dask.config.set({"distributed.worker.multiprocessing-method": "fork", "distributed.worker.daemon": False}):
        with LocalCluster(
            n_workers=n_workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: never clashes with another cluster
            silence_logs=logging.WARNING,
        ) as cluster, Client(cluster) as client:
            yield client


def tree_sum(client: Client, futures: list) -> object:
    """Sum futures pairwise on the cluster (a tree reduction): never gathers them all at once."""
    from operator import add

    if not futures:
        raise ValueError("nothing to sum")
    while len(futures) > 1:
        paired = [client.submit(add, a, b, pure=False) for a, b in zip(futures[::2], futures[1::2])]
        futures = paired + ([futures[-1]] if len(futures) % 2 else [])
    return futures[0].result()
