"""Airflow glue shared by the thin DAG files: assets, ``Param``s made from the library's params
dataclasses, the artifact store, the Dask cluster and bad input as a failure that is not retried.
Every decision (which inputs, which t) is the library's (``metaclip_tasks.stages.plan``)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, Param, get_current_context
from airflow.sdk.exceptions import AirflowFailException

from metaclip_tasks.core import params as P
from metaclip_tasks.core.artifacts import Artifact, ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.settings import artifact_root, scheduler_address
from metaclip_tasks.core.snapshots import SNAPSHOTS, load_pools
from metaclip_tasks.runtime.cluster import dask_client
from metaclip_tasks.stages.plan import Subset, key_stats

ASSET_SCHEME = "x-metaclip"
# One asset per kind of artifact a DAG publishes, named by a URI of Airflow's custom-scheme form: a scheme
# starting with "x-" is taken as is (airflow.sdk.definitions.asset._sanitize_uri skips its normalization
# and no provider's URI handler can claim it), so it neither warns nor fails at parse time, and it cannot
# collide with a real scheme (file, s3, ...) whose normalizer would rewrite the name. Name and URI are one
# string, so the Assets page shows the URI; every event's extra carries the artifact's own version and URI.
ARTIFACT_KINDS = (
    "metadata",
    "pairs",
    "matched",
    "pool_counts",
    "curated",
    "downloaded",
    "checkpoint",
    "metrics",
    "t_ablation",
)


def artifact_asset(kind: str) -> Asset:
    """The asset of one kind of artifact (an artifact stage's output), e.g. ``x-metaclip://artifacts/matched``."""
    uri = f"{ASSET_SCHEME}://artifacts/{kind}"
    return Asset(name=uri, uri=uri, group="metaclip")


ASSETS = {kind: artifact_asset(kind) for kind in ARTIFACT_KINDS}
METADATA_ASSET, PAIRS_ASSET, MATCHED_ASSET = ASSETS["metadata"], ASSETS["pairs"], ASSETS["matched"]
POOL_COUNTS_ASSET, CURATED_ASSET, DOWNLOADED_ASSET = ASSETS["pool_counts"], ASSETS["curated"], ASSETS["downloaded"]
CHECKPOINT_ASSET, METRICS_ASSET, T_ABLATION_ASSET = ASSETS["checkpoint"], ASSETS["metrics"], ASSETS["t_ablation"]
# Tasks that use Dask or storage retry what may be passing (a cluster, a store or the API server slow
# to start, a lost worker) with exponential backoff: after ~30-60 s, then ~60-120 s (Airflow adds a
# per-task jitter, at most 10 min). Bad input (AirflowFailException, see bad_input_fails) fails at once.
# retry_exponential_backoff is a multiplier in Airflow 3.3 (0: constant; True would mean 1.0, constant too).
RETRY_BACKOFF = {
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
}
DASK_RETRIES = {"retries": 2, **RETRY_BACKOFF}


def manual_dag(dag_id: str, description: str, params: dict[str, Param], tags: list[str], doc_md: str | None) -> DAG:
    """A DAG run by hand or through the API (no schedule), with typed params and its docs."""
    return DAG(
        dag_id=dag_id,
        description=description,
        schedule=None,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        params=params,
        tags=["metaclip", *tags],
        doc_md=doc_md,
    )


def store() -> ArtifactStore:
    return ArtifactStore(artifact_root())


def dask_address() -> str | None:
    """``$DASK_SCHEDULER_ADDRESS``, else the Airflow connection ``dask_default``, else None (local)."""
    if scheduler_address():
        return scheduler_address()
    try:
        from airflow.sdk import Connection

        conn = Connection.get("dask_default")
    except Exception:  # noqa: BLE001 - no such connection (the SDK's error differs by context): a local cluster
        return None
    return f"{conn.schema or 'tcp'}://{conn.host}:{conn.port}" if conn.host else None


@contextmanager
def cluster(work: int | None = None) -> Iterator[Any]:
    """The task's one Dask client: the configured scheduler, or a local cluster of at most ``work`` workers."""
    with dask_client(dask_address(), work) as client:
        yield client


@contextmanager
def bad_input_fails() -> Iterator[None]:
    """Bad input (a CurationError) fails the task with its message and without retries."""
    try:
        yield
    except CurationError as e:
        raise AirflowFailException(str(e)) from e


def dataclass_params(cls: type, skip: tuple[str, ...] = (), **overrides: Param) -> dict[str, Param]:
    """One typed, described ``Param`` per field of a library params dataclass, with its default."""
    made = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        value = P.default(f)
        made[f.name] = overrides.get(f.name) or Param(
            None if value is dataclasses.MISSING else _jsonable(value), **P.json_schema(cls, f.name)
        )
    return made


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def fields_of(cls: type, params: Mapping[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A run's params that are fields of the dataclass ``cls`` (less ``skip``)."""
    names = {f.name for f in dataclasses.fields(cls)} - set(skip)
    return {k: v for k, v in params.items() if k in names}


def from_params(cls: type, params: Mapping[str, Any], **extra: Any) -> Any:
    """The dataclass ``cls`` from a run's params (its fields only), checked."""
    return P.from_mapping(cls, {**fields_of(cls, params), **extra})


def pool_param() -> Param:
    pools = load_pools()
    default = "pool1" if "pool1" in pools else next(iter(pools))
    return Param(default, **{**P.json_schema(Subset, "pool"), "enum": sorted(pools)})


def subset_params() -> dict[str, Param]:
    """The params naming a curated subset (pool, t or target tail ratio, seed, metadata version)."""
    return dataclass_params(Subset, pool=pool_param())


def snapshot_param() -> Param:
    """A Common Crawl id, or None (the form's "not set"): the crawl of the run's logical date."""
    return Param(
        None,
        type=["null", "string"],
        enum=[None, *SNAPSHOTS],
        title="Snapshot",
        values_display={"null": "(the crawl of the run's logical date)"},
        description="Common Crawl id; empty: the crawl of the run's logical date",
    )


def optional_text_param(title: str, description: str) -> Param:
    """A string that may be left empty (None): optional in the trigger form, unlike ``type="string"``."""
    return Param(None, type=["null", "string"], title=title, description=description)


def metadata_param() -> Param:
    return dataclass_params(Subset)["metadata_version"]


def seed_param() -> Param:
    return dataclass_params(Subset)["seed"]


def summary(artifact: Artifact) -> dict[str, Any]:
    """What a task returns (XCom) and an asset event carries: the artifact's version and URI."""
    return {"stage": artifact.stage, "version": artifact.version, "uri": artifact.uri, "cache_hit": artifact.cache_hit}


def publish(artifact: Artifact, **extra: Any) -> dict[str, Any]:
    """The event of the artifact's asset (declared in the task's ``outlets``): its summary, key stats
    and ``extra``, shown on the Assets page; returned for the task's XCom."""
    event = {**summary(artifact), **key_stats(artifact), **extra}
    get_current_context()["outlet_events"][ASSETS[artifact.stage]].extra = event
    return event


def warn(warnings: list[str]) -> None:
    """Warnings in the task log, at the warning level (highlighted in the UI's log view)."""
    for warning in warnings:
        logging.getLogger("metaclip").warning(warning)


def artifact(ref: Mapping[str, Any]) -> Artifact:
    """The artifact a task's summary names."""
    return store().require(ref["stage"], ref["version"])
