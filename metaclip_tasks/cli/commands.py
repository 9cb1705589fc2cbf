"""The curation commands, one per stage: pairs-import, ingest, match, pool-counts, choose-t, balance, and demo
(the whole curation on embedded defaults)."""

from __future__ import annotations

import argparse
import json

from metaclip_tasks.cli.command import Command, dask_client, done, warn
from metaclip_tasks.core import params as P
from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.stage import run
from metaclip_tasks.stages import (
    INGEST,
    PAIRS_IMPORT,
    IngestParams,
    MatchParams,
    PairsImportParams,
    plan,
)
from metaclip_tasks.stages.plan import Subset


def _pairs_import(args: argparse.Namespace, store: ArtifactStore) -> None:
    """Pairs of one snapshot imported from parquet files."""
    params = P.from_arguments(PairsImportParams, args)
    with dask_client(args, len(params.sources)) as client:
        a = run(store, PAIRS_IMPORT, params, client=client)
    done(
        a,
        f"{a.stats['pairs']:,} pairs of {a.params['snapshot']} in {a.stats['shards']} shards "
        f"({a.stats['pairs_without_url']:,} without a URL dropped)",
    )


def _ingest_arguments(parser: argparse.ArgumentParser) -> None:
    """The sources as positionals, an export folder, and the snapshot and languages as the user writes them."""
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="FILE_OR_CRAWL",
        help="WARC/WAT files, directories, globs (any fsspec URL) or a crawl id",
    )
    parser.add_argument(
        "-o", "--output", metavar="OUT", help="also write the pairs as parquet files under OUT (a new directory)"
    )
    parser.add_argument("--snapshot", help="the crawl the pairs belong to (default: the crawl id given as a source)")
    parser.add_argument(
        "--languages", help="alt-text languages kept: en (default), any, or a comma-separated list such as en,de"
    )


def _ingest(args: argparse.Namespace, store: ArtifactStore) -> None:
    """Pairs of one snapshot extracted from WARC/WAT files or a crawl id, also exported with ``-o``."""
    from metaclip_tasks.core.snapshots import is_crawl_id
    from metaclip_tasks.ingest.export import check_export, export_pairs
    from metaclip_tasks.stages import ingest_inputs

    crawls = [s for s in args.sources if is_crawl_id(s)]
    snapshot = args.snapshot or (crawls[0] if len(set(crawls)) == 1 else None)
    if snapshot is None:
        raise CurationError("give --snapshot: the crawl the files belong to (e.g. CC-MAIN-2023-06)")
    languages = [c for c in (args.languages or "en").split(",") if c.strip()]
    params = P.from_arguments(IngestParams, args, snapshot=snapshot, sources=args.sources, languages=languages)
    inputs = ingest_inputs(params)  # every input there, before any work
    if args.output:
        check_export(args.output, [uri for uri, _, _ in inputs], store.root)
    with dask_client(args, len(inputs)) as client:
        a = run(store, INGEST, params, client=client)
    s = a.stats
    done(
        a,
        f"{s['pairs']:,} pairs of {snapshot} from {s['files']} files: {s['pages']:,} pages, {s['images']:,} "
        f"images, {s['with_alt']:,} with alt-text, {s['other_language']:,} in other languages, "
        f"{s['duplicates_in_snapshot']:,} duplicates, {s['bad_records']:,} bad records",
    )
    if args.output:
        print(f"pairs written to {export_pairs(a, args.output)}")


def _match_arguments(parser: argparse.ArgumentParser) -> None:
    """The snapshots to match and the metadata to match them against."""
    parser.add_argument("snapshots", nargs="+", metavar="SNAPSHOT", help="Common Crawl ids, e.g. CC-MAIN-2023-06")
    parser.add_argument(
        "--metadata-version", default="", help="a metadata artifact version (default: MetaCLIP's WordNet metadata)"
    )


def _match(args: argparse.Namespace, store: ArtifactStore) -> None:
    """Each snapshot's newest pairs matched against the metadata."""
    params = P.from_arguments(MatchParams, args)
    pairs = [plan.latest_pairs(store, s) for s in args.snapshots]  # all there before any work
    meta = plan.metadata(store, args.metadata_version)
    with dask_client(args, max(len(p.data_files()) for p in pairs)) as client:
        for snapshot in args.snapshots:
            a = plan.match_snapshot(store, snapshot, meta, client, params.backend)
            done(
                a,
                f"{snapshot}: matched {a.stats['pairs_matched']:,} of {a.stats['pairs_in']:,} pairs "
                f"({a.stats['matches']:,} matches) against {a.stats['entries']:,} entries",
            )


def _pool_counts(args: argparse.Namespace, store: ArtifactStore) -> None:
    """A pool's summed counts, its t, and its top entries."""
    from metaclip_tasks.curation.counting import load_counts, top_entries
    from metaclip_tasks.metadata.store import load_metadata

    if args.top < 0:
        raise CurationError(f"--top must be >= 0, got {args.top}")
    subset = P.from_arguments(Subset, args)
    a = plan.counted_pool(store, subset.pool, subset.metadata_version)
    done(
        a,
        f"{a.stats['entries']:,} entries, {a.stats['matches']:,} matches, "
        f"{a.stats['entries_never_matched']:,} never matched; t={a.stats['t']}",
    )
    warn(plan.t_warnings(a, None, None))
    entries = load_metadata(a.input("metadata").stored("entries.json"))
    for entry, n in top_entries(load_counts(a.stored("counts.npy")), entries, args.top):
        print(f"{n:>14,}  {entry}")


def _choose_t(args: argparse.Namespace, store: ArtifactStore) -> None:
    """The t of a target tail ratio, or the tail ratio of a t, on the pool's counts."""
    from metaclip_tasks.curation.balancing import tail_ratio
    from metaclip_tasks.curation.counting import load_counts

    subset = P.from_arguments(Subset, args)
    if subset.t is None and subset.target_tail_ratio is None:
        raise CurationError("give --t or --target-tail-ratio")
    plan.check_t_choice(subset.t, subset.target_tail_ratio)  # before counting anything
    counts = plan.counted_pool(store, subset.pool, subset.metadata_version)
    t = plan.pool_t(counts, subset.t, subset.target_tail_ratio)
    result = {
        "t": t,
        "tail_ratio": tail_ratio(load_counts(counts.stored("counts.npy")), t),
        "target_tail_ratio": subset.target_tail_ratio,
        "warnings": plan.t_warnings(counts, subset.t, subset.target_tail_ratio),
    }
    warn(result["warnings"])
    print(json.dumps(result) if args.json else f"t={t} tail_ratio={result['tail_ratio']:.6f}")


def _balance(args: argparse.Namespace, store: ArtifactStore) -> None:
    """A pool's balanced subset for a t (or target tail ratio) and seed."""
    subset = P.from_arguments(Subset, args)
    plan.check_subset(store, subset)
    with dask_client(args) as client:
        a = plan.curated_subset(store, subset, client)
    warn(plan.t_warnings(a.input("pool_counts"), subset.t, subset.target_tail_ratio))
    s = a.stats
    done(
        a,
        f"kept {s['kept']:,} of {s['pairs_in']:,} pairs (expected {s['expected_kept']:,.1f} +- {s['kept_sd']:.1f}) "
        f"with t={s['t']} (tail ratio {s['tail_ratio']:.4f})",
    )


def _demo(args: argparse.Namespace, store: ArtifactStore) -> None:
    """The whole curation on the demo pool, and its report."""
    from metaclip_tasks.dev.demo import run_demo

    with dask_client(args, 2) as client:
        print(run_demo(store, client, seed=args.seed, target_tail_ratio=args.target_tail_ratio))


def _pool_counts_arguments(parser: argparse.ArgumentParser) -> None:
    """How many top entries to print."""
    parser.add_argument("--top", type=int, default=20, help="how many top entries to print (default: 20)")


def _choose_t_arguments(parser: argparse.ArgumentParser) -> None:
    """Text or JSON."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's seed and tail ratio."""
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--target-tail-ratio", type=float, help="target tail ratio (default: the demo pool's, 0.3)")


PAIRS_IMPORT_COMMAND = Command(
    name="pairs-import",
    help="import a snapshot's image-text pairs from parquet files",
    description=(
        "A pairs artifact (uid, url, text) for one snapshot from parquet files, directories or globs on any fsspec "
        "storage; rows without a URL are dropped and counted."
    ),
    run=_pairs_import,
    params=(PairsImportParams,),
    dask=True,
    aliases=("pairs",),
    stages=("pairs_import",),
)
INGEST_COMMAND = Command(
    name="ingest",
    help="extract a snapshot's image-alt-text pairs from Common Crawl WARC or WAT files",
    description=(
        "A pairs artifact (uid, url, text, page_url, lang, title) from WARC/WAT files or a crawl id (its file list "
        "read from --cc-base): <img> links with a non-empty alt-text, resolved against <base href> or the page URL, "
        "http(s) only, alt-texts in --languages, de-duplicated by (url, text) within the snapshot. Files already "
        "ingested by an interrupted run are not read again. With -o the pairs are also written under OUT as a parquet "
        "dataset."
    ),
    run=_ingest,
    params=(IngestParams,),
    skip=("snapshot", "sources", "languages"),
    arguments=_ingest_arguments,
    dask=True,
    stages=("ingest",),
)
MATCH_COMMAND = Command(
    name="match",
    help="sub-string match snapshots' pairs against metadata",
    description=(
        "Match each pair's text of the snapshots' newest pairs against every metadata entry (MetaCLIP's spaced "
        "sub-string rule): a matched artifact per snapshot (uid, url, text, matched_entry_ids, pairs that matched "
        "nothing dropped) with its per-entry counts."
    ),
    run=_match,
    params=(MatchParams,),
    arguments=_match_arguments,
    dask=True,
    stages=("match", "matcher_build"),
)
POOL_COUNTS_COMMAND = Command(
    name="pool-counts",
    help="sum a pool's per-entry counts and choose its t",
    description=(
        "Sum the per-entry counts of a pool's matched snapshots; choose t for the pool's target tail ratio; draw "
        "Fig. 2 and list the top entries (Table 3)."
    ),
    run=_pool_counts,
    params=(Subset,),
    skip=("t", "target_tail_ratio", "seed"),
    arguments=_pool_counts_arguments,
    aliases=("count",),
    stages=("pool_counts",),
)
CHOOSE_T_COMMAND = Command(
    name="choose-t",
    help="the t for a target tail ratio, or the tail ratio of a given t",
    description=(
        "With --target-tail-ratio P: the integer t whose tail ratio (share of matches held by entries with count < t) "
        "is closest to P. With --t T: T's tail ratio. On the pool's counts."
    ),
    run=_choose_t,
    params=(Subset,),
    skip=("seed",),
    arguments=_choose_t_arguments,
)
BALANCE_COMMAND = Command(
    name="balance",
    help="keep a balanced subset of a pool (independent sampling)",
    description=(
        "Keep pair i when some matched entry e passes u(seed, uid_i, e) < min(1, t / count[e]). The draws are hashes "
        "of (seed, uid, entry), so the subset does not depend on sharding or order, and for one seed a smaller t gives "
        "a subset of a larger t's."
    ),
    run=_balance,
    params=(Subset,),
    dask=True,
    stages=("balance",),
)
DEMO_COMMAND = Command(
    name="demo",
    help="run the whole curation on embedded defaults and print a report",
    description=(
        "Curate the shared real captions (or a generated pool) against WordNet metadata: pairs of the demo pool's "
        "three snapshots, match, count, choose t for the demo pool's 30% tail, balance; print where everything went."
    ),
    run=_demo,
    arguments=_demo_arguments,
    dask=True,
)
