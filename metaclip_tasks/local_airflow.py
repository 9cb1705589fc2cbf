"""The embedded Airflow: SQLite metadata DB, LocalExecutor with parallelism 4, a local Dask
cluster and a local artifact root, all under the repository's ignored ``.state/`` folder.

    python -m metaclip_tasks.local_airflow demo        # the README's main job, through Airflow
    python -m metaclip_tasks.local_airflow standalone  # scheduler, dag-processor, API server, UI

SQLite is put in WAL mode with a long busy timeout, so the scheduler, the dag-processor, the
API server and the command line can write to it at the same time.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from metaclip_tasks.settings import REPO

STATE = REPO / ".state"


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
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # standalone runs `airflow ...`
    }
    env.update(overrides)
    return env


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
        result = subprocess.run(command, env=env, capture_output=True, text=True)
    else:
        with open(log, "w") as out:
            result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    if result.returncode:
        detail = (result.stderr or "")[-3000:] if log is None else f"see {log}"
        raise SystemExit(f"airflow {' '.join(args)} failed ({result.returncode}): {detail}")
    return result


def run_demo(state: Path = STATE) -> str:
    """Run metaclip_curation_demo with ``airflow dags test``; return its report, read from the artifacts."""
    from metaclip_tasks.artifacts import ArtifactStore
    from metaclip_tasks.demo import POOL, demo_report, demo_source

    env = airflow_env(state)
    migrate(env)
    log = Path(state) / "curation_demo.log"
    run_airflow(env, "dags", "test", "metaclip_curation_demo", log=log)
    store = ArtifactStore(env["METACLIP_ROOT"])
    curated = [a for a in store.list("curated") if a.stats.get("pool") == POOL and a.params["seed"] == 0][-1]
    return f"{demo_report(store, curated, demo_source(store)[1])}\n  airflow log: {log}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["demo", "standalone"])
    parser.add_argument("--state-dir", type=Path, default=STATE, help="where Airflow and the artifacts live")
    args = parser.parse_args()
    if args.command == "demo":
        print(run_demo(args.state_dir))
    else:
        env = airflow_env(args.state_dir)
        migrate(env)
        os.execvpe(str(Path(sys.executable).parent / "airflow"), ["airflow", "standalone"], env)


if __name__ == "__main__":
    main()
