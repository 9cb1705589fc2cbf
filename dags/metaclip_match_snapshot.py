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
    from_params,
    metadata_param,
    optional_text_param,
    publish,
    snapshot_param,
    store,
    summary,
)  # fmt: skip
from metaclip_timetable import CommonCrawlTimetable

from metaclip_tasks.stages import plan
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.stages import INGEST, PAIRS_IMPORT, Ingest, MatchParams, PairsImport, ingest_inputs
from metaclip_tasks.core.snapshots import check_snapshot, snapshot_for_date
from metaclip_tasks.core.stage import run

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
        **dataclass_params(Ingest, skip=("snapshot", "sources")),
        "pairs_source": optional_text_param(
            "Pairs source",
            "parquet files to import first (a directory, file or glob, any fsspec URL; "
            "{snapshot} is replaced); empty: the snapshot's newest pairs artifact",
        ),
        **dataclass_params(PairsImport, skip=("snapshot", "sources", "rows")),
        **dataclass_params(MatchParams),
    },  # fmt: skip
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
            if params["snapshot"]:
                snapshot = check_snapshot(params["snapshot"])
            elif context.get("logical_date"):
                snapshot = snapshot_for_date(context["logical_date"].date())
            else:
                raise CurationError("a manual run needs the snapshot parameter")
            meta = plan.metadata(store(), params["metadata_version"])
            if params["raw_source"]:
                source = snapshot if params["raw_source"] == "commoncrawl" else params["raw_source"].replace("{snapshot}", snapshot)
                ingest = from_params(Ingest, params, snapshot=snapshot, sources=[source])
                with cluster(len(ingest_inputs(ingest))) as client:
                    imported = run(store(), INGEST, ingest, client=client)
            elif params["pairs_source"]:
                source = params["pairs_source"].replace("{snapshot}", snapshot)
                imported = run(
                    store(), PAIRS_IMPORT, from_params(PairsImport, params, snapshot=snapshot, sources=[source])
                )
            else:
                imported = plan.latest_pairs(store(), snapshot)
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
