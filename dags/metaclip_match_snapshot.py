"""metaclip_match_snapshot: one run = one Common Crawl snapshot, matched on Dask.

Scheduled by the Common Crawl timetable (one run per crawl), so a backfill over a date range
creates one run per crawl in it.  Writes the snapshot's matched shards and count vector as a
``matched`` artifact and emits a ``metaclip.matched`` asset event carrying its version and URI.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, get_current_context, task
from metaclip_airflow import (
    DASK_RETRIES,
    MATCHED_ASSET,
    bad_input_fails,
    cluster,
    metadata,
    metadata_param,
    snapshot_param,
    store,
    summary,
)  # fmt: skip
from metaclip_timetable import CommonCrawlTimetable

from metaclip_tasks import pipeline
from metaclip_tasks.errors import CurationError
from metaclip_tasks.snapshots import check_snapshot, snapshot_for_date

with DAG(
    dag_id="metaclip_match_snapshot",
    description="Sub-string match one Common Crawl snapshot's pairs against the metadata (on Dask)",
    schedule=CommonCrawlTimetable(),
    start_date=datetime(2013, 1, 1),
    catchup=False,
    max_active_runs=8,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=10)},
    params={
        "snapshot": snapshot_param(),
        "metadata_version": metadata_param(),
        "url_column": Param("url", type="string", minLength=1, title="URL column",
                            description="column of the pair shards holding image URLs"),
        "text_column": Param("text", type="string", minLength=1, title="Text column",
                             description="column of the pair shards holding alt-texts"),
    },
    tags=["metaclip", "matching"],
    doc_md=__doc__,
) as dag:

    @task
    def resolve_snapshot() -> dict:
        """The run's snapshot (param, else its logical date) and metadata, checked before any work."""
        context = get_current_context()
        params = context["params"]
        with bad_input_fails():
            if params["snapshot"]:
                snapshot = check_snapshot(params["snapshot"])
            elif context.get("logical_date"):
                snapshot = snapshot_for_date(context["logical_date"].date())
            else:
                raise CurationError("a manual run needs the snapshot parameter")
            meta = metadata(params["metadata_version"])
            pipeline.snapshot_shards(store().root, snapshot)
        return {"snapshot": snapshot, "metadata_version": meta.version}

    @task(outlets=[MATCHED_ASSET], **DASK_RETRIES)
    def match(spec: dict) -> dict:
        """Match every shard of the snapshot on Dask; publish the matched artifact."""
        context = get_current_context()
        params = context["params"]
        with bad_input_fails(), cluster() as client:
            artifact = pipeline.match_snapshot(
                store(), spec["snapshot"], metadata(spec["metadata_version"]), client,
                url_column=params["url_column"], text_column=params["text_column"],
            )  # fmt: skip
        event = {**summary(artifact), "snapshot": spec["snapshot"], "matched": artifact.stats["pairs_matched"]}
        context["outlet_events"][MATCHED_ASSET].extra = event
        return event

    match(resolve_snapshot())
