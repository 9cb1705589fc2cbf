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

import os
from dataclasses import replace
from datetime import timedelta

from airflow.sdk import Param, get_current_context, task
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
from metaclip_tasks.training.download import DownloadOptions
from metaclip_tasks.stages import EVALUATE, TRAIN, EvaluateParams
from metaclip_tasks.dev.shared_data import COCO
from metaclip_tasks.core.stage import run
from metaclip_tasks.training.train import RECIPES, check_device

with manual_dag(
    "metaclip_train",
    "Train open_clip on a curated subset (GPU recipe or a tiny CPU model) and evaluate it",
    params={
        **subset_params(),
        "recipe": Param(
            "vit-b-32",
            type="string",
            enum=sorted(RECIPES),
            title="Recipe",
            description="vit-b-32: the paper's (QuickGELU, batch 32768, lr 5e-4, 2k warm-up); "
            "tiny-cpu: a 2-layer model for a CPU",
        ),
        "device": Param(
            "cuda",
            type="string",
            enum=["cuda", "cpu"],
            title="Device",
            description="cpu trains on the CPU; a GPU recipe without a GPU is refused",
        ),
        "model": Param(
            None,
            type=["null", "string"],
            title="Model",
            description="an open_clip model name; empty: the recipe's (ViT-B-32-quickgelu / metaclip-tiny)",
        ),
        "epochs": Param(None, type=["null", "integer"], minimum=1, title="Epochs", description="empty: the recipe's"),
        "warmup": Param(
            None, type=["null", "integer"], minimum=0, title="Warm-up steps", description="empty: the recipe's"
        ),
        "precision": Param(
            None,
            type=["null", "string"],
            enum=[None, "amp", "amp_bf16", "bf16", "fp16", "fp32"],
            title="Precision",
            description="empty: the recipe's",
        ),
        "global_batch_size": Param(
            None, type=["null", "integer"], minimum=1, title="Global batch size", description="empty: the recipe's"
        ),
        "accum_freq": Param(
            1,
            type="integer",
            minimum=1,
            title="Accumulation steps",
            description="micro-batches per step: global batch = per-GPU batch x GPUs x this; "
            "the contrastive loss still sees the whole global batch (fewer GPUs than the paper's 64)",
        ),
        "lr": Param(
            None, type=["null", "number"], exclusiveMinimum=0, title="Learning rate", description="empty: the recipe's"
        ),
        "workers": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            title="Data-loader processes per GPU",
            description="empty: the recipe's; the loader, not the GPU, bounds a ViT-B/32 step (BENCHMARKS.md)",
        ),
        "image_size": dataclass_params(DownloadOptions)["image_size"],
        "download_budget": dataclass_params(OnlineDownload)["download_budget"],
    },  # fmt: skip
    tags=["training"],
    doc_md=__doc__,
) as dag:

    def _config():
        p = get_current_context()["params"]
        keys = ("model", "epochs", "global_batch_size", "lr", "warmup", "precision", "workers")
        overrides = {k: p[k] for k in keys if p[k] is not None}
        return replace(RECIPES[p["recipe"]], device=p["device"], accum_freq=p["accum_freq"], **overrides)

    @task
    def check_params() -> None:
        params = get_current_context()["params"]
        with bad_input_fails():
            check_device(_config())
            plan.check_subset(store(), from_params(Subset, params))
            from_params(OnlineDownload, params)

    @task(outlets=[DOWNLOADED_ASSET], retries=2, retry_delay=timedelta(minutes=1), retry_exponential_backoff=2.0)
    def download() -> dict:
        p = get_current_context()["params"]
        with bad_input_fails(), cluster() as client:
            downloaded = plan.download_subset(
                store(),
                from_params(Subset, p),
                DownloadOptions(image_size=p["image_size"]),
                client,
                online=from_params(OnlineDownload, p),
            )
        return publish(downloaded, t=downloaded.input("curated").params["t"])

    @task(outlets=[CHECKPOINT_ASSET], pool="gpu", queue="gpu", retries=1, retry_delay=timedelta(minutes=5))
    def train(downloaded: dict) -> dict:
        p = get_current_context()["params"]
        with bad_input_fails():
            online = p["download_budget"] is not None  # balance for the subset's t in the loader, each epoch
            config = replace(
                _config(), balance_t=plan.subset_t(store(), from_params(Subset, p)) if online else None
            )
            return publish(run(store(), TRAIN, config, {"downloaded": artifact(downloaded)}))

    @task(outlets=[METRICS_ASSET])
    def evaluate(checkpoint: dict) -> dict:
        with bad_input_fails():
            eval_set = EvaluateParams(os.environ.get("METACLIP_EVAL_COCO", str(COCO)))
            metrics = run(store(), EVALUATE, eval_set, {"checkpoint": artifact(checkpoint)})
        return {**publish(metrics), **metrics.stats}

    check_params() >> evaluate(train(download()))
