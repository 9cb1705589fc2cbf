"""metaclip_balance: the curated subset of a pool for one t (or target tail ratio) and seed.

A pair is kept when one of its entries passes with probability min(1, t / count); the draw
is a hash of (seed, uid, entry), so re-runs, retries and shard layouts give the same subset.
Writes the curated shards with expected vs actual size and head/tail coverage.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, get_current_context, task
from metaclip_airflow import (
    CURATED_ASSET,
    DASK_RETRIES,
    bad_input_fails,
    check_t_choice,
    cluster,
    counted_pool,
    metadata_param,
    pool_inputs,
    pool_param,
    seed_param,
    store,
    summary,
)  # fmt: skip

from metaclip_tasks import pipeline

with DAG(
    dag_id="metaclip_balance",
    description="Balance a pool: keep each pair with its entries' probability min(1, t/count)",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={
        "pool": pool_param(),
        "t": Param(None, type=["null", "integer"], minimum=1, title="t",
                   description="cap per entry; leave empty to choose t by the target tail ratio"),
        "target_tail_ratio": Param(None, type=["null", "number"], exclusiveMinimum=0, exclusiveMaximum=1,
                                   title="Target tail ratio",
                                   description="share of matches in tail entries (count < t); empty: the pool's (0.06)"),
        "seed": seed_param(),
        "metadata_version": metadata_param(),
    },  # fmt: skip
    tags=["metaclip", "balancing"],
    doc_md=__doc__,
) as dag:

    @task
    def check_params() -> dict:
        """Refuse bad parameters (both t and a ratio, an unknown pool) before any work."""
        params = get_current_context()["params"]
        with bad_input_fails():
            pool = check_t_choice(params["pool"], params["t"], params["target_tail_ratio"])
            pool_inputs(pool, params["metadata_version"], required=True)
        return {"pool": pool.name}

    @task(outlets=[CURATED_ASSET], **DASK_RETRIES)
    def balance(checked: dict) -> dict:
        context = get_current_context()
        params = context["params"]
        with bad_input_fails():
            matched, counts = counted_pool(checked["pool"], params["metadata_version"])
            t = pipeline.resolve_pool_t(counts, params["t"], params["target_tail_ratio"])
            with cluster() as client:
                artifact = pipeline.balance_pool(store(), counts, matched, client, t=t, seed=params["seed"])
        event = {**summary(artifact), **{k: artifact.stats[k] for k in ("t", "seed", "kept", "expected_kept")}}
        context["outlet_events"][CURATED_ASSET].extra = event
        return event

    balance(check_params())
