"""De-duplication by (url, text): the first in order within a snapshot, the earliest crawl across a
pool, the same whatever order the snapshots were ingested and matched in."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.snapshots import Pool
from metaclip_tasks.core.stage import run
from metaclip_tasks.ingest.dedup import first_occurrences, pair_keys
from metaclip_tasks.stages import (
    INGEST,
    METADATA_IMPORT,
    PAIRS_IMPORT,
    IngestParams,
    MetadataImportParams,
    PairsImportParams,
    plan,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=6), max_size=5))
def test_first_occurrences_is_the_literal_definition(parts):
    keys = [pair_keys([f"https://x/{v}" for v in part], ["t"] * len(part)) for part in parts]
    masks = first_occurrences(keys)
    seen: set[str] = set()
    for part, mask in zip(parts, masks, strict=True):
        expected = []
        for value in part:
            expected.append(value not in seen)
            seen.add(value)
        assert mask.tolist() == expected


def test_a_pair_key_is_its_url_and_text():
    keys = pair_keys(["u", "u", "u\x00t", "ut"], ["t\x00", "t", "", ""])
    assert len(set(keys.tolist())) == 4  # no separator ambiguity on these
    assert pair_keys(pa.array(["u"]), pa.array(["t"]))[0] == keys[1]


# Three crawls sharing pairs: (url, text) "dog" in all three, "red car" in the 2nd and 3rd, "black dog"
# twice inside the 3rd; "car" with another URL is another pair.
CRAWLS = {
    "CC-MAIN-2023-06": [("https://x/1.jpg", "a dog"), ("https://x/2.jpg", "a car")],
    "CC-MAIN-2023-14": [("https://x/1.jpg", "a dog"), ("https://x/3.jpg", "red car"), ("https://x/9.jpg", "a car")],
    "CC-MAIN-2023-23": [
        ("https://x/3.jpg", "red car"),
        ("https://x/4.jpg", "black dog"),
        ("https://x/4.jpg", "black dog"),
        ("https://x/1.jpg", "a dog"),
        ("https://x/5.jpg", "red dog"),
    ],
}
ENTRIES = ["dog", "car", "red", "red car", "black dog"]


def _backfill(tmp_path, name: str, order: list[str]):
    store = ArtifactStore(tmp_path / name)
    meta = run(store, METADATA_IMPORT, MetadataImportParams(str(tmp_path / "metadata.json")))
    for snapshot in order:
        run(store, PAIRS_IMPORT, PairsImportParams(snapshot, (str(tmp_path / "raw" / f"{snapshot}.parquet"),)))
        plan.match_snapshot(store, snapshot, meta)
    pool = Pool("three", tuple(CRAWLS), 0.3)
    counts = plan.count_pool(store, pool, meta)
    return counts, plan.balance(store, counts, 1000, 0)


def test_the_earliest_crawl_keeps_a_pair_in_any_backfill_order(tmp_path):
    (tmp_path / "raw").mkdir()
    for snapshot, pairs in CRAWLS.items():
        pq.write_table(
            pa.table({"url": [u for u, _ in pairs], "text": [t for _, t in pairs]}),
            tmp_path / "raw" / f"{snapshot}.parquet",
        )
    (tmp_path / "metadata.json").write_text(json.dumps(ENTRIES))
    forward = _backfill(tmp_path, "forward", list(CRAWLS))
    backward = _backfill(tmp_path, "backward", list(reversed(CRAWLS)))
    for a, b in zip(forward, backward, strict=True):
        assert a.version == b.version
        assert [(f["name"], f["sha256"]) for f in a.manifest["files"]] == [
            (f["name"], f["sha256"]) for f in b.manifest["files"]
        ]
    counts, curated = forward
    # the literal definition: every distinct (url, text) of the pool once, counted against the entries
    unique = {pair for pairs in CRAWLS.values() for pair in pairs}
    expected = [sum(f" {e} " in f" {t} " for _, t in unique) for e in ENTRIES]
    assert counts.read_array("counts.npy").tolist() == expected
    assert counts.stats["duplicate_pairs"] == {"CC-MAIN-2023-06": 0, "CC-MAIN-2023-14": 1, "CC-MAIN-2023-23": 3}
    # dropped: "a dog" in the 2nd (dog); "red car" (red, car, red car), "black dog" (dog, black dog), "a dog" in the 3rd
    assert counts.stats["matches_with_duplicates"] - counts.stats["matches"] == 1 + 3 + 2 + 1
    kept = curated.dataset().to_table().to_pylist()  # t is far above every count: every distinct pair is kept, once
    assert sorted((r["url"], r["text"]) for r in kept) == sorted(unique)
    assert curated.stats["kept"] == len(unique)


def test_ingest_keeps_the_first_copy_of_a_pair_within_a_snapshot(tmp_path):
    from metaclip_tasks.dev.shared_data import WARC

    sample = WARC / "warc_sample-0000.warc.gz"
    if not sample.is_file():
        import pytest

        pytest.skip(f"shared WARC samples not found at {WARC} (../shared/data is absent)")
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(sample, raw / "a.warc.gz")
    shutil.copy(sample, raw / "b.warc.gz")  # the same pages crawled twice in one snapshot
    store = ArtifactStore(tmp_path / "root")
    once = run(store, INGEST, IngestParams("CC-MAIN-2023-06", (str(sample),), languages=("any",)))
    twice = run(store, INGEST, IngestParams("CC-MAIN-2023-06", (str(raw),), languages=("any",)))
    assert twice.stats["pairs"] == once.stats["pairs"] and twice.stats["shards"] == 1
    assert twice.stats["duplicates_in_snapshot"] == once.stats["pairs"] + 2 * once.stats["duplicates_in_snapshot"]
    rows = twice.dataset().to_table()
    assert rows.equals(once.dataset().to_table())
    assert len({(u, t) for u, t in zip(rows["url"].to_pylist(), rows["text"].to_pylist())}) == rows.num_rows
    assert np.all(np.array(rows["uid"].to_pylist()) != "")
