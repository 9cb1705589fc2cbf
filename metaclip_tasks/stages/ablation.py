"""The t ablation's comparison (the paper's Table 6): each t's subset, download, model and scores."""

from __future__ import annotations

import itertools
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from metaclip_tasks.core import files
from metaclip_tasks.core.artifacts import Artifact
from metaclip_tasks.core.params import NoParams
from metaclip_tasks.core.shards import ShardReader
from metaclip_tasks.core.stage import Build, Input, Stage
from metaclip_tasks.curation.report import plot_ablation


def _t_of(artifact: Artifact) -> int:
    """The t of the curated subset a download, view, checkpoint or metrics artifact was made from (for a
    checkpoint balanced in its loader, the t it balanced for)."""
    while artifact.stage != "curated":
        if artifact.stage == "checkpoint" and artifact.params.get("balance_t"):
            return int(artifact.params["balance_t"])
        artifact = next(
            a for stage in ("curated", "download_view", "downloaded", "checkpoint") for a in artifact.inputs(stage)
        )
    return int(artifact.params["t"])


def build_ablation(build: Build) -> dict[str, Any]:
    counts_artifact = build["pool_counts"]
    curated = sorted(build["curated"], key=lambda a: a.params["t"])
    downloads = {
        _t_of(a): (a.stats.get("successes") if a.stage == "downloaded" else a.stats["samples"])
        for a in [*build["downloaded"], *build["views"]]
    }
    metrics = {_t_of(m): m.stats for m in build["metrics"]}
    nested = all(
        _nested(small, large)
        for small, large in itertools.pairwise(curated)
        if small.params["seed"] == large.params["seed"]
    )
    rows = []
    for artifact in curated:
        s, t = artifact.stats, artifact.params["t"]
        rows.append(
            {
                "t": t,
                "seed": s["seed"],
                "tail_ratio": s["tail_ratio"],
                "curated": s["kept"],
                "expected": s["expected_kept"],
                "downloaded": downloads.get(t),
                "zero_shot_top1": metrics.get(t, {}).get("zero_shot", {}).get("top1"),
                "text_to_image_R@5": metrics.get(t, {}).get("text_to_image", {}).get("R@5"),
                "version": artifact.version,
            }
        )
    build.output.write_json("comparison.json", rows)
    lines = [
        "| t | tail ratio | curated pairs | expected | downloaded | zero-shot top-1 | text->image R@5 | version |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines += [
        f"| {r['t']:,} | {r['tail_ratio']:.4f} | {r['curated']:,} | {r['expected']:,.1f} | "
        f"{_cell(r['downloaded'], ',')} | {_cell(r['zero_shot_top1'], '.3f')} | "
        f"{_cell(r['text_to_image_R@5'], '.3f')} | {r['version']} |"
        for r in rows
    ]
    build.output.write_text("comparison.md", "\n".join(lines) + "\n")
    with build.output.writer("comparison.png") as f:
        plot_ablation(rows, f, f"{counts_artifact.params['pool']}: t ablation")
    return {"pool": counts_artifact.params["pool"], "rows": rows, "nested": nested}


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _nested(smaller: Artifact, larger: Artifact) -> bool:
    """Whether every pair kept by ``smaller`` is kept by ``larger``, compared shard by shard."""
    for small_uri, large_uri in zip(smaller.data_files(), larger.data_files(), strict=True):
        small, large = (_uids(uri) for uri in (small_uri, large_uri))
        if len(small) and not pc.all(pc.is_in(small, value_set=large)).as_py():
            return False
    return True


def _uids(shard: files.Stored) -> pa.Array:
    with ShardReader(shard, ["uid"]) as reader:
        return reader.file.read(columns=["uid"])["uid"].combine_chunks()


ABLATION = Stage(
    "t_ablation",
    1,
    NoParams,
    build_ablation,
    {
        "pool_counts": Input("pool_counts"),
        "curated": Input("curated", many=True),
        "downloaded": Input("downloaded", many=True, optional=True),
        "views": Input("download_view", many=True, optional=True),
        "metrics": Input("metrics", many=True, optional=True),
    },
)
