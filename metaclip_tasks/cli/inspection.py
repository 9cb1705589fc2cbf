"""The commands that look at the store and the pipeline: artifacts list|verify|show|lineage, stages, results."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from metaclip_tasks.cli.command import Command
from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.errors import CurationError


def _list(args: argparse.Namespace, store: ArtifactStore) -> None:
    """Complete artifacts, oldest first; broken ones as warnings."""
    for a in store.list(args.stage):
        created, params = str(a.manifest.get("created"))[:19], json.dumps(a.params, sort_keys=True)[:90]
        print(f"{a.stage:<13} {a.version}  {created}  {params}")
    for problem in store.problems:
        print(f"metaclip: warning: {problem}", file=sys.stderr)


def _verify(args: argparse.Namespace, store: ArtifactStore) -> None:
    """Every file of the chosen artifacts against its manifest; a line per artifact, an error if any failed."""
    stage, version = args.stage, args.version
    chosen = [store.require(stage, version)] if version else store.list(stage)
    broken = [] if version else list(store.problems)
    failed = list(broken)
    for problem in broken:
        print(f"BROKEN  {problem}")
    for a in chosen:
        try:
            a.verify(recheck=True)  # asked for: every byte hashed now, whatever was checked before
            print(f"ok      {a.stage} {a.version} ({len(a.manifest['files'])} files)")
        except CurationError as e:
            failed.append(str(e))
            print(f"FAILED  {e}")
    if failed:
        raise CurationError(f"{len(failed)} of {len(chosen) + len(broken)} artifacts failed verification (see above)")
    if not chosen:
        raise CurationError(f"no {stage or ''} artifacts under {store.root}".replace("  ", " "))


def _show(args: argparse.Namespace, store: ArtifactStore) -> None:
    """An artifact's manifest."""
    print(json.dumps(store.require(args.stage, args.version).manifest, indent=2, sort_keys=True))


def _lineage(args: argparse.Namespace, store: ArtifactStore) -> None:
    """The artifacts an artifact was made from, as an indented tree."""
    _print_lineage(store.lineage(args.stage, args.version))


def _print_lineage(node: dict, depth: int = 0) -> None:
    """One line per artifact of the tree, its long file lists left out."""
    params = {k: v for k, v in node["params"].items() if k not in ("sources", "wikipedia_dumps", "pageview_files")}
    print(f"{'  ' * depth}{node['stage']} {node['version']} {json.dumps(params, sort_keys=True)}")
    for child in node["inputs"]:
        _print_lineage(child, depth + 1)


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    """Which kind of artifact to list."""
    parser.add_argument("--stage", help="only this artifact kind (pairs, metadata, matched, pool_counts, curated, ...)")


def _one_artifact(parser: argparse.ArgumentParser) -> None:
    """The artifact a verb is about."""
    parser.add_argument("stage", help="the artifact kind (pairs, metadata, matched, pool_counts, curated, ...)")
    parser.add_argument("version")


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    """Which artifacts to verify: all, one kind, or one artifact."""
    parser.add_argument("stage", nargs="?", help="only this artifact kind")
    parser.add_argument("version", nargs="?", help="only this version")


def _runner(stage: str) -> str:
    """The command that runs a stage: the first of the command table that exists for its artifacts."""
    from metaclip_tasks.cli.main import COMMANDS

    return next(c.name for c in COMMANDS if stage in c.stages)


def _stages(args: argparse.Namespace, store: None) -> None:
    """The stage table: each stage's version, command, artifact, inputs and params."""
    from metaclip_tasks.stages import STAGES

    for stage in STAGES.values():
        inputs = ", ".join(
            f"{role}: {i.stage}{'[]' if i.many else ''}{'?' if i.optional else ''}" for role, i in stage.inputs.items()
        )
        fields = ", ".join(f.name for f in dataclasses.fields(stage.params))
        print(
            f"{stage.name:<16} v{stage.version}  {'metaclip ' + _runner(stage.name):<25} -> {stage.artifact:<14} "
            f"inputs ({inputs or '-'})  params ({fields or '-'})"
        )


def results_table(store: ArtifactStore) -> str:
    """One markdown row per metrics artifact, oldest first."""
    lines = [
        "| metrics | model | samples | zero-shot top-1 | top-5 | text->image R@1/5/10 | image->text R@1/5/10 |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]

    def recalls(m: dict, key: str) -> str:
        return " / ".join(f"{m[key][k]:.3f}" for k in ("R@1", "R@5", "R@10")) if key in m else "-"

    for metrics in store.list("metrics"):
        checkpoint = metrics.input("checkpoint")
        m = metrics.stats
        lines.append(
            f"| {metrics.version} | {checkpoint.params['model']} | {checkpoint.stats['samples']:,} | "
            f"{m['zero_shot']['top1']:.3f} | {m['zero_shot']['top5']:.3f} | {recalls(m, 'text_to_image')} | "
            f"{recalls(m, 'image_to_text')} |"
        )
    return "\n".join(lines)


def _results(args: argparse.Namespace, store: ArtifactStore) -> None:
    """The evaluation results table."""
    print(results_table(store))


ARTIFACTS_LIST_COMMAND = Command(
    name="artifacts list",
    help="complete artifacts, oldest first",
    description=(
        "Every complete artifact (or those of one kind): kind, version, creation time and params; an artifact whose "
        "manifest cannot be read is a warning."
    ),
    run=_list,
    arguments=_list_arguments,
)
ARTIFACTS_VERIFY_COMMAND = Command(
    name="artifacts verify",
    help="check every file of the artifacts against their manifests (size and sha256)",
    description=(
        "Hash every file of the artifacts (all, one kind, or one artifact) again and compare it with its manifest; any "
        "mismatch or broken manifest is an error."
    ),
    run=_verify,
    arguments=_verify_arguments,
)
ARTIFACTS_SHOW_COMMAND = Command(
    name="artifacts show",
    help="print an artifact's manifest",
    description="The manifest.json of an artifact: parameters, inputs, stage version, files with checksums, stats.",
    run=_show,
    arguments=_one_artifact,
)
ARTIFACTS_LINEAGE_COMMAND = Command(
    name="artifacts lineage",
    help="print the artifacts it was made from",
    description="The tree of the artifacts an artifact was made from, each with its params.",
    run=_lineage,
    arguments=_one_artifact,
)
STAGES_COMMAND = Command(
    name="stages",
    help="the stage table, and the command that runs each stage",
    description=(
        "Every stage: its name, explicit version, the command that runs it, the artifact it produces, its inputs and "
        "params."
    ),
    run=_stages,
    store=False,
)
RESULTS_COMMAND = Command(
    name="results",
    help="the evaluation results table: one row per evaluated model",
    description=(
        "Every metrics artifact as a row: the model, what it trained on, zero-shot accuracy and retrieval recall."
    ),
    run=_results,
)
