"""Balancing in the training loader (paper A.2): the rule per epoch, the download budget, and open_clip's
real trainer over downloaded COCO shards with the loader re-balancing each epoch."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks import curation
from metaclip_tasks.artifacts import ArtifactStore
from metaclip_tasks.download import DownloadOptions
from metaclip_tasks.errors import CurationError
from metaclip_tasks.online import (
    LOG_FLAG,
    RULE_FLAG,
    EpochFilter,
    download_cap,
    kept_per_epoch,
    loader_rule,
    sample_entries,
    split_flags,
)
from metaclip_tasks.pipeline import DOWNLOAD_VIEW, PAIRS_IMPORT, TRAIN, NoParams, PairsImport
from metaclip_tasks.shared_data import COCO
from metaclip_tasks.stage import run
from metaclip_tasks.train import TINY_CPU, train_command


def test_download_cap_is_the_largest_t_within_the_budget() -> None:
    counts = np.array([1, 3, 10, 50])  # sum min(count, t'): t'=3: 10, t'=10: 24, t'=50: 64
    assert download_cap(counts, 3, None) == 3
    assert download_cap(counts, 3, 24) == 10 and download_cap(counts, 3, 25) == 11 and download_cap(counts, 3, 63) == 49
    assert download_cap(counts, 3, 10**6) == 50  # every matched pair
    with pytest.raises(CurationError, match="download budget 9 is below the subset for t=3 \\(up to 10 pairs\\)"):
        download_cap(counts, 3, 9)


def test_the_loader_rule_is_offline_in_epoch_0_and_the_downloaded_pools_later() -> None:
    counts = np.array([5, 40, 400])
    rule = loader_rule(counts, 20, 100, seed=3)
    assert rule.first.tolist() == pytest.approx([1, 0.5, 0.05]) and rule.later.tolist() == pytest.approx([1, 0.5, 0.2])
    assert rule.epoch(0) == (rule.first, 3) and rule.epoch(1)[1] != 3
    assert loader_rule(counts, 500, 400, 0).later.tolist() == [1, 1, 1]  # a download of every pair covers any t
    with pytest.raises(CurationError, match="online balancing at t=200 needs a download of a subset with t >= 200"):
        loader_rule(counts, 200, 100, 0)


def test_the_filter_keeps_what_the_rule_keeps_and_reports_each_pass(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    counts = np.array([3, 30, 300, 3000])
    rule = loader_rule(counts, 10, 3000, seed=7)
    uids = [f"{i:024d}" for i in range(1000)]
    entries = [sorted(set(rng.integers(0, 4, rng.integers(1, 3)).tolist())) for _ in uids]
    samples = [{"__key__": u, "json": json.dumps({"uid": u, "matched_entry_ids": json.dumps(e)}).encode()}
               for u, e in zip(uids, entries, strict=True)]  # fmt: skip
    assert sample_entries(samples[0]) == (uids[0], entries[0])
    for epoch in (0, 1):
        kept = list(EpochFilter(rule, SimpleNamespace(get_value=lambda e=epoch: e), tmp_path)(iter(samples)))
        expected = rule.keep(uids, pa.array(entries, pa.list_(pa.int32())), epoch)
        assert [s["__key__"] for s in kept] == [u for u, k in zip(uids, expected, strict=True) if k]
    assert kept_per_epoch(tmp_path) == [{"epoch": 0, "seen": 1000, "kept": int(rule.keep(uids, entries, 0).sum())},
                                        {"epoch": 1, "seen": 1000, "kept": len(kept)}]  # fmt: skip
    ours, rest = split_flags(["--epochs=2", f"{RULE_FLAG}=/r.npz", f"{LOG_FLAG}=/logs"])
    assert ours == {RULE_FLAG: "/r.npz", LOG_FLAG: "/logs"} and rest == ["--epochs=2"]
    command = train_command(TINY_CPU, ["a.tar"], 10, Path("/l"), "r", (Path("/r.npz"), Path("/b")))
    assert command[-2:] == [f"{RULE_FLAG}=/r.npz", f"{LOG_FLAG}=/b"]


@pytest.fixture
def coco_pool(tmp_path: Path, coco_server: str, wordnet, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The COCO train captions (one pair per caption) as pool ``coco`` of one snapshot, matched against WordNet."""
    captions = json.loads((COCO / "annotations" / "captions_train2017.json").read_text())
    files = {i["id"]: i["file_name"] for i in captions["images"] if (COCO / "train2017" / i["file_name"]).is_file()}
    rows = [(f"{coco_server}/train2017/{files[a['image_id']]}?caption={a['id']}", a["caption"], f"{a['id']:024d}")
            for a in captions["annotations"] if a["image_id"] in files]  # fmt: skip
    pq.write_table(pa.table({"uid": [r[2] for r in rows], "url": [r[0] for r in rows], "text": [r[1] for r in rows]}),
                   tmp_path / "pairs.parquet")  # fmt: skip
    pools = tmp_path / "pools.toml"
    pools.write_text('[coco]\nsnapshots = ["CC-MAIN-2023-06"]\ntarget_tail_ratio = 0.3\n')
    monkeypatch.setenv("METACLIP_POOLS", str(pools))
    store = ArtifactStore(tmp_path / "root")
    pairs = run(
        store, PAIRS_IMPORT, PairsImport("CC-MAIN-2023-06", (str(tmp_path / "pairs.parquet"),), uid_column="uid")
    )
    curation.match(store, pairs, curation.metadata(store))
    return SimpleNamespace(store=store, pools=pools, root=tmp_path / "root")


def test_the_loader_rebalances_coco_shards_each_epoch(coco_pool: SimpleNamespace, cli) -> None:
    store, t = coco_pool.store, 1
    subset = curation.Subset(pool="coco", t=t, seed=0)
    downloaded = curation.download_subset(store, subset, DownloadOptions(image_size=64, threads=8), log=lambda _: None,
                                          online=curation.OnlineDownload(download_budget=10**6))  # fmt: skip
    everything = downloaded.input("curated")  # a budget above every match: the whole pool
    assert everything.stats["kept"] == everything.stats["pairs_in"] and downloaded.stats["successes"] >= 390
    offline = curation.curated_subset(store, subset)  # the balance stage's subset for the same t and seed
    counts = np.load(offline.input("pool_counts").path("counts.npy"))
    assert 10 < (counts > t).sum() and 0 < offline.stats["kept"] < everything.stats["kept"]

    # the filter open_clip's pipeline runs, over the downloaded shards: one kept set per epoch
    import webdataset as wds

    shards = sorted(str(p) for p in Path(downloaded.path("shards")).glob("*.tar"))
    rule = loader_rule(counts, t, int(everything.params["t"]), 0)
    epochs = []
    for epoch in range(3):
        source = wds.tarfile_to_samples()(iter([{"url": s} for s in shards]))
        epochs.append(
            {sample_entries(s)[0] for s in EpochFilter(rule, SimpleNamespace(get_value=lambda e=epoch: e))(source)}
        )
    uids = pq.read_table(Path(downloaded.path("index.parquet")))["uid"].to_pylist()
    offline_uids = set(pq.read_table(Path(offline.path("data")))["uid"].to_pylist())
    assert epochs[0] == offline_uids & set(uids)  # epoch 0: the offline subset
    pairs = pq.read_table(Path(everything.path("data")))
    tail = {u for u, ids in zip(pairs["uid"].to_pylist(), pairs["matched_entry_ids"].to_pylist(), strict=True)
            if min(counts[ids]) <= t} & set(uids)  # fmt: skip
    assert tail and all(tail <= e for e in epochs)  # every tail pair, every epoch
    assert epochs[1] - tail != epochs[0] - tail and epochs[2] - tail != epochs[1] - tail  # a fresh head sample

    # open_clip's trainer with the filter in its loader, three epochs: what each epoch kept, against the offline rule
    config = replace(TINY_CPU, epochs=3, balance_t=t)
    checkpoint = run(store, TRAIN, config, {"downloaded": downloaded, "view": None}, log=lambda _: None)
    online = checkpoint.stats["online_balancing"]
    assert [e["kept"] for e in online["epochs"]] == [len(e) for e in epochs]
    assert all(e["seen"] == len(uids) for e in online["epochs"])
    assert online["epoch0_kept"] == len(epochs[0]) and online["download_t"] == everything.params["t"]
    assert online["expected_kept"] == pytest.approx(offline.stats["expected_kept"], rel=0.02)  # a few images failed
    for e in online["epochs"]:
        assert abs(e["kept"] - online["expected_kept"]) <= 4 * online["kept_sd"]
    assert checkpoint.files(under="logs/balance")

    # a download smaller than the subset is refused, before any work and with nothing written
    view = run(store, DOWNLOAD_VIEW, NoParams(), {"downloaded": downloaded, "curated": offline})  # the t=1 pairs
    before = {a.version for a in store.list()}
    with pytest.raises(
        CurationError, match=f"online balancing at t={2 * t} needs a download of a subset with t >= {2 * t}"
    ):
        run(store, TRAIN, replace(config, balance_t=2 * t), {"downloaded": downloaded, "view": view})
    status, out, err = cli("download", "--root", coco_pool.root, "--pool", "coco", "--t", t, "--download-budget", 5,
                           pools=coco_pool.pools)  # fmt: skip
    assert status == 1 and not out and err.count("\n") == 1
    assert err.startswith("metaclip: error: download budget 5 is below the subset for t=1 (up to ")
    assert {a.version for a in store.list()} == before
