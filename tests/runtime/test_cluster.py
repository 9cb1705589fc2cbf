"""Local Dask clusters: a killed task's core slots are free at once, even while the workers it
forked live on; workers allocate Arrow memory with jemalloc unless the environment chooses, and
decode on their own threads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from metaclip_tasks.runtime.cluster import core_slots, dask_client

HOLDER = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from metaclip_tasks.runtime.cluster import core_slots

    with core_slots(os.cpu_count() or 1):
        worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,))
        worker.start()  # as a LocalCluster's nanny forks its worker: the slot files' descriptors go with it
        print(worker.pid, flush=True)
        time.sleep(600)
    """
)


def test_a_killed_holders_slots_are_free_while_its_forked_worker_lives(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("METACLIP_DASK_SLOTS", str(tmp_path / "slots"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    worker = psutil.Process(int(holder.stdout.readline()))
    try:
        holder.send_signal(signal.SIGKILL)  # as Airflow kills a task whose run was marked failed
        holder.wait()
        assert worker.is_running()
        began = time.monotonic()
        with core_slots(os.cpu_count() or 1) as n:
            assert n == (os.cpu_count() or 1)  # every slot, not waiting for the orphaned worker
        assert time.monotonic() - began < 30
    finally:
        worker.kill()


def _backend() -> str:
    return pa.default_memory_pool().backend_name


@pytest.mark.cluster
def test_workers_run_arrow_on_their_threads_and_jemalloc_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    with dask_client(work=1) as client:
        assert set(client.run(_backend).values()) == {"jemalloc"}
        assert set(client.run(pa.cpu_count).values()) == {1}  # its one thread, not one per core
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")  # the user's choice: left alone
    with dask_client(work=1) as client:
        assert set(client.run(_backend).values()) == {_backend()}  # the pool the worker was forked with


def _diagnostics() -> tuple[object, object]:
    import dask

    return dask.config.get("distributed.worker.profile.enabled"), dask.config.get("distributed.admin.tick.interval")


@pytest.mark.cluster
def test_local_workers_run_dasks_diagnostics_at_a_batch_pace() -> None:
    """No sampling profiler and a 500 ms tick in a local cluster's workers (~10% of a core went to them)."""
    with dask_client(work=1) as client:
        assert list(client.run(_diagnostics).values()) == [(False, "500ms")]
