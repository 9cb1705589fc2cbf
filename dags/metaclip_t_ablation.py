"""metaclip_t_ablation: one balanced subset per t (or per target tail ratio), then a comparison.

For one seed the subsets are nested (smaller t inside larger t), which the comparison
checks; downloading and training per value come with the download/train stages.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, get_current_context, task
from metaclip_airflow import (
    DASK_RETRIES,
    bad_input_fails,
    check_t_choice,
    cluster,
    counted_pool,
    metadata_param,
    pool_param,
    seed_param,
    store,
    summary,
)  # fmt: skip

from metaclip_tasks import pipeline
from metaclip_tasks.download import DownloadOptions
from metaclip_tasks.errors import CurationError
from metaclip_tasks.shared_data import COCO
from metaclip_tasks.train import RECIPES

with DAG(
    dag_id="metaclip_t_ablation",
    description="Balance a pool for several t values (or tail ratios) and compare the subsets",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={
        "pool": pool_param(),
        "t_values": Param([], type="array", items={"type": "integer", "minimum": 1}, title="t values",
                          description="the t values to compare (or give tail ratios instead)"),
        "tail_ratios": Param([], type="array", items={"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                             title="Target tail ratios", description="tail ratios whose t values to compare"),
        "seed": seed_param(),
        "metadata_version": metadata_param(),
        "download": Param(False, type="boolean", title="Download",
                          description="download the largest subset once (img2dataset); the others are views of it"),
        "train": Param(False, type="boolean", title="Train and evaluate",
                       description="train open_clip per t on its (downloaded) subset and evaluate it; needs download"),
        "recipe": Param("tiny-cpu", type="string", enum=sorted(RECIPES), title="Recipe",
                        description="training recipe per t (vit-b-32: the paper's, on GPUs)"),
        "device": Param("cpu", type="string", enum=["cuda", "cpu"], title="Device", description="where to train"),
    },  # fmt: skip
    tags=["metaclip", "balancing", "ablation"],
    doc_md=__doc__,
) as dag:

    @task
    def choose_ts() -> list[int]:
        """The t of every requested value, refusing both lists, neither, or bad values before any work."""
        params = get_current_context()["params"]
        with bad_input_fails():
            ts, ratios = params["t_values"], params["tail_ratios"]
            if bool(ts) == bool(ratios):
                raise CurationError("give t_values or tail_ratios (one non-empty list), not both")
            if params["train"] and not params["download"]:
                raise CurationError("train needs download: the models train on the downloaded images")
            pool = check_t_choice(params["pool"], None, None)
            for t in ts:
                check_t_choice(pool.name, t, None)
            for r in ratios:
                check_t_choice(pool.name, None, r)
            _, counts = counted_pool(pool.name, params["metadata_version"])
            return sorted({pipeline.resolve_pool_t(counts, t, None) for t in ts} |
                          {pipeline.resolve_pool_t(counts, None, r) for r in ratios})  # fmt: skip

    @task(**DASK_RETRIES)
    def balance(t: int) -> dict:
        params = get_current_context()["params"]
        with bad_input_fails():
            matched, counts = counted_pool(params["pool"], params["metadata_version"])
            with cluster() as client:
                artifact = pipeline.balance_pool(store(), counts, matched, client, t=t, seed=params["seed"])
        return summary(artifact)

    @task(retries=2, retry_delay=timedelta(minutes=1))
    def download_once(curated: list[dict]) -> list[dict]:
        """The largest subset downloaded once; each smaller one an index into it (nested subsets)."""
        params = get_current_context()["params"]
        if not params["download"]:
            return []
        s = store()
        artifacts = sorted((s.require(c["stage"], c["version"]) for c in curated), key=lambda a: a.params["t"])
        downloaded = pipeline.download_curated(s, artifacts[-1], DownloadOptions())
        rows = [{"t": artifacts[-1].params["t"], "samples": downloaded.stats["successes"],
                 "downloaded": summary(downloaded), "view": None}]  # fmt: skip
        for artifact in artifacts[:-1]:
            view = pipeline.download_view(s, downloaded, artifact)
            rows.append({"t": artifact.params["t"], "samples": view.stats["samples"], "downloaded": summary(downloaded),
                         "view": summary(view)})  # fmt: skip
        return rows

    @task(pool="gpu", retries=1, retry_delay=timedelta(minutes=5))
    def train_and_evaluate(item: dict) -> dict | None:
        """One t's model: trained on its subset of the single download, then evaluated."""
        params = get_current_context()["params"]
        if not params["train"]:
            return None
        s = store()
        config = replace(RECIPES[params["recipe"]], device=params["device"])
        with bad_input_fails():
            view = s.require(item["view"]["stage"], item["view"]["version"]) if item["view"] else None
            downloaded = s.require(item["downloaded"]["stage"], item["downloaded"]["version"])
            checkpoint = pipeline.train_model(s, downloaded, config, view=view)
            metrics = pipeline.evaluate_model(s, checkpoint, os.environ.get("METACLIP_EVAL_COCO", COCO))
        return {"t": item["t"], **metrics.stats, "checkpoint": checkpoint.version}

    @task(trigger_rule="none_failed")
    def compare(curated: list[dict], downloads: list[dict], results: list[dict | None] | None) -> dict:
        params = get_current_context()["params"]
        with bad_input_fails():
            _, counts = counted_pool(params["pool"], params["metadata_version"])
            s = store()
            artifacts = [s.require(c["stage"], c["version"]) for c in curated]
            table = pipeline.ablation_table(s, counts, artifacts, {d["t"]: d["samples"] for d in downloads},
                                            {r["t"]: r for r in results or [] if r})  # fmt: skip
        with open(table.path("comparison.md")) as comparison:
            print(comparison.read())  # the table, in the task log
        return {**summary(table), "nested": table.stats["nested"], "rows": table.stats["rows"]}

    curated = balance.expand(t=choose_ts())
    downloads = download_once(curated)
    compare(curated, downloads, train_and_evaluate.expand(item=downloads))
