"""metaclip_balance: the curated subset of a pool for one t (or target tail ratio) and seed.

A pair is kept when one of its entries passes with probability min(1, t / count); the draw
is a hash of (seed, uid, entry), so re-runs, retries and shard layouts give the same subset.
Writes the curated shards with expected vs actual size and head/tail coverage.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task
from metaclip_airflow import (
    CURATED_ASSET,
    DASK_RETRIES,
    bad_input_fails,
    cluster,
    from_params,
    manual_dag,
    publish,
    store,
    subset_params,
    warn,
)

from metaclip_tasks.stages import plan
from metaclip_tasks.stages.plan import Subset

with manual_dag(
    "metaclip_balance",
    "Balance a pool: keep each pair with its entries' probability min(1, t/count)",
    params=subset_params(),
    tags=["balancing"],
    doc_md=__doc__,
) as dag:

    @task
    def check_params() -> None:
        """Refuse bad parameters (both t and a ratio, an unknown pool, unmatched snapshots) before any work."""
        with bad_input_fails():
            plan.check_subset(store(), from_params(Subset, get_current_context()["params"]))

    @task(outlets=[CURATED_ASSET], **DASK_RETRIES)
    def balance() -> dict:
        """The curated subset, published with its t and size; a target tail ratio the pool cannot reach is warned of."""
        with bad_input_fails(), cluster() as client:
            subset = from_params(Subset, get_current_context()["params"])
            artifact = plan.curated_subset(store(), subset, client)
            warnings = plan.t_warnings(artifact.input("pool_counts"), subset.t, subset.target_tail_ratio)
        warn(warnings)
        return publish(artifact, warnings=warnings)

    check_params() >> balance()
