"""The stage table: every stage of the pipeline, declared once (see :mod:`metaclip_tasks.core.stage`),
one module per family.

Each stage reads its inputs and writes its output through fsspec, so the artifact root may be
a local directory or object storage; the per-shard work of ``pairs_import``, ``ingest``, ``match``
and ``balance`` runs on Dask workers that read their shard from the store and write their output
straight to it.  Without a Dask client the same work runs in this process.
"""

from __future__ import annotations

from metaclip_tasks.core.params import NoParams
from metaclip_tasks.core.stage import Stage
from metaclip_tasks.stages.ablation import ABLATION
from metaclip_tasks.stages.match import MATCH, MATCHER_BUILD, MatcherBuildParams, MatchParams
from metaclip_tasks.stages.metadata import METADATA_BUILD, METADATA_IMPORT, MetadataImportParams
from metaclip_tasks.stages.pairs import (
    INGEST,
    PAIRS_IMPORT,
    RAW_SUFFIXES,
    IngestParams,
    PairsImportParams,
    ingest_inputs,
)
from metaclip_tasks.stages.pool import BALANCE, POOL_COUNTS, BalanceParams, PoolCountsParams
from metaclip_tasks.stages.training import DOWNLOAD, DOWNLOAD_VIEW, EVALUATE, TRAIN, EvaluateParams

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        PAIRS_IMPORT,
        INGEST,
        METADATA_BUILD,
        METADATA_IMPORT,
        MATCHER_BUILD,
        MATCH,
        POOL_COUNTS,
        BALANCE,
        DOWNLOAD,
        DOWNLOAD_VIEW,
        TRAIN,
        EVALUATE,
        ABLATION,
    )
}

__all__ = [
    "ABLATION",
    "BALANCE",
    "DOWNLOAD",
    "DOWNLOAD_VIEW",
    "EVALUATE",
    "INGEST",
    "MATCH",
    "MATCHER_BUILD",
    "METADATA_BUILD",
    "METADATA_IMPORT",
    "PAIRS_IMPORT",
    "POOL_COUNTS",
    "RAW_SUFFIXES",
    "STAGES",
    "TRAIN",
    "BalanceParams",
    "EvaluateParams",
    "IngestParams",
    "MatchParams",
    "MatcherBuildParams",
    "MetadataImportParams",
    "NoParams",
    "PairsImportParams",
    "PoolCountsParams",
    "ingest_inputs",
]
