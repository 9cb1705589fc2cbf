"""Airflow glue shared by the thin DAG files: assets, typed parameters, the artifact store,
the Dask cluster and the mapping of bad input to a failure that is not retried."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import Asset, Param
from airflow.sdk.exceptions import AirflowFailException

from metaclip_tasks import pipeline
from metaclip_tasks.artifacts import Artifact, ArtifactStore
from metaclip_tasks.cluster import dask_client
from metaclip_tasks.errors import CurationError
from metaclip_tasks.settings import artifact_root
from metaclip_tasks.snapshots import SNAPSHOTS, Pool, get_pool, load_pools

MATCHED_ASSET = Asset("metaclip.matched")
POOL_COUNTS_ASSET = Asset("metaclip.pool_counts")
CURATED_ASSET = Asset("metaclip.curated")
DASK_RETRIES = {"retries": 2}  # tasks that use Dask or storage; bad input fails at once (no retry)


def store() -> ArtifactStore:
    return ArtifactStore(artifact_root())


def dask_address() -> str | None:
    """``$DASK_SCHEDULER_ADDRESS``, else the Airflow connection ``dask_default``, else None (local)."""
    if os.environ.get("DASK_SCHEDULER_ADDRESS"):
        return os.environ["DASK_SCHEDULER_ADDRESS"]
    try:
        from airflow.sdk import Connection

        conn = Connection.get("dask_default")
    except Exception:  # no such connection: a local cluster
        return None
    return f"{conn.schema or 'tcp'}://{conn.host}:{conn.port}" if conn.host else None


@contextmanager
def cluster() -> Iterator[Any]:
    with dask_client(dask_address()) as client:
        yield client


@contextmanager
def bad_input_fails() -> Iterator[None]:
    """Bad input (a CurationError) fails the task with its message and without retries."""
    try:
        yield
    except CurationError as e:
        raise AirflowFailException(str(e)) from e


def metadata(version: str) -> Artifact:
    """The metadata artifact ``version``; empty: MetaCLIP's WordNet metadata (built once, then cached)."""
    s = store()
    return s.require(pipeline.METADATA, version) if version else pipeline.wordnet_metadata(s)


def pool_param() -> Param:
    pools = load_pools()
    default = "pool1" if "pool1" in pools else next(iter(pools))
    return Param(default, type="string", enum=sorted(pools), title="Pool",
                 description="the named set of snapshots (metaclip_tasks/pools.toml or $METACLIP_POOLS)")  # fmt: skip


def metadata_param() -> Param:
    return Param("", type="string", title="Metadata version",
                 description="a metadata artifact version; empty: MetaCLIP's WordNet metadata")  # fmt: skip


def seed_param() -> Param:
    return Param(0, type="integer", minimum=0, title="Seed", description="sampling seed (same seed: nested subsets)")


def snapshot_param() -> Param:
    return Param("", type="string", enum=["", *SNAPSHOTS], title="Snapshot",
                 description="Common Crawl id; empty: the crawl of the run's logical date")  # fmt: skip


def t_param() -> Param:
    return Param(None, type=["null", "integer"], minimum=1, title="t",
                 description="the cap per entry; empty: chosen by the target tail ratio")  # fmt: skip


def ratio_param() -> Param:
    return Param(None, type=["null", "number"], exclusiveMinimum=0, exclusiveMaximum=1, title="Target tail ratio",
                 description="share of matches in tail entries (count < t); empty: the pool's (0.06)")  # fmt: skip


def subset_params() -> dict[str, Param]:
    """The params naming a curated subset: pool, t or target tail ratio, seed, metadata version."""
    return {
        "pool": pool_param(),
        "t": t_param(),
        "target_tail_ratio": ratio_param(),
        "seed": seed_param(),
        "metadata_version": metadata_param(),
    }


def check_subset_params(params: dict[str, Any]) -> Pool:
    """A curated subset's params (pool, t or ratio, metadata) refused before any work when bad."""
    pool = check_t_choice(params["pool"], params["t"], params["target_tail_ratio"])
    pool_inputs(pool, params["metadata_version"], required=True)
    return pool


def curated_subset(params: dict[str, Any]) -> Artifact:
    """The pool's balanced subset for the params' t (or ratio) and seed: balanced on Dask unless cached."""
    matched, counts = counted_pool(params["pool"], params["metadata_version"])
    t = pipeline.resolve_pool_t(counts, params["t"], params["target_tail_ratio"])
    with cluster() as client:
        return pipeline.balance_pool(store(), counts, matched, client, t=t, seed=params["seed"])


def check_t_choice(pool_name: str, t: int | None, ratio: float | None) -> Pool:
    """Refuse, before any work, an unknown pool, a bad t or ratio, or both t and a ratio."""
    pool = get_pool(pool_name)
    if t is not None and ratio is not None:
        raise CurationError(f"give t ({t}) or target_tail_ratio ({ratio}), not both")
    if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 1):
        raise CurationError(f"t must be an integer >= 1, got {t!r}")
    if ratio is not None and not 0 < ratio < 1:
        raise CurationError(f"target_tail_ratio must be in (0, 1), got {ratio!r}")
    return pool


def pool_inputs(pool: Pool, metadata_version: str, *, required: bool) -> tuple[Artifact, list[Artifact]] | None:
    """The metadata and the pool's matched snapshots; None (or an error if required) when some are missing."""
    meta = metadata(metadata_version)
    found = pipeline.latest_matched(store(), pool.snapshots, meta)
    missing = [s for s in pool.snapshots if s not in found]
    if missing and required:
        raise CurationError(f"pool {pool.name}: {len(missing)} snapshots are not matched yet: {', '.join(missing[:5])}")
    return None if missing else (meta, [found[s] for s in pool.snapshots])


def counted_pool(pool_name: str, metadata_version: str) -> tuple[list[Artifact], Artifact]:
    """A pool's matched snapshots and its counts artifact (a cache hit once counted)."""
    pool = get_pool(pool_name)
    _, matched = pool_inputs(pool, metadata_version, required=True)
    return matched, pipeline.pool_counts(store(), pool, matched)


def summary(artifact: Artifact) -> dict[str, Any]:
    """What a task returns (XCom) and an asset event carries: the artifact's version and URI."""
    return {"stage": artifact.stage, "version": artifact.version, "uri": artifact.uri, "cache_hit": artifact.cache_hit}
