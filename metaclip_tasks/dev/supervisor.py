"""A supervisor for Airflow's services: each in its own process group, all stopped together.

SIGTERM, SIGINT (Ctrl-C) or SIGHUP stops them all: SIGTERM to every group, then to whatever they
started that is left (task processes run in groups of their own), and SIGKILL to anything still
alive after ``stop_timeout`` seconds. A service that dies on its own stops the rest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from metaclip_tasks.dev.airflow_api import ADMIN, PASSWORDS_FILE, all_healthy, api_ready

SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")  # in start order


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

    def __init__(
        self,
        env: dict[str, str],
        port: int,
        log_dir: Path,
        stop_timeout: float = 30,
        ready_timeout: float = 600,
        say: Callable[[str], None] = print,
    ) -> None:
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
                command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session and group
            )
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
            self.say(
                f"still running after {self.stop_timeout:.0f} s, SIGKILL: "
                + ", ".join(f"{p.pid} {_name(p)}" for p in alive)
            )
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
