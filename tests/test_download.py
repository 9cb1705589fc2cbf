"""Downloading a curated subset with the real img2dataset from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_tasks.balancing import balance_shards
from metaclip_tasks.counting import load_counts
from metaclip_tasks.download import (
    DownloadOptions,
    download_stats,
    downloaded_uids,
    run_img2dataset,
    subset_index,
    write_url_list,
)
from metaclip_tasks.matching import match_shards


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_curate_then_download_coco_with_failures_by_reason(tmp_path: Path, coco_server: str, coco_pairs, wordnet) -> None:
    urls, texts = coco_pairs
    images = urls
    broken = {
        f"{coco_server}/val2017/missing-1.jpg": "a dog on a beach",
        f"{coco_server}/val2017/missing-2.jpg": "a cat on a sofa",
        f"{coco_server}/annotations/instances_val2017.json": "a photo of a train",  # not an image
        f"http://127.0.0.1:{_closed_port()}/x.jpg": "a red car in the street",  # connection refused
    }
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    pq.write_table(pa.table({"url": urls + list(broken), "text": texts + list(broken.values())}), pairs / "part-0.parquet")
    matched = match_shards([pairs], tmp_path / "matched", wordnet, progress=False)
    counts = load_counts(tmp_path / "matched" / "counts.npy")
    balance_shards([tmp_path / "matched"], tmp_path / "all", counts, t=10**9, progress=False)  # keeps every match
    balance_shards([tmp_path / "matched"], tmp_path / "small", counts, t=2, progress=False)
    n = write_url_list(sorted((tmp_path / "all").glob("*.parquet")), tmp_path / "urls.parquet")
    assert n == matched["pairs_matched"] >= len(images)

    lines: list[str] = []
    options = DownloadOptions(image_size=64, threads=4, timeout=10, retries=1, samples_per_shard=50)
    run_img2dataset(tmp_path / "urls.parquet", tmp_path / "shards", options, log=lines.append)
    stats = download_stats(tmp_path / "shards")
    real = n - len(broken)
    assert stats["count"] == n and stats["successes"] == real, stats
    assert stats["failed_to_download"] + stats["failed_to_resize"] == len(broken), stats
    reasons = stats["failures_by_reason"]
    assert sum(reasons.values()) == len(broken)
    assert sum(v for k, v in reasons.items() if "404" in k) == 2, reasons
    assert any("refused" in k.lower() or "errno 111" in k.lower() for k in reasons), reasons
    assert lines  # img2dataset's progress reached the callback

    tars = sorted((tmp_path / "shards").glob("*.tar"))
    assert len(tars) == -(-n // 50)  # img2dataset shards by input position, 50 per shard
    with tarfile.open(tars[0]) as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile(next(m for m in names if m.endswith(".json"))).read())
    assert {n.rsplit(".", 1)[1] for n in names} == {"jpg", "txt", "json"}
    assert len(meta["uid"]) == 24 and json.loads(meta["matched_entry_ids"])

    index = downloaded_uids(tmp_path / "shards")
    assert index.num_rows == real and set(index.column("shard").to_pylist()) == {t.name for t in tars}
    small = subset_index(index, sorted((tmp_path / "small").glob("*.parquet")))
    assert 0 < small.num_rows < index.num_rows
    assert set(small.column("uid").to_pylist()) <= set(index.column("uid").to_pylist())
