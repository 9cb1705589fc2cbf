"""The ``metaclip`` command line: one command per stage, named as the stage, built from one table.

Every command reads and writes artifacts in the store at ``--root`` (default ``$METACLIP_ROOT``,
a directory or any fsspec URL) and takes ``--workers`` and ``--scheduler`` (used by those that run
stages on Dask); its flags come from params dataclasses, so each default lives in one place.  Bad
input ends with one line ``metaclip: error: ...`` naming the problem, exit status 1 (2 for a
malformed command line), and nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from metaclip_tasks.cli import commands, inspection, metadata, training
from metaclip_tasks.cli.command import EPILOG, Command, common_options, open_store
from metaclip_tasks.cli.inspection import results_table
from metaclip_tasks.core import params as P
from metaclip_tasks.core.errors import CurationError

COMMANDS: list[Command] = [
    commands.PAIRS_IMPORT_COMMAND,
    commands.INGEST_COMMAND,
    metadata.METADATA_BUILD_COMMAND,
    metadata.METADATA_IMPORT_COMMAND,
    metadata.METADATA_STATS_COMMAND,
    commands.MATCH_COMMAND,
    commands.POOL_COUNTS_COMMAND,
    commands.CHOOSE_T_COMMAND,
    commands.BALANCE_COMMAND,
    training.DOWNLOAD_COMMAND,
    training.TRAIN_COMMAND,
    training.EVALUATE_COMMAND,
    training.T_ABLATION_COMMAND,
    inspection.ARTIFACTS_LIST_COMMAND,
    inspection.ARTIFACTS_VERIFY_COMMAND,
    inspection.ARTIFACTS_SHOW_COMMAND,
    inspection.ARTIFACTS_LINEAGE_COMMAND,
    inspection.STAGES_COMMAND,
    inspection.RESULTS_COMMAND,
    commands.DEMO_COMMAND,
]

GROUPS = {  # command groups, whose verbs are the commands named "GROUP VERB": (help, description, runs on Dask)
    "artifacts": (
        "list, verify, show and trace the versioned artifacts",
        (
            "Every stage writes <root>/artifacts/<stage>/<version>/ with a manifest.json (parameters, inputs, "
            "stage version, files with checksums, stats); tabular rows are under data/."
        ),
        False,
    ),
    "metadata": (
        "alias of metadata-build, metadata-import and metadata-stats, kept for one release",
        (
            "Alias of metadata-build, metadata-import and metadata-stats, kept for one release: MetaCLIP's "
            "metadata (paper section 3.1), the entry list."
        ),
        True,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command of the table, then of every alias; each sets the command it runs."""
    parser = argparse.ArgumentParser(
        prog="metaclip",
        description="MetaCLIP curation as versioned artifacts: import pairs, build metadata, match alt-texts against "
        "it, count matches per entry over a pool, choose the balancing threshold t, keep a balanced subset, download "
        "its images, train and evaluate CLIP on them.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, Any] = {}
    for command in COMMANDS:
        _add(sub, groups, command.name, command, command.help, command.description)
    for command in COMMANDS:
        for alias in command.aliases:
            said = f"alias of {command.name}, kept for one release"
            _add(sub, groups, alias, command, said, f"{said[0].upper()}{said[1:]}. {command.description}")
    return parser


def _add(
    sub: Any,  # what ArgumentParser.add_subparsers returns
    groups: dict[str, Any],
    name: str,
    command: Command,
    text: str,
    description: str,
) -> None:
    """The parser of ``command`` under ``name`` (``GROUP VERB``: a verb of the group, made with its first verb)."""
    *group, verb = name.split(" ")
    if group and group[0] not in groups:
        group_help, group_description, dask = GROUPS[group[0]]
        parent = sub.add_parser(
            group[0], help=group_help, description=group_description, epilog=EPILOG, parents=[common_options(dask)]
        )
        groups[group[0]] = parent.add_subparsers(dest="verb", required=True, metavar="VERB")
    target = groups[group[0]] if group else sub
    parser = target.add_parser(
        verb, help=text, description=description, epilog=EPILOG, parents=[common_options(command.dask)]
    )
    if command.arguments:
        command.arguments(parser)
    for params in command.params:
        P.add_arguments(parser, params, skip=command.skip)
    parser.set_defaults(metaclip_command=command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``metaclip``; returns the exit status."""
    args = build_parser().parse_args(argv)
    command: Command = args.metaclip_command
    try:
        command.run(args, open_store(args) if command.store else None)
        sys.stdout.flush()  # here, so that a closed pipe is met inside this try, not at exit
    except CurationError as e:
        print(f"metaclip: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader left (``metaclip artifacts list | head``): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 141
    return 0


__all__ = ["COMMANDS", "build_parser", "main", "results_table"]

if __name__ == "__main__":
    sys.exit(main())
