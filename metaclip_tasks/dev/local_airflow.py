"""The embedded Airflow: SQLite metadata DB, LocalExecutor with parallelism 4, a local Dask
cluster and a local artifact root, all under the repository's ignored ``.state/`` folder.

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
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from metaclip_tasks.core.settings import REPO

STATE = REPO / ".state"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")  # in start order
ADMIN = "admin"  # the embedded Airflow's one user (role admin)
PASSWORDS_FILE = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"


def airflow_env(state: Path = STATE, root: str | None = None, **overrides: str) -> dict[str, str]:
    """The environment of the embedded Airflow (``overrides`` are extra ``AIRFLOW__...`` settings)."""
    home = Path(state) / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
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


def get_json(url: str, timeout: float = 5, token: str | None = None) -> dict | None:
    """``url``'s JSON body when it answers 200, else None (refused, an error status, not JSON).
    ``token``: a REST API token (``api_token``), sent as ``Authorization: Bearer``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            return json.loads(response.read()) if response.status == 200 else None
    except (OSError, ValueError):  # URLError, HTTPError, timeouts and resets are OSErrors
        return None


def api_token(port: int, password: str, username: str = ADMIN, timeout: float = 30) -> str:
    """A REST API token of the embedded Airflow's user (``POST /auth/token``), for
    ``Authorization: Bearer TOKEN``; raises ``urllib.error.HTTPError`` (401) on a wrong password."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/auth/token", method="POST",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["access_token"]


def api_ready(port: int) -> bool:
    """The API server answers: its health endpoint reaches the metadata DB, and the execution API
    (what task processes talk to) is mounted. Both are public: no token needed."""
    base = f"http://127.0.0.1:{port}"
    health = get_json(f"{base}/api/v2/monitor/health")
    return bool(health and health.get("metadatabase", {}).get("status") == "healthy"
                and get_json(f"{base}/execution/health"))  # fmt: skip


def all_healthy(port: int) -> bool:
    """Scheduler, dag-processor and triggerer heartbeat, as the API server reports them (public)."""
    health = get_json(f"http://127.0.0.1:{port}/api/v2/monitor/health") or {}
    return all(
        (health.get(part) or {}).get("status") == "healthy" for part in ("scheduler", "dag_processor", "triggerer")
    )


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


def _become_subreaper() -> bool:
    """Linux: orphaned descendants (a task's Dask workers whose task died) are re-parented to this
    process rather than to init, so they stay findable and are stopped with the rest."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        PR_SET_CHILD_SUBREAPER = 36
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Supervisor:
    """Starts the Airflow services in their own process groups and stops everything they started."""

    def __init__(self, env: dict[str, str], port: int, log_dir: Path, stop_timeout: float = 30,
                 ready_timeout: float = 600, say: Callable[[str], None] = print) -> None:  # fmt: skip
        self.env, self.port, self.log_dir = env, port, Path(log_dir)
        self.stop_timeout, self.ready_timeout, self.say = stop_timeout, ready_timeout, say
        self.children: dict[str, subprocess.Popen] = {}
        self.stop_signal: int | None = None
        self.failure: str | None = None
        self._seen: dict[int, psutil.Process] = {}  # pid -> psutil.Process: every descendant ever seen

    # -- signals ------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    # -- processes ----------------------------------------------------------------------------
    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, name: str, command: list[str] | None = None) -> None:
        """Start ``airflow NAME`` (or ``command``) in a session and process group of its own."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        command = command or [str(Path(sys.executable).parent / "airflow"), name]
        with open(self.log_path(name), "a") as log:
            log.write(f"\n==== {name}: started {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n")
            log.flush()
            self.children[name] = subprocess.Popen(
                command, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own session and group
            )  # fmt: skip
        self.say(f"started {name} (pid {self.children[name].pid}), log: {self.log_path(name)}")

    def descendants(self) -> list[psutil.Process]:
        """Every live process started from the services, directly or not, including orphans seen
        before (re-parented to this subreaper); never another child of this process."""
        roots = [c.pid for c in self.children.values()] + list(self._seen)
        for pid in roots:
            try:
                root = psutil.Process(pid)
                for p in [root, *root.children(recursive=True)]:
                    self._seen.setdefault(p.pid, p)
            except psutil.Error:
                pass
        alive = []
        for pid, p in list(self._seen.items()):
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
                    continue
            except psutil.Error:
                pass
            del self._seen[pid]
        return alive

    def _reap(self) -> None:
        """Collect the exit status of orphans re-parented to this process (not of our services:
        ``Popen`` waits for those; nor of any other child of this process)."""
        ours = {c.pid for c in self.children.values()}
        for pid, p in list(self._seen.items()):
            try:
                if pid not in ours and p.ppid() == os.getpid() and p.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(pid, os.WNOHANG)
            except (psutil.Error, ChildProcessError):
                pass

    def _exited(self) -> str | None:
        for name, child in self.children.items():
            if child.poll() is not None:
                return name
        return None

    def _tail(self, name: str, chars: int = 3000) -> str:
        try:
            return self.log_path(name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _check(self) -> bool:
        """False when a stop was asked for or a service died (``failure`` says which)."""
        self._reap()
        if self.stop_signal is not None:
            return False
        dead = self._exited()
        if dead is not None:
            self.failure = f"{dead} exited on its own ({self.children[dead].returncode})"
            self.say(f"{self.failure}; last lines of {self.log_path(dead)}:\n{self._tail(dead)}")
            return False
        return True

    def login(self) -> str:
        """How to log in to the UI, as the environment configures it."""
        if self.env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() == "true":
            return "no login"
        return f"log in as {ADMIN}, the password is in {self.env.get(PASSWORDS_FILE)}"

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> int:
        """Start the services, supervise them until a signal or a death, stop everything; the exit status."""
        _become_subreaper()
        try:
            if self._start_all():
                shown_ready = False
                while self._check():
                    self.descendants()  # remember them, so that orphans are still found when stopping
                    if not shown_ready and all_healthy(self.port):
                        self.say(f"Airflow is ready: http://localhost:{self.port} ({self.login()}); Ctrl-C stops it")
                        shown_ready = True
                    time.sleep(1)
        finally:
            self.stop()
        return 1 if self.failure else 0

    def _start_all(self) -> bool:
        self.start("api-server")
        deadline = time.monotonic() + self.ready_timeout
        while not api_ready(self.port):
            if not self._check():
                return False
            if time.monotonic() > deadline:
                self.failure = f"the API server did not answer on port {self.port} within {self.ready_timeout:.0f} s"
                self.say(f"{self.failure}; last lines of {self.log_path('api-server')}:\n{self._tail('api-server')}")
                return False
            time.sleep(0.5)
        self.say(f"the API server answers on http://127.0.0.1:{self.port}")
        for name in SERVICES[1:]:
            if not self._check():
                return False
            self.start(name)
        return True

    def stop(self) -> None:
        """SIGTERM every service's group, then what they started that outlives them; SIGKILL what is
        left after ``stop_timeout``; return once every process started from here is gone."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the stop short
        reason = signal.Signals(self.stop_signal).name if self.stop_signal else (self.failure or "exiting")
        self.say(f"stopping ({reason}): SIGTERM to {', '.join(self.children) or 'nothing'}")
        self.descendants()
        for child in self.children.values():
            _killpg(child.pid, signal.SIGTERM)
        termed: set[int] = set()
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            for child in self.children.values():
                child.poll()
            self._reap()
            alive = self.descendants()
            if not alive:
                break
            if all(c.returncode is not None for c in self.children.values()):
                # the services are gone; what they started in groups of their own is still here
                for p in alive:
                    if p.pid not in termed:
                        termed.add(p.pid)
                        _signal(p, signal.SIGTERM)
            time.sleep(0.2)
        else:
            alive = self.descendants()
            self.say(f"still running after {self.stop_timeout:.0f} s, SIGKILL: "
                     + ", ".join(f"{p.pid} {_name(p)}" for p in alive))  # fmt: skip
            for child in self.children.values():
                _killpg(child.pid, signal.SIGKILL)
            for p in alive:
                _signal(p, signal.SIGKILL)
            ours = {c.pid for c in self.children.values()}  # Popen reaps those: their status stays right
            psutil.wait_procs([p for p in alive if p.pid not in ours], timeout=10)
        for child in self.children.values():
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._reap()
        self.say("stopped")


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal(process: psutil.Process, sig: int) -> None:
    try:
        process.send_signal(sig)  # psutil checks the pid still names the same process
    except psutil.Error:
        pass


def _name(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:80] or process.name()
    except psutil.Error:
        return "?"


def standalone(state: Path = STATE, port: int = 8080, stop_timeout: float = 30, ready_timeout: float = 600) -> int:
    """Migrate the DB, then run and supervise the services until a signal; the exit status."""
    supervisor = Supervisor(service_env(state, port), port, Path(state) / "logs", stop_timeout, ready_timeout,
                            say=lambda line: print(f"local_airflow | {line}", flush=True))  # fmt: skip
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
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW__API__PORT", "8080")),
                        help="the API server's and UI's port (standalone)")  # fmt: skip
    parser.add_argument("--stop-timeout", type=float, default=30,
                        help="seconds between SIGTERM and SIGKILL when stopping (standalone)")  # fmt: skip
    parser.add_argument("--ready-timeout", type=float, default=600,
                        help="seconds the API server has to answer before giving up (standalone)")  # fmt: skip
    args = parser.parse_args()
    if args.command == "demo":
        print(run_demo(args.state_dir))
    else:
        sys.exit(standalone(args.state_dir, args.port, args.stop_timeout, args.ready_timeout))


if __name__ == "__main__":
    main()
