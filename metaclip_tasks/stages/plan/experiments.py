"""Decisions from a curated subset to scores: what to download (once for nested subsets, or a superset
for balancing in the loader), what to train and evaluate on, and the t ablation's steps."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from metaclip_tasks.core import params as P
from metaclip_tasks.core.artifacts import Artifact, ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.settings import eval_coco
from metaclip_tasks.core.snapshots import get_pool
from metaclip_tasks.core.stage import find, run
from metaclip_tasks.curation.counting import COUNTS, load_counts
from metaclip_tasks.stages import (
    ABLATION,
    BALANCE,
    DOWNLOAD,
    DOWNLOAD_VIEW,
    EVALUATE,
    POOL_COUNTS,
    TRAIN,
    BalanceParams,
    EvaluateParams,
    NoParams,
    PoolCountsParams,
)
from metaclip_tasks.stages.plan.pools import (
    Subset,
    balance,
    check_subset,
    counted_pool,
    existing_metadata,
    pool_matched,
    pool_t,
    t_warnings,
)
from metaclip_tasks.training.download import DownloadParams
from metaclip_tasks.training.online import download_cap
from metaclip_tasks.training.train import TrainChoice, TrainParams


def _check_one_list(t_values: Sequence[int], tail_ratios: Sequence[float]) -> None:
    """A t ablation compares t values or tail ratios: one non-empty list of the two."""
    if bool(t_values) == bool(tail_ratios):
        raise CurationError("give t_values or tail_ratios (one non-empty list), not both")


def ablation_ts(counts: Artifact, t_values: Sequence[int], tail_ratios: Sequence[float]) -> list[int]:
    """The distinct t of every requested value, sorted; both lists, or neither, is an error."""
    _check_one_list(t_values, tail_ratios)
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


def download_once(
    store: ArtifactStore, curated: Sequence[Artifact], options: DownloadParams | None = None, log: Any = print
) -> list[DownloadPlan]:
    """The largest subset downloaded once; each smaller one (same seed: nested) an index into it."""
    options = options or DownloadParams()
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

    download_budget: int | None = field(
        default=None,
        metadata={
            "help": "download the pool's matched pairs up to about this many (the subset of the largest t' >= t with "
            "sum min(count, t') within it; every pair when all fit) and balance for t in the loader each epoch; "
            "empty: the subset itself",
            "minimum": 1,
            "title": "Download budget (pairs)",
        },
    )


def subset_t(store: ArtifactStore, subset: Subset) -> int:
    """The t of a subset: as given, or chosen on the pool's counts for its target tail ratio."""
    subset = P.check(subset)
    return pool_t(counted_pool(store, subset.pool, subset.metadata_version), subset.t, subset.target_tail_ratio)


def download_subset(
    store: ArtifactStore,
    subset: Subset,
    options: DownloadParams,
    client: Any = None,
    log: Any = print,
    online: OnlineDownload | None = None,
) -> Artifact:
    """A curated subset's images (balanced first unless cached); with a download budget, those of the
    superset the loader balances from (the budget checked before anything is balanced or downloaded)."""
    subset = P.check(subset)
    budget = P.check(online or OnlineDownload()).download_budget
    counts = counted_pool(store, subset.pool, subset.metadata_version)
    t = pool_t(counts, subset.t, subset.target_tail_ratio)
    cap = download_cap(load_counts(counts.stored(COUNTS)), t, budget)
    return run(store, DOWNLOAD, options, {"curated": balance(store, counts, cap, subset.seed, client)}, log=log)


def train_subset(
    store: ArtifactStore,
    subset: Subset,
    choice: TrainChoice,
    downloaded: Artifact,
    *,
    online: bool = False,
    log: Any = print,
) -> Artifact:
    """A model trained on a subset's download; ``online`` (a download budget was given): the loader
    balances the download for the subset's t each epoch (paper A.2)."""
    config = replace(choice.config(), balance_t=subset_t(store, subset) if online else None)
    return run(store, TRAIN, config, {"downloaded": downloaded}, log=log)


def evaluate(store: ArtifactStore, checkpoint: Artifact, eval_set: str | None = None) -> Artifact:
    """A checkpoint's zero-shot and retrieval scores on a COCO-style set (default: ``settings.eval_coco``)."""
    return run(store, EVALUATE, EvaluateParams(str(eval_set or eval_coco())), {"checkpoint": checkpoint})


def train_and_evaluate(
    store: ArtifactStore,
    plan_or_download: DownloadPlan | Artifact,
    config: TrainParams,
    eval_set: str | None = None,
    log: Any = print,
    online: bool = False,
) -> tuple[Artifact, Artifact]:
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


def ablation_table(
    store: ArtifactStore,
    counts: Artifact,
    curated: Sequence[Artifact],
    plans: Sequence[DownloadPlan] = (),
    metrics: Sequence[Artifact] = (),
) -> Artifact:
    """The comparison of a t ablation (the paper's Table 6): sizes, downloads, metrics, nesting, a plot."""
    downloaded = sorted({p.downloaded.version: p.downloaded for p in plans}.values(), key=lambda a: a.version)
    views = [p.view for p in sorted(plans, key=lambda p: p.t) if p.view is not None]
    inputs: dict[str, Artifact | Sequence[Artifact] | None] = {
        "pool_counts": counts,
        "curated": sorted(curated, key=lambda a: a.params["t"]),
        "downloaded": downloaded,
        "views": views,
        "metrics": list(metrics),
    }
    return run(store, ABLATION, NoParams(), inputs)


def subset_download(store: ArtifactStore, subset: Subset, online: OnlineDownload | None = None) -> Artifact:
    """The newest download of a curated subset (with a download budget: of the superset the loader
    balances from), found and never made: a missing one is an error that says how to make it."""
    subset = P.check(subset)
    budget = P.check(online or OnlineDownload()).download_budget
    pool = check_subset(store, subset)
    meta = existing_metadata(store, subset.metadata_version)
    matched = pool_matched(store, pool, meta)
    counts = find(
        store, POOL_COUNTS, PoolCountsParams(pool.name, pool.target_tail_ratio), {"matched": matched, "metadata": meta}
    )
    curated = None
    if counts is not None:
        cap = download_cap(
            load_counts(counts.stored(COUNTS)), pool_t(counts, subset.t, subset.target_tail_ratio), budget
        )
        curated = find(store, BALANCE, BalanceParams(cap, subset.seed), {"pool_counts": counts, "matched": matched})
    made_from = {("curated", curated.version)} if curated else set()
    found = [
        a for a in store.list("downloaded") if {(i["stage"], i["version"]) for i in a.manifest["inputs"]} & made_from
    ]
    if not found:
        asked = (
            f"t={subset.t}"
            if subset.t is not None
            else f"target tail ratio {subset.target_tail_ratio or pool.target_tail_ratio}"
        )
        within = f", download budget {budget:,}" if budget is not None else ""
        raise CurationError(
            f"no download of pool {pool.name}'s subset ({asked}, seed {subset.seed}{within}) under {store.root}: "
            "download it first (metaclip download, or the metaclip_train DAG)"
        )
    return found[-1]


def checkpoint(store: ArtifactStore, version: str | None = None) -> Artifact:
    """The checkpoint ``version``, or the newest one; none is an error that says how to make one."""
    if version:
        return store.require("checkpoint", version)
    found = store.list("checkpoint")
    if not found:
        raise CurationError(
            f"no checkpoint under {store.root}: train one first (metaclip train, or the metaclip_train DAG)"
        )
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


@dataclass(frozen=True)
class TAblation:
    """A t ablation of a pool (the paper's Table 6): a balanced subset per t, the largest downloaded once
    (the others views of it), a model trained and evaluated per t, and the comparison."""

    pool: str = P.field_like(Subset, "pool")
    t_values: tuple[int, ...] = field(
        default=(), metadata={"help": "the t values to compare (or tail ratios)", "title": "t values", "minimum": 1}
    )
    tail_ratios: tuple[float, ...] = field(
        default=(),
        metadata={
            "help": "target tail ratios whose t values to compare (or t values)",
            "title": "Target tail ratios",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1,
        },
    )
    seed: int = P.field_like(Subset, "seed")
    metadata_version: str | None = P.field_like(Subset, "metadata_version")
    download: bool = field(
        default=False,
        metadata={"help": "download the largest subset once (img2dataset); each smaller one is a view of it"},
    )
    train: bool = field(
        default=False,
        metadata={
            "help": "train and evaluate a model per t on its images (needs download)",
            "title": "Train and evaluate",
        },
    )
    online_balancing: bool = field(
        default=False,
        metadata={
            "help": "train each t on the whole download, re-balanced for t in the loader each epoch (paper A.2)",
            "title": "Balance in the loader",
        },
    )


def check_t_ablation(
    store: ArtifactStore, ablation: TAblation, choice: TrainChoice | None = None, eval_set: str | None = None
) -> TAblation:
    """A t ablation refused before any work when bad: its values, t values or tail ratios (one list),
    its steps, the pool and its matches, and when it trains the device and the eval set."""
    from metaclip_tasks.training.train import check_device

    ablation = P.check(ablation)
    _check_one_list(ablation.t_values, ablation.tail_ratios)
    if ablation.train and not ablation.download:
        raise CurationError("train needs download: the models train on the downloaded images")
    pool_matched(store, get_pool(ablation.pool), existing_metadata(store, ablation.metadata_version))
    if ablation.train:
        check_device(P.check(choice or TrainChoice()).config())
        check_eval_set(eval_set)
    return ablation


def run_t_ablation(
    store: ArtifactStore,
    ablation: TAblation,
    choice: TrainChoice | None = None,
    options: DownloadParams | None = None,
    eval_set: str | None = None,
    client: Any = None,
    log: Callable[[str], object] = print,
    warn: Callable[[Sequence[str]], object] = lambda warnings: None,
) -> Artifact:
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
    metrics = (
        [train_and_evaluate(store, p, config, eval_set, log, ablation.online_balancing)[1] for p in plans]
        if ablation.train
        else []
    )
    return ablation_table(store, counts, curated, plans, metrics)
