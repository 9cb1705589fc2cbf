"""Per-shard work on a Dask cluster, or in this process without one: map, gather in batches, in order.

The stages call these with a Dask client (or None): the same code runs on a cluster or inline, with a
progress bar on a terminal, and the driver never holds more than a batch of results at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from dask.distributed import as_completed
from tqdm import tqdm


def each_shard(client: Any, label: str, fn: Callable, *iterables: Sequence, **kwargs: Any) -> list:
    """``fn`` over each shard: its results, in this process without a client, else its futures on
    the Dask cluster; in order, with a progress bar on a terminal."""
    if client is None:
        jobs = list(zip(*iterables, strict=True))
        return [fn(*args, **kwargs) for args in tqdm(jobs, desc=label, unit="shard", disable=None)]
    futures = client.map(fn, *iterables, pure=False, **kwargs)
    if sys.stderr.isatty():
        from dask.distributed import progress

        progress(futures)
    return futures


GATHER_BATCH = 8  # results fetched in one round trip: one each cost ~1.5 ms of the driver's CPU and ~1 ms of a worker's


def in_completion_order(client: Any, results: list, batch: int = GATHER_BATCH) -> Iterator[tuple[int, Any]]:
    """``(index, result)`` of each shard's result (see :func:`each_shard`): on a cluster as tasks end,
    fetched ``batch`` at a time (the rest once all have ended; a failed task's error at once) and then
    released, so the driver holds at most ``batch``."""
    if client is None:
        yield from enumerate(results)
        return
    index = {future.key: i for i, future in enumerate(results)}
    ended: list = []
    for n, future in enumerate(as_completed(results), 1):
        ended.append(future)
        if len(ended) == batch or n == len(results) or future.status == "error":
            for done, result in zip(ended, client.gather(ended), strict=True):
                yield index[done.key], result
                done.release()
            ended = []


def map_shards(client: Any, label: str, fn: Callable, *iterables: Sequence, **kwargs: Any) -> list:
    """The results of ``fn`` over each shard (see :func:`each_shard`)."""
    results = each_shard(client, label, fn, *iterables, **kwargs)
    return results if client is None else client.gather(results)
