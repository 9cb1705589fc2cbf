"""A real backfill: the scheduler, dag-processor and API server (``local_airflow standalone``, which
starts the scheduler only once the API server answers; LocalExecutor, SQLite) run
metaclip_match_snapshot for all 91 crawls of 2013-01-01 .. 2023-04-30, each on a process-based
Dask LocalCluster; then the 91 count vectors and their pool sum are checked, and SIGTERM stops
every process the supervisor started.

A backfill passes no conf, so each crawl's pairs are imported as a ``pairs`` artifact first and
each run matches its crawl's newest pairs artifact."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.snapshots import PAPER_POOL2_RANGE, snapshots_between
from metaclip_tasks.core.stage import run
from metaclip_tasks.curation.counting import load_counts, sum_counts
from metaclip_tasks.curation.matching import Matcher
from metaclip_tasks.dev.local_airflow import airflow_env, migrate, run_airflow
from metaclip_tasks.stages import PAIRS_IMPORT, PairsImportParams
from tests.dev.embedded_airflow import REPO, free_port

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.timeout(2700),  # above its own 2400 s wait for the 91 runs, whose failure names the services' logs
]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
SNAPSHOTS = snapshots_between(*PAPER_POOL2_RANGE)
WORDS = ["red", "car", "dog", "photo", "black", "cat", "house", "tree", "river", "city", "beach", "sunset", "old"]


def _texts(i: int) -> list[str]:
    """A few deterministic captions per snapshot, different in each."""
    return [f"a {WORDS[(i + k) % len(WORDS)]} {WORDS[(3 * i + k) % len(WORDS)]}, photo {i}" for k in range(4)]


def _airflow(env: dict, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, *args], check=False, env=env, capture_output=True, text=True, timeout=timeout)


def _logs(state: Path, chars: int = 3000) -> str:
    """The supervisor's output and the last lines of each service's log."""
    parts = [(state / "supervisor.out").read_text(errors="replace")[-chars:]]
    for log in sorted((state / "logs").glob("*.log")):
        parts.append(f"--- {log.name}\n" + log.read_text(errors="replace")[-chars:])
    return "\n".join(parts)


def _wait(condition, timeout: float, what: str, state: Path, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"local_airflow standalone exited ({server.returncode}):\n" + _logs(state))
        if condition():
            return
        time.sleep(3)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n" + _logs(state))


def _stop(server: subprocess.Popen) -> tuple[list[psutil.Process], bool]:
    """SIGTERM the supervisor; SIGKILL it and everything under it if it is not gone within 90 s.
    Returns the processes it had started and whether it stopped in time."""
    if server.poll() is not None:
        return [], True
    started = psutil.Process(server.pid).children(recursive=True)
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=90)
        return started, True
    except subprocess.TimeoutExpired:
        server.kill()
        for p in started:
            try:
                p.kill()
            except psutil.Error:
                pass
        server.wait()
        return started, False


def test_backfill_of_the_91_crawls_under_the_real_scheduler(tmp_path: Path, wordnet: list[str]) -> None:
    root = tmp_path / "root"
    store = ArtifactStore(root)
    for i, snapshot in enumerate(SNAPSHOTS):
        shard = tmp_path / "sources" / snapshot / "part-00000.parquet"
        shard.parent.mkdir(parents=True)
        texts = _texts(i)
        pq.write_table(
            pa.table({"url": [f"https://img.example/{snapshot}/{k}.jpg" for k in range(4)], "text": texts}), shard
        )
        run(store, PAIRS_IMPORT, PairsImportParams(snapshot, (str(shard),)), log=lambda _: None)
    port = free_port()
    env = airflow_env(
        tmp_path,
        root=str(root),
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
    )
    env.pop("METACLIP_POOLS", None)
    migrate(env)
    # The backfill is created before the services start: SQLite refuses a second writer, and the
    # scheduler writes constantly. The runs are then all scheduled by the running scheduler.
    run_airflow(env, "dags", "reserialize")
    run_airflow(env, "dags", "unpause", "metaclip_match_snapshot")
    run_airflow(
        env,
        "backfill",
        "create",
        "--dag-id",
        "metaclip_match_snapshot",
        "--from-date",
        "2013-01-01",
        "--to-date",
        "2023-04-30",
    )
    # The supervisor migrates (a no-op here), starts the API server and waits until it answers, and
    # only then starts the scheduler: no task can start before the API it reports to is up.
    with open(tmp_path / "supervisor.out", "w") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "metaclip_tasks.dev.local_airflow",
                "standalone",
                "--state-dir",
                str(tmp_path),
                "--port",
                str(port),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def runs() -> list[dict]:
            listed = _airflow(env, "dags", "list-runs", "metaclip_match_snapshot", "-o", "json")
            lines = [line for line in listed.stdout.splitlines() if line.startswith(("[{", "[]"))]
            return json.loads(lines[-1]) if lines else []

        def finished() -> bool:
            states = [r["state"] for r in runs()]
            if "failed" in states:
                pytest.fail(f"a backfill run failed: {states.count('failed')} failed\n" + _logs(tmp_path))
            return len(states) == 91 and all(s == "success" for s in states)

        _wait(finished, 2400, "91 successful runs", tmp_path, server)
    finally:
        started, stopped = _stop(server)
    assert stopped, "local_airflow standalone did not stop within 90 s of SIGTERM:\n" + _logs(tmp_path)
    output = (tmp_path / "supervisor.out").read_text()
    assert output.index("the API server answers") < output.index("started scheduler"), output
    assert server.returncode == 0, _logs(tmp_path)
    assert not psutil.wait_procs(started, timeout=10)[1], "processes left after the supervisor stopped"

    matched = {a.stats["snapshot"]: a for a in store.list("matched")}
    assert sorted(matched) == sorted(SNAPSHOTS)
    pairs = {a.params["snapshot"]: a for a in store.list("pairs")}
    matcher = Matcher(wordnet)
    expected = []
    for i, snapshot in enumerate(SNAPSHOTS):
        direct = np.bincount(matcher.match_batch(_texts(i)).entry_ids, minlength=len(wordnet))
        counts = load_counts(matched[snapshot].path("counts.npy"))
        assert np.array_equal(counts, direct), snapshot
        assert matched[snapshot].input("pairs") == pairs[snapshot], snapshot
        expected.append(direct)
    pool = sum_counts([load_counts(matched[s].path("counts.npy")) for s in SNAPSHOTS])
    assert np.array_equal(pool, np.sum(expected, axis=0)) and pool.sum() > 0
