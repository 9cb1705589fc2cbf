"""metaclip_t_ablation: one balanced subset per t (or per target tail ratio), then a comparison.

For one seed the subsets are nested (smaller t inside larger t), which the comparison
checks; downloading and training per value come with the download/train stages.
"""

from __future__ import annotations

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
    def download_once(curated: list[dict]) -> dict[str, int]:
        """The largest subset downloaded once; each smaller one an index into it (nested subsets)."""
        if not get_current_context()["params"]["download"]:
            return {}
        s = store()
        artifacts = sorted((s.require(c["stage"], c["version"]) for c in curated), key=lambda a: a.params["t"])
        downloaded = pipeline.download_curated(s, artifacts[-1], DownloadOptions())
        samples = {str(artifacts[-1].params["t"]): downloaded.stats["successes"]}
        for artifact in artifacts[:-1]:
            samples[str(artifact.params["t"])] = pipeline.download_view(s, downloaded, artifact).stats["samples"]
        return samples

    @task
    def compare(curated: list[dict], downloaded: dict[str, int]) -> dict:
        params = get_current_context()["params"]
        with bad_input_fails():
            _, counts = counted_pool(params["pool"], params["metadata_version"])
            s = store()
            artifacts = [s.require(c["stage"], c["version"]) for c in curated]
            table = pipeline.ablation_table(s, counts, artifacts, {int(t): n for t, n in downloaded.items()})
        with open(table.path("comparison.md")) as comparison:
            print(comparison.read())  # the table, in the task log
        return {**summary(table), "nested": table.stats["nested"], "rows": table.stats["rows"]}

    curated = balance.expand(t=choose_ts())
    compare(curated, download_once(curated))
