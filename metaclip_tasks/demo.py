"""The main job on embedded defaults: real captions (or a generated pool) curated end to end.

WordNet metadata -> pool split into parquet shards -> match -> counts -> t for the target
tail ratio -> balance -> a short report.  Every step is a library stage function; re-running
replaces each output atomically and gives identical files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_tasks.artifacts import Artifact
from metaclip_tasks.balancing import balance_shards
from metaclip_tasks.counting import load_counts, top_entries
from metaclip_tasks.matching import match_shards
from metaclip_tasks.metadata.store import save_metadata
from metaclip_tasks.metadata.wordnet import DEFAULT_WORDNET_DIR, wordnet_entries
from metaclip_tasks.shared_data import CAPTIONS
from metaclip_tasks.snapshots import Pool
from metaclip_tasks.storage import atomic_directory, write_json


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
    return pa.table({"url": urls, "text": texts})


def load_pool(captions: Path, entries: list[str]) -> tuple[pa.Table, str]:
    """The shared real captions (columns URL, TEXT) when present, else a generated pool."""
    if captions.is_file():
        table = pq.read_table(captions, columns=["URL", "TEXT"]).rename_columns(["url", "text"])
        return table, f"real captions {captions}"
    return generated_pool(entries), f"a generated pool ({captions} is absent)"


def run_demo(
    state_dir: Path,
    *,
    captions: Path = CAPTIONS,
    wordnet_dir: Path = DEFAULT_WORDNET_DIR,
    n_shards: int = 4,
    target_tail_ratio: float = 0.06,
    seed: int = 0,
    progress: bool = True,
) -> str:
    """Curate the default pool under ``state_dir``; return a printable report."""
    state_dir = Path(state_dir)
    entries = wordnet_entries(wordnet_dir)
    save_metadata(state_dir / "metadata.json", entries)
    pool, source = load_pool(Path(captions), entries)
    with atomic_directory(state_dir / "pairs") as tmp:
        for i, shard in enumerate(np.array_split(np.arange(len(pool)), n_shards)):
            pq.write_table(pool.take(shard), tmp / f"part-{i:05d}.parquet")
    matched = match_shards([state_dir / "pairs"], state_dir / "matched", entries, progress=progress)
    counts = load_counts(state_dir / "matched" / "counts.npy")
    curated = balance_shards(
        [state_dir / "matched"], state_dir / "curated", counts,
        target_tail_ratio=target_tail_ratio, seed=seed, progress=progress,
    )  # fmt: skip
    report = {"source": source, "metadata_entries": len(entries), "match": matched, "balance": curated}
    report["top_entries"] = top_entries(counts, entries, 10)
    write_json(state_dir / "report.json", report)
    top = ", ".join(f"{e!r} {n}" for e, n in report["top_entries"])
    return "\n".join(
        [
            f"MetaCLIP curation demo on {source}",
            f"  metadata:  {len(entries):,} WordNet entries -> {state_dir / 'metadata.json'}",
            f"  pool:      {matched['pairs_in']:,} pairs in {n_shards} shards -> {state_dir / 'pairs'}",
            f"  matched:   {matched['pairs_matched']:,} pairs ({matched['pairs_matched'] / max(matched['pairs_in'], 1):.1%}), "
            f"{matched['matches']:,} matches, {matched['matches'] / max(matched['pairs_matched'], 1):.2f} per pair, "
            f"{int((counts > 0).sum()):,} entries matched -> {state_dir / 'matched'}",
            f"  top:       {top}",
            f"  t:         {curated['t']} (tail ratio {curated['tail_ratio']:.4f}, target {target_tail_ratio}); "
            f"{curated['head_entries']:,} head entries",
            f"  curated:   {curated['kept']:,} pairs (expected {curated['expected_kept']:,.1f} +- {curated['kept_sd']:.1f}, "
            f"seed {seed}) -> {state_dir / 'curated'}",
            f"  report:    {state_dir / 'report.json'}",
        ]
    )


def write_demo_pairs(root: str | Path, pool: Pool, captions: Path = CAPTIONS, shards_per_snapshot: int = 2) -> list[str]:
    """Split the default pool over ``pool``'s snapshots as ``<root>/pairs/<snapshot>/part-*.parquet``."""
    from metaclip_tasks.pipeline import pairs_dir

    table, _ = load_pool(Path(captions), wordnet_entries())
    parts = np.array_split(np.arange(len(table)), len(pool.snapshots) * shards_per_snapshot)
    for i, snapshot in enumerate(pool.snapshots):
        with atomic_directory(pairs_dir(root, snapshot)) as tmp:
            for j in range(shards_per_snapshot):
                pq.write_table(table.take(parts[i * shards_per_snapshot + j]), tmp / f"part-{j:05d}.parquet")
    return list(pool.snapshots)


def demo_report(counts: Artifact, curated: Artifact) -> str:
    """A few lines on what the Airflow demo produced and where it is."""
    c, k = counts.stats, curated.stats
    return "\n".join(
        [
            f"MetaCLIP curation demo through Airflow: pool {counts.params['pool']} ({len(counts.params['snapshots'])} snapshots)",
            f"  pool counts: {c['matches']:,} matches over {c['entries']:,} entries; t={c['t']} "
            f"(tail ratio {c['tail_ratio']:.4f}) -> {counts.uri}",
            f"  report:      {counts.path('entry_counts.png')}, {counts.path('top_entries.json')}",
            f"  curated:     {k['kept']:,} of {k['pairs_in']:,} matched pairs (expected {k['expected_kept']:,.1f} "
            f"+- {k['kept_sd']:.1f}) -> {curated.uri}",
        ]
    )
