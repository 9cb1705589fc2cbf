"""metaclip_curation_demo: the whole chain on embedded defaults, for the README's main job.

The same steps ``metaclip demo`` runs, as tasks: the shared real captions (or a generated
pool) as ``pairs`` artifacts of the ``demo`` pool's three snapshots, MetaCLIP's WordNet
metadata, each snapshot matched on Dask, the pool counted and balanced for its tail ratio (30%); the
last task prints the report read back from the artifacts.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task
from metaclip_airflow import (
    CURATED_ASSET,
    DASK_RETRIES,
    MATCHED_ASSET,
    METADATA_ASSET,
    PAIRS_ASSET,
    POOL_COUNTS_ASSET,
    artifact,
    bad_input_fails,
    cluster,
    manual_dag,
    publish,
    seed_param,
    store,
    warn,
)

from metaclip_tasks.core.snapshots import get_pool
from metaclip_tasks.dev.demo import POOL, demo_pairs, demo_report, demo_source
from metaclip_tasks.stages import plan

with manual_dag(
    "metaclip_curation_demo",
    "Demo: captions -> pairs of three snapshots -> match -> pool counts -> balance",
    params={"seed": seed_param()},
    tags=["demo"],
    doc_md=__doc__,
) as dag:

    @task(outlets=[METADATA_ASSET])
    def snapshots() -> list[str]:
        """The demo pool's snapshots, with the metadata built (or found) once for all of them."""
        with bad_input_fails():
            publish(plan.metadata(store()))
            return list(get_pool(POOL).snapshots)

    @task(outlets=[PAIRS_ASSET, MATCHED_ASSET], map_index_template="{{ task.op_kwargs['snapshot'] }}", **DASK_RETRIES)
    def match(snapshot: str) -> dict:
        """One snapshot (its map index): its share of the captions imported as pairs, then matched on Dask."""
        with bad_input_fails():
            pairs = demo_pairs(store(), snapshot)
            publish(pairs)
            with cluster(len(pairs.data_files())) as client:
                return publish(plan.match(store(), pairs, plan.metadata(store()), client))

    @task(outlets=[POOL_COUNTS_ASSET, CURATED_ASSET], **DASK_RETRIES)
    def count_and_balance(matched: list[dict]) -> dict:
        """The pool counted (its t for the pool's target tail ratio, warned of when not reachable), then balanced."""
        seed = get_current_context()["params"]["seed"]
        with bad_input_fails():
            meta = plan.metadata(store())
            counts = plan.count_pool(store(), get_pool(POOL), meta, [artifact(m) for m in matched])
            warnings = plan.t_warnings(counts, None, None)
            warn(warnings)
            publish(counts, warnings=warnings)
            with cluster() as client:
                return publish(plan.balance(store(), counts, counts.stats["t"], seed, client), warnings=warnings)

    @task
    def report(curated: dict) -> str:
        with bad_input_fails():
            text = demo_report(store(), artifact(curated), demo_source(store())[1])
        print(text)
        return text

    report(count_and_balance(match.expand(snapshot=snapshots())))
