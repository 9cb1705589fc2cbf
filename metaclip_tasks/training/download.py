"""Downloading a curated subset's images with img2dataset into webdataset shards.

img2dataset runs as a subprocess (its multiprocessing uses spawn, which hangs when started
inside an Airflow task); its progress lines are passed to a callback (the task log).  Each
sample gets ``jpg``, ``txt`` (the alt-text) and ``json`` (uid, url, matched entry ids).
Failures (HTTP errors, timeouts, undecodable images) are counted per reason, never fatal.

For a t ablation only the largest subset is downloaded: for one seed the subsets for smaller
t are contained in it, so each is an index of uids over the same shards (:func:`subset_index`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.shards import MATCHED_SCHEMA, ShardReader


@dataclass(frozen=True)
class DownloadParams:
    """img2dataset's knobs, with defaults for CLIP training images."""

    image_size: int = field(default=256, metadata={"help": "pixels (square)", "minimum": 16})
    resize_mode: str = field(
        default="center_crop",
        metadata={"help": "img2dataset's resize mode", "enum": ["no", "keep_ratio", "center_crop", "border"]},
    )
    processes: int = field(default=1, metadata={"help": "img2dataset processes", "minimum": 1})
    threads: int = field(default=16, metadata={"help": "download threads per process", "minimum": 1})
    timeout: float = field(default=10.0, metadata={"help": "seconds per image", "exclusiveMinimum": 0})
    retries: int = field(default=2, metadata={"help": "retries per image", "minimum": 0})
    samples_per_shard: int = field(default=10_000, metadata={"help": "images per webdataset shard", "minimum": 1})
    encode_quality: int = field(default=95, metadata={"help": "JPEG quality", "minimum": 1, "maximum": 100})


def write_url_list(curated: Sequence[str], path: Path) -> int:
    """All curated pairs (shards at any fsspec URI) as one local parquet of (url, text, uid,
    matched_entry_ids as JSON), sorted by uid: img2dataset's input."""
    tables = []
    for uri in curated:
        with ShardReader(uri, MATCHED_SCHEMA.names) as reader:
            tables.append(reader.file.read(columns=MATCHED_SCHEMA.names))
    if not tables:
        raise CurationError("no curated shards to download")
    table = pa.concat_tables(tables).sort_by("uid")
    ids = [json.dumps(x) for x in table.column("matched_entry_ids").to_pylist()]
    out = pa.table(
        {"url": table["url"], "text": table["text"], "uid": table["uid"], "matched_entry_ids": pa.array(ids)}
    )
    pq.write_table(out, path)
    return out.num_rows


def run_img2dataset(
    url_list: Path, output_dir: Path, options: DownloadParams, log: Callable[[str], object] = print
) -> None:
    """img2dataset over ``url_list`` into webdataset shards in ``output_dir``, as a subprocess."""
    command = [
        str(Path(sys.executable).parent / "img2dataset"),
        f"--url_list={url_list}",
        "--input_format=parquet",
        "--url_col=url",
        "--caption_col=text",
        '--save_additional_columns=["uid","matched_entry_ids"]',
        "--output_format=webdataset",
        f"--output_folder={output_dir}",
        f"--processes_count={options.processes}",
        f"--thread_count={options.threads}",
        f"--image_size={options.image_size}",
        f"--resize_mode={options.resize_mode}",
        f"--timeout={options.timeout}",
        f"--retries={options.retries}",
        f"--number_sample_per_shard={options.samples_per_shard}",
        f"--encode_quality={options.encode_quality}",
        "--enable_wandb=False",
        "--distributor=multiprocessing",
    ]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}  # no network at start-up
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as process:
        for line in process.stdout or ():
            log(line.rstrip())
    if process.returncode:
        raise RuntimeError(f"img2dataset exited with status {process.returncode}")


def download_stats(output_dir: Path) -> dict[str, object]:
    """img2dataset's per-shard stats summed: attempts, successes and failures by reason."""
    totals: Counter = Counter()
    reasons: Counter = Counter()
    for path in sorted(Path(output_dir).glob("*_stats.json")):
        stats = json.loads(path.read_text())
        for key in ("count", "successes", "failed_to_download", "failed_to_resize"):
            totals[key] += stats.get(key, 0)
        reasons.update(stats.get("status_dict", {}))
    reasons.pop("success", None)
    return {**totals, "failures_by_reason": dict(sorted(reasons.items()))}


def downloaded_uids(output_dir: Path) -> pa.Table:
    """(uid, key, shard) of every image that downloaded, from img2dataset's per-shard parquet."""
    parts = []
    for path in sorted(Path(output_dir).glob("*.parquet")):
        table = pq.read_table(path, columns=["uid", "key", "status"])
        table = table.filter(pc.equal(table["status"], "success")).drop(["status"])
        parts.append(table.append_column("shard", pa.array([path.stem + ".tar"] * table.num_rows)))
    if not parts:
        return pa.table(
            {"uid": pa.array([], pa.string()), "key": pa.array([], pa.string()), "shard": pa.array([], pa.string())}
        )
    return pa.concat_tables(parts).sort_by("uid")


def subset_index(downloaded: pa.Table, curated: Sequence[str]) -> pa.Table:
    """The downloaded samples of a (smaller) curated subset: a filtered view, no new download."""
    uids = []
    for uri in curated:
        with ShardReader(uri, ["uid"]) as reader:
            uids.append(reader.file.read(columns=["uid"])["uid"].combine_chunks())
    uids = pa.concat_arrays(uids) if uids else pa.array([], pa.string())
    return downloaded.filter(pc.is_in(downloaded["uid"], value_set=uids))


def materialize_view(shards_dir: Path, index: pa.Table, output_dir: Path) -> list[Path]:
    """Webdataset shards holding only the samples of ``index`` (uid, key, shard): a subset to train on."""
    import tarfile

    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    wanted: dict[str, set[str]] = {}
    for key, shard in zip(index["key"].to_pylist(), index["shard"].to_pylist(), strict=True):
        wanted.setdefault(shard, set()).add(key)
    for shard, keys in sorted(wanted.items()):
        target = output_dir / shard
        with tarfile.open(Path(shards_dir) / shard) as source, tarfile.open(target, "w") as out:
            for member in source:
                if member.isfile() and member.name.split(".", 1)[0] in keys:
                    out.addfile(member, source.extractfile(member))
        written.append(target)
    return written
