"""metaclip_curation_demo: the whole chain on embedded defaults, for the README's main job.

The shared real captions (or a generated pool) are split over the ``demo`` pool's three
snapshots under the artifact root, then matched per snapshot on Dask, counted, and balanced
for the pool's 6% tail; the last task prints where the artifacts and the report are.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, get_current_context, task
from metaclip_airflow import DASK_RETRIES, bad_input_fails, cluster, metadata, seed_param, store, summary

from metaclip_tasks import pipeline
from metaclip_tasks.demo import demo_report, write_demo_pairs
from metaclip_tasks.settings import artifact_root
from metaclip_tasks.snapshots import get_pool
from metaclip_tasks.storage import atomic_file

with DAG(
    dag_id="metaclip_curation_demo",
    description="Demo: captions -> pairs of three snapshots -> match -> pool counts -> balance",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={"seed": seed_param()},
    tags=["metaclip", "demo"],
    doc_md=__doc__,
) as dag:

    @task
    def write_pairs() -> list[str]:
        """Split the default pool over the demo snapshots (identical files on every run)."""
        with bad_input_fails():
            return write_demo_pairs(store().root, get_pool("demo"))

    @task(**DASK_RETRIES)
    def match(snapshot: str) -> dict:
        with bad_input_fails(), cluster() as client:
            return summary(pipeline.match_snapshot(store(), snapshot, metadata(""), client))

    @task(**DASK_RETRIES)
    def count_and_balance(matched: list[dict]) -> str:
        seed = get_current_context()["params"]["seed"]
        s = store()
        with bad_input_fails():
            artifacts = [s.require(m["stage"], m["version"]) for m in matched]
            counts = pipeline.pool_counts(s, get_pool("demo"), artifacts)
            with cluster() as client:
                curated = pipeline.balance_pool(s, counts, artifacts, client, t=counts.stats["t"], seed=seed)
        report = demo_report(counts, curated)
        with atomic_file(f"{artifact_root()}/reports/curation_demo.txt") as tmp:
            tmp.write_text(report + "\n")
        print(report)
        return report

    count_and_balance(match.expand(snapshot=write_pairs()))
