"""metaclip_download: the images of a curated subset as webdataset shards, with img2dataset.

The subset is the pool's balanced set for (t or target tail ratio, seed), balanced first if
it is not yet.  img2dataset runs as a subprocess with its progress in the task log; failures
(404, timeouts, undecodable images) are counted per reason, never fatal.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, Param, get_current_context, task
from metaclip_airflow import (
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
from metaclip_tasks.download import DownloadOptions

DOWNLOADED_ASSET = Asset("metaclip.downloaded")

with DAG(
    dag_id="metaclip_download",
    description="Download a curated subset's images into webdataset shards (img2dataset)",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={
        "pool": pool_param(),
        "t": Param(None, type=["null", "integer"], minimum=1, title="t",
                   description="the curated subset's t; empty: chosen by the target tail ratio"),
        "target_tail_ratio": Param(None, type=["null", "number"], exclusiveMinimum=0, exclusiveMaximum=1,
                                   title="Target tail ratio", description="empty: the pool's (0.06)"),
        "seed": seed_param(),
        "metadata_version": metadata_param(),
        "image_size": Param(256, type="integer", minimum=16, title="Image size", description="pixels (square)"),
        "threads": Param(16, type="integer", minimum=1, title="Threads", description="download threads per process"),
        "processes": Param(1, type="integer", minimum=1, title="Processes", description="img2dataset processes"),
        "timeout": Param(10, type="number", exclusiveMinimum=0, title="Timeout", description="seconds per image"),
        "retries": Param(2, type="integer", minimum=0, title="Retries", description="per image"),
    },  # fmt: skip
    tags=["metaclip", "download"],
    doc_md=__doc__,
) as dag:

    @task
    def check_params() -> None:
        params = get_current_context()["params"]
        with bad_input_fails():
            pool = check_t_choice(params["pool"], params["t"], params["target_tail_ratio"])
            pool_inputs(pool, params["metadata_version"], required=True)

    @task(outlets=[DOWNLOADED_ASSET], retries=2, retry_delay=timedelta(minutes=1))
    def download() -> dict:
        context = get_current_context()
        p = context["params"]
        options = DownloadOptions(image_size=p["image_size"], threads=p["threads"], processes=p["processes"],
                                  timeout=p["timeout"], retries=p["retries"])  # fmt: skip
        with bad_input_fails():
            matched, counts = counted_pool(p["pool"], p["metadata_version"])
            t = pipeline.resolve_pool_t(counts, p["t"], p["target_tail_ratio"])
            with cluster() as client:
                curated = pipeline.balance_pool(store(), counts, matched, client, t=t, seed=p["seed"])
            artifact = pipeline.download_curated(store(), curated, options)
        event = {**summary(artifact), "t": t, **{k: artifact.stats[k] for k in ("count", "successes")}}
        context["outlet_events"][DOWNLOADED_ASSET].extra = event
        return {**event, "failures_by_reason": artifact.stats["failures_by_reason"]}

    check_params() >> download()
