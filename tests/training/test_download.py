"""Downloading a curated subset with the real img2dataset from a real HTTP server on 127.0.0.1,
as artifacts: pairs -> matched -> pool counts -> curated -> downloaded (and a view for a smaller t)."""

from __future__ import annotations

import json
import socket
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.stage import run
from metaclip_tasks.stages import (
    DOWNLOAD,
    DOWNLOAD_VIEW,
    PAIRS_IMPORT,
    POOL_COUNTS,
    NoParams,
    PairsImportParams,
    PoolCountsParams,
    plan,
)
from metaclip_tasks.training.download import DownloadParams

SNAPSHOT = "CC-MAIN-2023-06"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.usefixtures("wordnet")  # the default metadata: skipped without WordNet
def test_curate_then_download_coco_with_failures_by_reason(tmp_path: Path, coco_server: str, coco_pairs) -> None:
    urls, texts = coco_pairs
    broken = {
        f"{coco_server}/val2017/missing-1.jpg": "a dog on a beach",
        f"{coco_server}/val2017/missing-2.jpg": "a cat on a sofa",
        f"{coco_server}/annotations/instances_val2017.json": "a photo of a train",  # not an image
        f"http://127.0.0.1:{_closed_port()}/x.jpg": "a red car in the street",  # connection refused
    }
    source = tmp_path / "pairs.parquet"
    all_urls = urls + list(broken)
    uids = [u.split("/", 3)[3] for u in all_urls]  # not the server's port: the same draws in every session
    pq.write_table(pa.table({"url": all_urls, "text": texts + list(broken.values()), "uid": uids}), source)
    store = ArtifactStore(tmp_path / "root")
    pairs = run(store, PAIRS_IMPORT, PairsImportParams(SNAPSHOT, (str(source),), uid_column="uid"))
    meta = plan.metadata(store)
    matched = plan.match(store, pairs, meta)
    counts = run(store, POOL_COUNTS, PoolCountsParams("coco"), {"matched": [matched], "metadata": meta})
    everything = plan.balance(store, counts, t=10**9, seed=0)  # keeps every match
    small = plan.balance(store, counts, t=2, seed=0)
    n = everything.stats["kept"]
    assert n == matched.stats["pairs_matched"] >= len(urls)  # nearly every caption names a WordNet entry
    kept_urls = set(pa.concat_tables(pq.read_table(p.uri) for p in everything.data_files())["url"].to_pylist())
    assert set(broken) <= kept_urls

    lines: list[str] = []
    options = DownloadParams(image_size=64, threads=4, timeout=10, retries=1, samples_per_shard=50)
    downloaded = run(store, DOWNLOAD, options, {"curated": everything}, log=lines.append)
    stats = downloaded.stats
    real = n - len(broken)
    assert stats["count"] == n and stats["successes"] == real, stats
    assert stats["failed_to_download"] + stats["failed_to_resize"] == len(broken), stats
    reasons = stats["failures_by_reason"]
    assert sum(reasons.values()) == len(broken)
    assert sum(v for k, v in reasons.items() if "404" in k) == 2, reasons
    assert any("refused" in k.lower() or "errno 111" in k.lower() for k in reasons), reasons
    assert lines  # img2dataset's progress reached the log
    assert downloaded.input("curated") == everything and downloaded.params["image_size"] == 64

    tars = downloaded.files(".tar", under="shards")
    assert len(tars) == -(-n // 50)  # img2dataset shards by input position, 50 per shard
    described = {f["name"]: f for f in downloaded.manifest["files"]}
    assert all(described[t]["bytes"] == Path(downloaded.path(t)).stat().st_size for t in tars)
    with tarfile.open(downloaded.path(tars[0])) as tar:
        names = tar.getnames()
        meta_json = json.loads(tar.extractfile(next(m for m in names if m.endswith(".json"))).read())
    assert {n.rsplit(".", 1)[1] for n in names} == {"jpg", "txt", "json"}
    assert meta_json["uid"] in uids and json.loads(meta_json["matched_entry_ids"])

    index = pq.read_table(downloaded.path("index.parquet"))
    assert index.num_rows == real and set(index.column("shard").to_pylist()) == {t.rsplit("/", 1)[1] for t in tars}
    view = run(store, DOWNLOAD_VIEW, NoParams(), {"downloaded": downloaded, "curated": small})
    subset = pq.read_table(view.path("index.parquet"))
    assert 0 < subset.num_rows == view.stats["samples"] < index.num_rows and view.stats["t"] == 2
    assert set(subset.column("uid").to_pylist()) <= set(index.column("uid").to_pylist())
    kept_small = set(pa.concat_tables(pq.read_table(p.uri) for p in small.data_files())["uid"].to_pylist())
    assert set(subset.column("uid").to_pylist()) == kept_small & set(index.column("uid").to_pylist())

    # download once: the largest subset is the download above (a cache hit, img2dataset not run), the smaller a view
    again: list[str] = []
    plans = plan.download_once(store, [small, everything], options, log=again.append)
    assert [p.t for p in plans] == [10**9, 2] and not again
    assert plans[0].downloaded.cache_hit and plans[0].downloaded.version == downloaded.version and plans[0].view is None
    assert plans[1].view.version == view.version and plans[1].samples == subset.num_rows
