"""Starting the embedded Airflow (``make airflow``) from a test: free ports, its supervisor in a session of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOG_SERVER_PORTS = ("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT")


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_airflow(state: Path, port: int) -> tuple[subprocess.Popen, dict[str, int]]:
    """``local_airflow standalone`` on ``port`` with its state in ``state``, free log-server ports and the
    shipped pools; its output in ``state/supervisor.out``."""
    ports = {"api": port, **{name: free_port() for name in LOG_SERVER_PORTS}}
    env = {**os.environ, "METACLIP_ROOT": str(state / "root"), **{k: str(v) for k, v in ports.items() if k != "api"}}
    env.pop("METACLIP_POOLS", None)
    with open(state / "supervisor.out", "w") as out:
        supervisor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "metaclip_tasks.dev.local_airflow",
                "standalone",
                "--state-dir",
                str(state),
                "--port",
                str(port),
                "--ready-timeout",
                "300",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return supervisor, ports
