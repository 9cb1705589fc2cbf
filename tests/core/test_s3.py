"""The artifact root on a real S3 server (moto's, on 127.0.0.1): the whole chain runs there, through
the library on a Dask cluster, the command line and the Airflow DAG, byte-identical to a local root."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from metaclip_tasks.core import files
from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.dev.demo import run_demo
from metaclip_tasks.runtime.cluster import dask_client

METACLIP = Path(sys.executable).parent / "metaclip"


def _contents(store: ArtifactStore) -> dict:
    """Every artifact's version and described files, by stage."""
    return {(a.stage, a.version): a.manifest["files"] for a in store.list()}


@pytest.mark.cluster
def test_the_demo_on_s3_is_byte_identical_to_a_local_root(
    tmp_path: Path, s3_bucket: str, captions_table, wordnet
) -> None:
    local = ArtifactStore(tmp_path / "root")
    remote = ArtifactStore(f"{s3_bucket}/library")
    local_report = run_demo(local, None)  # in this process
    with dask_client(work=2) as client:  # on a process-based Dask cluster whose workers read and write S3
        remote_report = run_demo(remote, client)
    assert "s3://metaclip-test/library/artifacts/curated/" in remote_report
    assert local_report.replace(str(tmp_path / "root"), "ROOT") == remote_report.replace(f"{s3_bucket}/library", "ROOT")
    assert (
        _contents(local) == _contents(remote) and len(_contents(remote)) == 10
    )  # with the matcher beside the metadata
    fs, _ = files.filesystem(s3_bucket)
    for artifact in remote.list():  # what is on S3 is what the manifest says
        for f in artifact.manifest["files"]:
            data = fs.cat(files.filesystem(artifact.path(f["name"]))[1])
            assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"]
    curated = remote.latest("curated")
    rows = pd.read_parquet(curated.path("data"))  # the rows read as one dataset, straight from S3
    assert len(rows) == curated.stats["kept"] == curated.dataset().count_rows()
    keys = fs.find(f"{s3_bucket}/library/artifacts")
    assert keys and not [k for k in keys if any(part.startswith(".") for part in k.split("/"))]  # no temporaries


@pytest.mark.slow
@pytest.mark.timeout(900)  # above its own 600 s for `metaclip demo`
def test_the_command_line_on_s3(tmp_path: Path, s3_bucket: str, captions_table, wordnet) -> None:
    env = {**os.environ, "METACLIP_ROOT": f"{s3_bucket}/cli"}
    result = subprocess.run(
        [str(METACLIP), "demo", "--workers", "0"], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr
    assert f"-> {s3_bucket}/cli/artifacts/curated/" in result.stdout
    listing = subprocess.run(
        [str(METACLIP), "artifacts", "list"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert listing.returncode == 0 and len(listing.stdout.splitlines()) == 10
    local = ArtifactStore(tmp_path / "root")
    run_demo(local, None)
    assert _contents(ArtifactStore(f"{s3_bucket}/cli")) == _contents(local)


@pytest.mark.airflow
@pytest.mark.timeout(1200)  # above its own 900 s for the DAG run
def test_the_demo_dag_on_s3(tmp_path: Path, s3_bucket: str, captions_table, wordnet) -> None:
    """``make demo``'s path: the demo DAG under Airflow (``airflow dags test``) with the root on S3."""
    env = {**os.environ, "METACLIP_ROOT": f"{s3_bucket}/airflow"}
    code = "from metaclip_tasks.dev.local_airflow import run_demo; import sys; print(run_demo(__import__('pathlib').Path(sys.argv[1])))"
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "state")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{s3_bucket}/airflow/artifacts/curated/" in result.stdout
    local = ArtifactStore(tmp_path / "root")
    run_demo(local, None)
    assert _contents(ArtifactStore(f"{s3_bucket}/airflow")) == _contents(local)
