"""Decisions from the pairs to a curated subset: the default metadata, which pairs a snapshot's match
takes, which matched snapshots make a pool, how t is chosen for a pool, what a curated subset is."""

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from metaclip_tasks.core import params as P
from metaclip_tasks.core.artifacts import Artifact, ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.snapshots import Pool, check_snapshot, get_pool, snapshot_for_date
from metaclip_tasks.core.stage import find, run
from metaclip_tasks.curation.balancing import resolve_t, tail_ratio_warning
from metaclip_tasks.curation.counting import COUNTS, load_counts
from metaclip_tasks.metadata.build import MetadataBuildParams
from metaclip_tasks.stages import (
    BALANCE,
    INGEST,
    MATCH,
    METADATA_BUILD,
    PAIRS_IMPORT,
    POOL_COUNTS,
    BalanceParams,
    IngestParams,
    MatchParams,
    PairsImportParams,
    PoolCountsParams,
    ingest_inputs,
)

WORDNET_ONLY = MetadataBuildParams(sources=("wordnet",))  # MetaCLIP's WordNet entries: the default metadata


def metadata(store: ArtifactStore, version: str | None = None) -> Artifact:
    """The metadata artifact ``version``; None (or empty): MetaCLIP's WordNet metadata (built once, then a cache hit)."""
    return store.require("metadata", version) if version else run(store, METADATA_BUILD, WORDNET_ONLY)


def existing_metadata(store: ArtifactStore, version: str | None = None) -> Artifact | None:
    """The metadata artifact ``version`` (None or empty: the WordNet metadata) if it exists; never builds it."""
    return store.require("metadata", version) if version else find(store, METADATA_BUILD, WORDNET_ONLY)


KEY_STATS = {
    "metadata": ("entries", "by_source"),
    "pairs": ("snapshot", "pairs", "shards"),
    "matched": ("snapshot", "pairs_in", "pairs_matched", "matches"),
    "pool_counts": ("t", "tail_ratio", "head_entries", "entries", "matches", "warnings"),
    "curated": ("pool", "t", "seed", "tail_ratio", "kept", "expected_kept", "pairs_in"),
    "downloaded": ("count", "successes"),
    "download_view": ("t", "samples"),
    "checkpoint": ("model", "samples", "epochs", "device"),
    "t_ablation": ("pool", "nested"),
}
KEY_PARAMS = ("pool", "target_tail_ratio", "snapshot")


def key_stats(artifact: Artifact) -> dict[str, Any]:
    """An artifact's figures worth a glance (what its asset event carries): a few stats and params by stage."""
    stats, params = artifact.stats, artifact.params
    found = {k: params[k] for k in KEY_PARAMS if k in params}
    found.update({k: stats[k] for k in KEY_STATS.get(artifact.stage, ()) if k in stats})
    if artifact.stage == "metrics":
        found["zero_shot_top1"] = stats.get("zero_shot", {}).get("top1")
    if artifact.stage == "t_ablation":
        found["ts"] = [row["t"] for row in stats.get("rows", [])]
    return found


def latest_pairs(store: ArtifactStore, snapshot: str) -> Artifact:
    """The newest pairs artifact of ``snapshot``; none is an error that says how to make one."""
    check_snapshot(snapshot)  # a bad id is named even in an empty store
    found = [a for a in store.list("pairs") if a.params.get("snapshot") == snapshot]
    if not found:
        raise CurationError(
            f"no pairs of {snapshot} under {store.root}: import them first (metaclip pairs-import --snapshot {snapshot} --sources FILES...)"
        )
    return found[-1]


def match(
    store: ArtifactStore, pairs: Artifact, meta: Artifact, client: Any = None, backend: str = "tokens"
) -> Artifact:
    """A snapshot's pairs matched against ``meta`` (a cache hit when done before)."""
    return run(store, MATCH, MatchParams(backend), {"pairs": pairs, "metadata": meta}, client=client)


def match_snapshot(
    store: ArtifactStore, snapshot: str, meta: Artifact, client: Any = None, backend: str = "tokens"
) -> Artifact:
    """The snapshot's newest pairs matched against ``meta``."""
    return match(store, latest_pairs(store, snapshot), meta, client, backend)


def run_snapshot(snapshot: str | None, logical_date: date | None) -> str:
    """A scheduled run's snapshot: the one asked for, else the crawl of the run's logical date."""
    if snapshot:
        return check_snapshot(snapshot)
    if logical_date is not None:
        return snapshot_for_date(logical_date)
    raise CurationError("a manual run needs the snapshot parameter")


def snapshot_pairs(
    store: ArtifactStore,
    snapshot: str,
    *,
    raw_source: str | None = None,
    pairs_source: str | None = None,
    ingest: Mapping[str, Any] | None = None,
    pairs_import: Mapping[str, Any] | None = None,
    cluster: Callable[[int], AbstractContextManager[Any]] = lambda work: nullcontext(),
) -> Artifact:
    """The pairs a snapshot's match takes: ingested from its raw files when ``raw_source`` is given
    (``commoncrawl``: the crawl's own files; else files, a directory or glob with ``{snapshot}``
    replaced), else imported from ``pairs_source`` parquet files, else its newest pairs artifact.
    ``ingest`` and ``pairs_import`` hold further params of those stages; ``cluster(work)`` gives the
    Dask client for ``work`` files."""
    if raw_source:
        source = snapshot if raw_source == "commoncrawl" else raw_source.replace("{snapshot}", snapshot)
        params = P.from_mapping(IngestParams, {**(ingest or {}), "snapshot": snapshot, "sources": [source]})
        with cluster(len(ingest_inputs(params))) as client:
            return run(store, INGEST, params, client=client)
    if pairs_source:
        source = pairs_source.replace("{snapshot}", snapshot)
        return run(
            store,
            PAIRS_IMPORT,
            P.from_mapping(PairsImportParams, {**(pairs_import or {}), "snapshot": snapshot, "sources": [source]}),
        )
    return latest_pairs(store, snapshot)


def pool_matched(
    store: ArtifactStore, pool: Pool, meta: Artifact | None, *, required: bool = True
) -> list[Artifact] | None:
    """The newest matched artifact of each of the pool's snapshots made from ``meta``, in pool order;
    None (or an error, if required) while some snapshot is not matched yet (all of them without ``meta``)."""
    found: dict[str, Artifact] = {}
    wanted = ("metadata", meta.version) if meta is not None else None
    for artifact in store.list("matched") if wanted else []:  # oldest first: the newest wins
        made_from = {(i["stage"], i["version"]) for i in artifact.manifest["inputs"]}
        if artifact.stats.get("snapshot") in pool.snapshots and wanted in made_from:
            found[artifact.stats["snapshot"]] = artifact
    missing = [s for s in pool.snapshots if s not in found]
    if missing and required:
        raise CurationError(f"pool {pool.name}: {len(missing)} snapshots are not matched yet: {', '.join(missing[:5])}")
    return None if missing else [found[s] for s in pool.snapshots]


def count_pool(store: ArtifactStore, pool: Pool, meta: Artifact, matched: Sequence[Artifact] | None = None) -> Artifact:
    """The pool's summed counts and its t for the pool's target tail ratio."""
    matched = matched if matched is not None else pool_matched(store, pool, meta)
    return run(
        store, POOL_COUNTS, PoolCountsParams(pool.name, pool.target_tail_ratio), {"matched": matched, "metadata": meta}
    )


@dataclass(frozen=True)
class Subset:
    """A curated subset: a pool balanced for t (given, or chosen for a target tail ratio) and a seed."""

    pool: str = field(
        default="pool1",
        metadata={"help": "the named set of snapshots (metaclip_tasks/core/pools.toml or $METACLIP_POOLS)"},
    )
    t: int | None = field(
        default=None, metadata={"help": "the cap per entry; empty: chosen by the target tail ratio", "minimum": 1}
    )
    target_tail_ratio: float | None = field(
        default=None,
        metadata={
            "help": "share of matches in tail entries (count < t); empty: the pool's (0.06)",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1,
            "title": "Target tail ratio",
        },
    )
    seed: int = field(default=0, metadata={"help": "sampling seed (one seed: nested subsets)", "minimum": 0})
    metadata_version: str | None = field(
        default=None, metadata={"help": "a metadata artifact version; empty: MetaCLIP's WordNet metadata"}
    )


def check_t_choice(t: int | None, ratio: float | None) -> None:
    if t is not None and ratio is not None:
        raise CurationError(f"give t ({t}) or target_tail_ratio ({ratio}), not both")


def check_subset(store: ArtifactStore, subset: Subset) -> Pool:
    """A subset's params refused before any work when bad: types, t and ratio, the pool, its matches."""
    subset = P.check(subset)
    check_t_choice(subset.t, subset.target_tail_ratio)
    pool = get_pool(subset.pool)
    pool_matched(store, pool, existing_metadata(store, subset.metadata_version))
    return pool


def pool_t(counts: Artifact, t: int | None, target_tail_ratio: float | None) -> int:
    """t as given, or the t of the pool's counts closest to the target tail ratio (the pool's by default)."""
    check_t_choice(t, target_tail_ratio)
    if t is None and target_tail_ratio in (None, counts.params["target_tail_ratio"]):
        return int(counts.stats["t"])  # chosen when the pool was counted
    return resolve_t(load_counts(counts.stored(COUNTS)), t, target_tail_ratio)


def t_warnings(counts: Artifact, t: int | None, target_tail_ratio: float | None) -> list[str]:
    """Why the t chosen for a target tail ratio (the pool's by default) may not be what was asked: the
    target is not reachable on the pool's counts; none for a t given as such (nothing was aimed at)."""
    check_t_choice(t, target_tail_ratio)
    if t is not None:
        return []
    if target_tail_ratio in (None, counts.params["target_tail_ratio"]) and "warnings" in counts.stats:
        return list(counts.stats["warnings"])  # found when the pool was counted
    target = counts.params["target_tail_ratio"] if target_tail_ratio is None else target_tail_ratio
    warning = tail_ratio_warning(load_counts(counts.stored(COUNTS)), target, pool_t(counts, None, target_tail_ratio))
    return [warning] if warning else []


def counted_pool(store: ArtifactStore, pool_name: str, metadata_version: str | None = None) -> Artifact:
    """A pool's counts artifact (a cache hit once counted)."""
    pool = get_pool(pool_name)
    meta = existing_metadata(store, metadata_version)
    matched = pool_matched(store, pool, meta)
    assert meta is not None  # pool_matched refuses a pool without metadata
    return count_pool(store, pool, meta, matched)


def balance(store: ArtifactStore, counts: Artifact, t: int, seed: int, client: Any = None) -> Artifact:
    """The curated subset of a counted pool for one t and seed."""
    return run(
        store,
        BALANCE,
        BalanceParams(t, seed),
        {"pool_counts": counts, "matched": counts.inputs("matched")},
        client=client,
    )


def curated_subset(store: ArtifactStore, subset: Subset, client: Any = None) -> Artifact:
    """The pool's balanced subset for the subset's t (or ratio) and seed: balanced unless cached."""
    subset = P.check(subset)
    counts = counted_pool(store, subset.pool, subset.metadata_version)
    return balance(store, counts, pool_t(counts, subset.t, subset.target_tail_ratio), subset.seed, client)
