"""metaclip_pool_counts: a pool's per-entry counts, its t, and the entry-count report.

Triggered by ``x-metaclip://artifacts/matched`` asset events (it skips while the pool still lacks
snapshots) or by hand.  Sums the count vectors of the pool's snapshots, records tail ratios
for standard t values and the t for the pool's target tail ratio, and draws the paper's
Fig. 2 (cumulative counts, raw vs capped at t) with the top entries (Table 3).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException
from metaclip_airflow import (
    MATCHED_ASSET,
    POOL_COUNTS_ASSET,
    bad_input_fails,
    metadata_param,
    pool_param,
    publish,
    store,
    warn,
)

from metaclip_tasks.core.snapshots import get_pool
from metaclip_tasks.stages import plan

with DAG(
    dag_id="metaclip_pool_counts",
    description="Sum a pool's snapshot counts, choose t for its target tail ratio, plot Fig. 2",
    schedule=[MATCHED_ASSET],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={"pool": pool_param(), "metadata_version": metadata_param()},
    tags=["metaclip", "counting"],
    doc_md=__doc__,
) as dag:

    @task(outlets=[POOL_COUNTS_ASSET])
    def count_pool() -> dict:
        context = get_current_context()
        params = context["params"]
        manual = context["dag_run"].run_type != "asset_triggered"
        with bad_input_fails():
            pool = get_pool(params["pool"])
            meta = plan.metadata(store(), params["metadata_version"])
            matched = plan.pool_matched(store(), pool, meta, required=manual)
            if matched is None:
                raise AirflowSkipException(f"pool {pool.name} is not fully matched yet")
            artifact = plan.count_pool(store(), pool, meta, matched)
            warnings = plan.t_warnings(artifact, None, None)  # also for counts made before stats had them
        warn(warnings)
        return publish(artifact, warnings=warnings)

    count_pool()
