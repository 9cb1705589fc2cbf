"""The metadata commands, one per stage: metadata-build, metadata-import, and metadata-stats (the entries per
source, like the paper's Table 1); ``metadata build|import|stats`` are their aliases."""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext

from metaclip_tasks.cli.command import Command, dask_client, done
from metaclip_tasks.core import params as P
from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.stage import run
from metaclip_tasks.metadata.build import MetadataBuildParams
from metaclip_tasks.stages import METADATA_BUILD, METADATA_IMPORT, MetadataImportParams, plan


def _metadata_build(args: argparse.Namespace, store: ArtifactStore) -> None:
    """The entry list built from its sources (Wikipedia's on Dask)."""
    params = P.from_arguments(MetadataBuildParams, args)
    params.input_files()  # each source has its files, before any work
    with dask_client(args) if {"unigram", "bigram"} & set(params.sources) else nullcontext() as client:
        a = run(store, METADATA_BUILD, params, client=client)
    done(a, f"{a.stats['entries']:,} entries {json.dumps(a.stats['by_source'])}")


def _metadata_import(args: argparse.Namespace, store: ArtifactStore) -> None:
    """An existing entry list checked and stored."""
    a = run(store, METADATA_IMPORT, MetadataImportParams(args.path))
    done(a, f"{a.stats['entries']:,} entries ({a.stats['duplicated_entries']:,} duplicated)")


def _metadata_stats(args: argparse.Namespace, store: ArtifactStore) -> None:
    """Entries per source of a metadata artifact, as JSON."""
    from metaclip_tasks.metadata.build import SOURCES_FILE, source_stats
    from metaclip_tasks.metadata.store import load_metadata

    a = plan.metadata(store, args.version)
    entries = load_metadata(a.stored("entries.json"))
    sources = a.read_json(SOURCES_FILE) if SOURCES_FILE in a.files() else None
    print(json.dumps(source_stats(entries, sources), indent=2))


def _metadata_import_arguments(parser: argparse.ArgumentParser) -> None:
    """The list to import."""
    parser.add_argument("path", help="a JSON list of strings, e.g. MetaCLIP's metadata.json (any fsspec URI)")


def _metadata_stats_arguments(parser: argparse.ArgumentParser) -> None:
    """The metadata to describe."""
    parser.add_argument(
        "version", nargs="?", default="", help="a metadata artifact version (default: the WordNet metadata)"
    )


METADATA_BUILD_COMMAND = Command(
    name="metadata-build",
    help="build the metadata (the entry list) from its sources",
    description=(
        "MetaCLIP's metadata (paper section 3.1): WordNet synsets, Wikipedia unigrams (count >= 100), bigrams (PMI >= "
        "30, in bits) and titles (page views >= 70), united in that order, de-duplicated, within a 500k budget."
    ),
    run=_metadata_build,
    params=(MetadataBuildParams,),
    dask=True,
    aliases=("metadata build",),
    stages=("metadata_build",),
)
METADATA_IMPORT_COMMAND = Command(
    name="metadata-import",
    help="check an existing entry list and store it as a metadata artifact",
    description=(
        "A metadata artifact from a JSON list of strings (such as MetaCLIP's metadata.json): every entry a non-blank "
        "string."
    ),
    run=_metadata_import,
    arguments=_metadata_import_arguments,
    aliases=("metadata import",),
    stages=("metadata_import",),
)
METADATA_STATS_COMMAND = Command(
    name="metadata-stats",
    help="entries per source of a metadata artifact, like the paper's Table 1",
    description="The number of entries of a metadata artifact, and per source when it was built from sources, as JSON.",
    run=_metadata_stats,
    arguments=_metadata_stats_arguments,
    aliases=("metadata stats",),
)
