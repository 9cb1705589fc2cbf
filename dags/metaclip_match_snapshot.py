"""metaclip_match_snapshot: one run = one Common Crawl snapshot, matched on Dask.

Scheduled by the Common Crawl timetable (one run per crawl), so a backfill over a date range
creates one run per crawl in it.  The snapshot's pairs come from its raw sources when it has them:
``raw_source`` = ``commoncrawl`` ingests the crawl's own WAT (or WARC) files from ``cc_base``, a
path or glob of WARC/WAT files (``{snapshot}`` replaced) ingests those, so a backfill goes from
Common Crawl to matched counts; else ``pairs_source`` imports parquet files; else the snapshot's
newest ``pairs`` artifact is matched.  Writes the matched shards and count vector as a ``matched`` artifact and emits a
``x-metaclip://artifacts/matched`` asset event carrying its version and URI (and one of
``x-metaclip://artifacts/pairs`` for the pairs it took).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, get_current_context, task
from metaclip_airflow import (
    DASK_RETRIES,
    MATCHED_ASSET,
    PAIRS_ASSET,
    RETRY_BACKOFF,
    artifact,
    bad_input_fails,
    cluster,
    dataclass_params,
    fields_of,
    from_params,
    metadata_param,
    optional_text_param,
    publish,
    snapshot_param,
    store,
    summary,
)
from metaclip_timetable import CommonCrawlTimetable

from metaclip_tasks.stages import IngestParams, MatchParams, PairsImportParams, plan

with DAG(
    dag_id="metaclip_match_snapshot",
    description="Sub-string match one Common Crawl snapshot's pairs against the metadata (on Dask)",
    schedule=CommonCrawlTimetable(),
    start_date=datetime(2013, 1, 1),
    catchup=False,
    max_active_runs=8,
    default_args={"retries": 1, **RETRY_BACKOFF},
    params={
        "snapshot": snapshot_param(),
        "metadata_version": metadata_param(),
        "raw_source": optional_text_param(
            "Raw source",
            "commoncrawl: the crawl's own files (format, cc_base, max_files); or WARC/WAT files, a "
            "directory or glob (any fsspec URL; {snapshot} is replaced); empty: no ingestion",
        ),
        **dataclass_params(IngestParams, skip=("snapshot", "sources")),
        "pairs_source": optional_text_param(
            "Pairs source",
            "parquet files to import first (a directory, file or glob, any fsspec URL; "
            "{snapshot} is replaced); empty: the snapshot's newest pairs artifact",
        ),
        **dataclass_params(PairsImportParams, skip=("snapshot", "sources", "rows")),
        **dataclass_params(MatchParams),
    },
    tags=["metaclip", "matching"],
    doc_md=__doc__,
) as dag:

    @task(outlets=[PAIRS_ASSET], **DASK_RETRIES)
    def pairs() -> dict:
        """The run's snapshot (param, else its logical date), its pairs (ingested or imported when a
        source is given) and the metadata, all checked before any matching."""
        context = get_current_context()
        params = context["params"]
        with bad_input_fails():
            logical = context.get("logical_date")
            snapshot = plan.run_snapshot(params["snapshot"], logical.date() if logical else None)
            meta = plan.metadata(store(), params["metadata_version"])
            imported = plan.snapshot_pairs(
                store(),
                snapshot,
                raw_source=params["raw_source"],
                pairs_source=params["pairs_source"],
                ingest=fields_of(IngestParams, params, skip=("snapshot", "sources")),
                pairs_import=fields_of(PairsImportParams, params, skip=("snapshot", "sources", "rows")),
                cluster=cluster,
            )
        return {"snapshot": snapshot, "pairs": publish(imported), "metadata": summary(meta)}

    @task(outlets=[MATCHED_ASSET], **DASK_RETRIES)
    def match(spec: dict) -> dict:
        """Match every shard of the pairs on Dask; publish the matched artifact."""
        context = get_current_context()
        with bad_input_fails():
            pairs_artifact = artifact(spec["pairs"])
            backend = from_params(MatchParams, context["params"]).backend
            with cluster(len(pairs_artifact.data_files())) as client:
                matched = plan.match(store(), pairs_artifact, artifact(spec["metadata"]), client, backend)
        return publish(matched, snapshot=spec["snapshot"], matched=matched.stats["pairs_matched"])

    match(pairs())
