"""The Common Crawl timetable: one DAG run per main crawl, at the Monday of its ISO week.

A backfill over 2013-01-01 .. 2023-04-30 therefore creates exactly the 91 runs of
CC-MAIN-2013-20 .. CC-MAIN-2023-14 (the paper's Pool 2), and each run's logical date maps
back to its crawl id with ``metaclip_tasks.core.snapshots.snapshot_for_date``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pendulum
from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.events import EventsTimetable

from metaclip_tasks.core.snapshots import SNAPSHOTS, snapshot_date


class CommonCrawlTimetable(EventsTimetable):
    """Runs at each known crawl's ISO-week Monday, 00:00 UTC; manual runs take the latest past crawl."""

    def __init__(self) -> None:
        days = [snapshot_date(s) for s in SNAPSHOTS]
        super().__init__(
            event_dates=[pendulum.datetime(d.year, d.month, d.day, tz="UTC") for d in days],
            restrict_to_events=True,
            presorted=True,
            description=f"one run per Common Crawl main crawl ({SNAPSHOTS[0]} .. {SNAPSHOTS[-1]})",
        )

    def serialize(self) -> dict[str, Any]:
        return {}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> CommonCrawlTimetable:
        return cls()


class MetaclipTimetablePlugin(AirflowPlugin):
    name = "metaclip_timetable"
    timetables: ClassVar[list[type]] = [CommonCrawlTimetable]
