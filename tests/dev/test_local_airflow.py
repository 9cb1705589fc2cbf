"""``python -m metaclip_tasks.dev.local_airflow standalone`` (``make airflow``): the services start only once
the API server answers, the UI and REST API want the admin's log-in (its password generated into the
state folder), and SIGTERM or SIGINT stops every process it started, the task processes and their
Dask workers included, freeing its ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from metaclip_tasks.dev.airflow_api import ADMIN, all_healthy, api_ready, api_token
from metaclip_tasks.dev.local_airflow import admin_password, password_file
from tests.dev.embedded_airflow import free_port, start_airflow

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.timeout(1200),  # each waits up to 300-600 s for a step of a whole Airflow's start or stop
    pytest.mark.skipif(
        not (Path(sys.executable).parent / "airflow").exists(), reason="Airflow is not installed in this environment"
    ),
]


def _port_is_free(port: int) -> bool:
    """Nothing listens on ``port`` (SO_REUSEADDR: connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _dag_is_parsed(url: str, token: str) -> bool:
    try:
        return bool(_request("GET", url, token=token)["dag_id"])
    except OSError:  # 404 until the dag-processor has parsed it
        return False


def _output(state: Path) -> str:
    parts = [(state / "supervisor.out").read_text(errors="replace")]
    for log in sorted((state / "logs").glob("*.log")):
        parts.append(f"--- {log.name}\n" + log.read_text(errors="replace")[-2000:])
    return "\n".join(parts)


def _wait_until(
    condition, supervisor: subprocess.Popen, state: Path, timeout: float, what: str, every: float = 1
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if supervisor.poll() is not None:
            pytest.fail(f"the supervisor exited ({supervisor.returncode}) before {what}:\n{_output(state)}")
        if time.monotonic() > deadline:
            _kill_all(supervisor)
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{_output(state)}")
        time.sleep(every)


def _kill_all(supervisor: subprocess.Popen) -> None:
    """Clean-up after a failed test: SIGKILL the supervisor and everything under it."""
    try:
        processes = [psutil.Process(supervisor.pid), *psutil.Process(supervisor.pid).children(recursive=True)]
    except psutil.Error:
        processes = []
    for p in processes:
        try:
            p.kill()
        except psutil.Error:
            pass
    supervisor.wait()


def _request(method: str, url: str, body: dict | None = None, token: str | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201), (url, response.status)
        return json.loads(response.read())


@pytest.mark.parametrize(
    ("sig", "busy"), [(signal.SIGTERM, True), (signal.SIGINT, False)], ids=["SIGTERM-while-tasks-run", "SIGINT-idle"]
)
def test_a_signal_stops_every_process_it_started(request, tmp_path: Path, sig: signal.Signals, busy: bool) -> None:
    """SIGTERM while the demo DAG's match tasks run on their Dask workers (task processes live in
    process groups of their own, the workers in the tasks' groups), SIGINT (Ctrl-C) when idle."""
    if busy:
        request.getfixturevalue("wordnet")  # the demo DAG builds the WordNet metadata
    port = free_port()
    supervisor, ports = start_airflow(tmp_path, port)
    try:
        _wait_until(lambda: api_ready(port), supervisor, tmp_path, 300, "the API server to answer")
        api = f"http://127.0.0.1:{port}/api/v2"
        assert _request("GET", f"{api}/monitor/health")["metadatabase"]["status"] == "healthy"  # public
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:  # the UI (its log-in page)
            assert response.status == 200 and b"<html" in response.read().lower()
        # the REST API wants a token: the admin's, with the password generated into the state folder
        with pytest.raises(urllib.error.HTTPError) as refused:
            _request("GET", f"{api}/dags")
        assert refused.value.code == 401
        token = api_token(port, json.loads(password_file(tmp_path).read_text())[ADMIN])
        assert password_file(tmp_path).stat().st_mode & 0o077 == 0  # readable by its owner only
        _wait_until(lambda: all_healthy(port), supervisor, tmp_path, 300, "every service to heartbeat")
        output = (tmp_path / "supervisor.out").read_text()
        # the scheduler (which starts tasks) started only after the API server answered
        assert output.index("the API server answers") < output.index("started scheduler"), output
        if busy:
            dag = f"{api}/dags/metaclip_curation_demo"
            _wait_until(lambda: _dag_is_parsed(dag, token), supervisor, tmp_path, 300, "the demo DAG to be parsed")
            _request("PATCH", dag, {"is_paused": False}, token)
            _request("POST", f"{dag}/dagRuns", {"logical_date": None}, token)
        services = ["api_server", "scheduler", "dag-processor", "triggerer", "serve-logs", "LocalExecutor"]
        expected = services + (["airflow worker -- 0", "dask worker"] if busy else [])
        started: list[psutil.Process] = []

        def all_running() -> bool:  # a process renames itself once started: wait for every one, not one snapshot
            started[:] = psutil.Process(supervisor.pid).children(recursive=True)
            names = " ".join(_cmdlines(started))
            return all(service in names for service in expected)

        # a match task's Dask workers live a second or two (the matcher is memory-mapped, not built): look often
        _wait_until(
            all_running,
            supervisor,
            tmp_path,
            600 if busy else 120,
            f"every process of {expected}",
            every=0.05 if busy else 1,
        )
    except BaseException:
        _kill_all(supervisor)
        raise

    began = time.monotonic()
    os.kill(supervisor.pid, sig)
    _, alive = psutil.wait_procs(started, timeout=60)
    try:
        returncode = supervisor.wait(timeout=max(1.0, 60 - (time.monotonic() - began)))
    except subprocess.TimeoutExpired:
        returncode = None
    took = time.monotonic() - began
    if alive or returncode is None:
        left = [line[:80] for line in _cmdlines(alive)]
        _kill_all(supervisor)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        pytest.fail(f"still running {took:.0f} s after {sig.name}: {left}\n{_output(tmp_path)}")
    print(f"{sig.name}: everything stopped in {took:.1f} s")
    assert returncode == 0, _output(tmp_path)
    assert "stopped" in (tmp_path / "supervisor.out").read_text()
    for name, p in ports.items():
        assert _port_is_free(p), (name, p)
    assert _processes_of(tmp_path) == []


def test_a_service_that_dies_stops_the_rest_and_fails(tmp_path: Path) -> None:
    """The API server cannot bind its port: the supervisor exits non-zero, leaves nothing running,
    and never starts the scheduler."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        supervisor, _ = start_airflow(tmp_path, port)
        try:
            returncode = supervisor.wait(timeout=300)
        except subprocess.TimeoutExpired:
            _kill_all(supervisor)
            pytest.fail(f"the supervisor kept running:\n{_output(tmp_path)}")
    output = _output(tmp_path)
    assert returncode == 1, output
    assert "api-server exited on its own" in output
    assert "started scheduler" not in output
    assert _processes_of(tmp_path) == []


def _cmdlines(processes: list[psutil.Process]) -> list[str]:
    """The command lines of those still running (short-lived task helpers come and go meanwhile)."""
    lines = []
    for p in processes:
        try:
            lines.append(" ".join(p.cmdline()))
        except psutil.Error:
            pass
    return lines


def _processes_of(state: Path) -> list[str]:
    """Processes whose AIRFLOW_HOME is under ``state``."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("AIRFLOW_HOME", "").startswith(str(state)):
                found.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
        except psutil.Error:
            pass
    return found


def test_what_ignores_sigterm_is_killed_orphans_included(tmp_path: Path) -> None:
    """No Airflow: a service that ignores SIGTERM and has started, in a session of its own, a process
    that also ignores it (like a task process and its Dask workers). Both are gone once ``stop()``
    returns, the first by SIGKILL of its group, the orphan found among the descendants seen before."""
    from metaclip_tasks.dev.supervisor import Supervisor

    lines: list[str] = []
    supervisor = Supervisor(dict(os.environ), 0, tmp_path, stop_timeout=3, say=lines.append)
    stubborn = "trap '' TERM; setsid sh -c \"trap '' TERM; while :; do sleep 0.2; done\" & while :; do sleep 0.2; done"
    supervisor.start("stubborn", ["sh", "-c", stubborn])
    polite = "trap 'exit 0' TERM; while :; do sleep 0.2; done"
    supervisor.start("polite", ["sh", "-c", polite])
    deadline = time.monotonic() + 30
    while len(psutil.Process().children(recursive=True)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    supervisor.descendants()
    started = [p for p in psutil.Process().children(recursive=True) if p.name() in ("sh", "sleep")]
    began = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - began < 20
    assert [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert any("SIGKILL" in line for line in lines), lines
    assert supervisor.children["polite"].returncode == 0
    assert supervisor.children["stubborn"].returncode == -signal.SIGKILL


def test_stopping_never_touches_other_children_of_the_process(tmp_path: Path) -> None:
    """A supervisor inside a bigger process (a test session with its own servers) stops only what
    its services started: a sibling child of the same process keeps running."""
    from metaclip_tasks.dev.supervisor import Supervisor

    sibling = subprocess.Popen(["sh", "-c", "while :; do sleep 0.2; done"])
    try:
        supervisor = Supervisor(dict(os.environ), 0, tmp_path, stop_timeout=3, say=lambda _: None)
        supervisor.start("polite", ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"])
        time.sleep(0.5)
        supervisor.descendants()
        supervisor.stop()
        assert supervisor.children["polite"].returncode == 0
        assert sibling.poll() is None  # untouched
    finally:
        sibling.kill()
        sibling.wait()


def test_the_admin_password_is_generated_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    """``make airflow``'s log-in: one password for ``admin``, generated into the simple auth manager's
    passwords file (its JSON format) on the first start and kept on the next ones."""
    from metaclip_tasks.dev.local_airflow import service_env

    path = password_file(tmp_path)
    first = admin_password(path)
    assert len(first) == 16 and first.isalnum()
    assert json.loads(path.read_text()) == {ADMIN: first}
    assert path.stat().st_mode & 0o777 == 0o600
    assert admin_password(path) == first
    env = service_env(tmp_path, 8081)
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(path)
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"


def test_serialized_writes_one_writing_request_at_a_time() -> None:
    """The API server's middleware on SQLite: requests that may write never overlap (so none blocks
    the event loop on SQLite's lock while another needs the loop to commit); reads are not held up."""
    import asyncio

    from metaclip_tasks.dev.local_airflow import SerializedWrites

    state = {"inside": 0, "most": 0, "served": 0}

    async def app(scope, receive, send) -> None:
        state["inside"] += 1
        state["most"] = max(state["most"], state["inside"])
        await asyncio.sleep(0.05)  # a request that needs the loop while it is in flight
        state["inside"] -= 1
        state["served"] += 1

    async def most_at_once(middleware, methods: list[str]) -> int:
        state["most"] = 0
        await asyncio.gather(*(middleware({"type": "http", "method": m, "path": "/"}, None, None) for m in methods))
        return state["most"]

    async def main() -> None:
        middleware = SerializedWrites(app)
        assert await most_at_once(middleware, ["POST", "PATCH", "DELETE", "PUT", "POST"]) == 1
        assert await most_at_once(middleware, ["GET", "GET", "HEAD", "OPTIONS"]) == 4

    asyncio.run(main())
    assert state["served"] == 9
