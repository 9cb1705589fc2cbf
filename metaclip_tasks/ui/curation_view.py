"""The curation view's data: JSON payloads of a pool's counts for the Airflow plugin's pages.

For a ``pool_counts`` artifact: the entry-count distribution (sorted, log-log), the cumulative
curve from tail to head, raw and balanced (the paper's Fig. 2), the t <-> tail-ratio curve with
the expected matches kept for any t (``sum(min(count, t))``, an upper bound of the curated pairs:
a pair matching several entries is kept once), the top entries (Table 3), the lineage of
artifacts and the t ablation made from it.  Curves over :data:`MAX_POINTS` points are sampled on
the server, exactly at both ends and at t.  A version's counts are loaded once per process:
artifacts are immutable.  No Airflow here; the plugin ``plugins/metaclip_curation_view.py`` serves it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

from metaclip_tasks import stages
from metaclip_tasks.core.artifacts import Artifact, ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.curation.counting import COUNTS, COUNTS_DTYPE, load_counts

PREFIX = "/metaclip"  # where the plugin mounts the view
POOL_COUNTS, CURATED, ABLATION = (s.artifact for s in (stages.POOL_COUNTS, stages.BALANCE, stages.ABLATION))
MAX_POINTS = 2000  # points of a curve sent to the browser
TOP_K = 50
_STAGE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_VERSION = re.compile(r"[0-9a-f]{16}")


def view_url(stage: str, version: str, base: str = "") -> str:
    """The artifact's page in the curation view (below the API server's ``base`` path), for task links."""
    return f"{base.rstrip('/')}{PREFIX}/artifacts/{stage}/{version}"


def pool_url(version: str, base: str = "") -> str:
    """The charts page of a pool_counts artifact."""
    return f"{base.rstrip('/')}{PREFIX}/pool_counts/{version}"


def check_ref(stage: str, version: str) -> None:
    """Refuse names that are not a stage and a version (a URL's path must never leave the store)."""
    if not (_STAGE.fullmatch(stage) and _VERSION.fullmatch(version)):
        raise CurationError(f"no artifact {stage!r} {version!r}: not a stage name and a 16-hex-digit version")


def artifact_ref(value: Any) -> tuple[str, str] | None:
    """(stage, version) of a task's summary (an XCom value: a dict or its JSON), or None."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict):
        return None
    stage, version = value.get("stage"), value.get("version")
    if not (
        isinstance(stage, str) and isinstance(version, str) and _STAGE.fullmatch(stage) and _VERSION.fullmatch(version)
    ):
        return None
    return stage, version


def require(store: ArtifactStore, stage: str, version: str) -> Artifact:
    """The artifact a URL names, checked; missing or malformed names are a CurationError."""
    check_ref(stage, version)
    return store.require(stage, version)


# -- sampling ------------------------------------------------------------------------------------


def sample_positions(n: int, exact: Iterable[int] = (), points: int = MAX_POINTS) -> np.ndarray:
    """Sorted distinct positions in [0, n): all of them when n <= points, else at most ``points``:
    the ends, ``exact`` and the rest log-spaced from each end and evenly spaced between (log axes
    and the head's steep end both keep their shape)."""
    if n <= points:
        return np.arange(n, dtype=np.int64)
    fixed = np.unique(np.clip(np.fromiter([0, n - 1, *exact], dtype=np.int64), 0, n - 1))
    per = max((points - len(fixed)) // 3, 1)
    logs = np.unique(np.geomspace(1, n, per).astype(np.int64) - 1)
    filled = np.concatenate([fixed, logs, n - 1 - logs, np.linspace(0, n - 1, per).astype(np.int64)])
    chosen = np.unique(filled)
    if len(chosen) > points:  # drop the evenly spread ones the log sets already crowd, never a fixed one
        others = np.setdiff1d(chosen, fixed)
        keep = others[np.linspace(0, len(others) - 1, points - len(fixed)).astype(np.int64)]
        chosen = np.union1d(fixed, keep)
    return chosen


# -- a pool's counts, loaded once per version ---------------------------------------------------


@dataclass(frozen=True)
class PoolCounts:
    """A pool_counts artifact's counts in the orders the curves need."""

    artifact: Artifact
    counts: np.ndarray  # per entry id
    by_count: np.ndarray  # entry ids, most matched first (ties: lower id first)
    ascending: np.ndarray  # counts sorted from tail to head
    cumulative: np.ndarray  # cumulative sum of ``ascending``
    distinct: np.ndarray  # distinct counts, ascending
    entries: pa.ChunkedArray  # entry strings by id

    @property
    def t(self) -> int:
        return int(self.artifact.stats["t"])

    @property
    def total(self) -> int:
        return int(self.cumulative[-1])

    def mass_below(self, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each t: the matches of entries with count < t, and how many entries have count < t."""
        tail = np.searchsorted(self.ascending, np.asarray(ts, dtype=COUNTS_DTYPE), side="left")
        mass = np.where(tail > 0, self.cumulative[np.maximum(tail - 1, 0)], 0)
        return mass.astype(np.int64), tail.astype(np.int64)

    def names(self, ids: np.ndarray) -> list[str]:
        return self.entries.take(pa.array(ids, pa.int64())).to_pylist()


def sorted_pool(artifact: Artifact, counts: np.ndarray, entries: pa.ChunkedArray) -> PoolCounts:
    """A pool's counts sorted and summed once for every curve."""
    if not len(counts) or not counts.any():
        raise CurationError(f"pool_counts {artifact.version} has no matches")
    if len(entries) != len(counts):
        raise CurationError(f"pool_counts {artifact.version} names {len(entries):,} entries for {len(counts):,} counts")
    counts = np.asarray(counts, dtype=COUNTS_DTYPE)
    by_count = np.lexsort((np.arange(len(counts)), np.iinfo(COUNTS_DTYPE).max - counts))
    ascending = counts[by_count][::-1].copy()
    return PoolCounts(
        artifact, counts, by_count, ascending, np.cumsum(ascending, dtype=COUNTS_DTYPE), np.unique(ascending), entries
    )


@lru_cache(maxsize=8)
def load_pool(root: str, version: str) -> PoolCounts:
    """The counts of pool_counts ``version`` under ``root``, loaded once per process (artifacts are immutable)."""
    artifact = require(ArtifactStore(root), POOL_COUNTS, version)
    entries = artifact.dataset().to_table(columns=["entry_id", "entry"]).sort_by("entry_id")["entry"]
    return sorted_pool(artifact, load_counts(artifact.stored(COUNTS)), entries)


# -- the payloads --------------------------------------------------------------------------------


def pool_t(pool: PoolCounts, t: int | None) -> int:
    """The t asked for, else the pool's; an integer >= 1."""
    if t is None:
        return pool.t
    if t < 1:
        raise CurationError(f"t must be an integer >= 1, got {t}")
    return int(t)


def at_t(pool: PoolCounts, t: int) -> dict[str, Any]:
    """What a cap t means for the pool, exactly: tail ratio, head entries, expected matches kept."""
    mass, tail = (int(v[0]) for v in pool.mass_below(np.array([t])))
    head = len(pool.ascending) - tail
    return {
        "t": t,
        "tail_ratio": mass / pool.total,
        "head_entries": head,
        "tail_entries": tail,
        "expected_matches": mass + t * head,
        "matches": pool.total,
    }


def distribution(pool: PoolCounts) -> dict[str, Any]:
    """Entry counts sorted from the most matched, for a log-log plot (entries never matched left out)."""
    matched = int(np.count_nonzero(pool.counts))
    head = int(np.count_nonzero(pool.counts >= pool.t))
    ranks = sample_positions(matched, [head - 1, head])
    ids = pool.by_count[ranks]
    return {
        "rank": (ranks + 1).tolist(),
        "count": pool.counts[ids].tolist(),
        "entry": pool.names(ids),
        "entries": len(pool.counts),
        "matched_entries": matched,
        "t": pool.t,
        "head_entries": head,
    }


def cumulative(pool: PoolCounts, t: int | None = None) -> dict[str, Any]:
    """Fig. 2: cumulative matches over entries from tail to head, raw and capped at t (t marked
    by the first head entry); the balanced sum is computed at the sampled points only."""
    t = pool_t(pool, t)
    n = len(pool.ascending)
    _, tail = (int(v[0]) for v in pool.mass_below(np.array([t])))
    positions = sample_positions(n, [tail - 1, tail])
    raw = pool.cumulative[positions].astype(np.int64)
    below = int(pool.cumulative[tail - 1]) if tail else 0
    balanced = np.where(positions < tail, raw, below + (positions - tail + 1) * t)
    return {
        "position": (positions + 1).tolist(),
        "raw": raw.tolist(),
        "balanced": balanced.tolist(),
        "t": t,
        "entries": n,
        "tail_entries": tail,
        "head_entries": n - tail,
        "matches": pool.total,
        "expected_matches": below + (n - tail) * t,
    }


def t_curve(pool: PoolCounts, curated: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Tail ratio and expected matches kept against t at the t where they change (t = 1 and each
    distinct count + 1), sampled log-evenly, exact at both ends and at the pool's t; with the
    curated subsets made from the pool as measured points."""
    breaks = np.unique(np.concatenate([[1], pool.distinct + 1]))
    if len(breaks) > MAX_POINTS:
        wanted = np.geomspace(1, breaks[-1], MAX_POINTS - 3)
        breaks = np.unique(
            np.concatenate([breaks[[0, -1]], breaks[np.clip(np.searchsorted(breaks, wanted), 0, len(breaks) - 1)]])
        )
    ts = np.union1d(breaks, [pool.t]).astype(np.int64)
    mass, tail = pool.mass_below(ts)
    head = len(pool.ascending) - tail
    return {
        "t": ts.tolist(),
        "tail_ratio": (mass / pool.total).tolist(),
        "expected_matches": (mass + ts * head).tolist(),
        "tail_mass": mass.tolist(),
        "head_entries": head.tolist(),
        "pool_t": pool.t,
        "matches": pool.total,
        "max_count": int(pool.ascending[-1]),
        "curated": list(curated),
    }


def top_entries(pool: PoolCounts, t: int | None = None, k: int = TOP_K) -> dict[str, Any]:
    """Table 3: the most matched entries with their count capped at t and keep probability min(1, t/count)."""
    t = pool_t(pool, t)
    ids = pool.by_count[: max(0, min(k, len(pool.counts)))]
    counts = pool.counts[ids]
    rows = [
        {
            "rank": i + 1,
            "entry_id": int(e),
            "entry": name,
            "count": int(c),
            "balanced": min(int(c), t),
            "keep_probability": min(1.0, t / int(c)) if c else 1.0,
        }
        for i, (e, name, c) in enumerate(zip(ids, pool.names(ids), counts, strict=True))
    ]
    return {"t": t, "rows": rows}


# -- the store around an artifact ---------------------------------------------------------------


def node(artifact: Artifact, base: str = "") -> dict[str, Any]:
    """One artifact as the lineage lists it."""
    return {
        "stage": artifact.stage,
        "version": artifact.version,
        "created": artifact.manifest.get("created"),
        "url": view_url(artifact.stage, artifact.version, base),
        "inputs": [
            {"stage": i["stage"], "version": i["version"], "role": i.get("role")}
            for i in artifact.manifest.get("inputs", [])
        ],
    }


def lineage(store: ArtifactStore, artifact: Artifact, base: str = "") -> list[dict[str, Any]]:
    """The artifacts it was made from (recursively, from the pairs) and those made from it (to the
    results), each once, oldest first: an input is always older than what it made."""
    found: dict[tuple[str, str], tuple[Artifact, str]] = {}
    todo = [artifact]
    while todo:
        a = todo.pop()
        if (a.stage, a.version) not in found:
            found[(a.stage, a.version)] = (a, "input")
            todo += a.inputs()
    made_from = {(a.stage, a.version): a for a in store.list()}
    reached = {(artifact.stage, artifact.version)}
    for key, a in sorted(made_from.items(), key=lambda kv: str(kv[1].manifest.get("created", ""))):
        if any((i["stage"], i["version"]) in reached for i in a.manifest.get("inputs", [])):
            reached.add(key)
            found.setdefault(key, (a, "output"))
    found[(artifact.stage, artifact.version)] = (artifact, "self")
    ordered = sorted(found.values(), key=lambda ar: (str(ar[0].manifest.get("created", "")), ar[0].stage))
    return [{**node(a, base), "relation": relation} for a, relation in ordered]


def made_from(store: ArtifactStore, stage: str, version: str, kind: str) -> list[Artifact]:
    """Artifacts of ``kind`` with ``stage``/``version`` among their direct inputs, oldest first."""
    return [
        a
        for a in store.list(kind)
        if any(i["stage"] == stage and i["version"] == version for i in a.manifest.get("inputs", []))
    ]


def curated_points(store: ArtifactStore, version: str, base: str = "") -> list[dict[str, Any]]:
    """The curated subsets made from pool_counts ``version``: t, pairs kept and expected, tail ratio."""
    return [
        {
            "t": a.stats.get("t"),
            "seed": a.stats.get("seed"),
            "kept": a.stats.get("kept"),
            "expected_kept": a.stats.get("expected_kept"),
            "tail_ratio": a.stats.get("tail_ratio"),
            "version": a.version,
            "url": view_url(a.stage, a.version, base),
        }
        for a in made_from(store, POOL_COUNTS, version, CURATED)
    ]


def ablation(store: ArtifactStore, version: str, base: str = "") -> dict[str, Any] | None:
    """The newest t ablation of pool_counts ``version`` (the paper's Table 6), or None."""
    found = made_from(store, POOL_COUNTS, version, ABLATION)
    if not found:
        return None
    newest = found[-1]
    rows = [{**r, "url": view_url(CURATED, r["version"], base)} for r in newest.stats.get("rows", [])]
    return {
        "version": newest.version,
        "url": view_url(newest.stage, newest.version, base),
        "nested": newest.stats.get("nested"),
        "rows": rows,
    }


def summary(artifact: Artifact, base: str = "") -> dict[str, Any]:
    """An artifact's manifest in brief: where, when, from what, with which params and stats."""
    files = artifact.manifest.get("files", [])
    return {
        **node(artifact, base),
        "uri": artifact.uri,
        "package": artifact.manifest.get("package"),
        "params": artifact.params,
        "stats": artifact.stats,
        "files": len(files),
        "bytes": sum(f.get("bytes", 0) for f in files),
        "pool_url": pool_url(artifact.version, base) if artifact.stage == POOL_COUNTS else None,
    }


def pools(store: ArtifactStore, base: str = "") -> list[dict[str, Any]]:
    """Each pool with its pool_counts artifacts, newest first (pools by their newest artifact)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for a in reversed(store.list(POOL_COUNTS)):
        s = a.stats
        grouped.setdefault(str(a.params.get("pool")), []).append(
            {
                "version": a.version,
                "created": a.manifest.get("created"),
                "t": s.get("t"),
                "tail_ratio": s.get("tail_ratio"),
                "target_tail_ratio": a.params.get("target_tail_ratio"),
                "entries": s.get("entries"),
                "matches": s.get("matches"),
                "snapshots": s.get("snapshots", []),
                "url": pool_url(a.version, base),
                "artifact_url": view_url(a.stage, a.version, base),
            }
        )
    return [{"pool": name, "artifacts": rows} for name, rows in grouped.items()]


def pool_payload(root: str, version: str, base: str = "") -> dict[str, Any]:
    """Everything the pool page shows, in one JSON object."""
    pool = load_pool(root, version)
    store = pool.artifact.store or ArtifactStore(root)
    return {
        "artifact": summary(pool.artifact, base),
        "distribution": distribution(pool),
        "cumulative": cumulative(pool),
        "t_curve": t_curve(pool, curated_points(store, version, base)),
        "top": top_entries(pool),
        "lineage": lineage(store, pool.artifact, base),
        "ablation": ablation(store, version, base),
    }
