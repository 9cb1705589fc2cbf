"""The cluster topology of docker-compose.yml, really run: every service on a host of its own (a network
namespace on a bridge, tests/deploy/topology.py), without containers. PostgreSQL and Redis (Debian's), the
Airflow API server, scheduler, dag-processor and triggerer with the CeleryExecutor and two Celery
workers, a Dask scheduler and two Dask workers, and the artifact root on moto's S3 server.

A backfill of metaclip_match_snapshot over the demo pool's three crawls imports each crawl's raw pairs
from S3 and matches them on the remote Dask workers (which read and write S3 themselves); then a
triggered metaclip_pool_counts and metaclip_balance. Meanwhile one Celery worker's host is lost
(SIGKILL to every process on it) while it runs a task, and one Dask worker's host while it matches a
shard: Airflow retries the task (its heartbeat stops), Dask recomputes on the other worker, every run
succeeds, and every artifact is byte-identical to the same chain run by plain library calls on a local
root (the embedded defaults). Prints the wall times and the Airflow overhead per task (BENCHMARKS.md)."""

from __future__ import annotations

import base64
import json
import os
import pwd
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.dev.airflow_api import ADMIN
from metaclip_tasks.dev.local_airflow import SIMPLE_AUTH_MANAGER, admin_password, airflow_env, password_file
from metaclip_tasks.stages import PAIRS_IMPORT, PairsImportParams, plan
from metaclip_tasks.stages.plan import Subset

REPO = Path(__file__).resolve().parents[2]  # the source checkout
from metaclip_tasks.core.snapshots import get_pool
from metaclip_tasks.core.stage import run
from tests.deploy.topology import Host, Network, namespace_pids, unavailable

BIN = Path(sys.executable).parent
PG_BIN = max(
    Path("/usr/lib/postgresql").glob("*/bin"),
    default=Path("/usr/lib/postgresql/15/bin"),
    key=lambda p: int(p.parent.name),
)
POOL = "demo"  # three crawls of 2023, the backfill's range below
BACKFILL = ("2023-02-01T00:00:00Z", "2023-06-10T00:00:00Z")
FILES_PER_SNAPSHOT = 4  # shards per crawl: several Dask tasks per match
BUCKET = "metaclip-topology"
ROOT = f"s3://{BUCKET}/root"
API_PORT = 8080
UNDISTURBED = os.environ.get("METACLIP_TOPOLOGY_UNDISTURBED") == "1"  # BENCHMARKS.md: the chain with no host lost

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.timeout(1200),  # 150-170 s on 2 cores (BENCHMARKS.md)
    pytest.mark.skipif(not (BIN / "airflow").exists(), reason="Airflow is not installed in this environment"),
]


def _needs() -> str | None:
    """Why the topology cannot run here, or None."""
    if not (PG_BIN / "postgres").exists():
        return "PostgreSQL is not installed in /usr/lib/postgresql (apt-get install postgresql)"
    if not shutil.which("redis-server"):
        return "redis-server is not installed (apt-get install redis-server)"
    try:
        import celery  # noqa: F401
        import psycopg2  # noqa: F401
    except ImportError as e:
        return f"{e.name} is missing: pip install -e '.[dev]'"
    return unavailable()


@pytest.fixture
def network(tmp_path: Path):
    """The hosts' bridge; every process in them and the namespaces removed after, whatever happened."""
    reason = _needs()
    if reason:
        pytest.skip(reason)
    net = Network(tmp_path / "logs")
    try:
        yield net
    finally:
        net.close()


def _raw_pairs(tmp_path: Path, captions: pa.Table) -> Path:
    """The shared real captions split over the pool's crawls, ``FILES_PER_SNAPSHOT`` parquet files each."""
    raw = tmp_path / "raw"
    snapshots = get_pool(POOL).snapshots
    pieces = len(snapshots) * FILES_PER_SNAPSHOT
    size = -(-len(captions) // pieces)
    for i in range(pieces):
        path = raw / snapshots[i // FILES_PER_SNAPSHOT] / f"part-{i % FILES_PER_SNAPSHOT}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(captions.slice(i * size, size), path)
    return raw


def _embedded(root: Path, raw: Path) -> float:
    """The chain by plain library calls on a local root, in this process (what the DAG tasks call); its
    seconds, the metadata not counted (seeded into S3 before the backfill in the topology)."""
    store = ArtifactStore(root)
    meta = plan.metadata(store, None)
    began = time.monotonic()
    for snapshot in get_pool(POOL).snapshots:
        pairs = run(store, PAIRS_IMPORT, PairsImportParams(snapshot, (str(raw / snapshot),)), log=lambda _: None)
        plan.match(store, pairs, meta)
    plan.count_pool(store, get_pool(POOL), meta)
    plan.curated_subset(store, Subset(pool=POOL, seed=0))
    return time.monotonic() - began


def _contents(store: ArtifactStore) -> list:
    return sorted([a.stage, a.version, a.manifest["files"]] for a in store.list())


def _wait(condition, timeout: float, what: str, logs: Path, every: float = 1.0):
    """``condition()``'s first truthy value; fails after ``timeout`` s with the services' logs."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{_logs(logs)}")
        time.sleep(every)


def _logs(logs: Path, chars: int = 2500) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in sorted(logs.glob("*.log")))


def _http(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict | None]:
    """(status, JSON body) of one request; (0, None) when nothing answers."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=30) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError:
        return 0, None
    try:
        return status, json.loads(text or b"null")
    except ValueError:  # not JSON (S3's XML)
        return status, None


class Api:
    """The REST API, reached from the client host."""

    def __init__(self, client: Host, api: Host) -> None:
        self.client, self.base, self.token = client, f"http://{api.ip}:{API_PORT}", None

    def status(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        return self.client.call(_http, method, f"{self.base}{path}", body, self.token)

    def __call__(self, method: str, path: str, body: dict | None = None) -> dict:
        status, answer = self.status(method, path, body)
        assert status in (200, 201), f"{method} {path}: {status}"
        return answer

    def ready(self) -> bool:
        """The API server reaches the metadata DB and serves the execution API (both public)."""
        _, health = self.status("GET", "/api/v2/monitor/health")
        return bool(
            health
            and health["metadatabase"]["status"] == "healthy"
            and self.status("GET", "/execution/health")[0] == 200
        )

    def log_in(self, password: str) -> None:
        status, answer = self.status("POST", "/auth/token", {"username": ADMIN, "password": password})
        assert status in (200, 201), status
        self.token = answer["access_token"]

    def runs(self, dag_id: str) -> list[dict]:
        return self("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]

    def task_instances(self, dag_id: str) -> list[dict]:
        return self("GET", f"/api/v2/dags/{dag_id}/dagRuns/~/taskInstances?limit=100")["task_instances"]


def _all_succeeded(api: Api, dag_id: str, count: int, logs: Path) -> bool:
    states = [r["state"] for r in api.runs(dag_id)]
    if "failed" in states:
        pytest.fail(f"a run of {dag_id} failed: {states}\n{_logs(logs)}")
    return len(states) == count and all(s == "success" for s in states)


def _start_postgres(db: Host, password: str) -> Path:
    """initdb (user ``airflow``, password auth from the subnet) and start PostgreSQL on the host, as the
    ``postgres`` user (it refuses root); returns its folder, to be removed after."""
    folder = Path(tempfile.mkdtemp(prefix=f"{db.ns}-"))
    user = pwd.getpwnam("postgres")
    os.chown(folder, user.pw_uid, user.pw_gid)
    (folder / "password").write_text(password)
    os.chown(folder / "password", user.pw_uid, user.pw_gid)
    as_postgres = ["runuser", "-u", "postgres", "--"]
    db.run(
        [
            *as_postgres,
            str(PG_BIN / "initdb"),
            "-D",
            str(folder / "data"),
            "-U",
            "airflow",
            "-E",
            "UTF8",
            "--pwfile",
            str(folder / "password"),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        ]
    )
    with open(folder / "data" / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {db.ip.rsplit('.', 1)[0]}.0/24 scram-sha-256\n")
    db.popen(
        [
            *as_postgres,
            str(PG_BIN / "postgres"),
            "-D",
            str(folder / "data"),
            "-c",
            f"listen_addresses={db.ip}",
            "-c",
            f"unix_socket_directories={folder}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
        ],
        dict(os.environ),
        "postgres",
    )
    return folder


def _pg_ready(db: Host) -> bool:
    return (
        subprocess.run(
            ["ip", "netns", "exec", db.ns, str(PG_BIN / "pg_isready"), "-q", "-h", db.ip], check=False
        ).returncode
        == 0
    )


class Losses:
    """The two losses, armed before the backfill: a Celery worker's host while it runs a task (a thread
    here), a Dask worker's host while it runs a match shard (a watcher on the client host)."""

    def __init__(self, h: dict[str, Host], dask_address: str, env: dict[str, str], api: Api) -> None:
        dask_hosts = {h[n].ip: h[n].ns for n in ("dask-1", "dask-2")}
        self.dask = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                h["client"].ns,
                sys.executable,
                "-m",
                "tests.deploy.topology",
                "kill-on-task",
                dask_address,
                "_match_task",
                json.dumps(dask_hosts),
                "--timeout",
                "480",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.celery_hosts = [h["celery-1"], h["celery-2"]]
        self.celery: dict = {}
        self.api = api
        self.stop = threading.Event()
        self.watcher = threading.Thread(target=self._lose_celery_host_in_a_task)
        self.watcher.start()

    def _lose_celery_host_in_a_task(self) -> None:
        """Wait until a task process runs on a Celery worker's host, then SIGKILL everything there."""
        while not self.stop.is_set():
            for host in self.celery_hosts:
                for pid in namespace_pids(host.ns):
                    try:
                        title = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:
                        continue
                    if title.startswith(b"airflow worker -- "):  # a task process (its title: the TI's id)
                        ti_id = title.decode(errors="replace").split()[-1].strip("\0")
                        self.celery.update(host=host, ti_id=ti_id, killed=host.kill())
                        self._name_the_lost_task(ti_id)
                        return
            time.sleep(0.1)

    def _name_the_lost_task(self, ti_id: str) -> None:
        """(dag, run, task) of the lost task instance, looked up while it still has that id (a retry gets a new
        one) and still shows as running (until its heartbeat times out, 30 s)."""
        for _ in range(20):
            status, running = self.api.status("GET", "/api/v2/dags/~/dagRuns/~/taskInstances?state=running&limit=100")
            found = [ti for ti in (running or {}).get("task_instances", []) if ti["id"] == ti_id]
            if status == 200 and found:
                self.celery["task"] = (found[0]["dag_id"], found[0]["dag_run_id"], found[0]["task_id"])
                return
            time.sleep(0.5)

    def disarm(self) -> None:
        self.stop.set()
        self.watcher.join()

    def check(self, instances: list[dict]) -> str:
        """Both hosts were lost in the middle of work, and the work was redone: the lost task by a retry."""
        assert self.celery, "no Celery task ran while the watcher looked"
        assert "task" in self.celery, f"the lost task instance {self.celery['ti_id']} was not found running"
        assert self.dask.wait(timeout=30) == 0, self.dask.stdout.read()
        dask = json.loads(self.dask.stdout.read().splitlines()[-1])
        assert dask["tasks"] and dask["killed"]
        assert not namespace_pids(dask["namespace"]) and not namespace_pids(self.celery["host"].ns)
        (task,) = [ti for ti in instances if (ti["dag_id"], ti["dag_run_id"], ti["task_id"]) == self.celery["task"]]
        assert task["try_number"] == 2 and task["state"] == "success", task
        return (
            f"{self.celery['host'].name} lost in {task['task_id']} of {task['dag_run_id']}, {dask['worker']} lost "
            f"in {dask['tasks']}"
        )


def _seconds(a: str | None, b: str | None) -> float | None:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds() if a and b else None


def test_the_cluster_topology_survives_lost_workers_with_identical_artifacts(
    network: Network, tmp_path: Path, captions_table: pa.Table, wordnet: list[str]
) -> None:
    raw = _raw_pairs(tmp_path, captions_table)
    embedded_seconds = _embedded(tmp_path / "embedded", raw)

    names = [
        "db",
        "redis",
        "s3",
        "api",
        "scheduler",
        "dag-processor",
        "triggerer",
        "celery-1",
        "celery-2",
        "dask-scheduler",
        "dask-1",
        "dask-2",
        "client",
    ]
    h = {name: network.add(name) for name in names}
    logs = network.logs
    pg_password, redis_password = secrets.token_hex(16), secrets.token_hex(16)
    pg_folder = _start_postgres(h["db"], pg_password)
    try:
        s3 = {
            "AWS_ENDPOINT_URL": f"http://{h['s3'].ip}:5000",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        base = {**os.environ, **s3}
        base.pop("METACLIP_POOLS", None)
        h["redis"].popen(
            [
                "redis-server",
                "--bind",
                h["redis"].ip,
                "--port",
                "6379",
                "--requirepass",
                redis_password,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            base,
            "redis",
        )
        h["s3"].popen([str(BIN / "moto_server"), "-H", h["s3"].ip, "-p", "5000"], base, "s3")
        dask_address = f"tcp://{h['dask-scheduler'].ip}:8786"
        h["dask-scheduler"].popen(
            [str(BIN / "dask"), "scheduler", "--host", h["dask-scheduler"].ip, "--port", "8786", "--no-dashboard"],
            base,
            "dask-scheduler",
        )
        for name in ("dask-1", "dask-2"):
            h[name].popen(
                [
                    str(BIN / "dask"),
                    "worker",
                    dask_address,
                    "--host",
                    h[name].ip,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--name",
                    name,
                ],
                base,
                name,
            )
        _wait(lambda: _pg_ready(h["db"]), 120, "PostgreSQL", logs, 0.5)
        h["db"].run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "createdb"),
                "-h",
                str(pg_folder),
                "-U",
                "airflow",
                "airflow",
            ]
        )
        _wait(lambda: h["client"].call(_http, "GET", s3["AWS_ENDPOINT_URL"])[0], 120, "the S3 server", logs, 0.5)
        seeding = h["client"].popen(
            [sys.executable, "-m", "tests.deploy.topology", "seed", ROOT, str(raw)],
            {**base, "PYTHONPATH": str(REPO)},
            "seed",
        )

        db = f"airflow:{pg_password}@{h['db'].ip}:5432/airflow"
        env = airflow_env(
            tmp_path / "state",
            root=ROOT,
            **s3,
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__CORE__PARALLELISM="8",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"postgresql+psycopg2://{db}",
            AIRFLOW__CELERY__BROKER_URL=f"redis://:{redis_password}@{h['redis'].ip}:6379/0",
            AIRFLOW__CELERY__RESULT_BACKEND=f"db+postgresql+psycopg2://{db}",
            AIRFLOW__CORE__FERNET_KEY=base64.urlsafe_b64encode(os.urandom(32)).decode(),
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW__API__SECRET_KEY=secrets.token_hex(32),
            AIRFLOW__CORE__AUTH_MANAGER=SIMPLE_AUTH_MANAGER,
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{ADMIN}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(password_file(tmp_path / "state")),
            AIRFLOW__API__HOST=h["api"].ip,
            AIRFLOW__API__PORT=str(API_PORT),
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://{h['api'].ip}:{API_PORT}/execution/",
            DASK_SCHEDULER_ADDRESS=dask_address,
            # Only the backfill's runs and the triggered ones: no run of the latest crawl, no asset-triggered counts.
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
            # A lost worker's task is failed (and retried) 30 s after its last heartbeat, not 300 s.
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="30",
            # ... and a task the lost worker had taken but not started is queued again after 60 s.
            AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT="60",
            AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL="15",
        )
        password = admin_password(password_file(tmp_path / "state"))
        h["api"].run([str(BIN / "airflow"), "db", "migrate"], env, timeout=300)
        h["api"].popen([str(BIN / "airflow"), "api-server"], env, "api-server")
        api = Api(h["client"], h["api"])
        _wait(api.ready, 240, "the API server", logs, 1)
        for name in ("scheduler", "dag-processor", "triggerer"):
            h[name].popen([str(BIN / "airflow"), name], env, name)
        for name in ("celery-1", "celery-2"):
            h[name].popen(
                [
                    str(BIN / "airflow"),
                    "celery",
                    "worker",
                    "--queues",
                    "default",
                    "--concurrency",
                    "2",
                    "--celery-hostname",
                    f"{name}@topology",
                ],
                env,
                name,
            )
        api.log_in(password)
        dags = ("metaclip_match_snapshot", "metaclip_pool_counts", "metaclip_balance")
        _wait(
            lambda: all(api.status("GET", f"/api/v2/dags/{d}")[0] == 200 for d in dags), 240, "the DAGs parsed", logs, 2
        )
        for dag_id in dags:
            api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        assert seeding.wait(timeout=300) == 0, _logs(logs)

        losses = None if UNDISTURBED else Losses(h, dask_address, base, api)
        try:
            began = time.monotonic()
            api(
                "POST",
                "/api/v2/backfills",
                {
                    "dag_id": dags[0],
                    "from_date": BACKFILL[0],
                    "to_date": BACKFILL[1],
                    "dag_run_conf": {"pairs_source": f"s3://{BUCKET}/raw/{{snapshot}}/"},
                    "max_active_runs": 3,
                },
            )
            _wait(lambda: _all_succeeded(api, dags[0], 3, logs), 480, "the backfill's 3 runs", logs, 2)
            backfilled = time.monotonic()
            for dag_id, conf in ((dags[1], {"pool": POOL}), (dags[2], {"pool": POOL, "seed": 0})):
                api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
                _wait(lambda d=dag_id: _all_succeeded(api, d, 1, logs), 240, f"{dag_id}'s run", logs, 2)
            chain_seconds = time.monotonic() - began
        finally:
            if losses:
                losses.disarm()
        instances = [ti for d in dags for ti in api.task_instances(d)]
        lost = losses.check(instances) if losses else "no host lost"

        listed = h["client"].run(
            [sys.executable, "-m", "tests.deploy.topology", "contents", ROOT], {**base, "PYTHONPATH": str(REPO)}
        )
        on_s3 = json.loads(listed.stdout.splitlines()[-1])
        assert sorted(on_s3) == _contents(ArtifactStore(tmp_path / "embedded"))
        made = [stage for stage, _, _ in on_s3]
        assert [made.count(s) for s in ("metadata", "pairs", "matched", "pool_counts", "curated")] == [1, 3, 3, 1, 1]

        overheads = [_seconds(ti["scheduled_when"], ti["start_date"]) for ti in instances]
        print(
            f"\ntopology: chain {chain_seconds:.0f} s (backfill {backfilled - began:.0f} s), {lost}; embedded (plain "
            f"calls, local root): {embedded_seconds:.1f} s; Airflow overhead per task (scheduled -> started, "
            f"{len(overheads)} tasks): median {statistics.median(overheads):.1f} s, max {max(overheads):.1f} s"
        )
        for ti in instances:
            run = [u for u in instances if (u["dag_id"], u["dag_run_id"]) == (ti["dag_id"], ti["dag_run_id"])]
            ended = [e for u in run if (e := _seconds(u["end_date"], ti["scheduled_when"])) is not None and e >= 0]
            after = f"{min(ended):.1f} s after its upstream, " if ended else ""
            print(
                f"  {ti['dag_id']}.{ti['task_id']} try {ti['try_number']}: scheduled {after}-> queued "
                f"{_seconds(ti['scheduled_when'], ti['queued_when']):.1f} s -> started "
                f"{_seconds(ti['queued_when'], ti['start_date']):.1f} s, ran {ti['duration']:.1f} s"
            )
    finally:
        network.close()  # PostgreSQL stopped before its folder goes
        shutil.rmtree(pg_folder, ignore_errors=True)
