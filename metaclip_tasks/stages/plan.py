"""What to run, decided once for the command line, the demo and the DAGs (no Airflow here).

Which pairs a snapshot's match takes, which matched snapshots make a pool, how t is chosen for a
pool, what a curated subset is, and the t ablation's download-once policy: each is a function
of the artifact store, so the same decision holds wherever the pipeline is driven from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import date
from dataclasses import dataclass, field, replace
from typing import Any

from metaclip_tasks.core import params as P
from metaclip_tasks.core.artifacts import Artifact, ArtifactStore
from metaclip_tasks.curation.balancing import resolve_t, tail_ratio_warning
from metaclip_tasks.curation.counting import COUNTS, load_counts
from metaclip_tasks.training.download import DownloadOptions
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.metadata.build import MetadataParams
from metaclip_tasks.training.online import download_cap
from metaclip_tasks.stages import (
    ABLATION,
    BALANCE,
    DOWNLOAD,
    DOWNLOAD_VIEW,
    EVALUATE,
    INGEST,
    MATCH,
    METADATA_BUILD,
    PAIRS_IMPORT,
    POOL_COUNTS,
    TRAIN,
    BalanceParams,
    EvaluateParams,
    Ingest,
    MatchParams,
    NoParams,
    PairsImport,
    PoolCountsParams,
    ingest_inputs,
)
from metaclip_tasks.core.settings import eval_coco
from metaclip_tasks.core.snapshots import Pool, check_snapshot, get_pool, snapshot_for_date
from metaclip_tasks.core.stage import find, run
from metaclip_tasks.training.train import TrainChoice, TrainConfig

WORDNET_ONLY = MetadataParams(sources=("wordnet",))  # MetaCLIP's WordNet entries: the default metadata


def metadata(store: ArtifactStore, version: str | None = None) -> Artifact:
    """The metadata artifact ``version``; None (or empty): MetaCLIP's WordNet metadata (built once, then a cache hit)."""
    return store.require("metadata", version) if version else run(store, METADATA_BUILD, WORDNET_ONLY)


def existing_metadata(store: ArtifactStore, version: str | None = None) -> Artifact | None:
    """The metadata artifact ``version`` (None or empty: the WordNet metadata) if it exists; never builds it."""
    return store.require("metadata", version) if version else find(store, METADATA_BUILD, WORDNET_ONLY)


KEY_STATS = {
    "metadata": ("entries", "by_source"),
    "pairs": ("snapshot", "pairs", "shards"),
    "matched": ("snapshot", "pairs_in", "pairs_matched", "matches"),
    "pool_counts": ("t", "tail_ratio", "head_entries", "entries", "matches", "warnings"),
    "curated": ("pool", "t", "seed", "tail_ratio", "kept", "expected_kept", "pairs_in"),
    "downloaded": ("count", "successes"),
    "download_view": ("t", "samples"),
    "checkpoint": ("model", "samples", "epochs", "device"),
    "t_ablation": ("pool", "nested"),
}  # fmt: skip
KEY_PARAMS = ("pool", "target_tail_ratio", "snapshot")


def key_stats(artifact: Artifact) -> dict[str, Any]:
    """An artifact's figures worth a glance (what its asset event carries): a few stats and params by stage."""
    stats, params = artifact.stats, artifact.params
    found = {k: params[k] for k in KEY_PARAMS if k in params}
    found.update({k: stats[k] for k in KEY_STATS.get(artifact.stage, ()) if k in stats})
    if artifact.stage == "metrics":
        found["zero_shot_top1"] = stats.get("zero_shot", {}).get("top1")
    if artifact.stage == "t_ablation":
        found["ts"] = [row["t"] for row in stats.get("rows", [])]
    return found


def latest_pairs(store: ArtifactStore, snapshot: str) -> Artifact:
    """The newest pairs artifact of ``snapshot``; none is an error that says how to make one."""
    check_snapshot(snapshot)  # a bad id is named even in an empty store
    found = [a for a in store.list("pairs") if a.params.get("snapshot") == snapshot]
    if not found:
        raise CurationError(f"no pairs of {snapshot} under {store.root}: import them first (metaclip pairs {snapshot} FILES...)")
    return found[-1]


def match(store: ArtifactStore, pairs: Artifact, meta: Artifact, client: Any = None, backend: str = "tokens") -> Artifact:
    """A snapshot's pairs matched against ``meta`` (a cache hit when done before)."""
    return run(store, MATCH, MatchParams(backend), {"pairs": pairs, "metadata": meta}, client=client)


def match_snapshot(store: ArtifactStore, snapshot: str, meta: Artifact, client: Any = None, backend: str = "tokens") -> Artifact:
    """The snapshot's newest pairs matched against ``meta``."""
    return match(store, latest_pairs(store, snapshot), meta, client, backend)


def run_snapshot(snapshot: str | None, logical_date: date | None) -> str:
    """A scheduled run's snapshot: the one asked for, else the crawl of the run's logical date."""
    if snapshot:
        return check_snapshot(snapshot)
    if logical_date is not None:
        return snapshot_for_date(logical_date)
    raise CurationError("a manual run needs the snapshot parameter")


def snapshot_pairs(store: ArtifactStore, snapshot: str, *, raw_source: str | None = None, pairs_source: str | None = None,
                   ingest: Mapping[str, Any] | None = None, pairs_import: Mapping[str, Any] | None = None,
                   cluster: Callable[[int], AbstractContextManager[Any]] = lambda work: nullcontext()) -> Artifact:
    """The pairs a snapshot's match takes: ingested from its raw files when ``raw_source`` is given
    (``commoncrawl``: the crawl's own files; else files, a directory or glob with ``{snapshot}``
    replaced), else imported from ``pairs_source`` parquet files, else its newest pairs artifact.
    ``ingest`` and ``pairs_import`` hold further params of those stages; ``cluster(work)`` gives the
    Dask client for ``work`` files."""
    if raw_source:
        source = snapshot if raw_source == "commoncrawl" else raw_source.replace("{snapshot}", snapshot)
        params = P.from_mapping(Ingest, {**(ingest or {}), "snapshot": snapshot, "sources": [source]})
        with cluster(len(ingest_inputs(params))) as client:
            return run(store, INGEST, params, client=client)
    if pairs_source:
        source = pairs_source.replace("{snapshot}", snapshot)
        return run(store, PAIRS_IMPORT, P.from_mapping(PairsImport, {**(pairs_import or {}), "snapshot": snapshot,
                                                                     "sources": [source]}))
    return latest_pairs(store, snapshot)


def pool_matched(store: ArtifactStore, pool: Pool, meta: Artifact | None, *, required: bool = True) -> list[Artifact] | None:
    """The newest matched artifact of each of the pool's snapshots made from ``meta``, in pool order;
    None (or an error, if required) while some snapshot is not matched yet (all of them without ``meta``)."""
    found: dict[str, Artifact] = {}
    for artifact in store.list("matched") if meta else []:  # oldest first: the newest wins
        made_from = {(i["stage"], i["version"]) for i in artifact.manifest["inputs"]}
        if artifact.stats.get("snapshot") in pool.snapshots and ("metadata", meta.version) in made_from:
            found[artifact.stats["snapshot"]] = artifact
    missing = [s for s in pool.snapshots if s not in found]
    if missing and required:
        raise CurationError(f"pool {pool.name}: {len(missing)} snapshots are not matched yet: {', '.join(missing[:5])}")
    return None if missing else [found[s] for s in pool.snapshots]


def count_pool(store: ArtifactStore, pool: Pool, meta: Artifact, matched: Sequence[Artifact] | None = None) -> Artifact:
    """The pool's summed counts and its t for the pool's target tail ratio."""
    matched = matched if matched is not None else pool_matched(store, pool, meta)
    return run(store, POOL_COUNTS, PoolCountsParams(pool.name, pool.target_tail_ratio), {"matched": matched, "metadata": meta})


@dataclass(frozen=True)
class Subset:
    """A curated subset: a pool balanced for t (given, or chosen for a target tail ratio) and a seed."""

    pool: str = field(default="pool1", metadata={"help": "the named set of snapshots (metaclip_tasks/core/pools.toml or $METACLIP_POOLS)"})
    t: int | None = field(default=None, metadata={"help": "the cap per entry; empty: chosen by the target tail ratio", "minimum": 1})
    target_tail_ratio: float | None = field(default=None, metadata={
        "help": "share of matches in tail entries (count < t); empty: the pool's (0.06)", "exclusiveMinimum": 0,
        "exclusiveMaximum": 1, "title": "Target tail ratio"})  # fmt: skip
    seed: int = field(default=0, metadata={"help": "sampling seed (one seed: nested subsets)", "minimum": 0})
    metadata_version: str | None = field(default=None, metadata={
        "help": "a metadata artifact version; empty: MetaCLIP's WordNet metadata"})  # fmt: skip


def check_t_choice(t: int | None, ratio: float | None) -> None:
    if t is not None and ratio is not None:
        raise CurationError(f"give t ({t}) or target_tail_ratio ({ratio}), not both")


def check_subset(store: ArtifactStore, subset: Subset) -> Pool:
    """A subset's params refused before any work when bad: types, t and ratio, the pool, its matches."""
    subset = P.check(subset)
    check_t_choice(subset.t, subset.target_tail_ratio)
    pool = get_pool(subset.pool)
    pool_matched(store, pool, existing_metadata(store, subset.metadata_version))
    return pool


def pool_t(counts: Artifact, t: int | None, target_tail_ratio: float | None) -> int:
    """t as given, or the t of the pool's counts closest to the target tail ratio (the pool's by default)."""
    check_t_choice(t, target_tail_ratio)
    if t is None and target_tail_ratio in (None, counts.params["target_tail_ratio"]):
        return int(counts.stats["t"])  # chosen when the pool was counted
    return resolve_t(load_counts(counts.stored(COUNTS)), t, target_tail_ratio)


def t_warnings(counts: Artifact, t: int | None, target_tail_ratio: float | None) -> list[str]:
    """Why the t chosen for a target tail ratio (the pool's by default) may not be what was asked: the
    target is not reachable on the pool's counts; none for a t given as such (nothing was aimed at)."""
    check_t_choice(t, target_tail_ratio)
    if t is not None:
        return []
    if target_tail_ratio in (None, counts.params["target_tail_ratio"]) and "warnings" in counts.stats:
        return list(counts.stats["warnings"])  # found when the pool was counted
    target = counts.params["target_tail_ratio"] if target_tail_ratio is None else target_tail_ratio
    warning = tail_ratio_warning(load_counts(counts.stored(COUNTS)), target, pool_t(counts, None, target_tail_ratio))
    return [warning] if warning else []


def counted_pool(store: ArtifactStore, pool_name: str, metadata_version: str | None = None) -> Artifact:
    """A pool's counts artifact (a cache hit once counted)."""
    pool = get_pool(pool_name)
    meta = existing_metadata(store, metadata_version)
    matched = pool_matched(store, pool, meta)
    return count_pool(store, pool, meta, matched)


def balance(store: ArtifactStore, counts: Artifact, t: int, seed: int, client: Any = None) -> Artifact:
    """The curated subset of a counted pool for one t and seed."""
    return run(store, BALANCE, BalanceParams(t, seed), {"pool_counts": counts, "matched": counts.inputs("matched")}, client=client)


def curated_subset(store: ArtifactStore, subset: Subset, client: Any = None) -> Artifact:
    """The pool's balanced subset for the subset's t (or ratio) and seed: balanced unless cached."""
    subset = P.check(subset)
    counts = counted_pool(store, subset.pool, subset.metadata_version)
    return balance(store, counts, pool_t(counts, subset.t, subset.target_tail_ratio), subset.seed, client)


def check_ablation_steps(*, download: bool, train: bool) -> None:
    """A t ablation trains only on what it downloaded."""
    if train and not download:
        raise CurationError("train needs download: the models train on the downloaded images")


def ablation_ts(counts: Artifact, t_values: Sequence[int], tail_ratios: Sequence[float]) -> list[int]:
    """The distinct t of every requested value, sorted; both lists, or neither, is an error."""
    if bool(t_values) == bool(tail_ratios):
        raise CurationError("give t_values or tail_ratios (one non-empty list), not both")
    return sorted({pool_t(counts, t, None) for t in t_values} | {pool_t(counts, None, r) for r in tail_ratios})


@dataclass(frozen=True)
class DownloadPlan:
    """Where each t's images are: the one download, and for a smaller t a view of it."""

    t: int
    downloaded: Artifact
    view: Artifact | None

    @property
    def samples(self) -> int:
        return int(self.view.stats["samples"] if self.view else self.downloaded.stats["successes"])


def download_once(store: ArtifactStore, curated: Sequence[Artifact], options: DownloadOptions | None = None,
                  log: Any = print) -> list[DownloadPlan]:  # fmt: skip
    """The largest subset downloaded once; each smaller one (same seed: nested) an index into it."""
    options = options or DownloadOptions()
    ordered = sorted(curated, key=lambda a: a.params["t"])
    if len({a.params["seed"] for a in ordered}) != 1:
        raise CurationError("download once needs subsets of one seed (only they are nested)")
    downloaded = run(store, DOWNLOAD, options, {"curated": ordered[-1]}, log=log)
    plans = [DownloadPlan(ordered[-1].params["t"], downloaded, None)]
    for artifact in ordered[:-1]:
        view = run(store, DOWNLOAD_VIEW, NoParams(), {"downloaded": downloaded, "curated": artifact})
        plans.append(DownloadPlan(artifact.params["t"], downloaded, view))
    return plans


@dataclass(frozen=True)
class OnlineDownload:
    """What to download for balancing in the training loader (paper A.2): a superset of the subset."""

    download_budget: int | None = field(default=None, metadata={
        "help": "download the pool's matched pairs up to about this many (the subset of the largest t' >= t with "
                "sum min(count, t') within it; every pair when all fit) and balance for t in the loader each epoch; "
                "empty: the subset itself", "minimum": 1, "title": "Download budget (pairs)"})  # fmt: skip


def subset_t(store: ArtifactStore, subset: Subset) -> int:
    """The t of a subset: as given, or chosen on the pool's counts for its target tail ratio."""
    subset = P.check(subset)
    return pool_t(counted_pool(store, subset.pool, subset.metadata_version), subset.t, subset.target_tail_ratio)


def download_subset(store: ArtifactStore, subset: Subset, options: DownloadOptions, client: Any = None, log: Any = print,
                    online: OnlineDownload | None = None) -> Artifact:  # fmt: skip
    """A curated subset's images (balanced first unless cached); with a download budget, those of the
    superset the loader balances from (the budget checked before anything is balanced or downloaded)."""
    subset = P.check(subset)
    budget = P.check(online or OnlineDownload()).download_budget
    counts = counted_pool(store, subset.pool, subset.metadata_version)
    t = pool_t(counts, subset.t, subset.target_tail_ratio)
    cap = download_cap(load_counts(counts.stored(COUNTS)), t, budget)
    return run(store, DOWNLOAD, options, {"curated": balance(store, counts, cap, subset.seed, client)}, log=log)


def train_subset(store: ArtifactStore, subset: Subset, choice: TrainChoice, downloaded: Artifact, *, online: bool = False,
                 log: Any = print) -> Artifact:
    """A model trained on a subset's download; ``online`` (a download budget was given): the loader
    balances the download for the subset's t each epoch (paper A.2)."""
    config = replace(choice.config(), balance_t=subset_t(store, subset) if online else None)
    return run(store, TRAIN, config, {"downloaded": downloaded}, log=log)


def evaluate(store: ArtifactStore, checkpoint: Artifact, eval_set: str | None = None) -> Artifact:
    """A checkpoint's zero-shot and retrieval scores on a COCO-style set (default: ``settings.eval_coco``)."""
    return run(store, EVALUATE, EvaluateParams(str(eval_set or eval_coco())), {"checkpoint": checkpoint})


def train_and_evaluate(store: ArtifactStore, plan_or_download: DownloadPlan | Artifact, config: TrainConfig,
                       eval_set: str | None = None, log: Any = print, online: bool = False) -> tuple[Artifact, Artifact]:
    """A model trained on a download (or a view of it), then evaluated: (checkpoint, metrics). ``online``:
    a plan's t is balanced in the loader over the whole download, not trained on as its fixed view."""
    if isinstance(plan_or_download, DownloadPlan) and online:
        inputs = {"downloaded": plan_or_download.downloaded, "view": None}
        config = replace(config, balance_t=plan_or_download.t)
    elif isinstance(plan_or_download, DownloadPlan):
        inputs = {"downloaded": plan_or_download.downloaded, "view": plan_or_download.view}
    else:
        inputs = {"downloaded": plan_or_download, "view": None}
    checkpoint = run(store, TRAIN, config, inputs, log=log)
    return checkpoint, evaluate(store, checkpoint, eval_set)


def ablation_table(store: ArtifactStore, counts: Artifact, curated: Sequence[Artifact], plans: Sequence[DownloadPlan] = (),
                   metrics: Sequence[Artifact] = ()) -> Artifact:  # fmt: skip
    """The comparison of a t ablation (the paper's Table 6): sizes, downloads, metrics, nesting, a plot."""
    downloaded = sorted({p.downloaded.version: p.downloaded for p in plans}.values(), key=lambda a: a.version)
    views = [p.view for p in sorted(plans, key=lambda p: p.t) if p.view is not None]
    inputs = {"pool_counts": counts, "curated": sorted(curated, key=lambda a: a.params["t"]), "downloaded": downloaded,
              "views": views, "metrics": list(metrics)}  # fmt: skip
    return run(store, ABLATION, NoParams(), inputs)


def subset_download(store: ArtifactStore, subset: Subset, online: OnlineDownload | None = None) -> Artifact:
    """The newest download of a curated subset (with a download budget: of the superset the loader
    balances from), found and never made: a missing one is an error that says how to make it."""
    subset = P.check(subset)
    budget = P.check(online or OnlineDownload()).download_budget
    pool = check_subset(store, subset)
    meta = existing_metadata(store, subset.metadata_version)
    matched = pool_matched(store, pool, meta)
    counts = find(store, POOL_COUNTS, PoolCountsParams(pool.name, pool.target_tail_ratio), {"matched": matched, "metadata": meta})
    curated = None
    if counts is not None:
        cap = download_cap(load_counts(counts.stored(COUNTS)), pool_t(counts, subset.t, subset.target_tail_ratio), budget)
        curated = find(store, BALANCE, BalanceParams(cap, subset.seed), {"pool_counts": counts, "matched": matched})
    made_from = {("curated", curated.version)} if curated else set()
    found = [a for a in store.list("downloaded") if {(i["stage"], i["version"]) for i in a.manifest["inputs"]} & made_from]
    if not found:
        asked = f"t={subset.t}" if subset.t is not None else f"target tail ratio {subset.target_tail_ratio or pool.target_tail_ratio}"
        within = f", download budget {budget:,}" if budget is not None else ""
        raise CurationError(f"no download of pool {pool.name}'s subset ({asked}, seed {subset.seed}{within}) under {store.root}: "
                            "download it first (metaclip download, or the metaclip_train DAG)")  # fmt: skip
    return found[-1]


def checkpoint(store: ArtifactStore, version: str | None = None) -> Artifact:
    """The checkpoint ``version``, or the newest one; none is an error that says how to make one."""
    if version:
        return store.require("checkpoint", version)
    found = store.list("checkpoint")
    if not found:
        raise CurationError(f"no checkpoint under {store.root}: train one first (metaclip train, or the metaclip_train DAG)")
    return found[-1]


def check_eval_set(eval_set: str | None = None) -> str:
    """A COCO-style evaluation set (default: ``settings.eval_coco``) refused before any work unless its
    annotations read and name images present under val2017/; returns its path."""
    from metaclip_tasks.training.evaluate import load_coco

    path = str(eval_set or eval_coco())
    try:
        images = load_coco(path).images
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CurationError(f"eval set {path} is not a COCO-style folder (val2017/ images, annotations/): {e}") from e
    if not images:
        raise CurationError(f"eval set {path} has none of its annotated images under val2017/")
    return path


def _like(cls: type, name: str) -> Any:
    """A field with the default and description of the field ``name`` of the dataclass ``cls``."""
    f = cls.__dataclass_fields__[name]
    return field(default=f.default, metadata=f.metadata)


@dataclass(frozen=True)
class TAblation:
    """A t ablation of a pool (the paper's Table 6): a balanced subset per t, the largest downloaded once
    (the others views of it), a model trained and evaluated per t, and the comparison."""

    pool: str = _like(Subset, "pool")
    t_values: tuple[int, ...] = field(default=(), metadata={"help": "the t values to compare (or tail ratios)", "minimum": 1})
    tail_ratios: tuple[float, ...] = field(default=(), metadata={
        "help": "target tail ratios whose t values to compare (or t values)", "exclusiveMinimum": 0, "exclusiveMaximum": 1})
    seed: int = _like(Subset, "seed")
    metadata_version: str | None = _like(Subset, "metadata_version")
    download: bool = field(default=False, metadata={
        "help": "download the largest subset once (img2dataset); each smaller one is a view of it"})
    train: bool = field(default=False, metadata={"help": "train and evaluate a model per t on its images (needs download)"})
    online_balancing: bool = field(default=False, metadata={
        "help": "train each t on the whole download, re-balanced for t in the loader each epoch (paper A.2)"})  # fmt: skip


def check_t_ablation(store: ArtifactStore, ablation: TAblation, choice: TrainChoice | None = None,
                     eval_set: str | None = None) -> TAblation:  # fmt: skip
    """A t ablation refused before any work when bad: its values, t values or tail ratios (one list),
    its steps, the pool and its matches, and when it trains the device and the eval set."""
    from metaclip_tasks.training.train import check_device

    ablation = P.check(ablation)
    if bool(ablation.t_values) == bool(ablation.tail_ratios):
        raise CurationError("give t_values or tail_ratios (one non-empty list), not both")
    check_ablation_steps(download=ablation.download, train=ablation.train)
    pool_matched(store, get_pool(ablation.pool), existing_metadata(store, ablation.metadata_version))
    if ablation.train:
        check_device(P.check(choice or TrainChoice()).config())
        check_eval_set(eval_set)
    return ablation


def run_t_ablation(store: ArtifactStore, ablation: TAblation, choice: TrainChoice | None = None,
                   options: DownloadOptions | None = None, eval_set: str | None = None, client: Any = None,
                   log: Callable[[str], object] = print,
                   warn: Callable[[Sequence[str]], object] = lambda warnings: None) -> Artifact:  # fmt: skip
    """The whole t ablation in one process, the steps of the metaclip_t_ablation DAG in turn: each value's t
    on the pool's counts (``warn``: targets the pool cannot reach), a subset per t, the download once, a
    model per t, then the comparison artifact."""
    ablation = check_t_ablation(store, ablation, choice, eval_set)
    counts = counted_pool(store, ablation.pool, ablation.metadata_version)
    ts = ablation_ts(counts, ablation.t_values, ablation.tail_ratios)
    warn([w for ratio in ablation.tail_ratios for w in t_warnings(counts, None, ratio)])
    curated = [balance(store, counts, t, ablation.seed, client) for t in ts]
    plans = download_once(store, curated, options, log) if ablation.download else []
    config = (choice or TrainChoice()).config()
    metrics = [train_and_evaluate(store, p, config, eval_set, log, ablation.online_balancing)[1]
               for p in plans] if ablation.train else []  # fmt: skip
    return ablation_table(store, counts, curated, plans, metrics)
