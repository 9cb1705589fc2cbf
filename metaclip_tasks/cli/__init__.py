"""The ``metaclip`` command line: one command per stage, each a thin caller of the library."""

from metaclip_tasks.cli.main import main

__all__ = ["main"]
