"""The image-side commands, one per stage: download (a curated subset's images), train (open_clip on a
download), evaluate (a checkpoint on a COCO-style set) and t-ablation (the paper's Table 6)."""

from __future__ import annotations

import argparse
import dataclasses

from metaclip_tasks.cli.command import Command, dask_client, done, progress, warn
from metaclip_tasks.core import params as P
from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.stages import plan
from metaclip_tasks.stages.plan import OnlineDownload, Subset, TAblation
from metaclip_tasks.training.download import DownloadParams
from metaclip_tasks.training.train import TrainChoice

EVAL_SET_HELP = (
    "a COCO-style folder: val2017/ images and annotations/ (default: $METACLIP_EVAL_COCO, else the shared COCO sample)"
)


def _download(args: argparse.Namespace, store: ArtifactStore) -> None:
    """A curated subset's images (balanced first unless cached)."""
    subset = P.from_arguments(Subset, args)
    plan.check_subset(store, subset)
    options = P.from_arguments(DownloadParams, args)
    online = P.from_arguments(OnlineDownload, args)
    with dask_client(args) as client:
        a = plan.download_subset(store, subset, options, client, log=progress, online=online)
    done(a, f"{a.stats['successes']:,} of {a.stats['count']:,} images; failures {a.stats['failures_by_reason']}")


def _train(args: argparse.Namespace, store: ArtifactStore) -> None:
    """A model trained on a download: the one given, else the newest of the subset given."""
    from metaclip_tasks.training.train import check_device

    choice = P.from_arguments(TrainChoice, args)
    subset, online = P.from_arguments(Subset, args), P.from_arguments(OnlineDownload, args)
    if args.downloaded:
        chosen = sorted(({f.name for f in dataclasses.fields(Subset)} | {"download_budget"}) & set(vars(args)))
        if chosen:
            flags = ", ".join("--" + name.replace("_", "-") for name in chosen)
            raise CurationError(f"give --downloaded or the subset to train on ({flags}), not both")
        downloaded = store.require("downloaded", args.downloaded)
    else:
        downloaded = plan.subset_download(store, subset, online)
    check_device(choice.config())
    a = plan.train_subset(store, subset, choice, downloaded, online=online.download_budget is not None, log=progress)
    s = a.stats
    done(
        a,
        f"{s['model']} trained {s['epochs']} epochs on {s['samples']:,} samples on {s['device']} "
        f"(downloaded {downloaded.version})",
    )


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    """The download to train on, instead of the subset's newest."""
    parser.add_argument(
        "--downloaded",
        metavar="VERSION",
        help="a downloaded artifact to train on (default: the newest download of the subset given by "
        "--pool, --t or --target-tail-ratio, --seed, --download-budget)",
    )


def _scores(metrics: dict) -> str:
    """A metrics artifact's figures on one line: zero-shot accuracy and retrieval recall."""
    text = f"zero-shot top-1 {metrics['zero_shot']['top1']:.3f}, top-5 {metrics['zero_shot']['top5']:.3f}"
    for key, name in (("text_to_image", "text->image"), ("image_to_text", "image->text")):
        if key in metrics:
            text += f"; {name} R@1/5/10 " + " / ".join(f"{metrics[key][k]:.3f}" for k in ("R@1", "R@5", "R@10"))
    return text


def _evaluate(args: argparse.Namespace, store: ArtifactStore) -> None:
    """A checkpoint's zero-shot and retrieval scores on a COCO-style set."""
    checkpoint = plan.checkpoint(store, args.checkpoint)
    a = plan.evaluate(store, checkpoint, plan.check_eval_set(args.eval_set))
    done(a, f"checkpoint {checkpoint.version} ({checkpoint.params['model']}): {_scores(a.stats)}")


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """The checkpoint and the evaluation set."""
    parser.add_argument("--checkpoint", metavar="VERSION", help="a checkpoint artifact (default: the newest)")
    parser.add_argument("--eval-set", metavar="PATH", help=EVAL_SET_HELP)


def _t_ablation(args: argparse.Namespace, store: ArtifactStore) -> None:
    """The t ablation of a pool, step by step in this process, and its comparison table."""
    ablation, choice = P.from_arguments(TAblation, args), P.from_arguments(TrainChoice, args)
    options = P.from_arguments(DownloadParams, args)
    plan.check_t_ablation(store, ablation, choice, args.eval_set)  # before a Dask cluster starts
    with dask_client(args) as client:
        a = plan.run_t_ablation(store, ablation, choice, options, args.eval_set, client, log=progress, warn=warn)
    with a.open("comparison.md") as table:
        print(table.read().decode(), end="")
    ts = ", ".join(str(row["t"]) for row in a.stats["rows"])
    done(a, f"pool {a.stats['pool']}: t = {ts}; subsets nested: {a.stats['nested']}")


def _t_ablation_arguments(parser: argparse.ArgumentParser) -> None:
    """The evaluation set of the models trained per t."""
    parser.add_argument("--eval-set", metavar="PATH", help=EVAL_SET_HELP)


DOWNLOAD_COMMAND = Command(
    name="download",
    help="download a curated subset's images (img2dataset)",
    description=(
        "The images of a pool's curated subset as webdataset shards, failures counted by reason; with "
        "--download-budget those of a superset that the training loader balances each epoch (paper A.2)."
    ),
    run=_download,
    params=(Subset, DownloadParams, OnlineDownload),
    dask=True,
    stages=("download",),
)
TRAIN_COMMAND = Command(
    name="train",
    help="train open_clip on a downloaded subset (a GPU recipe or a tiny CPU model)",
    description=(
        "A checkpoint trained with open_clip's own trainer on a download: the newest download of the subset given "
        "(made by metaclip download), or --downloaded VERSION. The recipe's settings, changed by the flags given; with "
        "--download-budget the loader balances the download for the subset's t each epoch (paper A.2). A GPU recipe "
        "with no GPU visible is refused unless --device cpu."
    ),
    run=_train,
    params=(Subset, OnlineDownload, TrainChoice),
    arguments=_train_arguments,
    stages=("train",),
)
EVALUATE_COMMAND = Command(
    name="evaluate",
    help="evaluate a checkpoint: zero-shot accuracy and image-text retrieval",
    description=(
        "Zero-shot classification over COCO's 80 categories and image-text retrieval recall on a COCO-style set, for "
        "a checkpoint (default: the newest)."
    ),
    run=_evaluate,
    arguments=_evaluate_arguments,
    stages=("evaluate",),
)
T_ABLATION_COMMAND = Command(
    name="t-ablation",
    help="compare a pool's subsets for several t (the paper's Table 6)",
    description=(
        "One balanced subset per t (--t-values, or the t of each of --tail-ratios); with --download the largest is "
        "downloaded once and each smaller one is a view of it; with --train a model is trained and evaluated per t. "
        "Prints the comparison: sizes, downloads, scores, and whether the subsets are nested."
    ),
    run=_t_ablation,
    params=(TAblation, DownloadParams, TrainChoice),
    arguments=_t_ablation_arguments,
    dask=True,
    stages=("t_ablation", "download_view"),
)
