"""The stage table: every stage of the pipeline, declared once (see :mod:`metaclip_tasks.stage`).

Each stage reads its inputs and writes its output through fsspec, so the artifact root may be
a local directory or object storage; the per-shard work of ``pairs_import``, ``match`` and
``balance`` runs on Dask workers that read their shard from the store and write their output
straight to it.  Without a Dask client the same work runs in this process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dask.distributed import as_completed
from tqdm import tqdm

from metaclip_tasks import files
from metaclip_tasks.artifacts import DATA, Artifact, version_for
from metaclip_tasks.balancing import (
    ShardBalance,
    balance_shard,
    balance_summary,
    entry_probabilities,
    t_for_tail_ratio,
    tail_ratio,
    tail_ratio_warning,
)
from metaclip_tasks.cluster import tree_sum
from metaclip_tasks.commoncrawl import CC_BASE, LISTINGS, crawl_files, with_retries
from metaclip_tasks.counting import COUNTS_DTYPE, add_counts, load_counts, sum_counts, top_entries
from metaclip_tasks.dedup import KEY_DTYPE, first_occurrences, pair_keys
from metaclip_tasks.download import (
    DownloadOptions,
    download_stats,
    downloaded_uids,
    materialize_view,
    run_img2dataset,
    subset_index,
    write_url_list,
)
from metaclip_tasks.errors import CurationError
from metaclip_tasks.evaluate import evaluate_checkpoint, load_coco
from metaclip_tasks.ingest import COUNTERS as INGEST_COUNTERS
from metaclip_tasks.ingest import extract_file, file_format
from metaclip_tasks.language import LanguageFilter, check_languages
from metaclip_tasks.matching import TABLES, Matcher, match_shard
from metaclip_tasks.metadata.build import ENTRIES, MetadataParams, build_metadata
from metaclip_tasks.metadata.store import load_metadata, metadata_report
from metaclip_tasks.online import LoaderRule, expected_kept, kept_per_epoch, loader_rule
from metaclip_tasks.report import STANDARD_TS, plot_ablation, plot_entry_counts, tail_ratios
from metaclip_tasks.shards import MATCHED_SCHEMA, PAIRS_SCHEMA, ShardReader, ShardWriter, part_name
from metaclip_tasks.snapshots import check_snapshot, is_crawl_id, snapshot_date
from metaclip_tasks.stage import Build, Input, Stage, find, run
from metaclip_tasks.train import TrainConfig, check_device, run_training
from metaclip_tasks.uids import url_uids

COUNTS = "counts.npy"
MATCHER = "matcher"  # a matcher artifact's folder: matcher/<table>.npy, one per matching.TABLES
_MATCHERS: dict[tuple[str, str], Matcher] = {}  # per Dask worker process: (metadata version, backend) -> matcher


def _each_shard(client: Any, label: str, fn: Callable, *iterables: Sequence, **kwargs: Any) -> list:
    """``fn`` over each shard: its results, in this process without a client, else its futures on
    the Dask cluster; in order, with a progress bar on a terminal."""
    if client is None:
        jobs = list(zip(*iterables, strict=True))
        return [fn(*args, **kwargs) for args in tqdm(jobs, desc=label, unit="shard", disable=None)]
    futures = client.map(fn, *iterables, pure=False, **kwargs)
    if sys.stderr.isatty():
        from dask.distributed import progress

        progress(futures)
    return futures


GATHER_BATCH = 8  # results fetched in one round trip: one each cost ~1.5 ms of the driver's CPU and ~1 ms of a worker's


def _in_completion_order(client: Any, results: list, batch: int = GATHER_BATCH) -> Iterator[tuple[int, Any]]:
    """``(index, result)`` of each shard's result (see :func:`_each_shard`): on a cluster as tasks end,
    fetched ``batch`` at a time (the rest once all have ended; a failed task's error at once) and then
    released, so the driver holds at most ``batch``."""
    if client is None:
        yield from enumerate(results)
        return
    index = {future.key: i for i, future in enumerate(results)}
    ended: list = []
    for n, future in enumerate(as_completed(results), 1):
        ended.append(future)
        if len(ended) == batch or n == len(results) or future.status == "error":
            for done, result in zip(ended, client.gather(ended), strict=True):
                yield index[done.key], result
                done.release()
            ended = []


def _map(client: Any, label: str, fn: Callable, *iterables: Sequence, **kwargs: Any) -> list:
    """The results of ``fn`` over each shard (see :func:`_each_shard`)."""
    results = _each_shard(client, label, fn, *iterables, **kwargs)
    return results if client is None else client.gather(results)


def _record(build: Build, written: Sequence[files.Stored]) -> None:
    for w in written:
        build.output.record(w)


@dataclass(frozen=True)
class NoParams:
    """A stage whose output depends on its inputs alone."""


# -- pairs: raw image-text pairs of one snapshot ------------------------------------------


@dataclass(frozen=True)
class PairsImport:
    """Pairs of one snapshot imported from parquet files (any fsspec URI, directory or glob)."""

    snapshot: str = field(metadata={"help": "the Common Crawl id the pairs belong to, e.g. CC-MAIN-2023-06"})
    sources: tuple[str, ...] = field(metadata={"help": "parquet files, directories or globs (local, s3://, ...)",
                                               "minItems": 1, "identity": False})  # fmt: skip
    url_column: str = field(default="url", metadata={"help": "the column of image URLs"})
    text_column: str = field(default="text", metadata={"help": "the column of alt-texts"})
    uid_column: str | None = field(default=None, metadata={"help": "the column of pair ids; empty: sha224(url)[:24], as MetaCLIP"})
    rows: tuple[int, int] | None = field(default=None, metadata={
        "help": "only rows [start, stop) of the sources taken in order (e.g. to split one file over snapshots)", "minimum": 0})
    rows_per_shard: int = field(default=1_000_000, metadata={"help": "at most this many pairs per output shard", "minimum": 1})


def _pairs_sources(params: PairsImport) -> list[dict[str, Any]]:
    check_snapshot(params.snapshot)
    return [files.fingerprint(uri) for uri in files.expand(params.sources)]


def _import_part(source: str, start: int, stop: int, output_uri: str, params: PairsImport) -> tuple[dict[str, int], files.Stored]:
    """Rows [start, stop) of one source file as a pairs shard; rows without a URL are dropped, counted."""
    columns = [c for c in (params.url_column, params.text_column, params.uid_column) if c]
    stats = {"pairs_in": 0, "pairs": 0, "pairs_without_url": 0}
    position = 0
    with ShardReader(source, columns, string_columns=columns) as reader, ShardWriter(output_uri, PAIRS_SCHEMA) as writer:
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
                    raise CurationError(f"input shard {reader.uri}: column {name!r} is not valid UTF-8 text: {e}") from e
            urls = part.column(params.url_column)
            part = part.filter(pc.fill_null(pc.greater(pc.utf8_length(urls), 0), False))
            urls = part.column(params.url_column)
            uids = part.column(params.uid_column) if params.uid_column else url_uids(urls)
            nulls = pa.nulls(len(part), pa.string())
            writer.write(pa.Table.from_arrays([uids, urls, part.column(params.text_column), nulls, nulls, nulls],
                                                schema=PAIRS_SCHEMA))
            stats["pairs_in"] += hi - lo
            stats["pairs"] += len(part)
            stats["pairs_without_url"] += hi - lo - len(part)
        return stats, writer.close()


def build_pairs_import(build: Build) -> dict[str, Any]:
    params: PairsImport = build.params
    sources = files.expand(params.sources)
    columns = [c for c in (params.url_column, params.text_column, params.uid_column) if c]
    sizes = []
    for uri in sources:  # every source readable, with its columns as strings, before any work
        with ShardReader(uri, columns, string_columns=columns) as reader:
            sizes.append(reader.num_rows)
    start, stop = params.rows or (0, sum(sizes))
    if not 0 <= start <= stop:
        raise CurationError(f"rows must be [start, stop) with 0 <= start <= stop, got {list(params.rows)}")
    jobs, offset = [], 0
    for uri, n in zip(sources, sizes, strict=True):
        lo, hi = max(start - offset, 0), min(stop - offset, n)
        jobs += [(uri, a, min(a + params.rows_per_shard, hi)) for a in range(lo, hi, params.rows_per_shard)]
        offset += n
    if not jobs:
        raise CurationError(f"no pairs to import: the sources hold {sum(sizes)} rows, asked for rows {start}..{stop}")
    outputs = [build.output.uri_of(f"{DATA}/{part_name(i)}") for i in range(len(jobs))]
    results = _map(build.client, "import", _import_part, *zip(*jobs), outputs, params=params)
    _record(build, [w for _, w in results])
    totals = {k: sum(s[k] for s, _ in results) for k in results[0][0]}
    return {"snapshot": params.snapshot, **totals, "shards": len(jobs)}


PAIRS_IMPORT = Stage("pairs_import", 2, PairsImport, build_pairs_import, produces="pairs", external=_pairs_sources)


# -- ingest: a snapshot's pairs from Common Crawl's WARC or WAT files (paper A.2) ---------------


@dataclass(frozen=True)
class Ingest:
    """Pairs of one snapshot extracted from WARC or WAT files: image links with their alt-texts in
    the languages kept, de-duplicated by (url, text) within the snapshot."""

    snapshot: str = field(metadata={"help": "the Common Crawl id the pairs belong to, e.g. CC-MAIN-2023-06"})
    sources: tuple[str, ...] = field(metadata={
        "help": "WARC/WAT files, directories or globs (local, s3://, https://...), or a crawl id for Common Crawl's own files",
        "minItems": 1, "identity": False})  # fmt: skip
    format: str = field(default="wat", metadata={"help": "which files of a crawl id to read (files are told by their names)",
                                                 "enum": list(LISTINGS)})  # fmt: skip
    languages: tuple[str, ...] = field(default=("en",), metadata={
        "help": "alt-text languages kept (ISO 639-1 codes), or any", "minItems": 1})  # fmt: skip
    max_files: int | None = field(default=None, metadata={
        "help": "only the first N files of a crawl id's list (a sample); empty: all of them", "minimum": 1})  # fmt: skip
    cc_base: str = field(default=CC_BASE, metadata={
        "help": "where crawl ids are read from: https://data.commoncrawl.org/, s3://commoncrawl/ or a mirror",
        "identity": False})  # fmt: skip


RAW_SUFFIXES = (".warc.gz", ".warc", ".wat.gz", ".wat")


def ingest_inputs(params: Ingest) -> list[tuple[str, str, dict[str, Any]]]:
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


def _ingest_identity(params: Ingest) -> list[dict[str, Any]]:
    return [identity for _, _, identity in ingest_inputs(params)]


def _ingest_part(source: str, fmt: str, part: str, marker: str, languages: tuple[str, ...]) -> tuple[dict[str, int], files.Stored]:
    """One input file's pairs as a part (retried on network errors), written under a name of its own
    and renamed, so two runs of one file never write into the same file; the marker written last
    says the part is complete."""
    temporary = f"{part}.{uuid.uuid4().hex}.tmp"
    stats, written = with_retries(lambda: extract_file(source, temporary, LanguageFilter(languages), fmt), f"input {source}")
    fs, path = files.filesystem(part)
    fs.mv(files.filesystem(temporary)[1], path)
    with files.open_write(marker) as f:
        f.write(json.dumps({"source": source, "stats": stats, "bytes": written.bytes, "sha256": written.sha256}).encode())
    return stats, files.Stored(part, written.bytes, written.sha256, "ingested part")


def _done_part(part: str, marker: str) -> tuple[dict[str, int], files.Stored] | None:
    """A part a previous run completed, or None."""
    fs, path = files.filesystem(marker)
    if not fs.isfile(path):
        return None
    with fs.open(path, "rb") as f:
        done = json.load(f)
    return done["stats"], files.Stored(part, done["bytes"], done["sha256"], "ingested part")


def _shard_keys(part: files.Stored) -> np.ndarray:
    """The (url, text) key of each row of a pairs or matched shard."""
    with ShardReader(part, ["url", "text"]) as reader:
        keys = [pair_keys(b.column("url"), b.column("text")) for b in reader.batches()]
    return np.concatenate(keys) if keys else np.empty(0, dtype=KEY_DTYPE)


def _write_unique(part: files.Stored, keep: np.ndarray, output_uri: str) -> files.Stored:
    """The part's rows that are the first of their (url, text) in the snapshot."""
    position = 0
    with ShardReader(part, PAIRS_SCHEMA.names) as reader, ShardWriter(output_uri, PAIRS_SCHEMA) as writer:
        for batch in reader.batches():
            writer.write(batch.filter(pa.array(keep[position : position + len(batch)])))
            position += len(batch)
        return writer.close()


def build_ingest(build: Build) -> dict[str, Any]:
    params: Ingest = build.params
    inputs = ingest_inputs(params)
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
        build.log(f"ingest {params.snapshot}: {len(results)} of {len(inputs)} files already ingested, {len(jobs)} to go")
    if jobs:
        index, *args = zip(*jobs)
        for i, result in zip(index, _map(build.client, "ingest", _ingest_part, *args, languages=params.languages), strict=True):
            results[i] = result
    parts = [results[i][1] for i in range(len(inputs))]
    keep = first_occurrences(_map(build.client, "keys", _shard_keys, parts))
    shards = [(p, k) for p, k in zip(parts, keep, strict=True) if k.any()]
    if not shards:
        raise CurationError(f"the {len(inputs)} input files of {params.snapshot} hold no image with an alt-text "
                            f"in {', '.join(params.languages)}")  # fmt: skip
    outputs = [build.output.uri_of(f"{DATA}/{part_name(i)}") for i in range(len(shards))]
    _record(build, _map(build.client, "deduplicate", _write_unique, *zip(*shards), outputs))
    totals = {k: sum(stats[k] for stats, _ in results.values()) for k in INGEST_COUNTERS}
    unique = int(sum(k.sum() for k in keep))
    return {"snapshot": params.snapshot, "files": len(inputs), **totals,
            "duplicates_in_snapshot": totals["pairs"] - unique, "pairs": unique, "shards": len(shards)}  # fmt: skip


INGEST = Stage("ingest", 1, Ingest, build_ingest, produces="pairs", libraries=("fastwarc", "selectolax", "py3langid"),
               external=_ingest_identity)  # fmt: skip


# -- metadata ---------------------------------------------------------------------------------


def _metadata_sources(params: MetadataParams) -> dict[str, list[dict[str, Any]]]:
    return {source: [files.fingerprint(uri) for uri in uris] for source, uris in params.input_files().items()}


def build_metadata_stage(build: Build) -> dict[str, Any]:
    result = build_metadata(build.params, build.client)
    if not result.entries:
        raise CurationError(f"the metadata from {', '.join(build.params.sources)} has no entries: check the source files")
    result.write(build.output)
    return {**result.stats(), **metadata_report(result.entries)}


@dataclass(frozen=True)
class MetadataImport:
    """An existing entry list (e.g. MetaCLIP's metadata.json): a JSON list of strings."""

    path: str = field(metadata={"help": "the JSON list (any fsspec URI)", "identity": False})


def _import_digest(params: MetadataImport) -> str:
    fs, path = files.filesystem(params.path)
    if not fs.isfile(path):
        raise CurationError(f"metadata file {params.path} does not exist")
    return files.describe(fs, path)[1]


def build_metadata_import(build: Build) -> dict[str, Any]:
    entries = load_metadata(build.params.path)
    build.output.write_bytes(ENTRIES, json.dumps(entries, ensure_ascii=False).encode("utf-8"))
    return metadata_report(entries)


METADATA_BUILD = Stage("metadata_build", 1, MetadataParams, build_metadata_stage, produces="metadata",
                       libraries=("mwparserfromhell",), external=_metadata_sources)  # fmt: skip
METADATA_IMPORT = Stage("metadata_import", 1, MetadataImport, build_metadata_import, produces="metadata", external=_import_digest)


# -- match: each snapshot's pairs against the metadata (section 3.2) ------------------------------


@dataclass(frozen=True)
class MatchParams:
    """The matching engine: both give the same output (so it is not part of the version)."""

    backend: str = field(default="tokens", metadata={"help": "matching engine", "enum": ["tokens", "ahocorasick"],
                                                     "identity": False})  # fmt: skip


@dataclass(frozen=True)
class MatcherBuild:
    """The token engine of a metadata artifact, built once: it takes no params."""


def build_matcher(build: Build) -> dict[str, Any]:
    """The token engine's tables as ``.npy`` files (deterministic: same entries, same bytes)."""
    arrays = Matcher(load_metadata(build["metadata"].stored(ENTRIES))).arrays()
    for name, array in arrays.items():
        build.output.save_array(f"{MATCHER}/{name}.npy", array)
    return {"bytes": int(sum(a.nbytes for a in arrays.values()))}


# Derived from the metadata alone, beside it: the match stage makes it on first use and its workers
# memory-map it, so neither the metadata's version nor any match's depends on it.
MATCHER_BUILD = Stage("matcher_build", 1, MatcherBuild, build_matcher, {"metadata": Input("metadata")}, produces="matcher")


def _saved_matcher(matcher: Artifact) -> tuple[files.Stored, ...]:
    """The files of a matcher artifact, in matching.TABLES order."""
    return tuple(matcher.stored(f"{MATCHER}/{name}.npy") for name in TABLES)


def _local_file(stored: files.Stored) -> str:
    """A local path of a saved matcher file, verified: the file itself on a local root, else a copy in this
    host's temporary folder named by its sha256 (verified before it is renamed into place), which every
    worker process of the host maps."""
    fs, path = files.filesystem(stored.uri)
    if not files.is_local(fs):
        local = Path(tempfile.gettempdir()) / "metaclip-matchers" / f"{stored.sha256}.npy"
        if not local.is_file():
            local.parent.mkdir(parents=True, exist_ok=True)
            partial = local.with_name(f".{local.name}.{uuid.uuid4().hex}")
            try:
                fs.get(path, str(partial))
                files.verify(dataclasses.replace(stored, uri=str(partial)))
                os.replace(partial, local)
            finally:
                partial.unlink(missing_ok=True)
        stored, path = dataclasses.replace(stored, uri=str(local)), str(local)
    files.verify(stored)
    return path


def _worker_matcher(entries: files.Stored, saved: Sequence[files.Stored], metadata_version: str, backend: str) -> Matcher:
    """The matcher for a metadata version, once per worker process: the token engine memory-mapped from its
    matcher artifact (the pages shared by the host's workers), else (another backend) built from the entries."""
    key = (metadata_version, backend)
    if key not in _MATCHERS:
        _MATCHERS.clear()  # one metadata at a time keeps workers' memory bounded
        if backend == "tokens" and saved:
            _MATCHERS[key] = Matcher.load({name: _local_file(f) for name, f in zip(TABLES, saved, strict=True)})
        else:
            _MATCHERS[key] = Matcher(load_metadata(entries), backend=backend)  # type: ignore[arg-type]
    return _MATCHERS[key]


def _match_task(
    shard: files.Stored, output: str, entries: files.Stored, saved: Sequence[files.Stored], metadata_version: str, backend: str
):
    return match_shard(shard, output, _worker_matcher(entries, saved, metadata_version, backend))


def _matcher_of(build: Build, metadata: Artifact) -> Artifact:
    """The metadata's matcher artifact, made now if absent. An existing one is not read here: each
    worker verifies the files it maps, so the driver does not fetch them (36 MB from an object store)."""
    inputs = {"metadata": metadata}
    return find(build.store, MATCHER_BUILD, MatcherBuild(), inputs) or run(build.store, MATCHER_BUILD, MatcherBuild(), inputs, log=build.log)


def build_match(build: Build) -> dict[str, Any]:
    pairs, metadata = build["pairs"], build["metadata"]
    shards = pairs.data_files()
    outputs = [build.output.uri_of(f"{DATA}/{shard.name}") for shard in shards]
    backend = build.params.backend
    saved = _saved_matcher(_matcher_of(build, metadata)) if backend == "tokens" and build.store is not None else ()
    task = {"entries": metadata.stored(ENTRIES), "saved": saved, "metadata_version": metadata.version, "backend": backend}
    results = _each_shard(build.client, "match", _match_task, shards, outputs, **task)
    counts = np.zeros(metadata.stats["entries"], dtype=COUNTS_DTYPE)
    summaries: list[tuple[dict[str, int], files.Stored]] = [None] * len(shards)  # type: ignore[list-item]
    for i, result in _in_completion_order(build.client, results):  # sparse counts added as results arrive
        if result.num_entries != len(counts):
            raise CurationError(f"match: {shards[i].name} was counted against {result.num_entries} entries, not {len(counts)}")
        add_counts(counts, result.entries, result.counts, shards[i].name)
        summaries[i] = (result.stats, result.written)
    _record(build, [w for _, w in summaries])
    build.output.save_array(COUNTS, counts)
    totals = {k: sum(s[k] for s, _ in summaries) for k in summaries[0][0]}
    per_shard = {w.name: s for s, w in summaries}
    return {"snapshot": pairs.stats["snapshot"], **totals, "entries": len(counts), "shards": per_shard}


MATCH = Stage("match", 1, MatchParams, build_match, {"pairs": Input("pairs"), "metadata": Input("metadata")}, produces="matched")


# -- pool counts: a pool's per-entry counts and its t (sections 3.3-3.4) -----------------------------


@dataclass(frozen=True)
class PoolCountsParams:
    pool: str = field(metadata={"help": "the pool's name (metaclip_tasks/pools.toml or $METACLIP_POOLS)"})
    target_tail_ratio: float = field(default=0.06, metadata={
        "help": "the share of matches in tail entries (count < t) that picks the pool's t", "exclusiveMinimum": 0,
        "exclusiveMaximum": 1})  # fmt: skip


def metadata_of(matched: Sequence[Artifact]) -> str:
    """The one metadata version a set of matched snapshots was made from."""
    versions = {i["version"] for a in matched for i in a.manifest["inputs"] if i["stage"] == "metadata"}
    if len(versions) != 1:
        raise CurationError(f"the snapshots were matched against different metadata versions: {sorted(versions)}")
    return versions.pop()


DUPLICATES = "duplicates"  # pool_counts: per matched shard, the rows whose pair an earlier row already has


def _rows_counts(shard: files.Stored, rows: np.ndarray, num_entries: int) -> np.ndarray:
    """The per-entry counts of some rows of a matched shard."""
    with ShardReader(shard, ["matched_entry_ids"]) as reader:
        reader.require_int_lists("matched_entry_ids")
        ids = pa.chunked_array([b.column(0) for b in reader.batches()], MATCHED_SCHEMA.field("matched_entry_ids").type)
    chosen = pc.take(ids, pa.array(rows)).combine_chunks() if len(rows) else pa.array([], ids.type)
    return np.bincount(chosen.flatten().to_numpy(zero_copy_only=False), minlength=num_entries).astype(COUNTS_DTYPE)


def pool_duplicates(build: Build, matched: Sequence[Artifact]) -> dict[str, np.ndarray]:
    """The matched rows whose (url, text) an earlier row of the pool already has, by shard name
    (``<snapshot>/<part>``): snapshots in crawl order, so the earliest crawl keeps a pair whatever
    order they were ingested and matched in."""
    chronological = sorted(matched, key=lambda a: snapshot_date(a.stats["snapshot"]))
    shards = [(f"{a.stats['snapshot']}/{s.name}", s) for a in chronological for s in a.data_files()]
    firsts = first_occurrences(_map(build.client, "pool keys", _shard_keys, [s for _, s in shards]))
    return {name: np.flatnonzero(~first) for (name, _), first in zip(shards, firsts, strict=True) if not first.all()}


def duplicate_rows(counts_artifact: Artifact, snapshot: str, shard: files.Stored) -> np.ndarray | None:
    """The rows of one matched shard that a pool's counts left out as duplicates, or None."""
    name = f"{DUPLICATES}/{snapshot}/{shard.name.removesuffix('.parquet')}.npy"
    return counts_artifact.read_array(name) if name in counts_artifact.files(".npy", under=DUPLICATES) else None


def build_pool_counts(build: Build) -> dict[str, Any]:
    params: PoolCountsParams = build.params
    matched, metadata = build["matched"], build["metadata"]
    if metadata_of(matched) != metadata.version:
        raise CurationError(f"the snapshots were matched against metadata {metadata_of(matched)}, not {metadata.version}")
    snapshots = [a.stats["snapshot"] for a in matched]
    counts = sum_counts([load_counts(a.stored(COUNTS)) for a in matched], names=snapshots)
    entries = load_metadata(metadata.stored(ENTRIES))
    if len(entries) != len(counts):
        raise CurationError(f"the counts have {len(counts):,} entries, metadata {metadata.version} has {len(entries):,}")
    matches_with_duplicates = int(counts.sum())
    duplicates = pool_duplicates(build, matched)
    shard_of = {f"{a.stats['snapshot']}/{s.name}": s for a in matched for s in a.data_files()}
    names = sorted(duplicates)
    for name, rows in zip(names, _map(build.client, "duplicates", _rows_counts, [shard_of[n] for n in names],
                                      [duplicates[n] for n in names], num_entries=len(counts)), strict=True):  # fmt: skip
        counts -= rows
        build.output.save_array(f"{DUPLICATES}/{name.removesuffix('.parquet')}.npy", duplicates[name].astype(np.int64))
    t = t_for_tail_ratio(counts, params.target_tail_ratio)
    warning = tail_ratio_warning(counts, params.target_tail_ratio, t)
    build.output.save_array(COUNTS, counts)
    table = pa.table({"entry_id": pa.array(np.arange(len(counts), dtype=np.int32)), "entry": entries, "count": counts})
    with build.output.writer(f"{DATA}/{part_name(0)}") as f:
        pq.write_table(table, f, compression="zstd")
    top = top_entries(counts, entries, 20)
    build.output.write_json("top_entries.json", [{"entry": e, "count": n} for e, n in top])
    with build.output.writer("entry_counts.png") as f:
        plot_entry_counts(counts, t, f, f"{params.pool}: cumulative counts, tail to head")
    per_snapshot = {s: sum(len(rows) for n, rows in duplicates.items() if n.startswith(f"{s}/")) for s in snapshots}
    return {
        "snapshots": snapshots,
        "matches": int(counts.sum()),
        "matches_with_duplicates": matches_with_duplicates,
        "duplicate_pairs": per_snapshot,
        "entries": len(counts),
        "entries_never_matched": int((counts == 0).sum()),
        "t": t,
        "tail_ratio": tail_ratio(counts, t),
        "head_entries": int((counts >= t).sum()),
        "tail_ratios": tail_ratios(counts, STANDARD_TS),
        "top_entries": top[:5],
        "warnings": [warning] if warning else [],  # the target tail ratio not reachable on this pool
    }


POOL_COUNTS = Stage("pool_counts", 2, PoolCountsParams, build_pool_counts,
                    {"matched": Input("matched", many=True), "metadata": Input("metadata")})  # fmt: skip


# -- balance: the curated subset for one t and seed (sections 3.4-3.5) ----------------------------------


@dataclass(frozen=True)
class BalanceParams:
    t: int = field(metadata={"help": "the cap per entry", "minimum": 1})
    seed: int = field(default=0, metadata={"help": "sampling seed (one seed: a smaller t's subset is inside a larger t's)",
                                           "minimum": 0, "maximum": 2**64 - 1})  # fmt: skip


def _balance_task(shard: files.Stored, output: str, drop: np.ndarray | None, probs: np.ndarray, seed: int) -> tuple[ShardBalance, files.Stored]:
    return balance_shard(shard, output, probs, seed, drop=drop)


def build_balance(build: Build) -> dict[str, Any]:
    params: BalanceParams = build.params
    counts_artifact, matched = build["pool_counts"], build["matched"]
    counted = [i["version"] for i in counts_artifact.manifest["inputs"] if i["stage"] == "matched"]
    if counted != [a.version for a in matched]:
        raise CurationError(f"the matched snapshots are not the ones pool_counts {counts_artifact.version} counted")
    counts = load_counts(counts_artifact.stored(COUNTS))
    probs = entry_probabilities(counts, params.t)
    jobs = [(s, build.output.uri_of(f"{DATA}/{a.stats['snapshot']}/{s.name}"), duplicate_rows(counts_artifact, a.stats["snapshot"], s))
            for a in matched for s in a.data_files()]  # fmt: skip
    shared_probs = probs if build.client is None else build.client.scatter(probs, broadcast=True)
    results = _each_shard(build.client, "balance", _balance_task, *zip(*jobs), probs=shared_probs, seed=params.seed)
    if build.client is None:
        total = sum((r for r, _ in results), ShardBalance.zero(len(counts)))
        written = [w for _, w in results]
    else:
        futures = results
        total = tree_sum(build.client, build.client.map(lambda r: r[0], futures))
        written = build.client.gather(build.client.map(lambda r: r[1], futures))
    _record(build, written)
    build.output.save_array("kept_counts.npy", total.kept_counts)
    return {"pool": counts_artifact.params["pool"], **balance_summary(counts, params.t, params.seed, total)}


BALANCE = Stage("balance", 2, BalanceParams, build_balance,
                {"pool_counts": Input("pool_counts"), "matched": Input("matched", many=True)}, produces="curated")  # fmt: skip


# -- download, train, evaluate ------------------------------------------------------------------------


def build_download(build: Build) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="metaclip-download-") as scratch:  # img2dataset's own output
        url_list, shards = Path(scratch) / "urls.parquet", Path(scratch) / "shards"
        write_url_list(build["curated"].data_files(), url_list)
        run_img2dataset(url_list, shards, build.params, build.log)
        with build.output.writer("index.parquet") as f:
            pq.write_table(downloaded_uids(shards), f)
        build.output.put(shards, "shards")
        return download_stats(shards)


def build_download_view(build: Build) -> dict[str, Any]:
    downloaded, curated = build["downloaded"], build["curated"]
    with downloaded.open("index.parquet") as f:
        index = subset_index(pq.read_table(f), curated.data_files())
    with build.output.writer("index.parquet") as f:
        pq.write_table(index, f)
    return {"samples": index.num_rows, "t": curated.params["t"], "downloaded_samples": downloaded.stats["successes"]}


def _downloaded_entries(curated: Artifact, uids: pa.Array) -> pa.Table:
    """(uid, matched_entry_ids) of the curated pairs whose image downloaded."""
    parts = []
    for shard in curated.data_files():
        with ShardReader(shard, ["uid", "matched_entry_ids"], string_columns=["uid"]) as reader:
            reader.require_int_lists("matched_entry_ids")
            table = reader.file.read(columns=["uid", "matched_entry_ids"])
        parts.append(table.filter(pc.is_in(table["uid"], value_set=uids)))
    return pa.concat_tables(parts).combine_chunks()


def _loader_rule(config: TrainConfig, source: Artifact) -> tuple[LoaderRule, Artifact] | None:
    """The loader's balancing rule for ``config.balance_t`` on the subset ``source`` holds (or None)."""
    if config.balance_t is None:
        return None
    curated = source.input("curated")
    counts = load_counts(curated.input("pool_counts").stored(COUNTS))
    return loader_rule(counts, config.balance_t, int(curated.params["t"]), int(curated.params["seed"])), curated


def _online_figures(rule: LoaderRule, t: int, curated: Artifact, index: pa.Table) -> dict[str, Any]:
    """What the loader should keep: epoch 0's exact count (the offline subset's downloaded pairs),
    later epochs' expectation and standard deviation."""
    pairs = _downloaded_entries(curated, index["uid"].combine_chunks())
    expected, sd = expected_kept(rule, pairs["matched_entry_ids"])
    first = int(rule.keep(pairs["uid"], pairs["matched_entry_ids"], 0).sum())
    return {"t": t, "seed": rule.seed, "download_t": int(curated.params["t"]), "downloaded_pairs": pairs.num_rows,
            "epoch0_kept": first, "expected_kept": expected, "kept_sd": sd}  # fmt: skip


def build_train(build: Build) -> dict[str, Any]:
    config: TrainConfig = build.params
    check_device(config)
    downloaded, view = build["downloaded"], build["view"]
    source = view or downloaded
    online = _loader_rule(config, source)  # a download smaller than the subset is refused before any work
    with tempfile.TemporaryDirectory(prefix="metaclip-train-") as scratch:  # the trainer reads and writes local files
        with source.open("index.parquet") as f:
            index = pq.read_table(f)
        shards_dir = downloaded.local_copy("shards", Path(scratch) / "downloaded")
        if view is None:
            shards = sorted(str(p) for p in shards_dir.glob("*.tar"))
        else:
            shards = [str(p) for p in materialize_view(shards_dir, index, Path(scratch) / "view")]
        if not shards or not index.num_rows:
            raise CurationError(f"{source.stage} {source.version} holds no downloaded sample to train on")
        logs, samples, balance, stats = Path(scratch) / "logs", index.num_rows, None, {}
        if online:
            rule, curated = online
            stats = _online_figures(rule, config.balance_t, curated, index)
            # an epoch as long as the offline subset's, or the 4 sd above expectation: rarely cut short
            samples = max(stats["epoch0_kept"], math.ceil(stats["expected_kept"] + 4 * stats["kept_sd"]))
            balance = (Path(scratch) / "rule.npz", logs / "balance")
            rule.save(balance[0])
            balance[1].mkdir(parents=True)
        checkpoint = run_training(config, shards, samples, logs, "train", build.log, balance)
        if balance:
            stats["epochs"] = kept_per_epoch(balance[1])
        build.output.put(checkpoint, "checkpoint.pt")
        shutil.rmtree(logs / "train" / "checkpoints")
        build.output.put(logs, "logs")
    return {"samples": samples, "model": config.model, "epochs": config.epochs, "device": config.device,
            **({"online_balancing": stats} if online else {})}  # fmt: skip


@dataclass(frozen=True)
class EvaluateParams:
    eval_set: str = field(metadata={"help": "COCO-style folder: val2017/ images and annotations/", "identity": False})


def build_evaluate(build: Build) -> dict[str, Any]:
    checkpoint = build["checkpoint"]
    data = load_coco(build.params.eval_set)
    with tempfile.TemporaryDirectory(prefix="metaclip-evaluate-") as scratch:
        weights = checkpoint.local_copy("checkpoint.pt", scratch)
        metrics = evaluate_checkpoint(weights, checkpoint.params["model"], data)
    build.output.write_json("metrics.json", metrics)
    return metrics


def _eval_images(params: EvaluateParams) -> dict[str, Any]:
    data = load_coco(params.eval_set)
    return {"eval_set": "coco_val2017", "images": [p.name for p in data.images]}


DOWNLOAD = Stage("download", 1, DownloadOptions, build_download, {"curated": Input("curated")}, produces="downloaded",
                 libraries=("img2dataset",))  # fmt: skip
DOWNLOAD_VIEW = Stage("download_view", 1, NoParams, build_download_view,
                      {"downloaded": Input("downloaded"), "curated": Input("curated")})  # fmt: skip
TRAIN = Stage("train", 1, TrainConfig, build_train, {"downloaded": Input("downloaded"), "view": Input("download_view", optional=True)},
              produces="checkpoint", libraries=("open_clip_torch", "torch"))  # fmt: skip
EVALUATE = Stage("evaluate", 1, EvaluateParams, build_evaluate, {"checkpoint": Input("checkpoint")}, produces="metrics",
                 libraries=("open_clip_torch", "torch"), external=_eval_images)  # fmt: skip


# -- t ablation: the paper's Table 6 ---------------------------------------------------------------------


def _t_of(artifact: Artifact) -> int:
    """The t of the curated subset a download, view, checkpoint or metrics artifact was made from (for a
    checkpoint balanced in its loader, the t it balanced for)."""
    while artifact.stage != "curated":
        if artifact.stage == "checkpoint" and artifact.params.get("balance_t"):
            return int(artifact.params["balance_t"])
        artifact = next(a for stage in ("curated", "download_view", "downloaded", "checkpoint") for a in artifact.inputs(stage))
    return int(artifact.params["t"])


def build_ablation(build: Build) -> dict[str, Any]:
    counts_artifact = build["pool_counts"]
    curated = sorted(build["curated"], key=lambda a: a.params["t"])
    downloads = {_t_of(a): (a.stats.get("successes") if a.stage == "downloaded" else a.stats["samples"])
                 for a in [*build["downloaded"], *build["views"]]}  # fmt: skip
    metrics = {_t_of(m): m.stats for m in build["metrics"]}
    nested = all(_nested(small, large) for small, large in zip(curated, curated[1:]) if small.params["seed"] == large.params["seed"])
    rows = []
    for artifact in curated:
        s, t = artifact.stats, artifact.params["t"]
        rows.append({"t": t, "seed": s["seed"], "tail_ratio": s["tail_ratio"], "curated": s["kept"], "expected": s["expected_kept"],
                     "downloaded": downloads.get(t), "zero_shot_top1": metrics.get(t, {}).get("zero_shot", {}).get("top1"),
                     "text_to_image_R@5": metrics.get(t, {}).get("text_to_image", {}).get("R@5"), "version": artifact.version})  # fmt: skip
    build.output.write_json("comparison.json", rows)
    lines = ["| t | tail ratio | curated pairs | expected | downloaded | zero-shot top-1 | text->image R@5 | version |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    lines += [f"| {r['t']:,} | {r['tail_ratio']:.4f} | {r['curated']:,} | {r['expected']:,.1f} | "
              f"{_cell(r['downloaded'], ',')} | {_cell(r['zero_shot_top1'], '.3f')} | "
              f"{_cell(r['text_to_image_R@5'], '.3f')} | {r['version']} |" for r in rows]  # fmt: skip
    build.output.write_text("comparison.md", "\n".join(lines) + "\n")
    with build.output.writer("comparison.png") as f:
        plot_ablation(rows, f, f"{counts_artifact.params['pool']}: t ablation")
    return {"pool": counts_artifact.params["pool"], "rows": rows, "nested": nested}


def _cell(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _nested(smaller: Artifact, larger: Artifact) -> bool:
    """Whether every pair kept by ``smaller`` is kept by ``larger``, compared shard by shard."""
    for small_uri, large_uri in zip(smaller.data_files(), larger.data_files(), strict=True):
        small, large = (_uids(uri) for uri in (small_uri, large_uri))
        if len(small) and not pc.all(pc.is_in(small, value_set=large)).as_py():
            return False
    return True


def _uids(shard: files.Stored) -> pa.Array:
    with ShardReader(shard, ["uid"]) as reader:
        return reader.file.read(columns=["uid"])["uid"].combine_chunks()


ABLATION = Stage("t_ablation", 1, NoParams, build_ablation, {
    "pool_counts": Input("pool_counts"), "curated": Input("curated", many=True),
    "downloaded": Input("downloaded", many=True, optional=True), "views": Input("download_view", many=True, optional=True),
    "metrics": Input("metrics", many=True, optional=True)})  # fmt: skip

STAGES: dict[str, Stage] = {s.name: s for s in (PAIRS_IMPORT, INGEST, METADATA_BUILD, METADATA_IMPORT, MATCHER_BUILD, MATCH,
                                                POOL_COUNTS, BALANCE, DOWNLOAD, DOWNLOAD_VIEW, TRAIN, EVALUATE, ABLATION)}  # fmt: skip
