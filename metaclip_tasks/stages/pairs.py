"""The pairs stages: a snapshot's image-text pairs imported from parquet files, or ingested from
Common Crawl's WARC or WAT files (paper A.2), de-duplicated by (url, text) within the snapshot."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip_tasks.core import files
from metaclip_tasks.core.artifacts import DATA, version_for
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.shards import PAIRS_SCHEMA, ShardReader, ShardWriter, part_name
from metaclip_tasks.core.snapshots import check_snapshot, is_crawl_id
from metaclip_tasks.core.stage import Build, Stage
from metaclip_tasks.ingest.commoncrawl import CC_BASE, LISTINGS, crawl_files, with_retries
from metaclip_tasks.ingest.dedup import first_occurrences, shard_keys
from metaclip_tasks.ingest.extract import COUNTERS as INGEST_COUNTERS
from metaclip_tasks.ingest.extract import extract_file, file_format
from metaclip_tasks.ingest.language import LanguageFilter, check_languages
from metaclip_tasks.ingest.uids import url_uids
from metaclip_tasks.runtime.tasks import map_shards

# -- pairs: raw image-text pairs of one snapshot ------------------------------------------


@dataclass(frozen=True)
class PairsImportParams:
    """Pairs of one snapshot imported from parquet files (any fsspec URI, directory or glob)."""

    snapshot: str = field(metadata={"help": "the Common Crawl id the pairs belong to, e.g. CC-MAIN-2023-06"})
    sources: tuple[str, ...] = field(
        metadata={"help": "parquet files, directories or globs (local, s3://, ...)", "minItems": 1, "identity": False}
    )
    url_column: str = field(default="url", metadata={"help": "the column of image URLs"})
    text_column: str = field(default="text", metadata={"help": "the column of alt-texts"})
    uid_column: str | None = field(
        default=None, metadata={"help": "the column of pair ids; empty: sha224(url)[:24], as MetaCLIP"}
    )
    rows: tuple[int, int] | None = field(
        default=None,
        metadata={
            "help": "only rows [start, stop) of the sources taken in order (e.g. to split one file over snapshots)",
            "minimum": 0,
        },
    )
    rows_per_shard: int = field(
        default=1_000_000, metadata={"help": "at most this many pairs per output shard", "minimum": 1}
    )


def _pairs_sources(params: PairsImportParams) -> list[dict[str, Any]]:
    check_snapshot(params.snapshot)
    return [files.fingerprint(uri) for uri in files.expand(params.sources)]


def _import_part(
    source: str, start: int, stop: int, output_uri: str, params: PairsImportParams
) -> tuple[dict[str, int], files.Stored]:
    """Rows [start, stop) of one source file as a pairs shard; rows without a URL are dropped, counted."""
    columns = [c for c in (params.url_column, params.text_column, params.uid_column) if c]
    stats = {"pairs_in": 0, "pairs": 0, "pairs_without_url": 0}
    position = 0
    with (
        ShardReader(source, columns, string_columns=columns) as reader,
        ShardWriter(output_uri, PAIRS_SCHEMA) as writer,
    ):
        for batch in reader.batches():
            lo, hi = max(start - position, 0), min(stop - position, len(batch))
            position += len(batch)
            if hi <= lo:
                if position >= stop:
                    break
                continue
            part = batch.slice(lo, hi - lo)
            for name in columns:
                try:
                    part.column(name).validate(full=True)
                except pa.ArrowInvalid as e:
                    raise CurationError(
                        f"input shard {reader.uri}: column {name!r} is not valid UTF-8 text: {e}"
                    ) from e
            urls = part.column(params.url_column)
            part = part.filter(pc.fill_null(pc.greater(pc.utf8_length(urls), 0), False))
            urls = part.column(params.url_column)
            uids = part.column(params.uid_column) if params.uid_column else url_uids(urls)
            nulls = pa.nulls(len(part), pa.string())
            writer.write(
                pa.Table.from_arrays(
                    [uids, urls, part.column(params.text_column), nulls, nulls, nulls], schema=PAIRS_SCHEMA
                )
            )
            stats["pairs_in"] += hi - lo
            stats["pairs"] += len(part)
            stats["pairs_without_url"] += hi - lo - len(part)
        return stats, writer.close()


def build_pairs_import(build: Build) -> dict[str, Any]:
    params: PairsImportParams = build.params
    sources = files.expand(params.sources)
    columns = [c for c in (params.url_column, params.text_column, params.uid_column) if c]
    sizes = []
    for uri in sources:  # every source readable, with its columns as strings, before any work
        with ShardReader(uri, columns, string_columns=columns) as reader:
            sizes.append(reader.num_rows)
    start, stop = params.rows or (0, sum(sizes))
    if not 0 <= start <= stop:
        raise CurationError(f"rows must be [start, stop) with 0 <= start <= stop, got {[start, stop]}")
    jobs, offset = [], 0
    for uri, n in zip(sources, sizes, strict=True):
        lo, hi = max(start - offset, 0), min(stop - offset, n)
        jobs += [(uri, a, min(a + params.rows_per_shard, hi)) for a in range(lo, hi, params.rows_per_shard)]
        offset += n
    if not jobs:
        raise CurationError(f"no pairs to import: the sources hold {sum(sizes)} rows, asked for rows {start}..{stop}")
    outputs = [build.output.uri_of(f"{DATA}/{part_name(i)}") for i in range(len(jobs))]
    results = map_shards(build.client, "import", _import_part, *zip(*jobs), outputs, params=params)
    build.record([w for _, w in results])
    totals = {k: sum(s[k] for s, _ in results) for k in results[0][0]}
    return {"snapshot": params.snapshot, **totals, "shards": len(jobs)}


PAIRS_IMPORT = Stage(
    "pairs_import", 2, PairsImportParams, build_pairs_import, produces="pairs", external=_pairs_sources
)


# -- ingest: a snapshot's pairs from Common Crawl's WARC or WAT files (paper A.2) ---------------


@dataclass(frozen=True)
class IngestParams:
    """Pairs of one snapshot extracted from WARC or WAT files: image links with their alt-texts in
    the languages kept, de-duplicated by (url, text) within the snapshot."""

    snapshot: str = field(metadata={"help": "the Common Crawl id the pairs belong to, e.g. CC-MAIN-2023-06"})
    sources: tuple[str, ...] = field(
        metadata={
            "help": "WARC/WAT files, directories or globs (local, s3://, https://...), or a crawl id for Common Crawl's own files",
            "minItems": 1,
            "identity": False,
        }
    )
    format: str = field(
        default="wat",
        metadata={"help": "which files of a crawl id to read (files are told by their names)", "enum": list(LISTINGS)},
    )
    languages: tuple[str, ...] = field(
        default=("en",), metadata={"help": "alt-text languages kept (ISO 639-1 codes), or any", "minItems": 1}
    )
    max_files: int | None = field(
        default=None,
        metadata={"help": "only the first N files of a crawl id's list (a sample); empty: all of them", "minimum": 1},
    )
    cc_base: str = field(
        default=CC_BASE,
        metadata={
            "help": "where crawl ids are read from: https://data.commoncrawl.org/, s3://commoncrawl/ or a mirror",
            "identity": False,
        },
    )


RAW_SUFFIXES = (".warc.gz", ".warc", ".wat.gz", ".wat")


def ingest_inputs(params: IngestParams) -> list[tuple[str, str, dict[str, Any]]]:
    """Each input file as (URI, format, identity): a crawl's files by their immutable paths, others by content."""
    check_snapshot(params.snapshot)
    check_languages(params.languages)
    found: list[tuple[str, str, dict[str, Any]]] = []
    for source in params.sources:
        if is_crawl_id(source):
            for uri in crawl_files(source, params.format, params.cc_base, params.max_files):
                found.append((uri, params.format, {"commoncrawl": uri[len(params.cc_base.rstrip("/")) + 1 :]}))
        else:
            found += [(uri, file_format(uri), files.fingerprint(uri)) for uri in files.expand([source], RAW_SUFFIXES)]
    if len({uri for uri, _, _ in found}) != len(found):
        raise CurationError("an input file is given twice")
    return found


def _ingest_identity(params: IngestParams) -> list[dict[str, Any]]:
    return [identity for _, _, identity in ingest_inputs(params)]


def _ingest_part(
    source: str, fmt: str, part: str, marker: str, languages: tuple[str, ...]
) -> tuple[dict[str, int], files.Stored]:
    """One input file's pairs as a part (retried on network errors), written under a name of its own
    and renamed, so two runs of one file never write into the same file; the marker written last
    says the part is complete."""
    temporary = f"{part}.{uuid.uuid4().hex}.tmp"
    stats, written = with_retries(
        lambda: extract_file(source, temporary, LanguageFilter(languages), fmt), f"input {source}"
    )
    fs, path = files.filesystem(part)
    fs.mv(files.filesystem(temporary)[1], path)
    with files.open_write(marker) as f:
        f.write(
            json.dumps({"source": source, "stats": stats, "bytes": written.bytes, "sha256": written.sha256}).encode()
        )
    return stats, files.Stored(part, written.bytes, written.sha256, "ingested part")


def _done_part(part: str, marker: str) -> tuple[dict[str, int], files.Stored] | None:
    """A part a previous run completed, or None."""
    fs, path = files.filesystem(marker)
    if not fs.isfile(path):
        return None
    with fs.open(path, "rb") as f:
        done = json.load(f)
    return done["stats"], files.Stored(part, done["bytes"], done["sha256"], "ingested part")


def _write_unique(part: files.Stored, keep: np.ndarray, output_uri: str) -> files.Stored:
    """The part's rows that are the first of their (url, text) in the snapshot."""
    position = 0
    with ShardReader(part, PAIRS_SCHEMA.names) as reader, ShardWriter(output_uri, PAIRS_SCHEMA) as writer:
        for batch in reader.batches():
            writer.write(batch.filter(pa.array(keep[position : position + len(batch)])))
            position += len(batch)
        return writer.close()


def build_ingest(build: Build) -> dict[str, Any]:
    params: IngestParams = build.params
    inputs = ingest_inputs(params)
    assert build.store is not None  # run() always passes its store
    parts_dir = build.store.uri("ingest-parts", params.snapshot)
    key = {"stage_version": INGEST.version, "languages": list(check_languages(params.languages))}
    jobs, results = [], {}
    for i, (uri, fmt, identity) in enumerate(inputs):
        name = version_for({**key, "input": identity})
        part, marker = files.join(parts_dir, f"{name}.parquet"), files.join(parts_dir, f"{name}.json")
        done = _done_part(part, marker)
        if done is None:
            jobs.append((i, uri, fmt, part, marker))
        else:
            results[i] = done
    if results:
        build.log(
            f"ingest {params.snapshot}: {len(results)} of {len(inputs)} files already ingested, {len(jobs)} to go"
        )
    if jobs:
        index, *args = zip(*jobs)
        for i, result in zip(
            index, map_shards(build.client, "ingest", _ingest_part, *args, languages=params.languages), strict=True
        ):
            results[i] = result
    parts = [results[i][1] for i in range(len(inputs))]
    keep = first_occurrences(map_shards(build.client, "keys", shard_keys, parts))
    shards = [(p, k) for p, k in zip(parts, keep, strict=True) if k.any()]
    if not shards:
        raise CurationError(
            f"the {len(inputs)} input files of {params.snapshot} hold no image with an alt-text "
            f"in {', '.join(params.languages)}"
        )
    outputs = [build.output.uri_of(f"{DATA}/{part_name(i)}") for i in range(len(shards))]
    build.record(map_shards(build.client, "deduplicate", _write_unique, *zip(*shards), outputs))
    totals = {k: sum(stats[k] for stats, _ in results.values()) for k in INGEST_COUNTERS}
    unique = int(sum(k.sum() for k in keep))
    return {
        "snapshot": params.snapshot,
        "files": len(inputs),
        **totals,
        "duplicates_in_snapshot": totals["pairs"] - unique,
        "pairs": unique,
        "shards": len(shards),
    }


INGEST = Stage(
    "ingest",
    1,
    IngestParams,
    build_ingest,
    produces="pairs",
    libraries=("fastwarc", "selectolax", "py3langid"),
    external=_ingest_identity,
)
