"""A ``metaclip`` command as a row of the command table, and what the commands share: the options every
command takes, the store at ``--root``, the Dask client, the summary line of an artifact, warnings."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from metaclip_tasks.core.artifacts import Artifact, ArtifactStore
from metaclip_tasks.core.errors import CurationError

EPILOG = "Paper: Xu et al., Demystifying CLIP Data (ICLR 2024), sections 3.2-3.5."


@dataclass(frozen=True)
class Command:
    """One row of the command table: the parser of a command and the function that runs it."""

    name: str  # "GROUP VERB" for a verb of a command group (``artifacts list``)
    help: str  # one line, in ``metaclip --help``
    description: str  # the paragraph of ``metaclip NAME --help``
    run: Callable[[argparse.Namespace, Any], None]  # given the parsed arguments and the store (None: ``store`` False)
    params: tuple[type, ...] = ()  # dataclasses whose fields become flags (their default, type, bounds and help)
    skip: tuple[str, ...] = ()  # fields of ``params`` that are not flags (given otherwise, or not asked for)
    arguments: Callable[[argparse.ArgumentParser], None] | None = None  # the command's own arguments
    dask: bool = False  # runs stages on Dask: --workers and --scheduler apply
    aliases: tuple[str, ...] = ()  # earlier names that still work, kept for one release
    stages: tuple[str, ...] = ()  # the stages that make the artifacts it exists for
    store: bool = True  # reads or writes the artifact store at --root


def common_options(dask: bool) -> argparse.ArgumentParser:
    """--root, --workers and --scheduler, taken by every command and verb; absent ones stay out of the
    namespace, so that a group's value (``artifacts --root R list``) is not reset by its verb."""
    unused = "" if dask else "accepted and unused: this command runs nothing on Dask; "
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root",
        default=argparse.SUPPRESS,
        help="artifact root: a directory or fsspec URL such as s3://bucket/root "
        "(default: $METACLIP_ROOT, else .state/root)",
    )
    common.add_argument(
        "--scheduler",
        default=argparse.SUPPRESS,
        help=f"{unused}a Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS, else a local cluster)",
    )
    common.add_argument(
        "--workers",
        type=int,
        default=argparse.SUPPRESS,
        help=f"{unused}local Dask workers (default: one per free core; 0: run in this process)",
    )
    return common


def open_store(args: argparse.Namespace) -> ArtifactStore:
    """The artifact store at --root, else at the configured root."""
    from metaclip_tasks.core.settings import artifact_root

    return ArtifactStore(getattr(args, "root", None) or artifact_root())


@contextmanager
def dask_client(args: argparse.Namespace, work: int | None = None) -> Iterator[Any]:
    """The Dask client the command's stages run on (at most ``work`` local workers), or None
    (``--workers 0``) to run them in this process."""
    workers, scheduler = getattr(args, "workers", None), getattr(args, "scheduler", None)
    if workers == 0 and not scheduler:
        yield None
        return
    if workers is not None and workers < 0:
        raise CurationError(f"--workers must be >= 0, got {workers}")
    from metaclip_tasks.runtime.cluster import dask_client as cluster_client

    limits = [n for n in (work, workers) if n]
    with cluster_client(scheduler, min(limits) if limits else None) as client:
        yield client


def done(artifact: Artifact, summary: str) -> None:
    """The result line of a command: ``<stage> <version> (built|cache hit): <summary> -> <uri>``."""
    state = "cache hit" if artifact.cache_hit else "built"
    print(f"{artifact.stage} {artifact.version} ({state}): {summary} -> {artifact.uri}")


def warn(warnings: Sequence[str]) -> None:
    """Warnings on stderr, so that stdout stays the result (``--json``)."""
    for warning in warnings:
        print(f"metaclip: warning: {warning}", file=sys.stderr)


def progress(line: str) -> None:
    """A line of a tool's progress (img2dataset, open_clip's trainer) on stderr, so that stdout stays the result."""
    print(line, file=sys.stderr)
