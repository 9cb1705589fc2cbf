"""Where the pipeline keeps its state by default: ``$METACLIP_ROOT`` or ``<repo>/.state/root`` for the
artifacts, ``$METACLIP_CACHE`` or ``<repo>/.state/cache`` for local downloads (resumable dumps)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def artifact_root() -> str:
    """The artifact store's root: a local directory or any fsspec URL."""
    return os.environ.get("METACLIP_ROOT") or str(REPO / ".state" / "root")


def cache_dir() -> Path:
    """A local folder for downloads that resume (``.part`` files): always on this machine's disk."""
    return Path(os.environ.get("METACLIP_CACHE") or REPO / ".state" / "cache")
