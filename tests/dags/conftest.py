"""An isolated Airflow for the DAG tests: its own AIRFLOW_HOME, SQLite DB, artifact root and pools.

The environment is set when this file is imported, before anything imports Airflow, since
Airflow reads its configuration at import time.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from metaclip_tasks.core.snapshots import DEFAULT_POOLS_FILE

REPO = Path(__file__).resolve().parents[2]
STATE = Path(tempfile.mkdtemp(prefix="metaclip-airflow-tests-"))
SHIPPED_POOLS = DEFAULT_POOLS_FILE  # pool1 (the DAGs' default), pool2, demo: and the tests' own
TEST_POOLS = """
[three]
description = "three snapshots for the DAG tests"
snapshots = ["CC-MAIN-2023-06", "CC-MAIN-2023-14", "CC-MAIN-2023-23"]
target_tail_ratio = 0.3

[coco]
description = "the shared COCO images, served on 127.0.0.1"
snapshots = ["CC-MAIN-2023-50"]
target_tail_ratio = 0.3
"""
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(STATE / "airflow"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "METACLIP_ROOT": str(STATE / "root"),
    "METACLIP_POOLS": str(STATE / "pools.toml"),
}
os.environ.update(AIRFLOW_ENV)
(STATE / "airflow").mkdir(parents=True, exist_ok=True)
(STATE / "pools.toml").write_text(SHIPPED_POOLS.read_text() + TEST_POOLS)
for path in (REPO / "plugins", REPO / "dags"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB."""
    from metaclip_tasks.dev.local_airflow import migrate

    migrate(dict(os.environ))
    return STATE


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))
