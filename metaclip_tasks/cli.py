"""The ``metaclip`` command line: one sub-command per stage, each a thin caller of the library.

Files in, files out.  Bad input ends with one line ``metaclip: error: ...`` naming the
problem, exit status 1 (2 for a malformed command line), and no partial output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from metaclip_tasks.errors import CurationError

EPILOG = "Paper: Xu et al., Demystifying CLIP Data (ICLR 2024), sections 3.2-3.5."


def _add_t_choice(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--t", type=int, help=f"the cap per entry {what}")
    group.add_argument(
        "--tail-ratio",
        type=float,
        help="choose t so that tail entries (count < t) hold this share of all matches, in (0, 1); the paper: 0.06",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaclip",
        description="MetaCLIP curation: match alt-texts against metadata, count matches per entry, "
        "choose the balancing threshold t, and keep a balanced subset.",
        epilog=EPILOG,
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    match = sub.add_parser(
        "match",
        help="sub-string match parquet shards of (url, text) pairs against metadata",
        description="Match each pair's text against every metadata entry (MetaCLIP's spaced sub-string rule). "
        "OUTPUT_DIR gets, per input shard, <shard>.parquet (uid, url, text, matched_entry_ids; pairs that "
        "matched nothing are dropped) and <shard>.counts.npy, plus the summed counts.npy and stats.json.",
        epilog=EPILOG,
    )
    match.add_argument("inputs", nargs="+", metavar="INPUT", help="parquet shards of pairs, or directories of them")
    match.add_argument("--metadata", required=True, help="metadata: a JSON list of entry strings")
    match.add_argument("-o", "--output-dir", required=True, help="directory to write (replaced atomically)")
    match.add_argument("--url-column", default="url", help="column holding image URLs (default: url)")
    match.add_argument("--text-column", default="text", help="column holding alt-texts (default: text)")
    match.add_argument("--uid-column", help="column holding pair ids (default: sha224(url)[:24], as MetaCLIP)")
    match.add_argument("--backend", choices=["tokens", "ahocorasick"], default="tokens", help="matching engine")

    count = sub.add_parser(
        "count",
        help="sum per-entry count vectors (shards, snapshots, a pool)",
        description="Sum count vectors (.npy files, or match output directories holding counts.npy) into one; "
        "vectors of different lengths (different metadata) are refused.",
        epilog=EPILOG,
    )
    count.add_argument("inputs", nargs="+", metavar="COUNTS", help=".npy count vectors or match output directories")
    count.add_argument("-o", "--output", required=True, help="the summed counts (.npy, uint64)")
    count.add_argument("--metadata", help="metadata JSON, to print the top entries by name")
    count.add_argument("--top", type=int, default=20, help="how many top entries to print (default: 20)")

    choose = sub.add_parser(
        "choose-t",
        help="the t for a target tail ratio, or the tail ratio of a given t",
        description="With --tail-ratio P: print the integer t whose tail ratio (share of matches held by entries "
        "with count < t) is closest to P, and the ratio it achieves. With --t T: print T's tail ratio.",
        epilog=EPILOG,
    )
    choose.add_argument("counts", metavar="COUNTS", help="a .npy count vector or a match output directory")
    _add_t_choice(choose, "whose tail ratio to print")
    choose.add_argument("--json", action="store_true", help="print JSON instead of text")

    balance = sub.add_parser(
        "balance",
        help="keep a balanced subset of matched shards (independent sampling)",
        description="Keep pair i when some matched entry e passes u(seed, uid_i, e) < min(1, t / count[e]). "
        "The draws are hashes of (seed, uid, entry), so the subset does not depend on sharding or order, "
        "and for one seed a smaller t gives a subset of a larger t's. OUTPUT_DIR gets <shard>.parquet per "
        "input and stats.json (expected vs actual size, head/tail figures).",
        epilog=EPILOG,
    )
    balance.add_argument("inputs", nargs="+", metavar="MATCHED", help="matched shards or match output directories")
    balance.add_argument("--counts", required=True, help="the pool's counts (.npy or a match output directory)")
    _add_t_choice(balance, "(entries with more matches are sampled down to about t pairs)")
    balance.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    balance.add_argument("-o", "--output-dir", required=True, help="directory to write (replaced atomically)")

    metadata = sub.add_parser(
        "metadata",
        help="build, import and describe metadata (the entry list)",
        description="MetaCLIP's metadata (paper section 3.1): WordNet synsets, Wikipedia unigrams (count >= 100), "
        "bigrams (PMI >= 30, in bits) and titles (page views >= 70), united in that order, de-duplicated, "
        "within a 500k budget.",
        epilog=EPILOG,
    )
    mverbs = metadata.add_subparsers(dest="verb", required=True, metavar="VERB")
    build = mverbs.add_parser("build", help="build the entry list from its sources")
    build.add_argument("--sources", default="wordnet,unigram,bigram,title",
                       help="comma-separated, from wordnet,unigram,bigram,title (default: all four)")  # fmt: skip
    build.add_argument("--wordnet-dir", help="WordNet 3.0 database files (default: /usr/share/wordnet)")
    build.add_argument("--wikipedia", nargs="*", default=[], metavar="DUMP", help="pages-articles dumps (.xml.bz2)")
    build.add_argument("--pageviews", nargs="*", default=[], metavar="FILE", help="hourly page-view files (.gz)")
    for flag, kind, default, text in (
        ("--min-unigram-count", int, 100, "keep unigrams counted at least this often"),
        ("--max-unigrams", int, 251_465, "at most this many unigrams (most frequent first)"),
        ("--min-pmi", float, 30.0, "keep bigrams with at least this PMI, in bits"),
        ("--min-bigram-count", int, 1, "and counted at least this often"),
        ("--max-bigrams", int, 100_646, "at most this many bigrams (highest PMI first)"),
        ("--min-title-views", int, 70, "keep titles with at least this many summed page views"),
        ("--budget", int, 500_000, "the total number of entries"),
    ):
        build.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default})")
    build.add_argument("-o", "--output", required=True, help="the entries as a JSON list (and <stem>.sources.json)")
    stats = mverbs.add_parser("stats", help="entries per source, like the paper's Table 1")
    stats.add_argument("path", help="a metadata JSON list (its <stem>.sources.json is read when present)")
    imported = mverbs.add_parser("import", help="check an existing list and store it as a metadata artifact")
    imported.add_argument("path", help="a JSON list of strings, e.g. MetaCLIP's metadata.json")
    imported.add_argument("--root", help="artifact root (default: $METACLIP_ROOT)")

    artifacts = sub.add_parser(
        "artifacts",
        help="list, show and trace the versioned artifacts of the pipeline",
        description="Every stage writes <root>/artifacts/<stage>/<version>/ with a manifest.json (parameters, "
        "inputs, code version, files with checksums, stats). The root is $METACLIP_ROOT or .state/root.",
        epilog=EPILOG,
    )
    artifacts.add_argument("--root", help="artifact root: a directory or fsspec URL (default: $METACLIP_ROOT)")
    verbs = artifacts.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = verbs.add_parser("list", help="complete artifacts, oldest first")
    listing.add_argument("--stage", help="only this stage (metadata, matched, pool_counts, curated, t_ablation)")
    for verb, text in (("show", "print an artifact's manifest"), ("lineage", "print the artifacts it was made from")):
        one = verbs.add_parser(verb, help=text)
        one.add_argument("stage")
        one.add_argument("version")

    results = sub.add_parser(
        "results",
        help="the evaluation results table: one row per evaluated model",
        description="Every metrics artifact as a row: the model, what it trained on, zero-shot accuracy and "
        "retrieval recall (text to image, image to text).",
        epilog=EPILOG,
    )
    results.add_argument("--root", help="artifact root (default: $METACLIP_ROOT)")

    demo = sub.add_parser(
        "demo",
        help="run the whole curation on embedded defaults and print a report",
        description="Curate the shared real captions (or a generated pool) against WordNet metadata: "
        "shard, match, count, choose t for a 6%% tail, balance; print where everything went.",
        epilog=EPILOG,
    )
    demo.add_argument("--state-dir", default=".state/demo", help="where the demo writes (default: .state/demo)")
    demo.add_argument("--tail-ratio", type=float, default=0.06, help="target tail ratio (default: 0.06)")
    demo.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    return parser


def _run(args: argparse.Namespace) -> None:
    progress = not args.no_progress
    if args.command == "match":
        from metaclip_tasks.matching import match_shards
        from metaclip_tasks.metadata.store import load_metadata

        entries = load_metadata(args.metadata)
        stats = match_shards(
            args.inputs, args.output_dir, entries,
            url_column=args.url_column, text_column=args.text_column, uid_column=args.uid_column,
            backend=args.backend, progress=progress,
        )  # fmt: skip
        print(
            f"matched {stats['pairs_matched']:,} of {stats['pairs_in']:,} pairs ({stats['matches']:,} matches) "
            f"against {stats['entries']:,} entries -> {args.output_dir}"
        )
    elif args.command == "count":
        from metaclip_tasks.counting import load_counts, save_counts, sum_counts, top_entries

        total = sum_counts([load_counts(p) for p in args.inputs], names=args.inputs)
        save_counts(args.output, total)
        print(f"{len(total):,} entries, {int(total.sum()):,} matches, {int((total == 0).sum()):,} never matched")
        if args.metadata:
            from metaclip_tasks.metadata.store import load_metadata

            entries = load_metadata(args.metadata)
            if len(entries) != len(total):
                raise CurationError(f"metadata {args.metadata} has {len(entries)} entries, counts have {len(total)}")
            for entry, n in top_entries(total, entries, args.top):
                print(f"{n:>14,}  {entry}")
    elif args.command == "choose-t":
        from metaclip_tasks.balancing import resolve_t, tail_ratio
        from metaclip_tasks.counting import load_counts

        counts = load_counts(args.counts)
        t = resolve_t(counts, args.t, args.tail_ratio)
        result = {"t": t, "tail_ratio": tail_ratio(counts, t), "target_tail_ratio": args.tail_ratio}
        print(json.dumps(result) if args.json else f"t={t} tail_ratio={result['tail_ratio']:.6f}")
    elif args.command == "balance":
        from metaclip_tasks.balancing import balance_shards
        from metaclip_tasks.counting import load_counts

        stats = balance_shards(
            args.inputs, args.output_dir, load_counts(args.counts),
            t=args.t, target_tail_ratio=args.tail_ratio, seed=args.seed, progress=progress,
        )  # fmt: skip
        print(
            f"kept {stats['kept']:,} of {stats['pairs_in']:,} pairs (expected {stats['expected_kept']:,.1f} "
            f"+- {stats['kept_sd']:.1f}) with t={stats['t']} (tail ratio {stats['tail_ratio']:.4f}) "
            f"-> {args.output_dir}"
        )
    elif args.command == "metadata":
        _metadata(args, progress)
    elif args.command == "artifacts":
        from metaclip_tasks.artifacts import ArtifactStore
        from metaclip_tasks.settings import artifact_root

        store = ArtifactStore(args.root or artifact_root())
        if args.verb == "list":
            for a in store.list(args.stage):
                print(f"{a.stage:<12} {a.version}  {a.manifest['created'][:19]}  {json.dumps(a.params, sort_keys=True)[:90]}")
        elif args.verb == "show":
            print(json.dumps(store.require(args.stage, args.version).manifest, indent=2, sort_keys=True))
        else:
            _print_lineage(store.lineage(args.stage, args.version))
    elif args.command == "results":
        from metaclip_tasks.artifacts import ArtifactStore
        from metaclip_tasks.settings import artifact_root

        print(results_table(ArtifactStore(args.root or artifact_root())))
    elif args.command == "demo":
        from metaclip_tasks.demo import run_demo

        print(run_demo(Path(args.state_dir), target_tail_ratio=args.tail_ratio, seed=args.seed, progress=progress))


def _metadata(args: argparse.Namespace, progress: bool) -> None:
    from metaclip_tasks.metadata.build import MetadataParams, build_metadata, source_stats, sources_path
    from metaclip_tasks.metadata.store import load_metadata

    if args.verb == "build":
        params = MetadataParams(
            sources=tuple(s.strip() for s in args.sources.split(",") if s.strip()),
            min_unigram_count=args.min_unigram_count, max_unigrams=args.max_unigrams, min_pmi=args.min_pmi,
            min_bigram_count=args.min_bigram_count, max_bigrams=args.max_bigrams,
            min_title_views=args.min_title_views, budget=args.budget,
        )  # fmt: skip
        result = build_metadata(params, wordnet_dir=args.wordnet_dir, dumps=args.wikipedia, pageview_files=args.pageviews)
        result.save(args.output)
        print(json.dumps(result.stats(), indent=2))
    elif args.verb == "stats":
        entries = load_metadata(args.path)
        path = Path(sources_path(args.path))
        sources = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        print(json.dumps(source_stats(entries, sources), indent=2))
    else:
        from metaclip_tasks.artifacts import ArtifactStore
        from metaclip_tasks.pipeline import import_metadata
        from metaclip_tasks.settings import artifact_root

        artifact = import_metadata(ArtifactStore(args.root or artifact_root()), args.path)
        print(json.dumps({"version": artifact.version, "uri": artifact.uri, **artifact.stats}, indent=2))


def results_table(store) -> str:
    """One markdown row per metrics artifact, oldest first."""
    lines = ["| metrics | model | samples | zero-shot top-1 | top-5 | text->image R@1/5/10 | image->text R@1/5/10 |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]  # fmt: skip
    for metrics in store.list("metrics"):
        checkpoint = store.require("checkpoint", metrics.manifest["inputs"][0]["version"])
        m = metrics.stats

        def recalls(key: str) -> str:
            return " / ".join(f"{m[key][k]:.3f}" for k in ("R@1", "R@5", "R@10")) if key in m else "-"

        lines.append(
            f"| {metrics.version} | {checkpoint.params['config']['model']} | {checkpoint.stats['samples']:,} | "
            f"{m['zero_shot']['top1']:.3f} | {m['zero_shot']['top5']:.3f} | {recalls('text_to_image')} | "
            f"{recalls('image_to_text')} |"
        )
    return "\n".join(lines)


def _print_lineage(node: dict, depth: int = 0) -> None:
    params = {k: v for k, v in node["params"].items() if k not in ("pairs", "snapshots", "wordnet_data_bytes")}
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
