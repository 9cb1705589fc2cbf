"""The main job on embedded defaults: real captions (or a generated pool) curated end to end.

The steps are the ones ``metaclip demo`` runs in order and the ``metaclip_curation_demo`` DAG
runs as tasks: the pool's last snapshot ingested from the shared Common Crawl WARC files (English
alt-texts), the captions split over its other snapshots, each as a ``pairs`` artifact,
MetaCLIP's WordNet metadata, each snapshot matched on Dask, the pool counted, balanced for its
30% tail (a 10,000-caption pool has no meaningful 6% tail), and a report read back from the artifacts.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_tasks.core import files
from metaclip_tasks.core.artifacts import Artifact, ArtifactStore
from metaclip_tasks.core.snapshots import get_pool
from metaclip_tasks.core.stage import run
from metaclip_tasks.dev.shared_data import CAPTIONS, WARC
from metaclip_tasks.stages import INGEST, PAIRS_IMPORT, RAW_SUFFIXES, IngestParams, PairsImportParams, plan

POOL = "demo"
SHARDS_PER_SNAPSHOT = 2


def generated_pool(entries: list[str], n_pairs: int = 20_000, seed: int = 0) -> pa.Table:
    """A deterministic stand-in pool: texts of Zipf-distributed entries and filler words."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(entries))
    fillers = ["photo of", "image:", "a", "the", "with", "stock picture,", "untitled", "2019", "on sale!"]
    texts = []
    for _ in range(n_pairs):
        picks = np.minimum(rng.zipf(1.3, size=rng.integers(1, 5)) - 1, len(entries) - 1)
        words = [entries[order[j]] for j in picks] + list(rng.choice(fillers, size=2))
        rng.shuffle(words)
        texts.append(" ".join(words))
    urls = [f"https://images.example.com/pool/{i:06d}.jpg" for i in range(n_pairs)]
    return pa.table({"URL": urls, "TEXT": texts})


def demo_source(store: ArtifactStore, captions: str = str(CAPTIONS)) -> tuple[str, str]:
    """(URI, description) of the demo's raw pairs: the shared real captions, else a generated pool
    written once under ``<root>/sources/``."""
    fs, path = files.filesystem(captions)
    if fs.isfile(path):
        return captions, f"real captions {captions}"
    generated = store.uri("sources", "demo-generated-pool.parquet")
    fs, path = files.filesystem(generated)
    if not fs.isfile(path):
        from metaclip_tasks.metadata.store import load_metadata

        entries = load_metadata(plan.metadata(store).stored("entries.json"))
        with files.open_write(generated) as f:
            pq.write_table(generated_pool(entries), f)
    return generated, f"a generated pool ({captions} is absent)"


def warc_snapshot(warc: str = str(WARC)) -> str | None:
    """The demo snapshot made from Common Crawl WARC files (the pool's last), or None without them."""
    fs, path = files.filesystem(warc)
    found = fs.isdir(path) and any(p.endswith(RAW_SUFFIXES) and ".wat" not in p for p in fs.ls(path))
    return get_pool(POOL).snapshots[-1] if found else None


def demo_pairs(
    store: ArtifactStore, snapshot: str, captions: str = str(CAPTIONS), client=None, warc: str = str(WARC)
) -> Artifact:
    """One demo snapshot's pairs: ingested from the shared WARC files, or its equal share of the
    captions' rows, in two shards."""
    if snapshot == warc_snapshot(warc):
        return run(store, INGEST, IngestParams(snapshot, (f"{warc}/*.warc.gz",), languages=("en",)), client=client)
    pool = get_pool(POOL)
    from_captions = [s for s in pool.snapshots if s != warc_snapshot(warc)]
    source, _ = demo_source(store, captions)
    with files.open_read(source) as f:
        rows = pq.ParquetFile(f).metadata.num_rows
    bounds = [len(part) for part in np.array_split(np.arange(rows), len(from_captions))]
    i = from_captions.index(snapshot)
    start, stop = sum(bounds[:i]), sum(bounds[: i + 1])
    params = PairsImportParams(
        snapshot,
        (source,),
        url_column="URL",
        text_column="TEXT",
        rows=(start, stop),
        rows_per_shard=-(-(stop - start) // SHARDS_PER_SNAPSHOT),
    )
    return run(store, PAIRS_IMPORT, params, client=client)


def demo_report(store: ArtifactStore, curated: Artifact, source: str = "", warnings: list[str] | None = None) -> str:
    """A few lines on what the demo produced and where it is, with the warnings of its t
    (by default the pool counts': the pool's target tail ratio not reachable)."""
    counts = curated.input("pool_counts")
    warnings = counts.stats.get("warnings", []) if warnings is None else warnings
    c, k = counts.stats, curated.stats
    matched = counts.inputs("matched")
    pairs_in = sum(a.stats["pairs_in"] for a in matched)
    pairs_matched = sum(a.stats["pairs_matched"] for a in matched)
    top = ", ".join(f"{e!r} {n}" for e, n in c["top_entries"])
    ingested = [p for p in (a.input("pairs") for a in matched) if p.manifest["code"]["stage"] == "ingest"]
    lines = [
        f"  ingested:    {p.stats['snapshot']} from {p.stats['files']} Common Crawl WARC files: {p.stats['pages']:,} pages, "
        f"{p.stats['images']:,} images, {p.stats['with_alt']:,} with alt-text, {p.stats['pairs']:,} English pairs -> {p.uri}"
        for p in ingested
    ]
    return "\n".join(
        [
            f"MetaCLIP curation demo on {source or 'the demo pool'}: pool {counts.params['pool']} ({len(matched)} snapshots)",
            *lines,
            f"  metadata:    {counts.input('metadata').stats['entries']:,} entries (WordNet)",
            (
                f"  matched:     {pairs_matched:,} of {pairs_in:,} pairs ({pairs_matched / max(pairs_in, 1):.1%}), "
                f"{c['matches']:,} matches over {c['entries']:,} entries"
            ),
            f"  top:         {top}",
            (
                f"  pool counts: t={c['t']} (tail ratio {c['tail_ratio']:.4f}, target {counts.params['target_tail_ratio']}); "
                f"{c['head_entries']:,} head entries -> {counts.uri}"
            ),
            *(f"  warning:     {w}" for w in warnings),
            f"  report:      {counts.path('entry_counts.png')}, {counts.path('top_entries.json')}",
            (
                f"  curated:     {k['kept']:,} of {k['pairs_in']:,} matched pairs with t={k['t']} (expected {k['expected_kept']:,.1f} "
                f"+- {k['kept_sd']:.1f}, seed {k['seed']}) -> {curated.uri}"
            ),
            f"  artifacts:   {store.uri('artifacts')}",
        ]
    )


def run_demo(
    store: ArtifactStore,
    client=None,
    *,
    seed: int = 0,
    target_tail_ratio: float | None = None,
    captions: str = str(CAPTIONS),
) -> str:
    """The whole chain, step by step as the DAG runs it; returns the report."""
    pool = get_pool(POOL)
    meta = plan.metadata(store)
    for snapshot in pool.snapshots:
        demo_pairs(store, snapshot, captions, client)
        plan.match_snapshot(store, snapshot, meta, client)
    curated = plan.curated_subset(store, plan.Subset(POOL, None, target_tail_ratio, seed), client)
    warnings = plan.t_warnings(curated.input("pool_counts"), None, target_tail_ratio)
    return demo_report(store, curated, demo_source(store, captions)[1], warnings)
