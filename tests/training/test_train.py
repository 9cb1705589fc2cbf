"""Training with open_clip's real trainer (a tiny model on the CPU) and evaluating it on COCO, as artifacts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.stage import run
from metaclip_tasks.dev.shared_data import COCO
from metaclip_tasks.stages import PAIRS_IMPORT, POOL_COUNTS, PairsImportParams, PoolCountsParams, plan
from metaclip_tasks.training.download import DownloadParams
from metaclip_tasks.training.evaluate import (
    load_coco,
    load_image_folder,
    load_webdataset,
    recall_at,
    zero_shot_accuracy,
)
from metaclip_tasks.training.train import PAPER_VIT_B32, TINY_CPU, check_device, train_command, visible_gpus


def test_the_gpu_recipe_is_refused_without_a_gpu() -> None:
    if visible_gpus():
        pytest.skip("a GPU is visible here")
    with pytest.raises(CurationError, match="needs a GPU and none is visible .* ask for device 'cpu'"):
        check_device(PAPER_VIT_B32)
    assert check_device(replace(PAPER_VIT_B32, device="cpu")).gpus == 0


def test_several_gpus_train_through_torchrun_with_the_global_batch_split() -> None:
    command = train_command(replace(PAPER_VIT_B32, gpus=8), ["a.tar", "b.tar"], 1000, Path("/logs"), "run")
    assert Path(command[0]).name == "torchrun" and "--nproc_per_node=8" in command
    assert "--batch-size=4096" in command and "--model=ViT-B-32-quickgelu" in command
    assert "--lr=0.0005" in command and "--warmup=2000" in command and "--train-data=a.tar::b.tar" in command
    assert "--accum-freq=1" in command and "--dataset-resampled" not in command
    with pytest.raises(CurationError, match="does not split over 3 GPUs"):
        train_command(replace(PAPER_VIT_B32, gpus=3, global_batch_size=32768), ["a.tar"], 10, Path("/l"), "r")


def test_fewer_gpus_keep_the_global_batch_by_accumulating() -> None:
    one_gpu = replace(PAPER_VIT_B32, gpus=1, accum_freq=64, resampled=True)
    command = train_command(one_gpu, ["a.tar"], 32768 * 4, Path("/logs"), "run")
    assert command[1:3] == ["-m", "metaclip_tasks.training.train_entry"]  # one process, no torchrun
    assert "--batch-size=512" in command and "--accum-freq=64" in command and "--dataset-resampled" in command
    with pytest.raises(CurationError, match="does not split over 8 GPUs x 3 accumulation steps"):
        train_command(replace(one_gpu, gpus=8, accum_freq=3), ["a.tar"], 10, Path("/l"), "r")


def test_metrics_by_hand() -> None:
    import numpy as np

    similarity = np.array([[0.9, 0.1, 0.0], [0.2, 0.1, 0.8]])
    assert recall_at(similarity, [{0}, {1}], ks=(1, 2)) == {"R@1": 0.5, "R@2": 0.5}
    features, weights = np.eye(2), np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    assert zero_shot_accuracy(features, weights, [0, 2]) == {"top1": 0.5, "top5": 1.0}


@pytest.mark.slow
def test_tiny_model_trains_on_coco_shards_and_evaluates(tmp_path: Path, coco_server: str, wordnet) -> None:
    import json

    captions = json.loads((COCO / "annotations" / "captions_train2017.json").read_text())
    files = {i["id"]: i["file_name"] for i in captions["images"] if (COCO / "train2017" / i["file_name"]).is_file()}
    rows = [
        (f"{coco_server}/train2017/{files[a['image_id']]}?caption={a['id']}", a["caption"], f"{a['id']:024d}")
        for a in captions["annotations"]
        if a["image_id"] in files
    ]
    source = tmp_path / "pairs.parquet"
    uids, urls, texts = ([r[i] for r in rows] for i in (2, 0, 1))
    pq.write_table(pa.table({"uid": uids, "url": urls, "text": texts}), source)
    store = ArtifactStore(tmp_path / "root")
    pairs = run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (str(source),), uid_column="uid"))
    meta = plan.metadata(store)
    matched = plan.match(store, pairs, meta)
    counts = run(store, POOL_COUNTS, PoolCountsParams("coco-train"), {"matched": [matched], "metadata": meta})
    everything = plan.balance(store, counts, t=10**9, seed=0)  # every matched caption
    smaller = plan.balance(store, counts, t=1, seed=0)  # ~3 in 4: most captions name a rare entry too
    options = DownloadParams(image_size=64, threads=8)
    plans = plan.download_once(store, [everything, smaller], options, log=lambda _: None)
    downloaded = plans[0].downloaded
    assert downloaded.stats["successes"] == everything.stats["kept"] >= len(rows) - 5

    view = plans[1]  # the smaller t: an index into the one download, trained on as its own shards
    assert 16 < view.samples < downloaded.stats["successes"]
    lines: list[str] = []
    checkpoint, metrics = plan.train_and_evaluate(store, view, TINY_CPU, str(COCO), log=lines.append)
    assert any("Train Epoch: 0" in line for line in lines)
    assert checkpoint.stats["samples"] == view.samples and checkpoint.params["model"] == "metaclip-tiny"
    assert {a.stage for a in checkpoint.inputs()} == {"downloaded", "download_view"}
    assert "checkpoint.pt" in checkpoint.files() and checkpoint.files(under="logs")
    assert not checkpoint.files(under="logs/train/checkpoints")  # the weights are kept once, at the top
    weights = Path(checkpoint.path("checkpoint.pt"))
    assert metrics.input("checkpoint") == checkpoint and metrics.read_json("metrics.json") == metrics.stats

    data = load_coco(COCO)
    assert len(data.images) == 79 and len(data.classnames) == 80 and sum(map(len, data.captions)) == 395
    m = metrics.stats
    assert m["images"] == 79 and m["captions"] == 395
    for block in ("image_to_text", "text_to_image"):
        assert set(m[block]) == {"R@1", "R@5", "R@10"}
        assert 0 <= m[block]["R@1"] <= m[block]["R@5"] <= m[block]["R@10"] <= 1
    assert 0 <= m["zero_shot"]["top1"] <= m["zero_shot"]["top5"] <= 1
    again = plan.train_and_evaluate(store, view, TINY_CPU, str(COCO), log=lines.append)
    assert all(a.cache_hit for a in again) and [a.version for a in again] == [checkpoint.version, metrics.version]

    from metaclip_tasks.training.evaluate import evaluate_checkpoint

    checkpoint_model = checkpoint.params["model"]

    # any labelled ImageFolder: here two COCO categories, images linked in by their label
    import os

    for image, label in zip(data.images, data.labels, strict=True):
        if label >= 0 and data.classnames[label] in ("person", "dog"):
            folder = tmp_path / "folder" / data.classnames[label]
            folder.mkdir(parents=True, exist_ok=True)
            os.symlink(image, folder / image.name)
    folder_set = load_image_folder(tmp_path / "folder")
    assert folder_set.classnames == ["dog", "person"] and len(folder_set.images) == len(folder_set.labels) > 10
    folder_metrics = evaluate_checkpoint(weights, checkpoint_model, folder_set)
    assert folder_metrics["captions"] == 0 and "text_to_image" not in folder_metrics
    assert folder_metrics["zero_shot"]["top5"] == 1.0  # two classes: always in the top 5
    # ... and the same set as a webdataset shard (jpg + cls)
    import io
    import tarfile

    with tarfile.open(tmp_path / "labelled.tar", "w") as tar:
        for i, (image, label) in enumerate(zip(folder_set.images, folder_set.labels, strict=True)):
            for ext, payload in (("jpg", Path(image).read_bytes()), ("cls", str(label).encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    shard_set = load_webdataset([tmp_path / "labelled.tar"], folder_set.classnames)
    assert shard_set.labels == folder_set.labels
    assert evaluate_checkpoint(weights, checkpoint_model, shard_set)["zero_shot"] == folder_metrics["zero_shot"]
    with pytest.raises(CurationError, match="has label 1, outside the 1 class names"):
        load_webdataset([tmp_path / "labelled.tar"], ["dog"])
    with pytest.raises(CurationError, match="has no class sub-directories"):
        load_image_folder(Path(checkpoint.path("logs")) / "train")  # log files only
