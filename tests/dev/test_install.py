"""The package as a user installs it (a wheel, not the editable checkout) runs the demo from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from metaclip_tasks.dev.shared_data import CAPTIONS

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from the checkout (the C extensions compiled into it)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        cwd=out,
    )
    (built,) = out.glob("metaclip_tasks-*.whl")
    return built


def test_the_wheel_holds_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "metaclip_tasks/core/pools.toml",
        "metaclip_tasks/training/model_configs/metaclip-tiny.json",
        "metaclip_tasks/py.typed",
        "metaclip_tasks/ingest/_watscan.pyi",
        "metaclip_tasks/curation/_match.pyi",
    ):
        assert name in names
    assert any(n.startswith("metaclip_tasks/curation/_match.") and n.endswith(".so") for n in names)


def test_the_installed_demo_runs_from_another_directory(wheel: Path, tmp_path: Path) -> None:
    """Installed (its dependencies are this interpreter's), the demo curates into ``--root`` and writes
    nothing where it runs: no path of the library assumes a source checkout."""
    if not CAPTIONS.is_file():
        pytest.skip(f"shared real captions not found at {CAPTIONS} (../shared/data is absent)")
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
    )
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "root"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "METACLIP_SHARED_DATA": str(CAPTIONS.parents[1])}
    env.pop("METACLIP_ROOT", None)
    where = subprocess.run(
        [sys.executable, "-c", "import metaclip_tasks; print(metaclip_tasks.__file__)"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(site))
    demo = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from metaclip_tasks.cli import main; sys.exit(main())",
            "demo",
            "--root",
            str(root),
            "--workers",
            "0",
        ],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "curated:" in demo.stdout and str(root) in demo.stdout
    assert list(elsewhere.iterdir()) == []
    assert (root / "artifacts" / "curated").is_dir()
