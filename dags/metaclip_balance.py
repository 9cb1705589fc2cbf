"""metaclip_balance: the curated subset of a pool for one t (or target tail ratio) and seed.

A pair is kept when one of its entries passes with probability min(1, t / count); the draw
is a hash of (seed, uid, entry), so re-runs, retries and shard layouts give the same subset.
Writes the curated shards with expected vs actual size and head/tail coverage.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, get_current_context, task
from metaclip_airflow import (
    CURATED_ASSET,
    DASK_RETRIES,
    bad_input_fails,
    cluster,
    from_params,
    store,
    subset_params,
    summary,
)

from metaclip_tasks import curation
from metaclip_tasks.curation import Subset

with DAG(
    dag_id="metaclip_balance",
    description="Balance a pool: keep each pair with its entries' probability min(1, t/count)",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params=subset_params(),
    tags=["metaclip", "balancing"],
    doc_md=__doc__,
) as dag:

    @task
    def check_params() -> None:
        """Refuse bad parameters (both t and a ratio, an unknown pool, unmatched snapshots) before any work."""
        with bad_input_fails():
            curation.check_subset(store(), from_params(Subset, get_current_context()["params"]))

    @task(outlets=[CURATED_ASSET], **DASK_RETRIES)
    def balance() -> dict:
        context = get_current_context()
        with bad_input_fails(), cluster() as client:
            artifact = curation.curated_subset(store(), from_params(Subset, context["params"]), client)
        event = {**summary(artifact), **{k: artifact.stats[k] for k in ("t", "seed", "kept", "expected_kept")}}
        context["outlet_events"][CURATED_ASSET].extra = event
        return event

    check_params() >> balance()
