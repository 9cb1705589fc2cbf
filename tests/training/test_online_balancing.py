"""Balancing in the training loader (paper A.2): the rule per epoch, the download budget, open_clip's
real trainer over downloaded COCO shards with the loader re-balancing each epoch, and open_clip's
loader and trainer with several loader worker processes (the same pairs kept, every shard reported once)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.stage import run
from metaclip_tasks.dev.shared_data import COCO
from metaclip_tasks.stages import DOWNLOAD_VIEW, PAIRS_IMPORT, TRAIN, NoParams, PairsImportParams, plan
from metaclip_tasks.training.download import DownloadParams
from metaclip_tasks.training.online import (
    LOG_FLAG,
    RULE_FLAG,
    EpochFilter,
    download_cap,
    install,
    kept_per_epoch,
    loader_rule,
    sample_entries,
    split_flags,
)
from metaclip_tasks.training.train import TINY_CPU, run_training, train_command


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
    samples = [
        {"__key__": u, "json": json.dumps({"uid": u, "matched_entry_ids": json.dumps(e)}).encode()}
        for u, e in zip(uids, entries, strict=True)
    ]
    assert sample_entries(samples[0]) == (uids[0], entries[0])
    for epoch in (0, 1):
        kept = list(EpochFilter(rule, SimpleNamespace(get_value=lambda e=epoch: e), tmp_path)(iter(samples)))
        expected = rule.keep(uids, pa.array(entries, pa.list_(pa.int32())), epoch)
        assert [s["__key__"] for s in kept] == [u for u, k in zip(uids, expected, strict=True) if k]
    assert kept_per_epoch(tmp_path) == [
        {"epoch": 0, "seen": 1000, "kept": int(rule.keep(uids, entries, 0).sum()), "shards": 1},
        {"epoch": 1, "seen": 1000, "kept": len(kept), "shards": 1},
    ]
    ours, rest = split_flags(["--epochs=2", f"{RULE_FLAG}=/r.npz", f"{LOG_FLAG}=/logs"])
    assert ours == {RULE_FLAG: "/r.npz", LOG_FLAG: "/logs"} and rest == ["--epochs=2"]
    command = train_command(TINY_CPU, ["a.tar"], 10, Path("/l"), "r", (Path("/r.npz"), Path("/b")))
    assert command[-2:] == [f"{RULE_FLAG}=/r.npz", f"{LOG_FLAG}=/b"]


@pytest.fixture
def coco_pool(tmp_path: Path, coco_server: str, wordnet, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The COCO train captions (one pair per caption) as pool ``coco`` of one snapshot, matched against WordNet."""
    captions = json.loads((COCO / "annotations" / "captions_train2017.json").read_text())
    files = {i["id"]: i["file_name"] for i in captions["images"] if (COCO / "train2017" / i["file_name"]).is_file()}
    rows = [
        (f"{coco_server}/train2017/{files[a['image_id']]}?caption={a['id']}", a["caption"], f"{a['id']:024d}")
        for a in captions["annotations"]
        if a["image_id"] in files
    ]
    pq.write_table(
        pa.table({"uid": [r[2] for r in rows], "url": [r[0] for r in rows], "text": [r[1] for r in rows]}),
        tmp_path / "pairs.parquet",
    )
    pools = tmp_path / "pools.toml"
    pools.write_text('[coco]\nsnapshots = ["CC-MAIN-2023-06"]\ntarget_tail_ratio = 0.3\n')
    monkeypatch.setenv("METACLIP_POOLS", str(pools))
    store = ArtifactStore(tmp_path / "root")
    pairs = run(
        store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (str(tmp_path / "pairs.parquet"),), uid_column="uid")
    )
    plan.match(store, pairs, plan.metadata(store))
    return SimpleNamespace(store=store, pools=pools, root=tmp_path / "root")


@pytest.mark.slow
def test_the_loader_rebalances_coco_shards_each_epoch(coco_pool: SimpleNamespace, cli) -> None:
    store, t = coco_pool.store, 1
    subset = plan.Subset(pool="coco", t=t, seed=0)
    downloaded = plan.download_subset(
        store,
        subset,
        DownloadParams(image_size=64, threads=8),
        log=lambda _: None,
        online=plan.OnlineDownload(download_budget=10**6),
    )
    everything = downloaded.input("curated")  # a budget above every match: the whole pool
    assert everything.stats["kept"] == everything.stats["pairs_in"] and downloaded.stats["successes"] >= 390
    offline = plan.curated_subset(store, subset)  # the balance stage's subset for the same t and seed
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
    tail = {
        u
        for u, ids in zip(pairs["uid"].to_pylist(), pairs["matched_entry_ids"].to_pylist(), strict=True)
        if min(counts[ids]) <= t
    } & set(uids)
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
    status, out, err = cli(
        "download", "--root", coco_pool.root, "--pool", "coco", "--t", t, "--download-budget", 5, pools=coco_pool.pools
    )
    assert status == 1 and not out and err.count("\n") == 1
    assert err.startswith("metaclip: error: download budget 5 is below the subset for t=1 (up to ")
    assert {a.version for a in store.list()} == before


# -- loader workers: each worker process filters the shards open_clip gives it ------------------------------------

WORKER_COUNTS = np.array([5, 20, 40, 80])  # entry 0 is a tail entry at t=10 (kept every epoch), 1-3 are head entries


def _shards(folder: Path, sizes: list[int]) -> tuple[list[str], list[str], list[list[int]]]:
    """Webdataset shards of tiny real JPEGs, ``sizes`` samples each, whose caption is the uid (so a loader's
    batches name the pairs it kept); odd pairs match the tail entry, even ones 1-2 head entries.
    Returns (shard paths, uids, matched entry ids)."""
    import io

    import webdataset as wds
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths, uids, entries = [], [], []
    for number, size in enumerate(sizes):
        paths.append(str(folder / f"{number:05d}.tar"))
        with wds.TarWriter(paths[-1]) as writer:
            for _ in range(size):
                uid = f"{len(uids):024d}"
                ids = [0] if len(uids) % 2 else sorted(set(rng.integers(1, 4, rng.integers(1, 3)).tolist()))
                image = io.BytesIO()
                Image.new("RGB", (64, 64), tuple(rng.integers(0, 256, 3).tolist())).save(image, "JPEG")
                meta = {"uid": uid, "matched_entry_ids": json.dumps(ids)}
                writer.write({"__key__": uid, "jpg": image.getvalue(), "txt": uid, "json": json.dumps(meta).encode()})
                uids.append(uid)
                entries.append(ids)
    return paths, uids, entries


def _open_clip_loader(
    monkeypatch: pytest.MonkeyPatch,
    shards: list[str],
    rule: Path,
    log_dir: Path,
    workers: int,
    batch_size: int,
    samples: int,
):
    """open_clip's own webdataset training loader with the filter ``install`` puts in it (the trainer's), on
    ``workers`` loader processes; images become 0 and captions stay text, so each batch lists its uids."""
    from open_clip_train import data

    with monkeypatch.context() as patch:
        patch.setattr(data, "get_wds_dataset", data.get_wds_dataset)  # install() replaces it: put back after
        install(str(rule), str(log_dir))
        args = SimpleNamespace(
            train_data="::".join(shards),
            train_num_samples=samples,
            dataset_resampled=False,
            train_data_upsampling_factors=None,
            seed=0,
            workers=workers,
            world_size=1,
            batch_size=batch_size,
        )
        return data.get_wds_dataset(args, lambda image: 0, True, tokenizer=lambda text: [text])


def _kept_uids(info, epochs: int) -> list[set[str]]:
    """The uids of every batch the loader yields, per epoch (set as open_clip's trainer sets it)."""
    kept = []
    for epoch in range(epochs):
        info.set_epoch(epoch)
        kept.append({uid for _, uids in info.dataloader for uid in uids})
    return kept


def _reports(log_dir: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(log_dir.glob("*.jsonl")) for line in path.read_text().splitlines()]


def test_loader_workers_keep_the_same_pairs_as_one_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 2 loader processes each epoch keeps exactly the pairs one loader keeps (the rule's), and the
    reports, one per shard and epoch, add up to the same figures."""
    shards, uids, entries = _shards(tmp_path / "shards", [16, 16, 16, 16])
    rule = loader_rule(WORKER_COUNTS, 10, 80, seed=0)
    rule.save(tmp_path / "rule.npz")
    expected = [{u for u, k in zip(uids, rule.keep(uids, entries, e), strict=True) if k} for e in range(3)]
    assert expected[0] != expected[1] != expected[2]  # the head is re-drawn each epoch
    kept, figures = {}, {}
    for workers in (0, 2):
        logs = tmp_path / f"logs-{workers}"
        logs.mkdir()
        info = _open_clip_loader(monkeypatch, shards, tmp_path / "rule.npz", logs, workers, 1, len(uids))
        kept[workers], figures[workers] = _kept_uids(info, 3), kept_per_epoch(logs)
        reports = _reports(logs)
        assert sorted((r["epoch"], r["shard"]) for r in reports) == [(e, s) for e in range(3) for s in shards]
        assert {r["worker"] for r in reports} == set(range(max(workers, 1)))
    assert kept[2] == kept[0] == expected
    every_shard = [{"epoch": e, "seen": 64, "kept": len(expected[e]), "shards": 4} for e in range(3)]
    assert figures[2] == figures[0] == every_shard


def test_a_worker_stopped_early_reports_the_shards_it_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker holding more kept samples than its share of the epoch's batches (here 2 shards of 3 on 2
    workers; at scale, more than its share plus what the filter and open_clip's shuffle buffer read ahead)
    is stopped mid-shard: the shards it read to the end still count, exactly (they were all lost), and the
    epoch's ``seen`` shows what was not read."""
    from open_clip_train import data

    from metaclip_tasks.training import online

    shards, uids, entries = _shards(tmp_path / "shards", [16, 16, 16])
    rule = loader_rule(WORKER_COUNTS, 10, 80, seed=0)
    rule.save(tmp_path / "rule.npz")
    monkeypatch.setattr(online, "CHUNK", 4)  # read ahead of the batches as little as at scale: not whole shards
    monkeypatch.setattr(data, "_SAMPLE_SHUFFLE_SIZE", 1)
    monkeypatch.setattr(data, "_SAMPLE_SHUFFLE_INITIAL", 1)
    samples = int(rule.keep(uids, entries, 0).sum())  # an epoch as long as epoch 0 keeps, as the train stage sets
    info = _open_clip_loader(monkeypatch, shards, tmp_path / "rule.npz", tmp_path, 2, 1, samples)
    _kept_uids(info, 3)
    of_shard = {shard: set(uids[16 * i : 16 * (i + 1)]) for i, shard in enumerate(shards)}
    reports = _reports(tmp_path)
    epochs = kept_per_epoch(tmp_path)
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    for epoch, figures in enumerate(epochs):
        read = [r["shard"] for r in reports if r["epoch"] == epoch]
        assert len(set(read)) == len(read) == figures["shards"] == 2  # the stopped worker's first shard counts
        assert figures["seen"] == 32 < len(uids)
        kept = {u for u, k in zip(uids, rule.keep(uids, entries, epoch), strict=True) if k}
        assert figures["kept"] == len(kept & (of_shard[read[0]] | of_shard[read[1]]))


def test_a_worker_keeping_less_than_a_batch_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """open_clip drops a pass's last partial batch and reads a worker's shards again until it has a batch: a
    worker whose shards keep fewer samples than a batch would loop forever, so it fails, naming the cause."""
    shards, uids, _ = _shards(tmp_path / "shards", [6, 6])
    rule = loader_rule(WORKER_COUNTS, 10, 80, seed=0)
    rule.save(tmp_path / "rule.npz")
    info = _open_clip_loader(monkeypatch, shards, tmp_path / "rule.npz", tmp_path, 2, 8, len(uids))
    with pytest.raises(CurationError, match="keeps [0-6] samples of its shards in epoch 0, fewer than a batch of 8"):
        _kept_uids(info, 1)


@pytest.mark.slow
def test_the_trainer_with_loader_workers_reports_every_shard_once(tmp_path: Path) -> None:
    """open_clip's trainer, the tiny model on the CPU with 2 loader workers, 3 epochs: every epoch's
    figures are the rule's over all shards (those of workers=0), each shard reported once per epoch
    although each worker reads its shards more than once."""
    shards, uids, entries = _shards(tmp_path / "shards", [16, 16, 16, 16])
    rule = loader_rule(WORKER_COUNTS, 10, 80, seed=0)
    rule.save(tmp_path / "rule.npz")
    (tmp_path / "balance").mkdir()
    config = replace(TINY_CPU, epochs=3, workers=2, global_batch_size=8)
    checkpoint = run_training(
        config,
        shards,
        len(uids),
        tmp_path / "logs",
        log=lambda _: None,
        balance=(tmp_path / "rule.npz", tmp_path / "balance"),
    )
    assert checkpoint.is_file()
    assert sorted(p.name for p in (tmp_path / "balance").iterdir()) == ["rank0-worker0.jsonl", "rank0-worker1.jsonl"]
    reports = _reports(tmp_path / "balance")
    assert sorted((r["epoch"], r["shard"]) for r in reports) == [(e, s) for e in range(3) for s in shards]
    assert kept_per_epoch(tmp_path / "balance") == [
        {"epoch": e, "seen": len(uids), "kept": int(rule.keep(uids, entries, e).sum()), "shards": 4} for e in range(3)
    ]
