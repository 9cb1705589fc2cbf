"""metaclip_metadata: MetaCLIP's metadata built from its sources (paper section 3.1, Table 1).

WordNet synsets, Wikipedia unigrams (count >= 100) and PMI bigrams (PMI >= 30 bits) from
pages-articles dumps, and titles by page views (>= 70), united in that order, de-duplicated,
within a 500k budget.  Dumps and page-view files may be local paths or URLs: URLs are
downloaded first (resumable, checksum-verified, retried) under ``<root>/sources/``.  The
result is a ``metadata`` artifact whose version the matching DAG takes as its input.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, Param, get_current_context, task
from metaclip_airflow import DASK_RETRIES, bad_input_fails, cluster, store, summary

from metaclip_tasks import pipeline
from metaclip_tasks.errors import CurationError
from metaclip_tasks.metadata.build import SOURCES, MetadataParams
from metaclip_tasks.metadata.fetch import fetch_all

METADATA_ASSET = Asset("metaclip.metadata")
_INT = {"type": "integer", "minimum": 1}

with DAG(
    dag_id="metaclip_metadata",
    description="Build the metadata from WordNet, Wikipedia unigrams and PMI bigrams, and titles by page views",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={
        "sources": Param(list(SOURCES), type="array", items={"type": "string", "enum": list(SOURCES)}, minItems=1,
                         title="Sources", description="which sources to unite, in the paper's order"),
        "wikipedia_dumps": Param([], type="array", items={"type": "string"}, title="Wikipedia dumps",
                                 description="pages-articles .xml.bz2 files: local paths or URLs"),
        "pageview_files": Param([], type="array", items={"type": "string"}, title="Page-view files",
                                description="hourly pageviews-*.gz files: local paths or URLs"),
        "min_unigram_count": Param(100, **_INT, title="Min unigram count", description="paper: 100"),
        "max_unigrams": Param(251_465, **_INT, title="Max unigrams", description="paper: 251,465"),
        "min_pmi": Param(30.0, type="number", title="Min PMI (bits)", description="paper: 30"),
        "min_bigram_count": Param(1, **_INT, title="Min bigram count", description="evidence a bigram needs"),
        "max_bigrams": Param(100_646, **_INT, title="Max bigrams", description="paper: 100,646"),
        "min_title_views": Param(70, **_INT, title="Min title views", description="paper: 70"),
        "budget": Param(500_000, **_INT, title="Budget", description="total entries (paper: 500k)"),
    },  # fmt: skip
    tags=["metaclip", "metadata"],
    doc_md=__doc__,
) as dag:

    def _params() -> MetadataParams:
        p = get_current_context()["params"]
        return MetadataParams(
            sources=tuple(p["sources"]), min_unigram_count=p["min_unigram_count"], max_unigrams=p["max_unigrams"],
            min_pmi=p["min_pmi"], min_bigram_count=p["min_bigram_count"], max_bigrams=p["max_bigrams"],
            min_title_views=p["min_title_views"], budget=p["budget"],
        )  # fmt: skip

    @task
    def check_params() -> None:
        """Refuse sources without their input files before anything is downloaded."""
        p = get_current_context()["params"]
        with bad_input_fails():
            params = _params()
            if {"unigram", "bigram"} & set(params.sources) and not p["wikipedia_dumps"]:
                raise CurationError("the unigram and bigram sources need wikipedia_dumps (paths or URLs)")
            if "title" in params.sources and not p["pageview_files"]:
                raise CurationError("the title source needs pageview_files (paths or URLs)")

    @task(retries=3, retry_delay=timedelta(minutes=1))
    def fetch_sources() -> dict:
        """Download the URLs among the inputs (resumable, checksum-verified); local paths pass through."""
        p = get_current_context()["params"]
        directory = f"{store().root}/sources"
        with bad_input_fails():
            return {key: fetch_all(p[key], directory) for key in ("wikipedia_dumps", "pageview_files")}

    @task(outlets=[METADATA_ASSET], **DASK_RETRIES)
    def build(files: dict) -> dict:
        context = get_current_context()
        with bad_input_fails(), cluster() as client:
            artifact = pipeline.build_metadata_artifact(
                store(), _params(), dumps=files["wikipedia_dumps"], pageview_files=files["pageview_files"], client=client
            )
        event = {**summary(artifact), "entries": artifact.stats["entries"], "by_source": artifact.stats["by_source"]}
        context["outlet_events"][METADATA_ASSET].extra = event
        return event

    check_params() >> build(fetch_sources())
