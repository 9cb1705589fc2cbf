"""Common Crawl main-crawl snapshots and the named pools of them.

Crawl ids are ``CC-MAIN-YYYY-WW`` with WW the ISO week the crawl started in, so each id maps
to a date (the Monday of that week, ``date.fromisocalendar(y, w, 1)``) and back, exactly.
``SNAPSHOTS`` lists the real main crawls from CC-MAIN-2013-20 (the first in this id format)
to CC-MAIN-2023-14: 91 crawls, the range the paper calls its "90 CC snapshots from 2013 to
April 2023" (Pool 2), followed by the later crawls through CC-MAIN-2025-51.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.settings import pools_file

_WEEKS = {
    2013: (20, 48),
    2014: (10, 15, 23, 35, 41, 42, 49, 52),
    2015: (6, 11, 14, 18, 22, 27, 32, 35, 40, 48),
    2016: (7, 18, 22, 26, 30, 36, 40, 44, 50),
    2017: (4, 9, 13, 17, 22, 26, 30, 34, 39, 43, 47, 51),
    2018: (5, 9, 13, 17, 22, 26, 30, 34, 39, 43, 47, 51),
    2019: (4, 9, 13, 18, 22, 26, 30, 35, 39, 43, 47, 51),
    2020: (5, 10, 16, 24, 29, 34, 40, 45, 50),
    2021: (4, 10, 17, 21, 25, 31, 39, 43, 49),
    2022: (5, 21, 27, 33, 40, 49),
    2023: (6, 14, 23, 40, 50),
    2024: (10, 18, 22, 26, 30, 33, 38, 42, 46, 51),
    2025: (5, 8, 13, 18, 21, 26, 30, 33, 38, 43, 47, 51),
}
SNAPSHOTS: tuple[str, ...] = tuple(f"CC-MAIN-{y}-{w:02d}" for y, weeks in _WEEKS.items() for w in weeks)
PAPER_POOL2_RANGE = ("CC-MAIN-2013-20", "CC-MAIN-2023-14")
_ID = re.compile(r"CC-MAIN-(\d{4})-(\d{2})")
DEFAULT_POOLS_FILE = Path(__file__).with_name("pools.toml")


def snapshot_date(snapshot: str) -> date:
    """The Monday of the crawl's ISO week: ``CC-MAIN-2013-20`` -> 2013-05-13."""
    m = _ID.fullmatch(snapshot)
    if not m:
        raise CurationError(f"{snapshot!r} is not a Common Crawl id like CC-MAIN-2013-20")
    try:
        return date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
    except ValueError as e:  # week 00 or 54+, year 0
        raise CurationError(f"{snapshot!r} is not a Common Crawl id: {e}") from e


def snapshot_for_date(day: date) -> str:
    """The crawl whose ISO week contains ``day``; a day of no crawl's week is an error."""
    year, week, _ = day.isocalendar()
    snapshot = f"CC-MAIN-{year}-{week:02d}"
    if snapshot not in SNAPSHOTS:
        raise CurationError(f"no Common Crawl main crawl started in the ISO week of {day} ({snapshot})")
    return snapshot


def check_snapshot(snapshot: str) -> str:
    """``snapshot`` if it is a known main crawl, else an error naming it."""
    if snapshot not in SNAPSHOTS:
        snapshot_date(snapshot)  # a malformed id gets the format message
        raise CurationError(f"unknown Common Crawl snapshot {snapshot!r} (known: {SNAPSHOTS[0]} .. {SNAPSHOTS[-1]})")
    return snapshot


def is_crawl_id(text: str) -> bool:
    """Whether ``text`` has the form of a crawl id (a source naming Common Crawl itself, not a file)."""
    return bool(_ID.fullmatch(text))


def snapshots_between(first: str, last: str) -> tuple[str, ...]:
    """The known crawls from ``first`` to ``last``, both included, in order."""
    a, b = SNAPSHOTS.index(check_snapshot(first)), SNAPSHOTS.index(check_snapshot(last))
    return SNAPSHOTS[a : b + 1]


@dataclass(frozen=True)
class Pool:
    """A named set of snapshots whose counts are summed and balanced together."""

    name: str
    snapshots: tuple[str, ...]
    target_tail_ratio: float = 0.06
    description: str = ""


def load_pools(path: str | os.PathLike | None = None) -> dict[str, Pool]:
    """Pools from a TOML file (``$METACLIP_POOLS`` or the packaged ``pools.toml``).

    Each table names a pool: ``snapshots = [...]`` or ``first``/``last``, optional
    ``target_tail_ratio`` and ``description``.
    """
    path = Path(path or pools_file() or DEFAULT_POOLS_FILE)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CurationError(f"pools file {path} is not readable TOML: {e}") from e
    pools = {}
    for name, spec in raw.items():
        if "snapshots" in spec:
            snapshots = tuple(check_snapshot(s) for s in spec["snapshots"])
        elif "first" in spec and "last" in spec:
            snapshots = snapshots_between(spec["first"], spec["last"])
        else:
            raise CurationError(f"pool {name!r} in {path} needs 'snapshots' or 'first' and 'last'")
        ratio = float(spec.get("target_tail_ratio", 0.06))
        pools[name] = Pool(name, snapshots, ratio, spec.get("description", ""))
    return pools


def get_pool(name: str, path: str | os.PathLike | None = None) -> Pool:
    """The pool called ``name``, or an error listing the known ones."""
    pools = load_pools(path)
    if name not in pools:
        raise CurationError(f"unknown pool {name!r} (known: {', '.join(sorted(pools))})")
    return pools[name]
