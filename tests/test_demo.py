"""The README's main job: the demo on embedded defaults, and that re-running it is idempotent."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from metaclip_tasks.artifacts import ArtifactStore
from metaclip_tasks.demo import POOL, generated_pool, run_demo
from metaclip_tasks.snapshots import get_pool


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_on_real_captions_is_idempotent(tmp_path: Path, captions_table: pa.Table, wordnet: list[str]) -> None:
    store = ArtifactStore(tmp_path)
    report = run_demo(store, client=None)
    assert "real captions" in report and "10,000 pairs" in report
    snapshots = get_pool(POOL).snapshots
    pairs = store.list("pairs")
    assert sorted(a.params["snapshot"] for a in pairs) == sorted(snapshots)
    assert sum(a.stats["pairs"] for a in pairs) == captions_table.num_rows == 10_000
    assert all(len(a.data_files()) == 2 for a in pairs)  # two shards per snapshot
    (curated,) = store.list("curated")
    counts = curated.input("pool_counts")
    assert counts.params == {"pool": POOL, "target_tail_ratio": 0.3} and curated.params["t"] == counts.stats["t"]
    assert [m.stats["snapshot"] for m in counts.inputs("matched")] == list(snapshots)
    assert counts.input("metadata").stats["entries"] == len(wordnet)
    assert curated.uri in report and f"{curated.stats['kept']:,} of" in report
    assert len(curated.data_files()) == 6 and curated.stats["kept_within_4_sd"]
    kinds = {"metadata": 1, "pairs": 3, "matched": 3, "pool_counts": 1, "curated": 1}
    assert {k: len(store.list(k)) for k in kinds} == kinds

    before = _files(tmp_path)
    assert sum(name.endswith(".parquet") for name in before) == 6 + 6 + 1 + 6  # pairs, matched, counts, curated
    again = run_demo(store, client=None)
    assert again == report  # every step a cache hit: the same artifacts, the same report
    assert _files(tmp_path) == before  # manifests and files byte for byte, nothing added


def test_demo_generates_a_pool_without_shared_data(tmp_path: Path, wordnet: list[str]) -> None:
    store = ArtifactStore(tmp_path / "root")
    report = run_demo(store, client=None, captions=str(tmp_path / "absent.parquet"))
    assert "a generated pool" in report and "absent.parquet is absent" in report and "20,000 pairs" in report
    generated = tmp_path / "root" / "sources" / "demo-generated-pool.parquet"
    assert generated.is_file()
    pairs = store.list("pairs")
    assert sorted(a.stats["pairs"] for a in pairs) == [6666, 6667, 6667]  # 20,000 generated pairs split in three
    (curated,) = store.list("curated")
    assert 0 < curated.stats["kept"] < curated.stats["pairs_in"]
    assert generated_pool(wordnet[:500], 50).equals(generated_pool(wordnet[:500], 50))
    assert not generated_pool(wordnet[:500], 50).equals(generated_pool(wordnet[:500], 50, seed=1))
