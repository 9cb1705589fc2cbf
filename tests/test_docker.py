"""The container set-up (docker-compose.yml, docker/), checked without a Docker engine.

The services must agree with each other and with the code: one image, one shared volume for
the artifact root, addresses and ports that match, settings that Airflow and the library
really read, extras that pyproject defines.  The entry point's ``init`` runs for real.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from metaclip_tasks.local_airflow import airflow_env
from metaclip_tasks.settings import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
GPU_OVERRIDE = yaml.safe_load((REPO / "docker" / "compose.gpu.yml").read_text())
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
SERVICES = COMPOSE["services"]
OURS = {name: s for name, s in SERVICES.items() if name != "postgres"}


def test_every_service_runs_one_image_on_one_shared_volume() -> None:
    assert set(OURS) == {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                         "airflow-triggerer", "dask-scheduler", "dask-worker"}  # fmt: skip
    assert len({s["image"] for s in OURS.values()}) == 1
    for name, service in OURS.items():
        assert "metaclip-data:/data" in service["volumes"], name
        assert service["environment"]["METACLIP_ROOT"].startswith("/data/"), name
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert SERVICES[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_addresses_and_folders_match_the_services_and_the_image() -> None:
    env = OURS["airflow-scheduler"]["environment"]
    dask = urlparse(env["DASK_SCHEDULER_ADDRESS"])
    scheduler = SERVICES["dask-scheduler"]["command"]
    assert dask.hostname == "dask-scheduler" and str(dask.port) == scheduler[scheduler.index("--port") + 1]
    assert env["DASK_SCHEDULER_ADDRESS"] in SERVICES["dask-worker"]["command"]
    api = urlparse(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    server = SERVICES["airflow-apiserver"]["command"]
    assert api.hostname == "airflow-apiserver" and str(api.port) == server[server.index("--port") + 1]
    assert urlparse(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres"
    workdir = re.search(r"^WORKDIR (\S+)", DOCKERFILE, re.M).group(1)
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == f"{workdir}/dags"
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == f"{workdir}/plugins"


def test_every_setting_is_one_that_airflow_or_the_library_reads() -> None:
    spec = importlib.util.find_spec("airflow")
    if spec is None:
        pytest.skip("Airflow is not installed (the 'airflow' extra)")
    template = Path(spec.submodule_search_locations[0]) / "config_templates" / "config.yml"
    options = {(section, key) for section, body in yaml.safe_load(template.read_text()).items()
               for key in body["options"]}  # fmt: skip
    sources = "".join(p.read_text() for d in ("metaclip_tasks", "plugins", "dags") for p in (REPO / d).rglob("*.py"))
    sources += (REPO / "docker" / "entrypoint.sh").read_text()
    for name in OURS["airflow-scheduler"]["environment"]:
        if name.startswith("AIRFLOW__"):
            section, key = name.removeprefix("AIRFLOW__").lower().split("__")
            assert (section, key) in options, f"{name}: Airflow has no [{section}] {key}"
        else:
            assert name in sources, f"{name} is set but nothing reads it"


def test_the_image_copies_what_exists_and_installs_extras_pyproject_defines() -> None:
    for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.M):
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), source
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    default = re.search(r"^ARG EXTRAS=(\S+)", DOCKERFILE, re.M).group(1)
    gpu = GPU_OVERRIDE["services"]["airflow-scheduler"]["build"]["args"]["EXTRAS"]
    assert {"airflow", "postgres"} <= set(default.split(",")) <= extras
    assert "train" in gpu.split(",") and set(gpu.split(",")) <= extras
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".state", ".git"} <= set(ignored)


def test_entrypoint_init_prepares_the_db_the_gpu_pool_and_the_root_and_is_idempotent(tmp_path: Path) -> None:
    env = airflow_env(tmp_path / "state", root=str(tmp_path / "data" / "root"), METACLIP_GPU_SLOTS="2")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    entrypoint = str(REPO / "docker" / "entrypoint.sh")
    for _ in range(2):
        result = subprocess.run([entrypoint, "init"], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "pool gpu has 2 slot(s)" in result.stdout
    assert (tmp_path / "data" / "root").is_dir()
    pools = subprocess.run([entrypoint, "airflow", "pools", "get", "gpu"], env=env, capture_output=True, text=True)
    assert pools.returncode == 0 and re.search(r"gpu\s*\|\s*2\b", pools.stdout), pools.stdout
