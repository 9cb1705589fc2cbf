"""The README's main job: the demo on embedded defaults, and that re-running it is idempotent."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.snapshots import get_pool
from metaclip_tasks.curation.balancing import tail_ratio, tail_ratio_warning
from metaclip_tasks.dev.demo import POOL, generated_pool, run_demo, warc_snapshot


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_on_real_captions_is_idempotent(tmp_path: Path, captions_table: pa.Table, wordnet: list[str]) -> None:
    store = ArtifactStore(tmp_path)
    report = run_demo(store, client=None)
    snapshots = get_pool(POOL).snapshots
    pairs = {a.params["snapshot"]: a for a in store.list("pairs")}
    assert sorted(pairs) == sorted(snapshots)
    ingested = pairs[warc_snapshot()]  # the pool's last snapshot: the shared Common Crawl WARC files, English alt-texts
    assert ingested.manifest["code"]["stage"] == "ingest" and set(ingested.params["languages"]) == {"en"}
    assert ingested.stats["pages"] == 84 and ingested.stats["pairs"] > 0
    assert f"ingested:    {warc_snapshot()} from 7 Common Crawl WARC files: 84 pages" in report
    captions = [pairs[s] for s in snapshots if s != warc_snapshot()]
    assert sum(a.stats["pairs"] for a in captions) == captions_table.num_rows == 10_000
    assert all(len(a.data_files()) == 2 for a in captions)  # two shards per snapshot
    assert "real captions" in report and f"{10_000 + ingested.stats['pairs']:,} pairs" in report
    (curated,) = store.list("curated")
    counts = curated.input("pool_counts")
    assert counts.params == {"pool": POOL, "target_tail_ratio": 0.3} and curated.params["t"] == counts.stats["t"]
    assert [m.stats["snapshot"] for m in counts.inputs("matched")] == list(snapshots)
    assert counts.input("metadata").stats["entries"] == len(wordnet)
    assert curated.uri in report and f"{curated.stats['kept']:,} of" in report
    shards = sum(len(a.data_files()) for a in pairs.values())
    assert len(curated.data_files()) == shards and curated.stats["kept_within_4_sd"]
    kinds = {"metadata": 1, "pairs": 3, "matched": 3, "pool_counts": 1, "curated": 1}
    assert {k: len(store.list(k)) for k in kinds} == kinds

    before = _files(tmp_path)
    assert (
        sum(name.endswith(".parquet") and "/artifacts/" in f"/{name}" for name in before) == 3 * shards + 1
    )  # pairs, matched, curated; counts
    again = run_demo(store, client=None)
    assert again == report  # every step a cache hit: the same artifacts, the same report
    assert _files(tmp_path) == before  # manifests and files byte for byte, nothing added


def test_the_demo_target_is_one_its_pool_can_express(
    tmp_path: Path, captions_table: pa.Table, wordnet: list[str]
) -> None:
    """The demo pool's 30% tail is reached (t=4, about 0.285), so no warning; a 6% tail is not (t=1: nothing
    in the tail), and the report says so with the two nearest achievable ratios."""
    store = ArtifactStore(tmp_path)
    report = run_demo(store, client=None)
    (curated,) = store.list("curated")
    counts = curated.input("pool_counts")
    assert counts.stats["warnings"] == [] and "warning" not in report
    assert counts.stats["t"] == curated.params["t"] == 4 and abs(counts.stats["tail_ratio"] - 0.3) < 0.025
    assert "with t=4 (expected" in report
    degenerate = run_demo(store, client=None, target_tail_ratio=0.06)
    vector = counts.read_array("counts.npy")
    warning = f"  warning:     {tail_ratio_warning(vector, 0.06)}"
    assert warning.startswith(
        "  warning:     target tail ratio 0.06 is not reachable on this pool: t=1 gives 0.0000, "
        f"t=2 gives {tail_ratio(vector, 2):.4f}; using t=1"
    )
    assert warning in degenerate.splitlines() and "with t=1 (expected" in degenerate


def test_demo_generates_a_pool_without_shared_data(tmp_path: Path, wordnet: list[str]) -> None:
    store = ArtifactStore(tmp_path / "root")
    report = run_demo(store, client=None, captions=str(tmp_path / "absent.parquet"))
    assert "a generated pool" in report and "absent.parquet is absent" in report
    generated = tmp_path / "root" / "sources" / "demo-generated-pool.parquet"
    assert generated.is_file()
    pairs = store.list("pairs")
    imported = sorted(a.stats["pairs"] for a in pairs if a.manifest["code"]["stage"] == "pairs_import")
    assert imported == [10_000, 10_000]  # 20,000 generated pairs split over the snapshots without WARC files
    (curated,) = store.list("curated")
    assert 0 < curated.stats["kept"] < curated.stats["pairs_in"]
    assert generated_pool(wordnet[:500], 50).equals(generated_pool(wordnet[:500], 50))
    assert not generated_pool(wordnet[:500], 50).equals(generated_pool(wordnet[:500], 50, seed=1))
