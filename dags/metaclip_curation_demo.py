"""metaclip_curation_demo: the whole chain on embedded defaults, for the README's main job.

The same steps ``metaclip demo`` runs, as tasks: the shared real captions (or a generated
pool) as ``pairs`` artifacts of the ``demo`` pool's three snapshots, MetaCLIP's WordNet
metadata, each snapshot matched on Dask, the pool counted and balanced for its tail ratio (30%); the
last task prints the report read back from the artifacts.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task
from metaclip_airflow import DASK_RETRIES, artifact, bad_input_fails, cluster, manual_dag, seed_param, store, summary

from metaclip_tasks import curation
from metaclip_tasks.demo import POOL, demo_pairs, demo_report, demo_source
from metaclip_tasks.snapshots import get_pool

with manual_dag(
    "metaclip_curation_demo",
    "Demo: captions -> pairs of three snapshots -> match -> pool counts -> balance",
    params={"seed": seed_param()},
    tags=["demo"],
    doc_md=__doc__,
) as dag:

    @task
    def snapshots() -> list[str]:
        """The demo pool's snapshots, with the metadata built (or found) once for all of them."""
        with bad_input_fails():
            curation.metadata(store())
            return list(get_pool(POOL).snapshots)

    @task(**DASK_RETRIES)
    def match(snapshot: str) -> dict:
        """One snapshot: its share of the captions imported as pairs, then matched on Dask."""
        with bad_input_fails():
            pairs = demo_pairs(store(), snapshot)
            with cluster(len(pairs.data_files())) as client:
                return summary(curation.match(store(), pairs, curation.metadata(store()), client))

    @task(**DASK_RETRIES)
    def count_and_balance(matched: list[dict]) -> dict:
        seed = get_current_context()["params"]["seed"]
        with bad_input_fails():
            meta = curation.metadata(store())
            counts = curation.count_pool(store(), get_pool(POOL), meta, [artifact(m) for m in matched])
            with cluster() as client:
                return summary(curation.balance(store(), counts, counts.stats["t"], seed, client))

    @task
    def report(curated: dict) -> str:
        with bad_input_fails():
            text = demo_report(store(), artifact(curated), demo_source(store())[1])
        print(text)
        return text

    report(count_and_balance(match.expand(snapshot=snapshots())))
