"""The ``metaclip`` command line: one sub-command per stage, each a thin caller of the library.

Every command reads and writes artifacts in the store at ``--root`` (default ``$METACLIP_ROOT``,
a directory or any fsspec URL); its flags come from the stage's params dataclass, so each
default lives in one place.  Bad input ends with one line ``metaclip: error: ...`` naming the
problem, exit status 1 (2 for a malformed command line), and nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from metaclip_tasks.core import params as P
from metaclip_tasks.core.errors import CurationError

EPILOG = "Paper: Xu et al., Demystifying CLIP Data (ICLR 2024), sections 3.2-3.5."


def build_parser() -> argparse.ArgumentParser:
    from metaclip_tasks.stages.plan import OnlineDownload, Subset
    from metaclip_tasks.training.download import DownloadOptions
    from metaclip_tasks.metadata.build import MetadataParams
    from metaclip_tasks.stages import Ingest, MatchParams, PairsImport

    parser = argparse.ArgumentParser(
        prog="metaclip",
        description="MetaCLIP curation as versioned artifacts: import pairs, build metadata, match alt-texts against "
        "it, count matches per entry over a pool, choose the balancing threshold t, keep a balanced subset.",
        epilog=EPILOG,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", help="artifact root: a directory or fsspec URL such as s3://bucket/root "
                                       "(default: $METACLIP_ROOT, else .state/root)")  # fmt: skip
    dask = argparse.ArgumentParser(add_help=False)
    dask.add_argument("--scheduler", help="a Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS, else a local cluster)")
    dask.add_argument("--workers", type=int, help="local Dask workers (default: one per free core; 0: run in this process)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, description: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=description, epilog=EPILOG, parents=[common, *parents])

    pairs = command("pairs", "import a snapshot's image-text pairs from parquet files",
                    "A pairs artifact (uid, url, text) for one snapshot from parquet files, directories or globs on any "
                    "fsspec storage; rows without a URL are dropped and counted.", dask)  # fmt: skip
    P.add_arguments(pairs, PairsImport)

    ingest = command("ingest", "extract a snapshot's image-alt-text pairs from Common Crawl WARC or WAT files",
                     "A pairs artifact (uid, url, text, page_url, lang, title) from WARC/WAT files or a crawl id (its file "
                     "list read from --cc-base): <img> links with a non-empty alt-text, resolved against <base href> or "
                     "the page URL, http(s) only, alt-texts in --languages, de-duplicated by (url, text) within the "
                     "snapshot. Files already ingested by an interrupted run are not read again. With -o the pairs are "
                     "also written under OUT as a parquet dataset.", dask)  # fmt: skip
    ingest.add_argument("sources", nargs="+", metavar="FILE_OR_CRAWL", help="WARC/WAT files, directories, globs (any fsspec URL) or a crawl id")
    ingest.add_argument("-o", "--output", metavar="OUT", help="also write the pairs as parquet files under OUT (a new directory)")
    ingest.add_argument("--snapshot", help="the crawl the pairs belong to (default: the crawl id given as a source)")
    ingest.add_argument("--languages", help="alt-text languages kept: en (default), any, or a comma-separated list such as en,de")
    P.add_arguments(ingest, Ingest, skip=("snapshot", "sources", "languages"))

    match = command("match", "sub-string match snapshots' pairs against metadata",
                    "Match each pair's text of the snapshots' newest pairs against every metadata entry (MetaCLIP's "
                    "spaced sub-string rule): a matched artifact per snapshot (uid, url, text, matched_entry_ids, "
                    "pairs that matched nothing dropped) with its per-entry counts.", dask)  # fmt: skip
    match.add_argument("snapshots", nargs="+", metavar="SNAPSHOT", help="Common Crawl ids, e.g. CC-MAIN-2023-06")
    match.add_argument("--metadata-version", default="", help="a metadata artifact version (default: MetaCLIP's WordNet metadata)")
    P.add_arguments(match, MatchParams)

    count = command("count", "sum a pool's per-entry counts and choose its t",
                    "Sum the per-entry counts of a pool's matched snapshots; choose t for the pool's target tail "
                    "ratio; draw Fig. 2 and list the top entries (Table 3).")  # fmt: skip
    P.add_arguments(count, Subset, skip=("t", "target_tail_ratio", "seed"))
    count.add_argument("--top", type=int, default=20, help="how many top entries to print (default: 20)")

    choose = command("choose-t", "the t for a target tail ratio, or the tail ratio of a given t",
                     "With --target-tail-ratio P: the integer t whose tail ratio (share of matches held by entries "
                     "with count < t) is closest to P. With --t T: T's tail ratio. On the pool's counts.")  # fmt: skip
    P.add_arguments(choose, Subset, skip=("seed",))
    choose.add_argument("--json", action="store_true", help="print JSON instead of text")

    balance = command("balance", "keep a balanced subset of a pool (independent sampling)",
                      "Keep pair i when some matched entry e passes u(seed, uid_i, e) < min(1, t / count[e]). The draws "
                      "are hashes of (seed, uid, entry), so the subset does not depend on sharding or order, and for one "
                      "seed a smaller t gives a subset of a larger t's.", dask)  # fmt: skip
    P.add_arguments(balance, Subset)

    download = command("download", "download a curated subset's images (img2dataset)",
                       "The images of a pool's curated subset as webdataset shards, failures counted by reason.", dask)
    P.add_arguments(download, Subset)
    P.add_arguments(download, DownloadOptions)
    P.add_arguments(download, OnlineDownload)

    metadata = sub.add_parser("metadata", help="build, import and describe metadata (the entry list)",
                              description="MetaCLIP's metadata (paper section 3.1): WordNet synsets, Wikipedia unigrams "
                              "(count >= 100), bigrams (PMI >= 30, in bits) and titles (page views >= 70), united in that "
                              "order, de-duplicated, within a 500k budget.", epilog=EPILOG)  # fmt: skip
    mverbs = metadata.add_subparsers(dest="verb", required=True, metavar="VERB")
    build = mverbs.add_parser("build", help="build the entry list from its sources", parents=[common, dask])
    P.add_arguments(build, MetadataParams)
    stats = mverbs.add_parser("stats", help="entries per source, like the paper's Table 1", parents=[common])
    stats.add_argument("version", nargs="?", default="", help="a metadata artifact version (default: the WordNet metadata)")
    imported = mverbs.add_parser("import", help="check an existing list and store it as a metadata artifact", parents=[common])
    imported.add_argument("path", help="a JSON list of strings, e.g. MetaCLIP's metadata.json (any fsspec URI)")

    artifacts = command("artifacts", "list, show and trace the versioned artifacts",
                        "Every stage writes <root>/artifacts/<stage>/<version>/ with a manifest.json (parameters, inputs, "
                        "stage version, files with checksums, stats); tabular rows are under data/.")  # fmt: skip
    verbs = artifacts.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = verbs.add_parser("list", help="complete artifacts, oldest first")
    listing.add_argument("--stage", help="only this artifact kind (pairs, metadata, matched, pool_counts, curated, ...)")
    checking = verbs.add_parser("verify", help="check every file of the artifacts against their manifests (size and sha256)")
    checking.add_argument("stage", nargs="?", help="only this artifact kind")
    checking.add_argument("version", nargs="?", help="only this version")
    for verb, text in (("show", "print an artifact's manifest"), ("lineage", "print the artifacts it was made from")):
        one = verbs.add_parser(verb, help=text)
        one.add_argument("stage")
        one.add_argument("version")

    command("stages", "the stage table", "Every stage: its name, explicit version, the artifact it produces, its inputs and params.")
    command("results", "the evaluation results table: one row per evaluated model",
            "Every metrics artifact as a row: the model, what it trained on, zero-shot accuracy and retrieval recall.")  # fmt: skip
    demo = command("demo", "run the whole curation on embedded defaults and print a report",
                   "Curate the shared real captions (or a generated pool) against WordNet metadata: pairs of the demo "
                   "pool's three snapshots, match, count, choose t for the demo pool's 30%% tail, balance; print where everything went.",
                   dask)  # fmt: skip
    demo.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    demo.add_argument("--target-tail-ratio", type=float, help="target tail ratio (default: the demo pool's, 0.3)")
    return parser


def _store(args: argparse.Namespace):
    from metaclip_tasks.core.artifacts import ArtifactStore
    from metaclip_tasks.core.settings import artifact_root

    return ArtifactStore(args.root or artifact_root())


@contextmanager
def _client(args: argparse.Namespace, work: int | None = None) -> Iterator[Any]:
    """The Dask client the command's stages run on, or None (``--workers 0``) to run in this process."""
    if args.workers == 0 and not args.scheduler:
        yield None
        return
    if args.workers is not None and args.workers < 0:
        raise CurationError(f"--workers must be >= 0, got {args.workers}")
    from metaclip_tasks.runtime.cluster import dask_client

    limits = [n for n in (work, args.workers) if n]
    with dask_client(args.scheduler, min(limits) if limits else None) as client:
        yield client


def _done(artifact, summary: str) -> None:
    state = "cache hit" if artifact.cache_hit else "built"
    print(f"{artifact.stage} {artifact.version} ({state}): {summary} -> {artifact.uri}")


def _warn(warnings: Sequence[str]) -> None:
    """Warnings on stderr, so that stdout stays the result (``--json``)."""
    for warning in warnings:
        print(f"metaclip: warning: {warning}", file=sys.stderr)


def _run(args: argparse.Namespace) -> None:
    from metaclip_tasks.stages import plan
    from metaclip_tasks.stages.plan import Subset

    if args.command == "stages":
        _print_stages()
        return
    store = _store(args)
    if args.command == "pairs":
        from metaclip_tasks.stages import PAIRS_IMPORT, PairsImport
        from metaclip_tasks.core.stage import run

        params = P.from_arguments(PairsImport, args)
        with _client(args, len(params.sources)) as client:
            a = run(store, PAIRS_IMPORT, params, client=client)
        _done(a, f"{a.stats['pairs']:,} pairs of {a.params['snapshot']} in {a.stats['shards']} shards "
                 f"({a.stats['pairs_without_url']:,} without a URL dropped)")  # fmt: skip
    elif args.command == "ingest":
        _ingest(args, store)
    elif args.command == "match":
        from metaclip_tasks.stages import MatchParams

        params = P.from_arguments(MatchParams, args)
        pairs = [plan.latest_pairs(store, s) for s in args.snapshots]  # all there before any work
        meta = plan.metadata(store, args.metadata_version)
        with _client(args, max(len(p.data_files()) for p in pairs)) as client:
            for snapshot in args.snapshots:
                a = plan.match_snapshot(store, snapshot, meta, client, params.backend)
                _done(a, f"{snapshot}: matched {a.stats['pairs_matched']:,} of {a.stats['pairs_in']:,} pairs "
                         f"({a.stats['matches']:,} matches) against {a.stats['entries']:,} entries")  # fmt: skip
    elif args.command == "count":
        from metaclip_tasks.curation.counting import load_counts, top_entries
        from metaclip_tasks.metadata.store import load_metadata

        if args.top < 0:
            raise CurationError(f"--top must be >= 0, got {args.top}")
        subset = P.from_arguments(Subset, args)
        a = plan.counted_pool(store, subset.pool, subset.metadata_version)
        _done(a, f"{a.stats['entries']:,} entries, {a.stats['matches']:,} matches, "
                 f"{a.stats['entries_never_matched']:,} never matched; t={a.stats['t']}")  # fmt: skip
        _warn(plan.t_warnings(a, None, None))
        entries = load_metadata(a.input("metadata").stored("entries.json"))
        for entry, n in top_entries(load_counts(a.stored("counts.npy")), entries, args.top):
            print(f"{n:>14,}  {entry}")
    elif args.command == "choose-t":
        from metaclip_tasks.curation.balancing import tail_ratio
        from metaclip_tasks.curation.counting import load_counts

        subset = P.from_arguments(Subset, args)
        if subset.t is None and subset.target_tail_ratio is None:
            raise CurationError("give --t or --target-tail-ratio")
        plan.check_t_choice(subset.t, subset.target_tail_ratio)  # before counting anything
        counts = plan.counted_pool(store, subset.pool, subset.metadata_version)
        t = plan.pool_t(counts, subset.t, subset.target_tail_ratio)
        result = {"t": t, "tail_ratio": tail_ratio(load_counts(counts.stored("counts.npy")), t),
                  "target_tail_ratio": subset.target_tail_ratio,
                  "warnings": plan.t_warnings(counts, subset.t, subset.target_tail_ratio)}  # fmt: skip
        _warn(result["warnings"])
        print(json.dumps(result) if args.json else f"t={t} tail_ratio={result['tail_ratio']:.6f}")
    elif args.command in ("balance", "download"):
        subset = P.from_arguments(Subset, args)
        plan.check_subset(store, subset)
        if args.command == "download":
            from metaclip_tasks.training.download import DownloadOptions

            options = P.from_arguments(DownloadOptions, args)
            online = P.from_arguments(plan.OnlineDownload, args)
            with _client(args) as client:
                a = plan.download_subset(store, subset, options, client, online=online)
            _done(a, f"{a.stats['successes']:,} of {a.stats['count']:,} images; failures {a.stats['failures_by_reason']}")
            return
        with _client(args) as client:
            a = plan.curated_subset(store, subset, client)
        _warn(plan.t_warnings(a.input("pool_counts"), subset.t, subset.target_tail_ratio))
        s = a.stats
        _done(a, f"kept {s['kept']:,} of {s['pairs_in']:,} pairs (expected {s['expected_kept']:,.1f} +- {s['kept_sd']:.1f}) "
                 f"with t={s['t']} (tail ratio {s['tail_ratio']:.4f})")  # fmt: skip
    elif args.command == "metadata":
        _metadata(args, store)
    elif args.command == "artifacts":
        if args.verb == "list":
            for a in store.list(args.stage):
                print(f"{a.stage:<13} {a.version}  {str(a.manifest.get('created'))[:19]}  {json.dumps(a.params, sort_keys=True)[:90]}")
            for problem in store.problems:
                print(f"metaclip: warning: {problem}", file=sys.stderr)
        elif args.verb == "verify":
            _verify(store, args.stage, args.version)
        elif args.verb == "show":
            print(json.dumps(store.require(args.stage, args.version).manifest, indent=2, sort_keys=True))
        else:
            _print_lineage(store.lineage(args.stage, args.version))
    elif args.command == "results":
        print(results_table(store))
    elif args.command == "demo":
        from metaclip_tasks.dev.demo import run_demo

        with _client(args, 2) as client:
            print(run_demo(store, client, seed=args.seed, target_tail_ratio=args.target_tail_ratio))


def _ingest(args: argparse.Namespace, store) -> None:
    from metaclip_tasks.ingest.export import check_export, export_pairs
    from metaclip_tasks.stages import INGEST, Ingest, ingest_inputs
    from metaclip_tasks.core.snapshots import is_crawl_id
    from metaclip_tasks.core.stage import run

    crawls = [s for s in args.sources if is_crawl_id(s)]
    snapshot = args.snapshot or (crawls[0] if len(set(crawls)) == 1 else None)
    if snapshot is None:
        raise CurationError("give --snapshot: the crawl the files belong to (e.g. CC-MAIN-2023-06)")
    languages = [c for c in (args.languages or "en").split(",") if c.strip()]
    params = P.from_arguments(Ingest, args, snapshot=snapshot, sources=args.sources, languages=languages)
    inputs = ingest_inputs(params)  # every input there, before any work
    if args.output:
        check_export(args.output, [uri for uri, _, _ in inputs], store.root)
    with _client(args, len(inputs)) as client:
        a = run(store, INGEST, params, client=client)
    s = a.stats
    _done(a, f"{s['pairs']:,} pairs of {snapshot} from {s['files']} files: {s['pages']:,} pages, {s['images']:,} images, "
             f"{s['with_alt']:,} with alt-text, {s['other_language']:,} in other languages, {s['duplicates_in_snapshot']:,} "
             f"duplicates, {s['bad_records']:,} bad records")  # fmt: skip
    if args.output:
        print(f"pairs written to {export_pairs(a, args.output)}")


def _metadata(args: argparse.Namespace, store) -> None:
    from metaclip_tasks.stages import plan
    from metaclip_tasks.metadata.build import SOURCES_FILE, MetadataParams, source_stats
    from metaclip_tasks.metadata.store import load_metadata
    from metaclip_tasks.stages import METADATA_BUILD, METADATA_IMPORT, MetadataImport
    from metaclip_tasks.core.stage import run

    if args.verb == "build":
        params = P.from_arguments(MetadataParams, args)
        params.input_files()  # each source has its files, before any work
        with _client(args) if {"unigram", "bigram"} & set(params.sources) else nullcontext() as client:
            a = run(store, METADATA_BUILD, params, client=client)
        _done(a, f"{a.stats['entries']:,} entries {json.dumps(a.stats['by_source'])}")
    elif args.verb == "import":
        a = run(store, METADATA_IMPORT, MetadataImport(args.path))
        _done(a, f"{a.stats['entries']:,} entries ({a.stats['duplicated_entries']:,} duplicated)")
    else:
        a = plan.metadata(store, args.version)
        entries = load_metadata(a.stored("entries.json"))
        sources = a.read_json(SOURCES_FILE) if SOURCES_FILE in a.files() else None
        print(json.dumps(source_stats(entries, sources), indent=2))


def _verify(store, stage: str | None, version: str | None) -> None:
    """Every file of the chosen artifacts against its manifest; a line per artifact, an error if any failed."""
    chosen = [store.require(stage, version)] if version else store.list(stage)
    broken = [] if version else list(store.problems)
    failed = list(broken)
    for problem in broken:
        print(f"BROKEN  {problem}")
    for a in chosen:
        try:
            a.verify(recheck=True)  # asked for: every byte hashed now, whatever was checked before
            print(f"ok      {a.stage} {a.version} ({len(a.manifest['files'])} files)")
        except CurationError as e:
            failed.append(str(e))
            print(f"FAILED  {e}")
    if failed:
        raise CurationError(f"{len(failed)} of {len(chosen) + len(broken)} artifacts failed verification (see above)")
    if not chosen:
        raise CurationError(f"no {stage or ''} artifacts under {store.root}".replace("  ", " "))


def _print_stages() -> None:
    import dataclasses

    from metaclip_tasks.stages import STAGES

    for stage in STAGES.values():
        inputs = ", ".join(f"{role}: {i.stage}{'[]' if i.many else ''}{'?' if i.optional else ''}" for role, i in stage.inputs.items())
        fields = ", ".join(f.name for f in dataclasses.fields(stage.params))
        print(f"{stage.name:<16} v{stage.version}  -> {stage.artifact:<14} inputs ({inputs or '-'})  params ({fields or '-'})")


def results_table(store) -> str:
    """One markdown row per metrics artifact, oldest first."""
    lines = ["| metrics | model | samples | zero-shot top-1 | top-5 | text->image R@1/5/10 | image->text R@1/5/10 |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]  # fmt: skip
    def recalls(m: dict, key: str) -> str:
        return " / ".join(f"{m[key][k]:.3f}" for k in ("R@1", "R@5", "R@10")) if key in m else "-"

    for metrics in store.list("metrics"):
        checkpoint = metrics.input("checkpoint")
        m = metrics.stats
        lines.append(
            f"| {metrics.version} | {checkpoint.params['model']} | {checkpoint.stats['samples']:,} | "
            f"{m['zero_shot']['top1']:.3f} | {m['zero_shot']['top5']:.3f} | {recalls(m, 'text_to_image')} | "
            f"{recalls(m, 'image_to_text')} |"
        )
    return "\n".join(lines)


def _print_lineage(node: dict, depth: int = 0) -> None:
    params = {k: v for k, v in node["params"].items() if k not in ("sources", "wikipedia_dumps", "pageview_files")}
    print(f"{'  ' * depth}{node['stage']} {node['version']} {json.dumps(params, sort_keys=True)}")
    for child in node["inputs"]:
        _print_lineage(child, depth + 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``metaclip``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        _run(args)
    except CurationError as e:
        print(f"metaclip: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
