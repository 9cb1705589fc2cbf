"""The curation stages as versioned artifacts, with the heavy work on Dask.

Each function takes an :class:`ArtifactStore`, its input artifacts and parameters, and
returns the published artifact (a cache hit when it already exists).  The Airflow DAGs in
``dags/`` are thin callers of these functions; so is anything else that wants the pipeline.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from operator import getitem
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from metaclip_tasks.artifacts import Artifact, ArtifactStore
from metaclip_tasks.balancing import (
    ShardBalance,
    balance_shard,
    balance_summary,
    entry_probabilities,
    resolve_t,
    t_for_tail_ratio,
    tail_ratio,
)
from metaclip_tasks.cluster import tree_sum
from metaclip_tasks.counting import load_counts, save_counts, sum_counts, top_entries
from metaclip_tasks.download import (
    DownloadOptions,
    download_stats,
    downloaded_uids,
    materialize_view,
    run_img2dataset,
    subset_index,
    write_url_list,
)
from metaclip_tasks.errors import CurationError
from metaclip_tasks.evaluate import evaluate_checkpoint, load_coco
from metaclip_tasks.matching import Matcher, match_shard
from metaclip_tasks.metadata.build import MetadataParams, build_metadata
from metaclip_tasks.metadata.store import load_metadata, metadata_report, save_metadata
from metaclip_tasks.metadata.wordnet import DEFAULT_WORDNET_DIR, POS_FILES
from metaclip_tasks.report import STANDARD_TS, plot_ablation, plot_entry_counts, tail_ratios
from metaclip_tasks.shards import ShardReader
from metaclip_tasks.snapshots import Pool, check_snapshot
from metaclip_tasks.storage import write_json
from metaclip_tasks.train import TrainConfig, check_device, run_training

METADATA, MATCHED, POOL_COUNTS, CURATED, ABLATION = "metadata", "matched", "pool_counts", "curated", "t_ablation"
DOWNLOADED, DOWNLOAD_VIEW, CHECKPOINT, METRICS = "downloaded", "download_view", "checkpoint", "metrics"
_MATCHERS: dict[str, Matcher] = {}  # per Dask worker process: metadata version -> built matcher


# -- metadata -----------------------------------------------------------------------------


def build_metadata_artifact(
    store: ArtifactStore,
    params: MetadataParams,
    *,
    wordnet_dir: Path = DEFAULT_WORDNET_DIR,
    dumps: Sequence[str | Path] = (),
    pageview_files: Sequence[str | Path] = (),
    client: Any = None,
) -> Artifact:
    """The metadata built from its sources (section 3.1) as an artifact: ``entries.json`` and
    ``entries.sources.json``; its version covers the thresholds and the input files."""
    inputs: dict[str, Any] = {}
    if "wordnet" in params.sources:
        inputs["wordnet"] = [_fingerprint(Path(wordnet_dir) / f"data.{pos}") for pos in POS_FILES]
    inputs["dumps"] = [_fingerprint(Path(d)) for d in dumps if {"unigram", "bigram"} & set(params.sources)]
    inputs["pageviews"] = [_fingerprint(Path(p)) for p in pageview_files if "title" in params.sources]

    def build(workdir: Path) -> dict[str, Any]:
        result = build_metadata(params, wordnet_dir=wordnet_dir, dumps=dumps, pageview_files=pageview_files, client=client)
        result.save(workdir / "entries.json")
        return {**result.stats(), **metadata_report(result.entries)}

    return store.publish(METADATA, {"build": asdict(params), "inputs": inputs}, [], build)


def wordnet_metadata(store: ArtifactStore, wordnet_dir: Path = DEFAULT_WORDNET_DIR) -> Artifact:
    """MetaCLIP's WordNet entries (86,654) alone: the default metadata of the match stage."""
    return build_metadata_artifact(store, MetadataParams(sources=("wordnet",)), wordnet_dir=wordnet_dir)


def import_metadata(store: ArtifactStore, path: str | Path) -> Artifact:
    """An existing metadata list (e.g. MetaCLIP's metadata.json), checked and stored as an artifact."""
    entries = load_metadata(path)
    digest = hashlib.sha256(json.dumps(entries, ensure_ascii=False).encode()).hexdigest()

    def build(workdir: Path) -> dict[str, Any]:
        save_metadata(workdir / "entries.json", entries)
        return metadata_report(entries)

    return store.publish(METADATA, {"source": "import", "sha256": digest}, [], build)


# -- matching -----------------------------------------------------------------------------


def pairs_dir(root: str | Path, snapshot: str) -> Path:
    """Where a snapshot's input shards of pairs live: ``<root>/pairs/<snapshot>/``."""
    return Path(root) / "pairs" / snapshot


def snapshot_shards(root: str | Path, snapshot: str) -> list[Path]:
    """The snapshot's parquet shards, sorted; none is an error naming the directory."""
    directory = pairs_dir(root, check_snapshot(snapshot))
    shards = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))
    if not shards:
        raise CurationError(f"no parquet shards of pairs for {snapshot} in {directory}")
    return shards


def _fingerprint(path: Path) -> dict[str, Any]:
    """Name, size and a hash of the parquet footer: changes whenever the shard's content does."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - 65536))
        tail = f.read()
    return {"name": path.name, "bytes": size, "footer_sha256": hashlib.sha256(tail).hexdigest()}


def _worker_matcher(entries_uri: str, metadata_version: str) -> Matcher:
    """The matcher for a metadata version, built once per worker process and then reused."""
    if metadata_version not in _MATCHERS:
        _MATCHERS.clear()  # one metadata at a time keeps workers' memory bounded
        _MATCHERS[metadata_version] = Matcher(load_metadata(entries_uri))
    return _MATCHERS[metadata_version]


def _match_task(shard: str, output: str, entries_uri: str, metadata_version: str, columns: dict[str, Any]) -> tuple:
    result = match_shard(shard, output, _worker_matcher(entries_uri, metadata_version), **columns)
    return result.counts, result.stats


def match_snapshot(
    store: ArtifactStore,
    snapshot: str,
    metadata: Artifact,
    client: Any,
    *,
    url_column: str = "url",
    text_column: str = "text",
    uid_column: str | None = None,
) -> Artifact:
    """Match every shard of a snapshot on Dask; one matched shard per input plus ``counts.npy``."""
    shards = snapshot_shards(store.root, snapshot)
    columns = {"url_column": url_column, "text_column": text_column, "uid_column": uid_column}
    for shard in shards:  # every shard readable with the right columns, before any work
        ShardReader(shard, [c for c in columns.values() if c])
    params = {"snapshot": snapshot, "pairs": [_fingerprint(s) for s in shards], **columns}

    def build(workdir: Path) -> dict[str, Any]:
        entries_uri = str(metadata.path("entries.json"))
        futures = client.map(
            _match_task,
            [str(s) for s in shards],
            [str(workdir / s.name) for s in shards],
            entries_uri=entries_uri, metadata_version=metadata.version, columns=columns, pure=False,
        )  # fmt: skip
        counts = tree_sum(client, client.map(getitem, futures, [0] * len(futures)))
        per_shard = client.gather(client.map(getitem, futures, [1] * len(futures)))
        save_counts(workdir / "counts.npy", counts)
        totals = {k: sum(s[k] for s in per_shard) for k in per_shard[0]}
        return {**totals, "entries": len(counts), "shards": dict(zip([s.name for s in shards], per_shard))}

    return store.publish(MATCHED, params, [metadata], build)


def matched_shards(artifact: Artifact) -> list[str]:
    """The matched parquet files of a matched (or curated) artifact."""
    return [artifact.path(f["name"]) for f in artifact.manifest["files"] if f["name"].endswith(".parquet")]


# -- pool counts --------------------------------------------------------------------------


def _metadata_of(store: ArtifactStore, matched: Sequence[Artifact]) -> Artifact:
    versions = {i["version"] for a in matched for i in a.manifest["inputs"] if i["stage"] == METADATA}
    if len(versions) != 1:
        raise CurationError(f"the snapshots were matched against different metadata versions: {sorted(versions)}")
    return store.require(METADATA, versions.pop())


def pool_counts(store: ArtifactStore, pool: Pool, matched: Sequence[Artifact]) -> Artifact:
    """Sum a pool's snapshot counts; choose t for its target tail ratio; Fig. 2 and Table 3."""
    missing = sorted(set(pool.snapshots) - {a.params["snapshot"] for a in matched})
    if missing:
        raise CurationError(f"pool {pool.name} lacks matched snapshots: {', '.join(missing)}")
    matched = sorted(matched, key=lambda a: pool.snapshots.index(a.params["snapshot"]))
    metadata = _metadata_of(store, matched)
    params = {"pool": pool.name, "snapshots": list(pool.snapshots), "target_tail_ratio": pool.target_tail_ratio}

    def build(workdir: Path) -> dict[str, Any]:
        counts = sum_counts([load_counts(a.path("counts.npy")) for a in matched], names=list(pool.snapshots))
        save_counts(workdir / "counts.npy", counts)
        t = t_for_tail_ratio(counts, pool.target_tail_ratio)
        entries = load_metadata(metadata.path("entries.json"))
        top = top_entries(counts, entries, 20)
        write_json(workdir / "top_entries.json", [{"entry": e, "count": n} for e, n in top])
        plot_entry_counts(counts, t, workdir / "entry_counts.png", f"{pool.name}: cumulative counts, tail to head")
        return {
            "matches": int(counts.sum()),
            "entries": len(counts),
            "entries_never_matched": int((counts == 0).sum()),
            "t": t,
            "tail_ratio": tail_ratio(counts, t),
            "head_entries": int((counts >= t).sum()),
            "tail_ratios": tail_ratios(counts, STANDARD_TS),
            "top_entries": top[:5],
        }

    return store.publish(POOL_COUNTS, params, [*matched, metadata], build)


# -- balancing ----------------------------------------------------------------------------


def resolve_pool_t(counts_artifact: Artifact, t: int | None, target_tail_ratio: float | None) -> int:
    """t as given, or the t of the pool's counts closest to the target tail ratio (the pool's by default)."""
    if t is None and target_tail_ratio in (None, counts_artifact.params["target_tail_ratio"]):
        return int(counts_artifact.stats["t"])  # chosen when the pool was counted
    return resolve_t(load_counts(counts_artifact.path("counts.npy")), t, target_tail_ratio)


def _balance_task(shard: str, output: str, probs: np.ndarray, seed: int) -> ShardBalance:
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    return balance_shard(shard, output, probs, seed)


def balance_pool(
    store: ArtifactStore, counts_artifact: Artifact, matched: Sequence[Artifact], client: Any, *, t: int, seed: int = 0
) -> Artifact:
    """The curated subset of a pool for one t and seed: one curated shard per matched shard."""
    counts = load_counts(counts_artifact.path("counts.npy"))
    params = {"pool": counts_artifact.params["pool"], "t": t, "seed": seed}

    def build(workdir: Path) -> dict[str, Any]:
        probs = client.scatter(entry_probabilities(counts, t), broadcast=True)
        jobs = [(a.params["snapshot"], s) for a in matched for s in matched_shards(a)]
        futures = client.map(
            _balance_task,
            [s for _, s in jobs],
            [str(workdir / snap / Path(s).name) for snap, s in jobs],
            probs=probs, seed=seed, pure=False,
        )  # fmt: skip
        total = tree_sum(client, futures)
        save_counts(workdir / "kept_counts.npy", total.kept_counts)
        return balance_summary(counts, t, seed, total)

    return store.publish(CURATED, params, [counts_artifact, *matched], build)


def ablation_table(
    store: ArtifactStore,
    counts_artifact: Artifact,
    curated: Sequence[Artifact],
    downloaded: dict[int, int] | None = None,
    metrics: dict[int, dict[str, Any]] | None = None,
) -> Artifact:
    """The comparison of a t ablation (the paper's Table 6): t, tail ratio, curated and downloaded
    sizes, zero-shot and retrieval metrics when trained, that the subsets nest, and a plot."""
    curated = sorted(curated, key=lambda a: a.params["t"])
    downloaded, metrics = downloaded or {}, metrics or {}
    params = {"pool": counts_artifact.params["pool"], "runs": [(a.params["t"], a.params["seed"]) for a in curated],
              "downloaded": sorted(downloaded.items()), "checkpoints": sorted((t, m["checkpoint"]) for t, m in metrics.items())}  # fmt: skip

    def build(workdir: Path) -> dict[str, Any]:
        rows, nested = [], True
        for smaller, larger in zip(curated, curated[1:]):
            if smaller.params["seed"] == larger.params["seed"]:
                nested = nested and _nested(smaller, larger)
        for artifact in curated:
            s = artifact.stats
            rows.append({"t": s["t"], "seed": s["seed"], "tail_ratio": s["tail_ratio"], "curated": s["kept"],
                         "expected": s["expected_kept"], "downloaded": downloaded.get(s["t"]),
                         "zero_shot_top1": metrics.get(s["t"], {}).get("zero_shot", {}).get("top1"),
                         "text_to_image_R@5": metrics.get(s["t"], {}).get("text_to_image", {}).get("R@5"),
                         "version": artifact.version})  # fmt: skip
        write_json(workdir / "comparison.json", rows)
        lines = ["| t | tail ratio | curated pairs | expected | downloaded | zero-shot top-1 | text->image R@5 | version |",
                 "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
        lines += [f"| {r['t']:,} | {r['tail_ratio']:.4f} | {r['curated']:,} | {r['expected']:,.1f} | "
                  f"{_cell(r['downloaded'], ',')} | {_cell(r['zero_shot_top1'], '.3f')} | "
                  f"{_cell(r['text_to_image_R@5'], '.3f')} | {r['version']} |" for r in rows]  # fmt: skip
        (workdir / "comparison.md").write_text("\n".join(lines) + "\n")
        plot_ablation(rows, workdir / "comparison.png", f"{counts_artifact.params['pool']}: t ablation")
        return {"rows": rows, "nested": nested}

    return store.publish(ABLATION, params, [counts_artifact, *curated], build)


def _cell(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _nested(smaller: Artifact, larger: Artifact) -> bool:
    """Whether every pair kept by ``smaller`` is kept by ``larger``, compared shard by shard."""
    for name in [f["name"] for f in smaller.manifest["files"] if f["name"].endswith(".parquet")]:
        small = set(pq.read_table(smaller.path(name), columns=["uid"])["uid"].to_pylist())
        if not small <= set(pq.read_table(larger.path(name), columns=["uid"])["uid"].to_pylist()):
            return False
    return True


def latest_matched(store: ArtifactStore, snapshots: Sequence[str], metadata: Artifact) -> dict[str, Artifact]:
    """The newest matched artifact of each snapshot made from ``metadata`` (snapshots without one are absent)."""
    found: dict[str, Artifact] = {}
    for artifact in store.list(MATCHED):
        made_from = {(i["stage"], i["version"]) for i in artifact.manifest["inputs"]}
        if artifact.params["snapshot"] in snapshots and (METADATA, metadata.version) in made_from:
            found[artifact.params["snapshot"]] = artifact  # list() is oldest first: the newest wins
    return found


# -- download -------------------------------------------------------------------------------


def download_curated(
    store: ArtifactStore, curated: Artifact, options: DownloadOptions, log: Callable[[str], object] = print
) -> Artifact:
    """The curated subset's images as webdataset shards (img2dataset), with ``index.parquet``
    (uid, key, shard) of what downloaded and the failures by reason in the stats."""

    def build(workdir: Path) -> dict[str, Any]:
        url_list = workdir / "urls.parquet"
        write_url_list(matched_shards(curated), url_list)
        run_img2dataset(url_list, workdir / "shards", options, log)
        url_list.unlink()
        pq.write_table(downloaded_uids(workdir / "shards"), workdir / "index.parquet")
        return download_stats(workdir / "shards")

    return store.publish(DOWNLOADED, {"options": asdict(options)}, [curated], build)


def download_view(store: ArtifactStore, downloaded: Artifact, curated: Artifact) -> Artifact:
    """A smaller curated subset (same seed, smaller t) as an index over already downloaded shards."""

    def build(workdir: Path) -> dict[str, Any]:
        index = subset_index(pq.read_table(downloaded.path("index.parquet")), matched_shards(curated))
        pq.write_table(index, workdir / "index.parquet")
        return {"samples": index.num_rows, "t": curated.params["t"], "downloaded_samples": downloaded.stats["successes"]}

    return store.publish(DOWNLOAD_VIEW, {}, [downloaded, curated], build)


# -- training and evaluation ------------------------------------------------------------------


def train_model(
    store: ArtifactStore,
    downloaded: Artifact,
    config: TrainConfig,
    view: Artifact | None = None,
    log: Callable[[str], object] = print,
) -> Artifact:
    """open_clip trained on a download (or on a view of it: a smaller t's subset); the last
    checkpoint and the trainer's logs are the artifact."""
    check_device(config)
    source = view or downloaded

    def build(workdir: Path) -> dict[str, Any]:
        index = pq.read_table(source.path("index.parquet"))
        shards_dir = Path(downloaded.path("shards"))
        if view is None:
            shards = sorted(str(p) for p in shards_dir.glob("*.tar"))
        else:
            shards = [str(p) for p in materialize_view(shards_dir, index, workdir / "view")]
        if not shards or not index.num_rows:
            raise CurationError(f"{source.stage} {source.version} holds no downloaded sample to train on")
        checkpoint = run_training(config, shards, index.num_rows, workdir / "logs", "train", log)
        checkpoint.rename(workdir / "checkpoint.pt")
        shutil.rmtree(workdir / "logs" / "train" / "checkpoints", ignore_errors=True)
        shutil.rmtree(workdir / "view", ignore_errors=True)
        return {"samples": index.num_rows, "model": config.model, "epochs": config.epochs, "device": config.device}

    return store.publish(CHECKPOINT, {"config": asdict(config)}, [a for a in (downloaded, view) if a], build)


def evaluate_model(store: ArtifactStore, checkpoint: Artifact, coco_dir: Path) -> Artifact:
    """Zero-shot accuracy on COCO's 80 categories and image-text retrieval on the COCO val images."""
    data = load_coco(coco_dir)
    params = {"eval_set": "coco_val2017", "images": [p.name for p in data.images]}

    def build(workdir: Path) -> dict[str, Any]:
        metrics = evaluate_checkpoint(checkpoint.path("checkpoint.pt"), checkpoint.params["config"]["model"], data)
        write_json(workdir / "metrics.json", metrics)
        return metrics

    return store.publish(METRICS, params, [checkpoint], build)
