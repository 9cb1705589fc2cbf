"""The container set-up (docker-compose.yml, docker/, .env.example), checked without a Docker engine.

A real compose implementation validates the file: Debian's ``docker-compose`` (1.29, the Python
implementation; ``make system-packages`` installs it), ``config -q`` with and without the ``gpu``
profile, and it refuses a missing secret naming it.  The parsed YAML is checked for what the
cluster promises: the services, the Celery queues, health checks on every long-running service,
the logs volume, published ports only where there is a reason, no usable default for any
secret, a log-in on the UI; and against the code: settings that Airflow, its Celery provider or
the library really read, addresses that match the services, extras that pyproject defines.
The entry point runs for real (its ``init`` on a local and on an S3 artifact root).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from metaclip_tasks.dev.local_airflow import airflow_env

REPO = Path(__file__).resolve().parents[2]  # the source checkout

COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_TEXT = COMPOSE_FILE.read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
ENV_EXAMPLE = (REPO / ".env.example").read_text()
SERVICES = COMPOSE["services"]

SECRETS = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_ADMIN_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
ONE_SHOT = {"airflow-init", "minio-init"}
AIRFLOW = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
}
DASK = {"dask-scheduler", "dask-worker"}
# Published ports, and why.
PUBLISHED = {
    "airflow-apiserver": "the UI and the REST API (log-in required)",
    "dask-scheduler": "the Dask dashboard, on 127.0.0.1 only (it has no log-in)",
}
REFERENCE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|_KEY|KEY_ID|TOKEN|REDISCLI_AUTH)$")


def command(service: str) -> list[str]:
    return [str(a) for a in SERVICES[service]["command"]]


def flag(service: str, name: str) -> str:
    args = command(service)
    return args[args.index(name) + 1]


def healthcheck(service: str) -> str:
    test = SERVICES[service]["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


def resolved(value: str) -> str:
    """``value`` with its references replaced by their defaults (``x`` for a required one)."""
    return REFERENCE.sub(lambda m: m["arg"] if m["op"] == ":-" else "x", str(value))


def required(value: str) -> bool:
    """``value`` is exactly one ``${NAME:?message}`` reference to a secret."""
    m = REFERENCE.fullmatch(str(value))
    return bool(m) and m["op"] == ":?" and m["name"] in SECRETS and m["name"] in m["arg"]


# -- the services and what they promise ---------------------------------------------------------
def test_the_services_of_the_cluster() -> None:
    assert set(SERVICES) == {"postgres", "redis", "minio", "minio-init", "airflow-init", *AIRFLOW, *DASK}
    # One image for Airflow (services and CPU workers) and Dask: the same code on both sides. The
    # GPU worker's is built from the same Dockerfile with the train extras added.
    ours = ({"airflow-init"} | AIRFLOW | DASK) - {"airflow-worker-gpu"}
    assert len({SERVICES[s]["image"] for s in ours}) == 1
    for name in ours | {"airflow-worker-gpu"}:
        assert SERVICES[name]["build"]["dockerfile"] == "docker/Dockerfile", name
    for name in AIRFLOW:
        depends = SERVICES[name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == depends["redis"]["condition"] == "service_healthy", name
    # The Dask workers join the bundled scheduler, which the tasks use unless told otherwise.
    assert "tcp://dask-scheduler:8786" in command("dask-worker")
    assert SERVICES["dask-worker"]["depends_on"]["dask-scheduler"]["condition"] == "service_healthy"
    # Nothing depends on MinIO, so that another S3 can replace it (--scale minio=0 --scale minio-init=0).
    for name, service in SERVICES.items():
        assert not {"minio", "minio-init"} & set(service.get("depends_on", ())) or name == "minio-init", name


def test_cpu_workers_take_the_default_queue_and_the_gpu_worker_the_gpu_queue() -> None:
    for name in ("airflow-worker", "airflow-worker-gpu"):
        assert command(name)[:3] == ["airflow", "celery", "worker"], name
        assert SERVICES[name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert flag("airflow-worker", "--queues") == "default"  # [operators] default_queue
    assert flag("airflow-worker-gpu", "--queues") == "gpu"
    gpu = SERVICES["airflow-worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and "profiles" not in SERVICES["airflow-worker"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    extras = gpu["build"]["args"]["EXTRAS"].split(",")
    assert {"train", "celery", "airflow"} <= set(extras)
    assert flag("airflow-worker-gpu", "--concurrency") == "${METACLIP_GPU_SLOTS:-1}"


def test_every_task_in_the_gpu_pool_is_routed_to_the_gpu_queue() -> None:
    routed = []
    for path in sorted((REPO / "dags").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "task":
                kwargs = {k.arg: k.value for k in node.keywords if k.arg}
                if isinstance(kwargs.get("pool"), ast.Constant) and kwargs["pool"].value == "gpu":
                    queue = kwargs.get("queue")
                    assert isinstance(queue, ast.Constant) and queue.value == "gpu", f"{path.name}:{node.lineno}"
                    routed.append(path.name)
    assert {"metaclip_train.py", "metaclip_t_ablation.py"} <= set(routed)


def test_every_long_running_service_has_a_health_check() -> None:
    for name, service in SERVICES.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
            continue
        assert "healthcheck" in service, f"{name} has no health check"
        assert service["restart"] == "unless-stopped", name
    # The Airflow ones as in Airflow's own compose file.
    assert "/api/v2/monitor/health" in healthcheck("airflow-apiserver")
    for name, job in (
        ("airflow-scheduler", "SchedulerJob"),
        ("airflow-dag-processor", "DagProcessorJob"),
        ("airflow-triggerer", "TriggererJob"),
    ):
        assert f"airflow jobs check --job-type {job} --hostname" in healthcheck(name), name
    for name in ("airflow-worker", "airflow-worker-gpu"):
        assert "celery --app airflow.providers.celery.executors.celery_executor.app inspect ping" in healthcheck(name)
        assert "celery@$${HOSTNAME}" in healthcheck(name)  # this worker, not any
    assert healthcheck("postgres").startswith("CMD pg_isready")
    assert "redis-cli ping" in healthcheck("redis")
    assert healthcheck("minio") == "CMD mc ready local"
    # The Dask HTTP servers' /health, on the ports that the commands give them.
    assert f"localhost:{flag('dask-scheduler', '--dashboard-address').lstrip(':')}/health" in healthcheck(
        "dask-scheduler"
    )
    assert f"localhost:{flag('dask-worker', '--dashboard-address').lstrip(':')}/health" in healthcheck("dask-worker")


def test_the_logs_volume_is_shared_by_every_airflow_service() -> None:
    assert "airflow-logs" in COMPOSE["volumes"]
    home = re.search(r"AIRFLOW_HOME=(\S+)", DOCKERFILE)[1]
    for name in AIRFLOW | {"airflow-init"}:
        assert f"airflow-logs:{home}/logs" in SERVICES[name]["volumes"], name
    # The image creates the folder owned by the airflow user: a new volume there starts writable.
    assert '"$AIRFLOW_HOME/logs"' in DOCKERFILE and 'chown -R 50000:0 /data "$AIRFLOW_HOME"' in DOCKERFILE


def test_ports_are_published_only_with_a_reason() -> None:
    published = {name for name, s in SERVICES.items() if s.get("ports")}
    assert published == set(PUBLISHED), f"published without a reason: {published - set(PUBLISHED)}"
    assert SERVICES["airflow-apiserver"]["ports"] == ["${AIRFLOW_PORT:-8080}:8080"]
    assert SERVICES["dask-scheduler"]["ports"] == ["127.0.0.1:${DASK_DASHBOARD_PORT:-8787}:8787"]
    for name in published:
        assert "expose" not in SERVICES[name]


# -- secrets -------------------------------------------------------------------------------------
def test_no_secret_has_a_usable_default() -> None:
    references = list(REFERENCE.finditer(COMPOSE_TEXT))
    named = {m["name"] for m in references}
    assert set(SECRETS) <= named, f"secrets never used: {set(SECRETS) - named}"
    for m in references:
        if m["name"] in SECRETS:
            assert m["op"] == ":?" and m["name"] in m["arg"], f"{m[0]}: a secret must be ${{NAME:?...NAME...}}"
        else:
            assert not SECRET_NAME.search(m["name"]), f"{m[0]} looks like a secret but is not required"

    def values(service: dict):
        yield from (service.get("environment") or {}).items()
        yield from (("command", a) for a in service.get("command") or [])

    for name, service in SERVICES.items():
        for key, value in values(service):
            value = str(value)
            if SECRET_NAME.search(key):
                assert required(value), f"{name}: {key}={value} is not a required secret"
            for credentials in re.findall(r"://[^/@\s]*:([^@\s]+)@", value):  # user:password@ in a URL
                assert required(credentials), f"{name}: {key} has a password that is not a required secret"
        if "--requirepass" in (service.get("command") or []):
            assert required(flag(name, "--requirepass")), name


def test_env_example_lists_every_secret_empty_with_how_to_generate_it() -> None:
    lines = ENV_EXAMPLE.splitlines()
    assigned = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in lines if re.match(r"^[A-Z_]+=", line)}
    assert set(assigned) == set(SECRETS), "the uncommented assignments are exactly the secrets"
    assert all(v == "" for v in assigned.values()), "no value in the example"
    for name in SECRETS:
        # The comment block right above the secret (or its pair) says how to generate it.
        i = lines.index(f"{name}=")
        above = []
        for line in reversed(lines[:i]):
            if not line.startswith("#") and not re.match(r"^[A-Z_]+=$", line):
                break
            above.append(line)
        assert re.search(r"openssl rand|urandom|Fernet", "\n".join(above)), f"{name}: no way to generate it"
    # Every ${VAR:-default} setting is documented there (commented out with its default).
    for m in REFERENCE.finditer(COMPOSE_TEXT):
        if m["op"] == ":-" and m["name"] not in {"MINIO_IMAGE"}:
            assert re.search(rf"^# {m['name']}=", ENV_EXAMPLE, re.MULTILINE), f"{m['name']} is not in .env.example"
    assert (
        ".env" in (REPO / ".gitignore").read_text().split() and ".env" in (REPO / ".dockerignore").read_text().split()
    )


def test_the_ui_requires_a_log_in_with_the_password_from_the_environment() -> None:
    env = SERVICES["airflow-apiserver"]["environment"]
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("simple_auth_manager.SimpleAuthManager")
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "${AIRFLOW_ADMIN_USER:-admin}:admin"
    assert required(env["AIRFLOW_ADMIN_PASSWORD"])
    home = re.search(r"AIRFLOW_HOME=(\S+)", DOCKERFILE)[1]
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"].startswith(f"{home}/")  # not on a shared volume


def test_the_entrypoint_writes_the_passwords_file_for_the_log_in(tmp_path: Path) -> None:
    passwords = tmp_path / "passwords.json"
    env = {
        "PATH": os.environ["PATH"],
        "AIRFLOW_ADMIN_USER": "alice",
        "AIRFLOW_ADMIN_PASSWORD": 'p"w\\1',
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }
    for password in ('p"w\\1', "second"):  # rewritten at each start: a new password in .env takes effect
        env["AIRFLOW_ADMIN_PASSWORD"] = password
        subprocess.run([str(ENTRYPOINT), "true"], env=env, check=True, timeout=60)
        assert json.loads(passwords.read_text()) == {"alice": password}
        assert stat.S_IMODE(passwords.stat().st_mode) == 0o600


# -- agreement with the code ---------------------------------------------------------------------
def test_addresses_and_folders_match_the_services_and_the_image() -> None:
    env = SERVICES["airflow-scheduler"]["environment"]
    env = {key: resolved(value) for key, value in env.items()}
    dask = urlparse(env["DASK_SCHEDULER_ADDRESS"])
    assert dask.hostname == "dask-scheduler" and str(dask.port) == flag("dask-scheduler", "--port")
    api = urlparse(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert api.hostname == "airflow-apiserver" and str(api.port) == flag("airflow-apiserver", "--port")
    assert urlparse(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres"
    assert urlparse(env["AIRFLOW__CELERY__RESULT_BACKEND"]).hostname == "postgres"
    assert urlparse(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    workdir = re.search(r"^WORKDIR (\S+)", DOCKERFILE, re.MULTILINE).group(1)
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == f"{workdir}/dags"
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == f"{workdir}/plugins"
    # The default artifact root: a bucket on the bundled MinIO, the same for Airflow and Dask.
    assert env["METACLIP_ROOT"] == "s3://metaclip/root"
    assert urlparse(env["AWS_ENDPOINT_URL"]).hostname == "minio" and "server /data" in " ".join(command("minio"))
    raw = SERVICES["airflow-scheduler"]["environment"]
    for name in DASK | AIRFLOW:
        for key in ("METACLIP_ROOT", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert SERVICES[name]["environment"][key] == raw[key], (name, key)
    assert SERVICES["minio-init"]["environment"]["METACLIP_ROOT"] == raw["METACLIP_ROOT"]


def test_every_setting_is_one_that_airflow_its_celery_provider_or_the_library_reads() -> None:
    spec = importlib.util.find_spec("airflow")
    if spec is None:
        pytest.skip("Airflow is not installed (the 'airflow' extra)")
    template = Path(spec.submodule_search_locations[0]) / "config_templates" / "config.yml"
    options = {
        (section, key) for section, body in yaml.safe_load(template.read_text()).items() for key in body["options"]
    }
    try:
        from airflow.providers.celery.get_provider_info import get_provider_info
    except ImportError:
        pytest.skip("the Celery provider is not installed (the 'celery' extra)")
    options |= {(section, key) for section, body in get_provider_info()["config"].items() for key in body["options"]}
    sources = "".join(p.read_text() for d in ("metaclip_tasks", "plugins", "dags") for p in (REPO / d).rglob("*.py"))
    sources += ENTRYPOINT.read_text()
    for name in SERVICES["airflow-worker"]["environment"]:
        if name.startswith("AIRFLOW__"):
            section, key = name.removeprefix("AIRFLOW__").lower().split("__")
            assert (section, key) in options, f"{name}: Airflow has no [{section}] {key}"
        else:
            assert name in sources, f"{name} is set but nothing reads it"


def test_the_image_copies_what_exists_and_installs_extras_pyproject_defines() -> None:
    for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.MULTILINE):
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), source
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    default = re.search(r"^ARG EXTRAS=(\S+)", DOCKERFILE, re.MULTILINE).group(1)
    gpu = SERVICES["airflow-worker-gpu"]["build"]["args"]["EXTRAS"]
    assert {"airflow", "celery", "postgres"} <= set(default.split(",")) <= set(extras)
    assert set(default.split(",")) | {"train"} == set(gpu.split(","))
    assert any(r.startswith("apache-airflow-providers-celery==") for r in extras["celery"])
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".state", ".git", ".env"} <= set(ignored)


# -- a real compose implementation ---------------------------------------------------------------
def filled_env(tmp_path: Path, leave_out: str | None = None) -> Path:
    """``.env.example`` with every secret filled in (but ``leave_out``)."""
    text = ENV_EXAMPLE
    for i, name in enumerate(SECRETS):
        text = re.sub(rf"^{name}=$", "" if name == leave_out else f"{name}=s3cret{i}xyz", text, flags=re.MULTILINE)
    path = tmp_path / f"env-{leave_out or 'full'}"
    path.write_text(text)
    return path


def compose(tmp_path: Path, env_file: Path, *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("no compose implementation: Debian's docker-compose is not installed (make system-packages)")
    # A clean environment: a variable set in the shell would win over the env file.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    return subprocess.run(
        [binary, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("profile", [(), ("--profile", "gpu")], ids=["default", "gpu"])
def test_compose_accepts_the_file_with_every_secret_set(tmp_path: Path, profile: tuple[str, ...]) -> None:
    env_file = filled_env(tmp_path)
    result = compose(tmp_path, env_file, *profile, "config", "-q")
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(compose(tmp_path, env_file, *profile, "config").stdout)
    worker = rendered["services"]["airflow-worker-gpu"]
    assert "--queues" in worker["command"] and worker["command"][worker["command"].index("--queues") + 1] == "gpu"
    assert rendered["services"]["airflow-apiserver"]["environment"]["AIRFLOW__CORE__FERNET_KEY"].startswith("s3cret")


def test_compose_refuses_to_start_without_a_secret_and_names_it(tmp_path: Path) -> None:
    for name in SECRETS:
        result = compose(tmp_path, filled_env(tmp_path, leave_out=name), "config", "-q")
        assert result.returncode != 0, f"compose accepted a missing {name}"
        assert f"set {name} in .env" in result.stderr, result.stderr


# -- the entry point, for real -------------------------------------------------------------------
def run_init(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENTRYPOINT), "init"], check=False, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.airflow
def test_entrypoint_init_prepares_the_db_the_gpu_pool_and_the_root_and_is_idempotent(tmp_path: Path) -> None:
    env = airflow_env(tmp_path / "state", root=str(tmp_path / "data" / "root"), METACLIP_GPU_SLOTS="2")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for _ in range(2):
        result = run_init(env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "pool gpu has 2 slot(s)" in result.stdout
    assert (tmp_path / "data" / "root").is_dir() and not list((tmp_path / "data" / "root").iterdir())
    pools = subprocess.run(
        [str(ENTRYPOINT), "airflow", "pools", "get", "gpu"], check=False, env=env, capture_output=True, text=True
    )
    assert pools.returncode == 0 and re.search(r"gpu\s*\|\s*2\b", pools.stdout), pools.stdout


@pytest.mark.airflow
def test_entrypoint_init_waits_for_an_s3_root_and_names_it_when_it_never_comes(tmp_path: Path, s3_bucket: str) -> None:
    import s3fs

    env = airflow_env(tmp_path / "state", METACLIP_ROOT_WAIT="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    absent = f"s3://metaclip-absent-{uuid.uuid4().hex[:8]}/root"
    result = run_init({**env, "METACLIP_ROOT": absent})
    assert result.returncode != 0 and f"the artifact root {absent} is not writable" in result.stderr, result.stderr
    root = f"{s3_bucket}/init-root"
    result = run_init({**env, "METACLIP_ROOT": root})
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"artifacts in {root}" in result.stdout
    assert not s3fs.S3FileSystem(skip_instance_cache=True).exists(f"{root}/.metaclip-init-probe")
