"""Every setting the library reads from the environment, each read here and nowhere else.

The defaults are the embedded ones: state under ``./.state`` of the directory the command runs
in (artifacts in ``.state/root``, resumable downloads in ``.state/cache``), a local Dask cluster,
the packaged pools, and the shared real data beside the source checkout.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]  # a source checkout's root (where dags/ and plugins/ are)


def state_dir() -> Path:
    """Local state of the embedded defaults: ``$METACLIP_STATE``, else ``./.state``."""
    return Path(os.environ.get("METACLIP_STATE") or Path.cwd() / ".state")


def artifact_root() -> str:
    """The artifact store's root: ``$METACLIP_ROOT`` (a directory or any fsspec URL), else ``<state>/root``."""
    return os.environ.get("METACLIP_ROOT") or str(state_dir() / "root")


def cache_dir() -> Path:
    """A local folder for downloads that resume (``.part`` files): ``$METACLIP_CACHE``, else ``<state>/cache``."""
    return Path(os.environ.get("METACLIP_CACHE") or state_dir() / "cache")


def pools_file() -> str | None:
    """A TOML file of pools in place of the packaged ``pools.toml``: ``$METACLIP_POOLS``."""
    return os.environ.get("METACLIP_POOLS") or None


def scheduler_address() -> str | None:
    """A Dask scheduler to run on instead of a local cluster: ``$DASK_SCHEDULER_ADDRESS``."""
    return os.environ.get("DASK_SCHEDULER_ADDRESS") or None


def checked_dir() -> Path:
    """This host's record of checked files: ``$METACLIP_CHECKED_DIR``, else a per-user temporary folder."""
    return Path(
        os.environ.get("METACLIP_CHECKED_DIR") or Path(tempfile.gettempdir()) / f"metaclip-checked-{os.getuid()}"
    )


def dask_slots_dir() -> Path:
    """Lock files of this host's cores shared by local clusters: ``$METACLIP_DASK_SLOTS``, else a temporary folder."""
    return Path(
        os.environ.get("METACLIP_DASK_SLOTS") or Path(tempfile.gettempdir()) / f"metaclip-dask-slots-{os.getuid()}"
    )


def shared_data_dir() -> Path:
    """The project's shared real data: ``$METACLIP_SHARED_DATA``, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("METACLIP_SHARED_DATA") or CHECKOUT.parent / "shared" / "data")


def shared_coco() -> Path:
    """The shared COCO sample (val2017 images with their annotations, train images with captions)."""
    return shared_data_dir() / "coco_mini"


def eval_coco() -> Path:
    """The COCO-style evaluation set: ``$METACLIP_EVAL_COCO``, else the shared COCO sample."""
    return Path(os.environ.get("METACLIP_EVAL_COCO") or shared_coco())
