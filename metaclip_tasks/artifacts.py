"""Versioned, immutable artifacts: the only place that knows how versions are computed and published.

Every stage writes into ``<root>/artifacts/<stage>/<version>/`` where ``version`` is a short
hash of (stage, code version, canonical JSON of the parameters, versions of the input
artifacts).  Same inputs, same version: running a stage again is a cache hit that does no
work; a different parameter is a new version beside the old one.  The stage's files are
written in a local temporary directory; ``manifest.json`` (inputs, parameters, code,
creation time, files with sizes and sha256, stats) is written last, and readers ignore any
directory without it, so a crash never leaves anything that looks complete.  Storage goes
through fsspec: a local path by default, ``s3://`` or ``gs://`` with their backend installed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec

from metaclip_tasks import __version__
from metaclip_tasks.errors import CurationError

MANIFEST = "manifest.json"


@functools.cache
def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Artifact:
    """A published stage output: where it is and what its manifest says."""

    stage: str
    version: str
    uri: str
    manifest: dict[str, Any] = field(repr=False)
    cache_hit: bool = False

    @property
    def params(self) -> dict[str, Any]:
        return self.manifest["params"]

    @property
    def stats(self) -> dict[str, Any]:
        return self.manifest.get("stats", {})

    def path(self, name: str) -> str:
        """The URI of one of the artifact's files."""
        return f"{self.uri}/{name}"

    @property
    def ref(self) -> dict[str, str]:
        """How a downstream manifest names this input."""
        return {"stage": self.stage, "version": self.version, "uri": self.uri}


class ArtifactStore:
    """Artifacts under one root (a local directory or any fsspec URL)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = str(root).rstrip("/")
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root)
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def _uri(self, *parts: str) -> str:
        return "/".join([self.root, "artifacts", *parts])

    def _path(self, *parts: str) -> str:
        return "/".join([self._root_path, "artifacts", *parts])

    @staticmethod
    def version_for(stage: str, params: dict[str, Any], inputs: Sequence[Artifact] = ()) -> str:
        """The short hash naming a stage's output for these parameters and inputs."""
        key = {
            "stage": stage,
            "code": code_version(),
            "params": params,
            "inputs": sorted((a.stage, a.version) for a in inputs),
        }
        return hashlib.sha256(canonical_json(key).encode()).hexdigest()[:16]

    def get(self, stage: str, version: str) -> Artifact | None:
        """The complete artifact, or None when it does not exist or was never finished."""
        manifest_path = self._path(stage, version, MANIFEST)
        if not self.fs.exists(manifest_path):
            return None
        with self.fs.open(manifest_path, "r") as f:
            manifest = json.load(f)
        return Artifact(stage, version, self._uri(stage, version), manifest)

    def require(self, stage: str, version: str) -> Artifact:
        """The artifact, or an error naming what is missing."""
        artifact = self.get(stage, version)
        if artifact is None:
            raise CurationError(f"no complete {stage} artifact {version} under {self.root}")
        return artifact

    def list(self, stage: str | None = None) -> list[Artifact]:
        """Complete artifacts (of one stage, or all), oldest first."""
        stages = [stage] if stage else sorted(self._children(self._path()))
        found = []
        for st in stages:
            for version in self._children(self._path(st)):
                artifact = self.get(st, version)
                if artifact is not None:
                    found.append(artifact)
        return sorted(found, key=lambda a: (a.manifest.get("created", ""), a.stage, a.version))

    def latest(self, stage: str, **params: Any) -> Artifact | None:
        """The newest complete artifact of ``stage`` whose parameters include ``params``."""
        matching = [a for a in self.list(stage) if all(a.params.get(k) == v for k, v in params.items())]
        return matching[-1] if matching else None

    def _children(self, path: str) -> list[str]:
        if not self.fs.exists(path):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False)]
        return sorted(n for n in names if not n.startswith("."))

    def lineage(self, stage: str, version: str) -> dict[str, Any]:
        """The artifact and, recursively, the artifacts it was made from."""
        artifact = self.require(stage, version)
        return {
            "stage": stage,
            "version": version,
            "params": artifact.params,
            "inputs": [self.lineage(i["stage"], i["version"]) for i in artifact.manifest.get("inputs", [])],
        }

    def publish(
        self,
        stage: str,
        params: dict[str, Any],
        inputs: Sequence[Artifact],
        build: Callable[[Path], dict[str, Any] | None],
    ) -> Artifact:
        """The artifact for (stage, params, inputs): the existing one (a cache hit), else built.

        ``build(workdir)`` writes the stage's files into ``workdir`` and returns its stats;
        the files are checksummed, the manifest written, and the whole published atomically.
        """
        version = self.version_for(stage, params, inputs)
        existing = self.get(stage, version)
        if existing is not None:
            return Artifact(stage, version, existing.uri, existing.manifest, cache_hit=True)
        with self._workdir(stage, version) as workdir:
            stats = build(workdir) or {}
            manifest = {
                "stage": stage,
                "version": version,
                "params": params,
                "inputs": [a.ref for a in inputs],
                "code": code_version(),
                "created": datetime.now(UTC).isoformat(timespec="microseconds"),
                "files": [_describe(p, workdir) for p in sorted(workdir.rglob("*")) if p.is_file()],
                "stats": stats,
            }
            (workdir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
            self._install(workdir, stage, version)
        return self.require(stage, version)

    @contextmanager
    def _workdir(self, stage: str, version: str) -> Iterator[Path]:
        """A temporary directory: beside the target on a local root (so publishing is a rename)."""
        if self.local:
            parent = Path(self._path(stage))
            parent.mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=parent))
        else:
            workdir = Path(tempfile.mkdtemp(prefix=f"metaclip-{stage}-{version}-"))
        try:
            yield workdir
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _install(self, workdir: Path, stage: str, version: str) -> None:
        target = self._path(stage, version)
        if self.local:
            for path in workdir.rglob("*"):
                if path.is_file():
                    with open(path, "rb+") as f:
                        os.fsync(f.fileno())
            try:
                os.rename(workdir, target)
            except OSError:
                if self.get(stage, version) is None:  # not a concurrent twin that finished first
                    raise
            return
        # object stores have no rename: upload the files, then the manifest that makes it complete
        manifest = workdir / MANIFEST
        for path in sorted(workdir.rglob("*")):
            if path.is_file() and path != manifest:
                self.fs.put_file(str(path), f"{target}/{path.relative_to(workdir).as_posix()}")
        self.fs.put_file(str(manifest), f"{target}/{MANIFEST}")


def _describe(path: Path, root: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}
