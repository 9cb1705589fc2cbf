"""The metadata stages: the entry list built from its sources (paper section 3.1), or imported."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from metaclip_tasks.core import files
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.stage import Build, Stage
from metaclip_tasks.metadata.build import ENTRIES, MetadataBuildParams, build_metadata
from metaclip_tasks.metadata.store import load_metadata, metadata_report


def _metadata_sources(params: MetadataBuildParams) -> dict[str, list[dict[str, Any]]]:
    return {source: [files.fingerprint(uri) for uri in uris] for source, uris in params.input_files().items()}


def build_metadata_stage(build: Build) -> dict[str, Any]:
    result = build_metadata(build.params, build.client)
    if not result.entries:
        raise CurationError(
            f"the metadata from {', '.join(build.params.sources)} has no entries: check the source files"
        )
    result.write(build.output)
    return {**result.stats(), **metadata_report(result.entries)}


@dataclass(frozen=True)
class MetadataImportParams:
    """An existing entry list (e.g. MetaCLIP's metadata.json): a JSON list of strings."""

    path: str = field(metadata={"help": "the JSON list (any fsspec URI)", "identity": False})


def _import_digest(params: MetadataImportParams) -> str:
    fs, path = files.filesystem(params.path)
    if not fs.isfile(path):
        raise CurationError(f"metadata file {params.path} does not exist")
    return files.describe(fs, path)[1]


def build_metadata_import(build: Build) -> dict[str, Any]:
    entries = load_metadata(build.params.path)
    build.output.write_bytes(ENTRIES, json.dumps(entries, ensure_ascii=False).encode("utf-8"))
    return metadata_report(entries)


METADATA_BUILD = Stage(
    "metadata_build",
    1,
    MetadataBuildParams,
    build_metadata_stage,
    produces="metadata",
    libraries=("mwparserfromhell",),
    external=_metadata_sources,
)
METADATA_IMPORT = Stage(
    "metadata_import", 1, MetadataImportParams, build_metadata_import, produces="metadata", external=_import_digest
)
