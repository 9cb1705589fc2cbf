"""The pool stages: a pool's per-entry counts and its t (paper sections 3.3-3.4), de-duplicated across
its snapshots, and the curated subset for one t and seed (sections 3.4-3.5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metaclip_tasks.core import files
from metaclip_tasks.core.artifacts import DATA, Artifact
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.shards import MATCHED_SCHEMA, ShardReader, part_name
from metaclip_tasks.core.snapshots import snapshot_date
from metaclip_tasks.core.stage import Build, Input, Stage
from metaclip_tasks.curation.balancing import (
    ShardBalance,
    balance_shard,
    balance_summary,
    entry_probabilities,
    t_for_tail_ratio,
    tail_ratio,
    tail_ratio_warning,
)
from metaclip_tasks.curation.counting import COUNTS, COUNTS_DTYPE, load_counts, sum_counts, top_entries
from metaclip_tasks.curation.report import STANDARD_TS, plot_entry_counts, tail_ratios
from metaclip_tasks.ingest.dedup import first_occurrences, shard_keys
from metaclip_tasks.metadata.build import ENTRIES
from metaclip_tasks.metadata.store import load_metadata
from metaclip_tasks.runtime.cluster import tree_sum
from metaclip_tasks.runtime.tasks import each_shard, map_shards


@dataclass(frozen=True)
class PoolCountsParams:
    pool: str = field(metadata={"help": "the pool's name (metaclip_tasks/core/pools.toml or $METACLIP_POOLS)"})
    target_tail_ratio: float = field(
        default=0.06,
        metadata={
            "help": "the share of matches in tail entries (count < t) that picks the pool's t",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1,
        },
    )


def metadata_of(matched: Sequence[Artifact]) -> str:
    """The one metadata version a set of matched snapshots was made from."""
    versions = {i["version"] for a in matched for i in a.manifest["inputs"] if i["stage"] == "metadata"}
    if len(versions) != 1:
        raise CurationError(f"the snapshots were matched against different metadata versions: {sorted(versions)}")
    return versions.pop()


DUPLICATES = "duplicates"  # pool_counts: per matched shard, the rows whose pair an earlier row already has


def _rows_counts(shard: files.Stored, rows: np.ndarray, num_entries: int) -> np.ndarray:
    """The per-entry counts of some rows of a matched shard."""
    with ShardReader(shard, ["matched_entry_ids"]) as reader:
        reader.require_int_lists("matched_entry_ids")
        ids = pa.chunked_array([b.column(0) for b in reader.batches()], MATCHED_SCHEMA.field("matched_entry_ids").type)
    chosen = pc.take(ids, pa.array(rows)).combine_chunks() if len(rows) else pa.array([], ids.type)
    return np.bincount(chosen.flatten().to_numpy(zero_copy_only=False), minlength=num_entries).astype(COUNTS_DTYPE)


def pool_duplicates(build: Build, matched: Sequence[Artifact]) -> dict[str, np.ndarray]:
    """The matched rows whose (url, text) an earlier row of the pool already has, by shard name
    (``<snapshot>/<part>``): snapshots in crawl order, so the earliest crawl keeps a pair whatever
    order they were ingested and matched in."""
    chronological = sorted(matched, key=lambda a: snapshot_date(a.stats["snapshot"]))
    shards = [(f"{a.stats['snapshot']}/{s.name}", s) for a in chronological for s in a.data_files()]
    firsts = first_occurrences(map_shards(build.client, "pool keys", shard_keys, [s for _, s in shards]))
    return {name: np.flatnonzero(~first) for (name, _), first in zip(shards, firsts, strict=True) if not first.all()}


def duplicate_rows(counts_artifact: Artifact, snapshot: str, shard: files.Stored) -> np.ndarray | None:
    """The rows of one matched shard that a pool's counts left out as duplicates, or None."""
    name = f"{DUPLICATES}/{snapshot}/{shard.name.removesuffix('.parquet')}.npy"
    return counts_artifact.read_array(name) if name in counts_artifact.files(".npy", under=DUPLICATES) else None


def build_pool_counts(build: Build) -> dict[str, Any]:
    params: PoolCountsParams = build.params
    matched, metadata = build["matched"], build["metadata"]
    if metadata_of(matched) != metadata.version:
        raise CurationError(
            f"the snapshots were matched against metadata {metadata_of(matched)}, not {metadata.version}"
        )
    snapshots = [a.stats["snapshot"] for a in matched]
    counts = sum_counts([load_counts(a.stored(COUNTS)) for a in matched], names=snapshots)
    entries = load_metadata(metadata.stored(ENTRIES))
    if len(entries) != len(counts):
        raise CurationError(
            f"the counts have {len(counts):,} entries, metadata {metadata.version} has {len(entries):,}"
        )
    matches_with_duplicates = int(counts.sum())
    duplicates = pool_duplicates(build, matched)
    shard_of = {f"{a.stats['snapshot']}/{s.name}": s for a in matched for s in a.data_files()}
    names = sorted(duplicates)
    for name, rows in zip(
        names,
        map_shards(
            build.client,
            "duplicates",
            _rows_counts,
            [shard_of[n] for n in names],
            [duplicates[n] for n in names],
            num_entries=len(counts),
        ),
        strict=True,
    ):
        counts -= rows
        build.output.save_array(f"{DUPLICATES}/{name.removesuffix('.parquet')}.npy", duplicates[name].astype(np.int64))
    t = t_for_tail_ratio(counts, params.target_tail_ratio)
    warning = tail_ratio_warning(counts, params.target_tail_ratio, t)
    build.output.save_array(COUNTS, counts)
    table = pa.table({"entry_id": pa.array(np.arange(len(counts), dtype=np.int32)), "entry": entries, "count": counts})
    with build.output.writer(f"{DATA}/{part_name(0)}") as f:
        pq.write_table(table, f, compression="zstd")
    top = top_entries(counts, entries, 20)
    build.output.write_json("top_entries.json", [{"entry": e, "count": n} for e, n in top])
    with build.output.writer("entry_counts.png") as f:
        plot_entry_counts(counts, t, f, f"{params.pool}: cumulative counts, tail to head")
    per_snapshot = {s: sum(len(rows) for n, rows in duplicates.items() if n.startswith(f"{s}/")) for s in snapshots}
    return {
        "snapshots": snapshots,
        "matches": int(counts.sum()),
        "matches_with_duplicates": matches_with_duplicates,
        "duplicate_pairs": per_snapshot,
        "entries": len(counts),
        "entries_never_matched": int((counts == 0).sum()),
        "t": t,
        "tail_ratio": tail_ratio(counts, t),
        "head_entries": int((counts >= t).sum()),
        "tail_ratios": tail_ratios(counts, STANDARD_TS),
        "top_entries": top[:5],
        "warnings": [warning] if warning else [],  # the target tail ratio not reachable on this pool
    }


POOL_COUNTS = Stage(
    "pool_counts",
    2,
    PoolCountsParams,
    build_pool_counts,
    {"matched": Input("matched", many=True), "metadata": Input("metadata")},
)


# -- balance: the curated subset for one t and seed (sections 3.4-3.5) ----------------------------------


@dataclass(frozen=True)
class BalanceParams:
    t: int = field(metadata={"help": "the cap per entry", "minimum": 1})
    seed: int = field(
        default=0,
        metadata={
            "help": "sampling seed (one seed: a smaller t's subset is inside a larger t's)",
            "minimum": 0,
            "maximum": 2**64 - 1,
        },
    )


def _balance_task(
    shard: files.Stored, output: str, drop: np.ndarray | None, probs: np.ndarray, seed: int
) -> tuple[ShardBalance, files.Stored]:
    return balance_shard(shard, output, probs, seed, drop=drop)


def build_balance(build: Build) -> dict[str, Any]:
    params: BalanceParams = build.params
    counts_artifact, matched = build["pool_counts"], build["matched"]
    counted = [i["version"] for i in counts_artifact.manifest["inputs"] if i["stage"] == "matched"]
    if counted != [a.version for a in matched]:
        raise CurationError(f"the matched snapshots are not the ones pool_counts {counts_artifact.version} counted")
    counts = load_counts(counts_artifact.stored(COUNTS))
    probs = entry_probabilities(counts, params.t)
    jobs = [
        (
            s,
            build.output.uri_of(f"{DATA}/{a.stats['snapshot']}/{s.name}"),
            duplicate_rows(counts_artifact, a.stats["snapshot"], s),
        )
        for a in matched
        for s in a.data_files()
    ]
    shared_probs = probs if build.client is None else build.client.scatter(probs, broadcast=True)
    results = each_shard(build.client, "balance", _balance_task, *zip(*jobs), probs=shared_probs, seed=params.seed)
    if build.client is None:
        total = sum((r for r, _ in results), ShardBalance.zero(len(counts)))
        written = [w for _, w in results]
    else:
        futures = results
        total = tree_sum(build.client, build.client.map(lambda r: r[0], futures))
        written = build.client.gather(build.client.map(lambda r: r[1], futures))
    build.record(written)
    build.output.save_array("kept_counts.npy", total.kept_counts)
    return {"pool": counts_artifact.params["pool"], **balance_summary(counts, params.t, params.seed, total)}


BALANCE = Stage(
    "balance",
    2,
    BalanceParams,
    build_balance,
    {"pool_counts": Input("pool_counts"), "matched": Input("matched", many=True)},
    produces="curated",
)
