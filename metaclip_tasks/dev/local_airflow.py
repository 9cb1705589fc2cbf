"""The embedded Airflow: SQLite metadata DB, LocalExecutor with parallelism 4, a local Dask
cluster and a local artifact root, all under ``.state/`` of the current directory (``$METACLIP_STATE``).

    python -m metaclip_tasks.dev.local_airflow demo        # the README's main job, through Airflow
    python -m metaclip_tasks.dev.local_airflow standalone  # API server + UI, scheduler, dag-processor, triggerer

SQLite is put in WAL mode with a long busy timeout, so the scheduler, the dag-processor, the
API server and the command line can write to it at the same time.

``standalone`` is our own supervisor, not ``airflow standalone`` (which leaves its scheduler, API
server and triggerer running when it is stopped): it migrates the DB, starts ``airflow api-server``
and waits until its health endpoint and the execution API answer, and only then starts the
scheduler (so no task can start before the API it reports to is up), the dag-processor and the
triggerer, each in its own process group with its log in ``<state>/logs/<service>.log``. SIGTERM,
SIGINT (Ctrl-C) or SIGHUP stops them all: SIGTERM to every group, then to whatever they started
that is left (task processes run in groups of their own), and SIGKILL to anything still alive
after ``--stop-timeout`` seconds. A service that dies on its own stops the rest and the
supervisor exits non-zero. The UI and the REST API need a log-in (the simple auth manager with one
user, ``admin``, whose password is generated once into ``<state>/airflow/admin-password.json``,
the file Airflow's simple auth manager reads) and are served on 127.0.0.1 only
(``AIRFLOW__API__HOST`` to change it). ``api_token`` gets a REST API token for it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

from metaclip_tasks.core.settings import CHECKOUT, state_dir
from metaclip_tasks.dev.airflow_api import ADMIN, PASSWORDS_FILE
from metaclip_tasks.dev.supervisor import Supervisor

STATE = state_dir()
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def airflow_env(state: Path = STATE, root: str | None = None, **overrides: str) -> dict[str, str]:
    """The environment of the embedded Airflow (``overrides`` are extra ``AIRFLOW__...`` settings)."""
    home = Path(state) / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(CHECKOUT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(CHECKOUT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout=120",
        "METACLIP_ROOT": root or os.environ.get("METACLIP_ROOT") or str(Path(state) / "root"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # services run `airflow ...`
    }
    env.update(overrides)
    return env


def password_file(state: Path = STATE) -> Path:
    """The simple auth manager's passwords file of the embedded Airflow in ``state``: ``{"admin": "..."}``."""
    return Path(state) / "airflow" / "admin-password.json"


def admin_password(path: Path) -> str:
    """The ``admin`` password in the passwords file ``path``, generated there first if it has none.

    The file is the simple auth manager's own (``[core] simple_auth_manager_passwords_file``: one
    JSON object, user name to password): the API server finds the user there and generates
    nothing. Written here, before any service starts, so that it is readable by its owner only
    (Airflow would create it world-readable) and known before the API server answers. Same
    alphabet and length as the simple auth manager's generated passwords."""
    path = Path(path)
    try:
        passwords = json.loads(path.read_text().strip() or "{}")
    except FileNotFoundError:
        passwords = {}
    if not passwords.get(ADMIN):
        alphabet = "abcdefghkmnpqrstuvwxyzABCDEFGHKMNPQRSTUVWXYZ23456789"
        passwords[ADMIN] = "".join(secrets.choice(alphabet) for _ in range(16))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(passwords) + "\n")
    os.chmod(path, 0o600)
    return passwords[ADMIN]


def service_env(state: Path = STATE, port: int = 8080, root: str | None = None, **overrides: str) -> dict[str, str]:
    """``airflow_env`` for the long-running services: the API server on ``port`` (127.0.0.1 unless
    ``$AIRFLOW__API__HOST`` says otherwise), tasks told to reach its execution API there, and the
    simple auth manager with one user, ``admin`` (role admin), whose password is in
    ``password_file(state)``: the UI shows a log-in page, the REST API wants a token (``api_token``)."""
    return airflow_env(
        state,
        root,
        AIRFLOW__CORE__AUTH_MANAGER=SIMPLE_AUTH_MANAGER,
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{ADMIN}:admin",
        **{PASSWORDS_FILE: str(password_file(state))},
        AIRFLOW__API__HOST=os.environ.get("AIRFLOW__API__HOST", "127.0.0.1"),
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        **overrides,
    )


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade the metadata DB, switch SQLite to WAL (readers never block writers), and
    create the Airflow pool ``gpu`` that training tasks run in."""
    run_airflow(env, "db", "migrate")
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
    run_airflow(env, "pools", "set", "gpu", "1", "training runs: one at a time on the GPU machine")


def run_airflow(env: dict[str, str], *args: str, log: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``airflow ARGS`` in ``env``; its output goes to ``log`` (or is captured)."""
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    if log is None:
        result = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    else:
        with open(log, "w") as out:
            result = subprocess.run(command, check=False, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    if result.returncode:
        detail = (result.stderr or "")[-3000:] if log is None else f"see {log}"
        raise SystemExit(f"airflow {' '.join(args)} failed ({result.returncode}): {detail}")
    return result


def run_demo(state: Path = STATE) -> str:
    """Run metaclip_curation_demo with ``airflow dags test``; return its report, read from the artifacts."""
    from metaclip_tasks.core.artifacts import ArtifactStore
    from metaclip_tasks.dev.demo import POOL, demo_report, demo_source

    env = airflow_env(state)
    migrate(env)
    log = Path(state) / "curation_demo.log"
    run_airflow(env, "dags", "test", "metaclip_curation_demo", log=log)
    store = ArtifactStore(env["METACLIP_ROOT"])
    curated = [a for a in store.list("curated") if a.stats.get("pool") == POOL and a.params["seed"] == 0][-1]
    return f"{demo_report(store, curated, demo_source(store)[1])}\n  airflow log: {log}"


class SerializedWrites:
    """ASGI middleware for the API server on SQLite: one request that may write (any method but GET,
    HEAD, OPTIONS) at a time, the others waiting without blocking the event loop.

    Airflow's audit log (``action_logging``, on every UI/REST write such as "unpause" or "trigger")
    commits from an ``async`` dependency, on the event loop. When another request's transaction,
    run in a worker thread (the execution API marking a task running, the trigger form's
    ``POST dagRuns``), holds SQLite's write lock and needs the event loop to reach its commit, the
    loop waits on the lock and the lock on the loop until SQLite's busy timeout: every request
    hangs for minutes and one fails with 500 (seen from the trigger form: "Unpause on trigger" and
    the run posted together while a task started). Serialized, such a request only ever waits for
    the scheduler's or the dag-processor's transactions, which end on their own. Registered by
    ``plugins/metaclip_sqlite_writes.py`` when the metadata DB is SQLite."""

    READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, app) -> None:
        import asyncio

        self.app = app
        self.lock = asyncio.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") in self.READ_ONLY:
            await self.app(scope, receive, send)
            return
        async with self.lock:
            await self.app(scope, receive, send)


def standalone(state: Path = STATE, port: int = 8080, stop_timeout: float = 30, ready_timeout: float = 600) -> int:
    """Migrate the DB, then run and supervise the services until a signal; the exit status."""
    supervisor = Supervisor(
        service_env(state, port),
        port,
        Path(state) / "logs",
        stop_timeout,
        ready_timeout,
        say=lambda line: print(f"local_airflow | {line}", flush=True),
    )
    supervisor.install_signal_handlers()  # before the migration: a Ctrl-C during it is not lost
    admin_password(password_file(state))
    supervisor.say(f"the UI and the REST API need a log-in: {supervisor.login()}")
    supervisor.say(f"migrating the metadata DB in {supervisor.env['AIRFLOW_HOME']}")
    migrate(supervisor.env)
    if supervisor.stop_signal is not None:
        return 0
    return supervisor.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["demo", "standalone"])
    parser.add_argument("--state-dir", type=Path, default=STATE, help="where Airflow and the artifacts live")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("AIRFLOW__API__PORT", "8080")),
        help="the API server's and UI's port (standalone)",
    )
    parser.add_argument(
        "--stop-timeout", type=float, default=30, help="seconds between SIGTERM and SIGKILL when stopping (standalone)"
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=600,
        help="seconds the API server has to answer before giving up (standalone)",
    )
    args = parser.parse_args()
    if args.command == "demo":
        print(run_demo(args.state_dir))
    else:
        sys.exit(standalone(args.state_dir, args.port, args.stop_timeout, args.ready_timeout))


if __name__ == "__main__":
    main()
