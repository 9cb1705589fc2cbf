"""Versioned, immutable artifacts: the only place that knows how versions are computed and published.

Every stage writes into ``<root>/artifacts/<stage>/<version>/``.  ``version`` is a short hash
of the stage's name and explicit version, its canonical parameters, its input artifacts'
versions, its external inputs' fingerprints and the versions of the few libraries its output
depends on; never the git commit, so a documentation change invalidates nothing.  Same key,
same version: running a stage again is a cache hit.  ``manifest.json`` (inputs, parameters,
code, creation time, files with sizes and sha256, stats) is written last and readers ignore any
folder without it.  On a local root the files are written into a hidden temporary folder that
is renamed into place; object stores have no rename, so there the manifest is the commit.
Tabular rows live under ``data/`` so ``pyarrow.dataset`` / ``pd.read_parquet`` read them whole.
Every read and write goes through fsspec.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import socket
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from metaclip_tasks import __version__
from metaclip_tasks.core import files
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.files import Stored

MANIFEST = "manifest.json"
DATA = "data"  # the folder of an artifact's parquet rows
_TMP = ".tmp-"  # a local work folder: .<version>.tmp-<host>-<pid>-<random>
HOST = socket.gethostname().replace("-", "_")  # in the names of local work folders, to tell whose they are


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def version_for(key: dict[str, Any]) -> str:
    """The short hash naming a stage output: of its stage, explicit version, params, inputs, libraries."""
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Artifact:
    """A published stage output: where it is and what its manifest says."""

    stage: str
    version: str
    uri: str
    manifest: dict[str, Any] = field(repr=False, compare=False)
    store: ArtifactStore | None = field(default=None, repr=False, compare=False)
    cache_hit: bool = field(default=False, compare=False)

    @property
    def params(self) -> dict[str, Any]:
        return self.manifest["params"]

    @property
    def stats(self) -> dict[str, Any]:
        return self.manifest.get("stats", {})

    @property
    def ref(self) -> dict[str, str]:
        """How a downstream manifest names this input."""
        return {"stage": self.stage, "version": self.version, "uri": self.uri}

    def path(self, name: str) -> str:
        """The URI of one of the artifact's files."""
        return files.join(self.uri, name)

    def files(self, suffix: str = "", under: str = "") -> list[str]:
        """Names of the artifact's files ending in ``suffix`` (below folder ``under``), sorted."""
        prefix = f"{under.rstrip('/')}/" if under else ""
        return sorted(
            f["name"] for f in self.manifest["files"] if f["name"].endswith(suffix) and f["name"].startswith(prefix)
        )

    def data_files(self) -> list[Stored]:
        """The parquet parts of its rows (``data/``), in name order, each with what it must be
        (whoever reads one verifies it: a Dask worker before matching it, for instance)."""
        return [self.stored(name) for name in self.files(".parquet", under=DATA)]

    def stored(self, name: str) -> Stored:
        """One of its files as the manifest describes it; a name the manifest does not list is an error."""
        described = next((f for f in self.manifest["files"] if f["name"] == name), None)
        if described is None:
            raise CurationError(f"{self.stage} {self.version} has no file {name}")
        return Stored(self.path(name), described["bytes"], described["sha256"], f"{self.stage} {self.version}")

    def verify(self, checksums: bool = True, *, recheck: bool = False) -> Artifact:
        """Every file against the manifest (sizes, and sha256 as :func:`files.verify` does; ``recheck``:
        every file hashed now); an error names the file."""
        for f in self.manifest["files"]:
            files.verify(self.stored(f["name"]), checksums, recheck=recheck)
        return self

    def open(self, name: str) -> IO[bytes]:
        """One of its files, verified against the manifest, opened for reading."""
        stored = self.stored(name)
        files.verify(stored)
        fs, path = files.filesystem(stored.uri)
        return fs.open(path, "rb")

    def read_json(self, name: str) -> Any:
        with self.open(name) as f:
            try:
                return json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CurationError(f"{self.stage} {self.version}: {name} is not valid JSON: {e}") from e

    def read_array(self, name: str) -> np.ndarray:
        with self.open(name) as f:
            try:
                return np.load(f, allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise CurationError(f"{self.stage} {self.version}: {name} is not a numpy .npy array: {e}") from e

    def dataset(self):
        """Its rows as one ``pyarrow.dataset``."""
        import pyarrow.dataset as ds

        fs, path = files.filesystem(self.path(DATA))
        return ds.dataset(path, filesystem=fs, format="parquet")

    def inputs(self, stage: str | None = None, role: str | None = None) -> list[Artifact]:
        """The artifacts it was made from (of one stage, or one role), in manifest order."""
        if self.store is None:
            raise CurationError(f"{self.stage} {self.version} is not attached to a store")
        return [
            self.store.require(i["stage"], i["version"])
            for i in self.manifest.get("inputs", [])
            if (stage is None or i["stage"] == stage) and (role is None or i.get("role") == role)
        ]

    def input(self, stage: str) -> Artifact:
        """The one input of ``stage``."""
        found = self.inputs(stage)
        if len(found) != 1:
            raise CurationError(f"{self.stage} {self.version} has {len(found)} {stage} inputs, expected one")
        return found[0]

    def local_copy(self, name: str, directory: str | os.PathLike) -> Path:
        """A local path of one of its files or folders, verified: itself on a local root, else a copy in
        ``directory`` (for tools that need local files, such as a trainer's data loader)."""
        for f in self.manifest["files"]:
            if f["name"] == name or f["name"].startswith(f"{name}/"):
                files.verify(self.stored(f["name"]))
        fs, path = files.filesystem(self.path(name))
        if files.is_local(fs):
            return Path(path)
        target = Path(directory) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get(path, str(target), recursive=fs.isdir(path))
        return target


class Output:
    """The folder a stage fills: opened by URI on any worker; files written through
    :meth:`writer` (or :class:`files.HashingWriter` on a worker) are described without re-reading."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self._path = files.filesystem(uri)
        self._described: dict[str, tuple[int, str]] = {}

    def uri_of(self, name: str) -> str:
        return files.join(self.uri, name)

    def record(self, written: Stored) -> None:
        """Remember a file's description (from a :class:`files.HashingWriter`, here or on a worker)."""
        self._described[written.uri[len(self.uri) + 1 :]] = (written.bytes, written.sha256)

    def writer(self, name: str) -> files.HashingWriter:
        """A file of the output opened for writing; its size and sha256 are recorded on close."""
        return files.HashingWriter(self.uri_of(name), on_close=self.record)

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.writer(name) as f:
            f.write(data)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, obj: Any) -> None:
        self.write_text(name, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")

    def save_array(self, name: str, array: np.ndarray) -> None:
        with self.writer(name) as f:
            np.save(f, array, allow_pickle=False)

    def put(self, local: str | os.PathLike, name: str) -> None:
        """Copy a local file or folder (a tool's output) into the output as ``name``."""
        local = Path(local)
        for path in sorted(local.rglob("*")) if local.is_dir() else [local]:
            if path.is_file():
                target = name if path == local else f"{name}/{path.relative_to(local).as_posix()}"
                with open(path, "rb") as source, self.writer(target) as out:
                    while block := source.read(files.CHUNK):
                        out.write(block)

    def describe(self) -> list[dict[str, Any]]:
        """Every file of the output (name, bytes, sha256), sorted; unrecorded files are read back."""
        described = []
        for path in sorted(self.fs.find(self._path)):
            name = path[len(self._path.rstrip("/")) + 1 :]
            if name == MANIFEST:
                continue
            size, sha = self._described.get(name) or files.describe(self.fs, path)
            described.append({"name": name, "bytes": size, "sha256": sha})
        return described


def _fsync(path: str) -> None:
    """One local file made durable."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


class ArtifactStore:
    """Artifacts under one root (a local directory or any fsspec URL)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.fs, root_path = files.filesystem(root)
        self.local = files.is_local(self.fs)
        self.root = root_path.rstrip("/") if self.local else str(root).rstrip("/")
        self._root_path = root_path.rstrip("/")
        self.problems: list[str] = []  # artifacts the last list() left out, and why

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    def uri(self, *parts: str) -> str:
        return files.join(self.root, *parts)

    def path(self, *parts: str) -> str:
        """The store path of ``parts`` under ``<root>/artifacts/``."""
        return "/".join([self._root_path, "artifacts", *parts])

    def get(self, stage: str, version: str) -> Artifact | None:
        """The complete artifact, or None when it does not exist or was never finished; a manifest
        that cannot be read is an error naming it."""
        manifest_path = self.path(stage, version, MANIFEST)
        try:
            if not self.fs.isfile(manifest_path):
                return None
            # One whole read (a single GET on S3): two tasks that make the same version on an object store
            # both write its manifest, and a file opened for reading fails once its object is replaced.
            manifest = json.loads(self.fs.cat_file(manifest_path))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CurationError(f"{stage} {version}: {MANIFEST} cannot be read: {e}") from e
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list) or "params" not in manifest:
            raise CurationError(f"{stage} {version}: {MANIFEST} is not an artifact manifest")
        return Artifact(stage, version, self.uri("artifacts", stage, version), manifest, self)

    def require(self, stage: str, version: str) -> Artifact:
        """The artifact, or an error naming what is missing."""
        artifact = self.get(stage, version)
        if artifact is None:
            raise CurationError(f"no complete {stage} artifact {version} under {self.root}")
        return artifact

    def list(self, stage: str | None = None) -> list[Artifact]:
        """Complete artifacts (of one stage, or all), oldest first; one with a broken manifest is
        left out and reported in :attr:`problems`, so it never hides the others."""
        self.problems = []
        stages = [stage] if stage else self._children(self.path())
        found = []
        for st in stages:
            for version in self._children(self.path(st)):
                try:
                    artifact = self.get(st, version)
                except CurationError as e:
                    self.problems.append(str(e))
                    continue
                if artifact is not None:
                    found.append(artifact)
        return sorted(found, key=lambda a: (str(a.manifest.get("created", "")), a.stage, a.version))

    def latest(self, stage: str, **params: Any) -> Artifact | None:
        """The newest complete artifact of ``stage`` whose parameters include ``params``."""
        matching = [a for a in self.list(stage) if all(a.params.get(k) == v for k, v in params.items())]
        return matching[-1] if matching else None

    def _children(self, path: str) -> builtins.list[str]:
        if not self.fs.isdir(path):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False)]
        return sorted(n for n in names if not n.startswith("."))

    def lineage(self, stage: str, version: str, _path: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
        """The artifact and, recursively, the artifacts it was made from; a cycle is an error."""
        if (stage, version) in _path:
            cycle = " -> ".join(f"{s} {v}" for s, v in (*_path, (stage, version)))
            raise CurationError(f"the lineage of {_path[0][0]} {_path[0][1]} has a cycle: {cycle}")
        artifact = self.require(stage, version)
        return {
            "stage": stage,
            "version": version,
            "params": artifact.params,
            "inputs": [
                self.lineage(i["stage"], i["version"], (*_path, (stage, version)))
                for i in artifact.manifest.get("inputs", [])
            ],
        }

    def publish(
        self, stage: str, version: str, header: dict[str, Any], build: Callable[[Output], dict[str, Any] | None]
    ) -> Artifact:
        """The artifact ``stage/version``: the existing one (a cache hit), else built and published.

        ``build(output)`` writes the stage's files and returns its stats; the files are described,
        ``header`` (params, inputs, code, ...) and the rest of the manifest written last."""
        existing = self.get(stage, version)
        if existing is not None:  # a cache hit, once it is verified
            return Artifact(stage, version, existing.uri, existing.manifest, self, cache_hit=True).verify()
        target = self.path(stage, version)
        work = (
            f"{self.path(stage)}/.{version}{_TMP}{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}" if self.local else target
        )
        output = Output(files.unstrip(self.fs, work))
        made = (
            [d for d in (self._root_path, self.path(), self.path(stage)) if not self.fs.isdir(d)] if self.local else []
        )
        if self.local:
            try:
                self.fs.makedirs(work, exist_ok=True)
            except OSError as e:
                raise CurationError(f"cannot write under the artifact root {self.root}: {e}") from e
            self._remove_stale_temporaries(stage)
        published = False
        try:
            stats = build(output) or {}
            manifest = {
                "stage": stage,
                "version": version,
                **header,
                "package": __version__,
                "created": datetime.now(UTC).isoformat(timespec="microseconds"),
                "files": output.describe(),
                "stats": stats,
            }
            with self.fs.open(f"{work}/{MANIFEST}", "wb") as f:
                f.write((json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode())
            if self.local:
                self._rename_into_place(work, target)
            published = True
        finally:
            if self.local and self.fs.exists(work):
                self.fs.rm(work, recursive=True)
            for folder in reversed(made if not published else []):  # a failed build leaves no trace
                try:
                    os.rmdir(folder)
                except OSError:  # not empty: someone else's too
                    break
        return self.require(stage, version)

    def _rename_into_place(self, work: str, target: str) -> None:
        """Make a local work folder the version folder: durable first, then one rename.  A version
        folder without a manifest (a crash of a writer before this design) is the store's own and is replaced.
        The files are synced at once, one thread each: the file system commits them together (18 shards:
        ~4 ms instead of ~40 ms one after another)."""
        paths = self.fs.find(work)
        with ThreadPoolExecutor(max_workers=max(1, min(32, len(paths)))) as pool:
            list(pool.map(_fsync, paths))
        if self.fs.isdir(target) and not self.fs.isfile(f"{target}/{MANIFEST}"):
            self.fs.rm(target, recursive=True)
        try:
            os.rename(work, target)
        except OSError:
            if not self.fs.isfile(f"{target}/{MANIFEST}"):  # not a concurrent twin that finished first
                raise

    def _remove_stale_temporaries(self, stage: str) -> None:
        """Work folders of writers on this host that died (killed mid-build): never a live one."""
        for name in self.fs.ls(self.path(stage), detail=False):
            base = name.rstrip("/").rsplit("/", 1)[-1]
            if base.startswith(".") and f"{_TMP}{HOST}-" in base:
                pid = base.split(f"{_TMP}{HOST}-", 1)[1].split("-", 1)[0]
                if pid.isdigit() and not _alive(int(pid)):
                    self.fs.rm(name, recursive=True)
