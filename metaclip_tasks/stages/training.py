"""The image-side stages: a curated subset's images downloaded (img2dataset), a smaller t's view of one
download, a model trained on either (open_clip; balanced online in the loader, paper A.2), evaluated."""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metaclip_tasks.core.artifacts import Artifact
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.params import NoParams
from metaclip_tasks.core.shards import ShardReader
from metaclip_tasks.core.stage import Build, Input, Stage
from metaclip_tasks.curation.counting import COUNTS, load_counts
from metaclip_tasks.training.download import (
    DownloadParams,
    download_stats,
    downloaded_uids,
    materialize_view,
    run_img2dataset,
    subset_index,
    write_url_list,
)
from metaclip_tasks.training.evaluate import evaluate_checkpoint, load_coco
from metaclip_tasks.training.online import LoaderRule, expected_kept, kept_per_epoch, loader_rule
from metaclip_tasks.training.train import TrainParams, check_device, run_training


def build_download(build: Build) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="metaclip-download-") as scratch:  # img2dataset's own output
        url_list, shards = Path(scratch) / "urls.parquet", Path(scratch) / "shards"
        write_url_list(build["curated"].data_files(), url_list)
        run_img2dataset(url_list, shards, build.params, build.log)
        with build.output.writer("index.parquet") as f:
            pq.write_table(downloaded_uids(shards), f)
        build.output.put(shards, "shards")
        return download_stats(shards)


def build_download_view(build: Build) -> dict[str, Any]:
    downloaded, curated = build["downloaded"], build["curated"]
    with downloaded.open("index.parquet") as f:
        index = subset_index(pq.read_table(f), curated.data_files())
    with build.output.writer("index.parquet") as f:
        pq.write_table(index, f)
    return {"samples": index.num_rows, "t": curated.params["t"], "downloaded_samples": downloaded.stats["successes"]}


def _downloaded_entries(curated: Artifact, uids: pa.Array) -> pa.Table:
    """(uid, matched_entry_ids) of the curated pairs whose image downloaded."""
    parts = []
    for shard in curated.data_files():
        with ShardReader(shard, ["uid", "matched_entry_ids"], string_columns=["uid"]) as reader:
            reader.require_int_lists("matched_entry_ids")
            table = reader.file.read(columns=["uid", "matched_entry_ids"])
        parts.append(table.filter(pc.is_in(table["uid"], value_set=uids)))
    return pa.concat_tables(parts).combine_chunks()


def _loader_rule(config: TrainParams, source: Artifact) -> tuple[LoaderRule, Artifact] | None:
    """The loader's balancing rule for ``config.balance_t`` on the subset ``source`` holds (or None)."""
    if config.balance_t is None:
        return None
    curated = source.input("curated")
    counts = load_counts(curated.input("pool_counts").stored(COUNTS))
    return loader_rule(counts, config.balance_t, int(curated.params["t"]), int(curated.params["seed"])), curated


def _online_figures(rule: LoaderRule, t: int, curated: Artifact, index: pa.Table) -> dict[str, Any]:
    """What the loader should keep: epoch 0's exact count (the offline subset's downloaded pairs),
    later epochs' expectation and standard deviation."""
    pairs = _downloaded_entries(curated, index["uid"].combine_chunks())
    expected, sd = expected_kept(rule, pairs["matched_entry_ids"])
    first = int(rule.keep(pairs["uid"], pairs["matched_entry_ids"], 0).sum())
    return {
        "t": t,
        "seed": rule.seed,
        "download_t": int(curated.params["t"]),
        "downloaded_pairs": pairs.num_rows,
        "epoch0_kept": first,
        "expected_kept": expected,
        "kept_sd": sd,
    }


def build_train(build: Build) -> dict[str, Any]:
    config: TrainParams = build.params
    check_device(config)
    downloaded, view = build["downloaded"], build["view"]
    source = view or downloaded
    online = _loader_rule(config, source)  # a download smaller than the subset is refused before any work
    with tempfile.TemporaryDirectory(prefix="metaclip-train-") as scratch:  # the trainer reads and writes local files
        with source.open("index.parquet") as f:
            index = pq.read_table(f)
        shards_dir = downloaded.local_copy("shards", Path(scratch) / "downloaded")
        if view is None:
            shards = sorted(str(p) for p in shards_dir.glob("*.tar"))
        else:
            shards = [str(p) for p in materialize_view(shards_dir, index, Path(scratch) / "view")]
        if not shards or not index.num_rows:
            raise CurationError(f"{source.stage} {source.version} holds no downloaded sample to train on")
        logs, samples, balance, stats = Path(scratch) / "logs", index.num_rows, None, {}
        if online:
            rule, curated = online
            assert config.balance_t is not None  # a loader rule is made for a balance_t only
            stats = _online_figures(rule, config.balance_t, curated, index)
            # an epoch as long as the offline subset's, or the 4 sd above expectation: rarely cut short
            samples = max(stats["epoch0_kept"], math.ceil(stats["expected_kept"] + 4 * stats["kept_sd"]))
            balance = (Path(scratch) / "rule.npz", logs / "balance")
            rule.save(balance[0])
            balance[1].mkdir(parents=True)
        checkpoint = run_training(config, shards, samples, logs, "train", build.log, balance)
        if balance:
            stats["epochs"] = kept_per_epoch(balance[1])
        build.output.put(checkpoint, "checkpoint.pt")
        shutil.rmtree(logs / "train" / "checkpoints")
        build.output.put(logs, "logs")
    return {
        "samples": samples,
        "model": config.model,
        "epochs": config.epochs,
        "device": config.device,
        **({"online_balancing": stats} if online else {}),
    }


@dataclass(frozen=True)
class EvaluateParams:
    eval_set: str = field(metadata={"help": "COCO-style folder: val2017/ images and annotations/", "identity": False})


def build_evaluate(build: Build) -> dict[str, Any]:
    checkpoint = build["checkpoint"]
    data = load_coco(build.params.eval_set)
    with tempfile.TemporaryDirectory(prefix="metaclip-evaluate-") as scratch:
        weights = checkpoint.local_copy("checkpoint.pt", scratch)
        metrics = evaluate_checkpoint(weights, checkpoint.params["model"], data)
    build.output.write_json("metrics.json", metrics)
    return metrics


def _eval_images(params: EvaluateParams) -> dict[str, Any]:
    data = load_coco(params.eval_set)
    return {"eval_set": "coco_val2017", "images": [p.name for p in data.images if isinstance(p, Path)]}


DOWNLOAD = Stage(
    "download",
    1,
    DownloadParams,
    build_download,
    {"curated": Input("curated")},
    produces="downloaded",
    libraries=("img2dataset",),
)
DOWNLOAD_VIEW = Stage(
    "download_view", 1, NoParams, build_download_view, {"downloaded": Input("downloaded"), "curated": Input("curated")}
)
TRAIN = Stage(
    "train",
    1,
    TrainParams,
    build_train,
    {"downloaded": Input("downloaded"), "view": Input("download_view", optional=True)},
    produces="checkpoint",
    libraries=("open_clip_torch", "torch"),
)
EVALUATE = Stage(
    "evaluate",
    1,
    EvaluateParams,
    build_evaluate,
    {"checkpoint": Input("checkpoint")},
    produces="metrics",
    libraries=("open_clip_torch", "torch"),
    external=_eval_images,
)
