"""metaclip_download: the images of a curated subset as webdataset shards, with img2dataset.

The subset is the pool's balanced set for (t or target tail ratio, seed), balanced first if
it is not yet; with a download budget, the superset that training balances from in its loader
(paper A.2).  img2dataset runs as a subprocess with its progress in the task log; failures
(404, timeouts, undecodable images) are counted per reason, never fatal.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import get_current_context, task
from metaclip_airflow import (
    DOWNLOADED_ASSET,
    bad_input_fails,
    cluster,
    dataclass_params,
    from_params,
    manual_dag,
    publish,
    store,
    subset_params,
)

from metaclip_tasks.stages import plan
from metaclip_tasks.stages.plan import OnlineDownload, Subset
from metaclip_tasks.training.download import DownloadParams

with manual_dag(
    "metaclip_download",
    "Download a curated subset's images into webdataset shards (img2dataset)",
    params={**subset_params(), **dataclass_params(DownloadParams), **dataclass_params(OnlineDownload)},
    tags=["download"],
    doc_md=__doc__,
) as dag:

    @task
    def check_params() -> None:
        params = get_current_context()["params"]
        with bad_input_fails():
            plan.check_subset(store(), from_params(Subset, params))
            from_params(DownloadParams, params)
            from_params(OnlineDownload, params)

    @task(outlets=[DOWNLOADED_ASSET], retries=2, retry_delay=timedelta(minutes=1), retry_exponential_backoff=2.0)
    def download() -> dict:
        context = get_current_context()
        params = context["params"]
        with bad_input_fails(), cluster() as client:
            artifact = plan.download_subset(
                store(),
                from_params(Subset, params),
                from_params(DownloadParams, params),
                client,
                online=from_params(OnlineDownload, params),
            )
        event = publish(artifact, t=artifact.input("curated").params["t"])
        return {**event, "failures_by_reason": artifact.stats["failures_by_reason"]}

    check_params() >> download()
