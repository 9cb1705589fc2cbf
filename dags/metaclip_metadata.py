"""metaclip_metadata: MetaCLIP's metadata built from its sources (paper section 3.1, Table 1).

WordNet synsets, Wikipedia unigrams (count >= 100) and PMI bigrams (PMI >= 30 bits) from
pages-articles dumps, and titles by page views (>= 70), united in that order, de-duplicated,
within a 500k budget.  Dumps and page-view files may be local paths, fsspec URLs or http(s)
URLs: http(s) URLs are downloaded first (resumable, checksum-verified, retried) into the local
cache (``$METACLIP_CACHE/sources``).  The result is a ``metadata`` artifact whose version the matching DAG takes.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from airflow.sdk import get_current_context, task
from metaclip_airflow import (
    DASK_RETRIES,
    METADATA_ASSET,
    bad_input_fails,
    cluster,
    dataclass_params,
    from_params,
    manual_dag,
    publish,
    store,
)

from metaclip_tasks.core.settings import cache_dir
from metaclip_tasks.core.stage import run
from metaclip_tasks.metadata.build import MetadataBuildParams
from metaclip_tasks.metadata.fetch import fetch_all
from metaclip_tasks.stages import METADATA_BUILD

with manual_dag(
    "metaclip_metadata",
    "Build the metadata from WordNet, Wikipedia unigrams and PMI bigrams, and titles by page views",
    params=dataclass_params(MetadataBuildParams, skip=("wordnet_dir",)),
    tags=["metadata"],
    doc_md=__doc__,
) as dag:

    @task
    def check_params() -> None:
        """Refuse sources without their input files before anything is downloaded."""
        with bad_input_fails():
            from_params(MetadataBuildParams, get_current_context()["params"]).input_files()

    @task(retries=3, retry_delay=timedelta(minutes=1), retry_exponential_backoff=2.0)
    def fetch_sources() -> dict:
        """Download the http(s) URLs among the inputs (resumable, checksum-verified); others pass through."""
        params = from_params(MetadataBuildParams, get_current_context()["params"])
        directory = cache_dir() / "sources"
        with bad_input_fails():
            return {key: fetch_all(getattr(params, key), directory) for key in ("wikipedia_dumps", "pageview_files")}

    @task(outlets=[METADATA_ASSET], **DASK_RETRIES)
    def build(fetched: dict) -> dict:
        context = get_current_context()
        with bad_input_fails():
            params = replace(
                from_params(MetadataBuildParams, context["params"]), **{k: tuple(v) for k, v in fetched.items()}
            )
            with cluster() as client:
                artifact = run(store(), METADATA_BUILD, params, client=client)
        return publish(artifact)

    check_params() >> build(fetch_sources())
