"""The embedded Airflow's REST API as the supervisor and the tests reach it: health, and a log-in token."""

from __future__ import annotations

import json
import urllib.request

ADMIN = "admin"  # the embedded Airflow's one user (role admin)
PASSWORDS_FILE = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"


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
        f"http://127.0.0.1:{port}/auth/token",
        method="POST",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["access_token"]


def api_ready(port: int) -> bool:
    """The API server answers: its health endpoint reaches the metadata DB, and the execution API
    (what task processes talk to) is mounted. Both are public: no token needed."""
    base = f"http://127.0.0.1:{port}"
    health = get_json(f"{base}/api/v2/monitor/health")
    return bool(
        health and health.get("metadatabase", {}).get("status") == "healthy" and get_json(f"{base}/execution/health")
    )


def all_healthy(port: int) -> bool:
    """Scheduler, dag-processor and triggerer heartbeat, as the API server reports them (public)."""
    health = get_json(f"http://127.0.0.1:{port}/api/v2/monitor/health") or {}
    return all(
        (health.get(part) or {}).get("status") == "healthy" for part in ("scheduler", "dag_processor", "triggerer")
    )
