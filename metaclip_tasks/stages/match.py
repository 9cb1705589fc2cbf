"""The match stages: each snapshot's pairs against the metadata (paper section 3.2), and the token
engine's tables saved once per metadata artifact, memory-mapped by every worker."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metaclip_tasks.core import files
from metaclip_tasks.core.artifacts import DATA, Artifact
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.stage import Build, Input, Stage, find, run
from metaclip_tasks.curation.counting import COUNTS, COUNTS_DTYPE, add_counts
from metaclip_tasks.curation.matching import TABLES, Matcher
from metaclip_tasks.curation.shard_matching import match_shard
from metaclip_tasks.metadata.build import ENTRIES
from metaclip_tasks.metadata.store import load_metadata
from metaclip_tasks.runtime.tasks import each_shard, in_completion_order

MATCHER = "matcher"  # a matcher artifact's folder: matcher/<table>.npy, one per matching.TABLES
WORKER_MATCHERS: dict[tuple[str, str], Matcher] = {}  # per Dask worker process: (metadata version, backend) -> matcher


@dataclass(frozen=True)
class MatchParams:
    """The matching engine: both give the same output (so it is not part of the version)."""

    backend: str = field(
        default="tokens", metadata={"help": "matching engine", "enum": ["tokens", "ahocorasick"], "identity": False}
    )


@dataclass(frozen=True)
class MatcherBuildParams:
    """The token engine of a metadata artifact, built once: it takes no params."""


def build_matcher(build: Build) -> dict[str, Any]:
    """The token engine's tables as ``.npy`` files (deterministic: same entries, same bytes)."""
    arrays = Matcher(load_metadata(build["metadata"].stored(ENTRIES))).arrays()
    for name, array in arrays.items():
        build.output.save_array(f"{MATCHER}/{name}.npy", array)
    return {"bytes": int(sum(a.nbytes for a in arrays.values()))}


# Derived from the metadata alone, beside it: the match stage makes it on first use and its workers
# memory-map it, so neither the metadata's version nor any match's depends on it.
MATCHER_BUILD = Stage(
    "matcher_build", 1, MatcherBuildParams, build_matcher, {"metadata": Input("metadata")}, produces="matcher"
)


def saved_matcher(matcher: Artifact) -> tuple[files.Stored, ...]:
    """The files of a matcher artifact, in matching.TABLES order."""
    return tuple(matcher.stored(f"{MATCHER}/{name}.npy") for name in TABLES)


def local_matcher_file(stored: files.Stored) -> str:
    """A local path of a saved matcher file, verified: the file itself on a local root, else a copy in this
    host's temporary folder named by its sha256 (verified before it is renamed into place), which every
    worker process of the host maps."""
    fs, path = files.filesystem(stored.uri)
    if not files.is_local(fs):
        local = Path(tempfile.gettempdir()) / "metaclip-matchers" / f"{stored.sha256}.npy"
        if not local.is_file():
            local.parent.mkdir(parents=True, exist_ok=True)
            partial = local.with_name(f".{local.name}.{uuid.uuid4().hex}")
            try:
                fs.get(path, str(partial))
                files.verify(dataclasses.replace(stored, uri=str(partial)))
                os.replace(partial, local)
            finally:
                partial.unlink(missing_ok=True)
        stored, path = dataclasses.replace(stored, uri=str(local)), str(local)
    files.verify(stored)
    return path


def worker_matcher(
    entries: files.Stored, saved: Sequence[files.Stored], metadata_version: str, backend: str
) -> Matcher:
    """The matcher for a metadata version, once per worker process: the token engine memory-mapped from its
    matcher artifact (the pages shared by the host's workers), else (another backend) built from the entries."""
    key = (metadata_version, backend)
    if key not in WORKER_MATCHERS:
        WORKER_MATCHERS.clear()  # one metadata at a time keeps workers' memory bounded
        if backend == "tokens" and saved:
            WORKER_MATCHERS[key] = Matcher.load(
                {name: local_matcher_file(f) for name, f in zip(TABLES, saved, strict=True)}
            )
        else:
            WORKER_MATCHERS[key] = Matcher(load_metadata(entries), backend=backend)  # type: ignore[arg-type]
    return WORKER_MATCHERS[key]


def _match_task(
    shard: files.Stored,
    output: str,
    entries: files.Stored,
    saved: Sequence[files.Stored],
    metadata_version: str,
    backend: str,
):
    return match_shard(shard, output, worker_matcher(entries, saved, metadata_version, backend))


def _matcher_of(build: Build, metadata: Artifact) -> Artifact:
    """The metadata's matcher artifact, made now if absent. An existing one is not read here: each
    worker verifies the files it maps, so the driver does not fetch them (36 MB from an object store)."""
    assert build.store is not None  # run() always passes its store
    inputs = {"metadata": metadata}
    return find(build.store, MATCHER_BUILD, MatcherBuildParams(), inputs) or run(
        build.store, MATCHER_BUILD, MatcherBuildParams(), inputs, log=build.log
    )


def build_match(build: Build) -> dict[str, Any]:
    pairs, metadata = build["pairs"], build["metadata"]
    shards = pairs.data_files()
    outputs = [build.output.uri_of(f"{DATA}/{shard.name}") for shard in shards]
    backend = build.params.backend
    saved = saved_matcher(_matcher_of(build, metadata)) if backend == "tokens" and build.store is not None else ()
    task = {
        "entries": metadata.stored(ENTRIES),
        "saved": saved,
        "metadata_version": metadata.version,
        "backend": backend,
    }
    results = each_shard(build.client, "match", _match_task, shards, outputs, **task)
    counts = np.zeros(metadata.stats["entries"], dtype=COUNTS_DTYPE)
    summaries: list[tuple[dict[str, int], files.Stored]] = [None] * len(shards)  # type: ignore[list-item]
    for i, result in in_completion_order(build.client, results):  # sparse counts added as results arrive
        if result.num_entries != len(counts):
            raise CurationError(
                f"match: {shards[i].name} was counted against {result.num_entries} entries, not {len(counts)}"
            )
        add_counts(counts, result.entries, result.counts, shards[i].name)
        summaries[i] = (result.stats, result.written)
    build.record([w for _, w in summaries])
    build.output.save_array(COUNTS, counts)
    totals = {k: sum(s[k] for s, _ in summaries) for k in summaries[0][0]}
    per_shard = {w.name: s for s, w in summaries}
    return {"snapshot": pairs.stats["snapshot"], **totals, "entries": len(counts), "shards": per_shard}


MATCH = Stage(
    "match", 1, MatchParams, build_match, {"pairs": Input("pairs"), "metadata": Input("metadata")}, produces="matched"
)
