"""metaclip_t_ablation: one balanced subset per t (or per target tail ratio), then a comparison.

For one seed the subsets are nested (smaller t inside larger t), which the comparison
checks.  With ``download`` the largest subset is downloaded once and every smaller one is a
view of it; with ``train`` a model is trained and evaluated per t: the paper's Table 6.  With
``online_balancing`` each t trains on the whole download, balanced for t in the loader each epoch.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import get_current_context, task
from metaclip_airflow import (
    CHECKPOINT_ASSET,
    CURATED_ASSET,
    DASK_RETRIES,
    DOWNLOADED_ASSET,
    METRICS_ASSET,
    T_ABLATION_ASSET,
    artifact,
    bad_input_fails,
    cluster,
    dataclass_params,
    from_params,
    manual_dag,
    pool_param,
    publish,
    store,
    summary,
    warn,
)

from metaclip_tasks.stages import plan
from metaclip_tasks.stages.plan import TAblation
from metaclip_tasks.training.train import TrainChoice

with manual_dag(
    "metaclip_t_ablation",
    "Balance a pool for several t values (or tail ratios) and compare the subsets",
    params={**dataclass_params(TAblation, pool=pool_param()), **dataclass_params(TrainChoice)},
    tags=["balancing", "ablation"],
    doc_md=__doc__,
) as dag:

    @task
    def choose_ts() -> list[int]:
        """The t of every requested value, refusing both lists, neither, or bad values before any work."""
        params = get_current_context()["params"]
        with bad_input_fails():
            ablation = plan.check_t_ablation(store(), from_params(TAblation, params), from_params(TrainChoice, params))
            counts = plan.counted_pool(store(), ablation.pool, ablation.metadata_version)
            ts = plan.ablation_ts(counts, ablation.t_values, ablation.tail_ratios)
            warn([w for ratio in ablation.tail_ratios for w in plan.t_warnings(counts, None, ratio)])
            return ts

    @task(outlets=[CURATED_ASSET], map_index_template="t={{ task.op_kwargs['t'] }}", **DASK_RETRIES)
    def balance(t: int) -> dict:
        params = get_current_context()["params"]
        with bad_input_fails(), cluster() as client:
            counts = plan.counted_pool(store(), params["pool"], params["metadata_version"])
            return publish(plan.balance(store(), counts, t, params["seed"], client))

    @task(outlets=[DOWNLOADED_ASSET], retries=2, retry_delay=timedelta(minutes=1), retry_exponential_backoff=2.0)
    def download_once(curated: list[dict]) -> list[dict]:
        """The largest subset downloaded once; each smaller one an index into it (nested subsets)."""
        if not get_current_context()["params"]["download"]:
            return []
        with bad_input_fails():
            plans = plan.download_once(store(), [artifact(c) for c in curated])
        views = {str(p.t): p.view.version for p in plans if p.view}
        publish(plans[0].downloaded, t=plans[0].t, views=views)
        return [
            {"t": p.t, "downloaded": summary(p.downloaded), "view": summary(p.view) if p.view else None} for p in plans
        ]

    @task(
        outlets=[CHECKPOINT_ASSET, METRICS_ASSET],
        map_index_template="t={{ task.op_kwargs['item']['t'] }}",
        pool="gpu",
        queue="gpu",
        retries=1,
        retry_delay=timedelta(minutes=5),
    )
    def train_and_evaluate(item: dict) -> dict | None:
        """One t's model: trained on its subset of the single download, then evaluated."""
        params = get_current_context()["params"]
        if not params["train"]:
            return None
        with bad_input_fails():
            download = plan.DownloadPlan(
                item["t"], artifact(item["downloaded"]), artifact(item["view"]) if item["view"] else None
            )
            checkpoint, metrics = plan.train_and_evaluate(
                store(), download, from_params(TrainChoice, params).config(), online=params["online_balancing"]
            )
        publish(checkpoint, t=item["t"])
        return publish(metrics, t=item["t"])

    @task(outlets=[T_ABLATION_ASSET], trigger_rule="none_failed")
    def compare(curated: list[dict], downloads: list[dict], results: list[dict | None] | None) -> dict:
        params = get_current_context()["params"]
        with bad_input_fails():
            counts = plan.counted_pool(store(), params["pool"], params["metadata_version"])
            plans = [
                plan.DownloadPlan(d["t"], artifact(d["downloaded"]), artifact(d["view"]) if d["view"] else None)
                for d in downloads
            ]
            table = plan.ablation_table(
                store(), counts, [artifact(c) for c in curated], plans, [artifact(r) for r in results or [] if r]
            )
            with table.open("comparison.md") as comparison:
                print(comparison.read().decode())  # the table, in the task log
        return {**publish(table), "rows": table.stats["rows"]}

    curated = balance.expand(t=choose_ts())
    downloads = download_once(curated)
    compare(curated, downloads, train_and_evaluate.expand(item=downloads))
