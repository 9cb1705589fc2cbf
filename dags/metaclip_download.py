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
    check_subset_params,
    curated_subset,
    store,
    subset_params,
    summary,
)

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
        **subset_params(),
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
            check_subset_params(params)

    @task(outlets=[DOWNLOADED_ASSET], retries=2, retry_delay=timedelta(minutes=1))
    def download() -> dict:
        context = get_current_context()
        p = context["params"]
        options = DownloadOptions(image_size=p["image_size"], threads=p["threads"], processes=p["processes"],
                                  timeout=p["timeout"], retries=p["retries"])  # fmt: skip
        with bad_input_fails():
            curated = curated_subset(p)
            artifact = pipeline.download_curated(store(), curated, options)
        event = {**summary(artifact), "t": curated.params["t"], **{k: artifact.stats[k] for k in ("count", "successes")}}
        context["outlet_events"][DOWNLOADED_ASSET].extra = event
        return {**event, "failures_by_reason": artifact.stats["failures_by_reason"]}

    check_params() >> download()
