"""metaclip_train: open_clip trained on a curated subset's images, then evaluated.

The subset (pool, t or target tail ratio, seed) is balanced and downloaded if it is not yet
(cache hits otherwise).  Training uses open_clip's own trainer on the Airflow pool ``gpu``
(torchrun over every visible GPU).  ``recipe`` picks the paper's ViT-B/32 recipe (the
default, GPU) or ``tiny-cpu`` (a 2-layer model for a CPU); a GPU recipe with no GPU visible
is refused before any work unless ``device`` is ``cpu``.  With ``download_budget`` the pool's
matched pairs are downloaded up to that budget and the loader re-balances for the subset's t
each epoch (paper A.2): epoch 0 is the offline subset, later epochs a fresh sample of the head.
Evaluation: zero-shot on COCO's 80 categories and image-text retrieval on the COCO val images (``$METACLIP_EVAL_COCO``).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import get_current_context, task
from metaclip_airflow import (
    CHECKPOINT_ASSET,
    DOWNLOADED_ASSET,
    METRICS_ASSET,
    artifact,
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
from metaclip_tasks.training.train import TrainChoice, check_device

with manual_dag(
    "metaclip_train",
    "Train open_clip on a curated subset (GPU recipe or a tiny CPU model) and evaluate it",
    params={
        **subset_params(),
        **dataclass_params(TrainChoice),
        "image_size": dataclass_params(DownloadParams)["image_size"],
        "download_budget": dataclass_params(OnlineDownload)["download_budget"],
    },
    tags=["training"],
    doc_md=__doc__,
) as dag:

    @task
    def check_params() -> None:
        params = get_current_context()["params"]
        with bad_input_fails():
            check_device(from_params(TrainChoice, params).config())
            plan.check_subset(store(), from_params(Subset, params))
            from_params(OnlineDownload, params)

    @task(outlets=[DOWNLOADED_ASSET], retries=2, retry_delay=timedelta(minutes=1), retry_exponential_backoff=2.0)
    def download() -> dict:
        p = get_current_context()["params"]
        with bad_input_fails(), cluster() as client:
            downloaded = plan.download_subset(
                store(),
                from_params(Subset, p),
                DownloadParams(image_size=p["image_size"]),
                client,
                online=from_params(OnlineDownload, p),
            )
        return publish(downloaded, t=downloaded.input("curated").params["t"])

    @task(outlets=[CHECKPOINT_ASSET], pool="gpu", queue="gpu", retries=1, retry_delay=timedelta(minutes=5))
    def train(downloaded: dict) -> dict:
        p = get_current_context()["params"]
        with bad_input_fails():
            checkpoint = plan.train_subset(
                store(),
                from_params(Subset, p),
                from_params(TrainChoice, p),
                artifact(downloaded),
                online=p["download_budget"] is not None,
            )
            return publish(checkpoint)

    @task(outlets=[METRICS_ASSET])
    def evaluate(checkpoint: dict) -> dict:
        with bad_input_fails():
            metrics = plan.evaluate(store(), artifact(checkpoint))
        return {**publish(metrics), **metrics.stats}

    check_params() >> evaluate(train(download()))
