"""Wikipedia titles by page views, MetaCLIP's fourth metadata source (titles viewed >= 70 times).

Wikimedia's hourly page-view files (https://dumps.wikimedia.org/other/pageviews/) hold one line
per page and project, ``domain_code page_title views bytes``.  Summing the views of a chosen set
of days per title and keeping the titles at or above the threshold gives the paper's list.
Titles are taken as written (no percent-decoding); ``_`` becomes a space, as in the other sources.
"""

from __future__ import annotations

import datetime
import gzip
import os
import zlib
from collections import Counter
from collections.abc import Collection, Iterable, Mapping

from metaclip_tasks.core import files
from metaclip_tasks.core.errors import CurationError

DEFAULT_PROJECTS = ("en", "en.m")  # English Wikipedia, desktop and mobile site
MIN_VIEWS = 70  # the paper's threshold


def pageview_file_name(day: datetime.date, hour: int) -> str:
    """The name of one hour's page-view file on Wikimedia's server: ``pageviews-YYYYMMDD-HH0000.gz``."""
    if not 0 <= hour <= 23:
        raise CurationError(f"page-view hour {hour} is not in 0..23")
    return f"pageviews-{day:%Y%m%d}-{hour:02d}0000.gz"


class PageViews(Counter):
    """Views per title, with how many lines were malformed (reported, never silently dropped)."""

    malformed: int = 0


def count_pageviews(paths: Iterable[str | os.PathLike], projects: Collection[str] = DEFAULT_PROJECTS) -> PageViews:
    """Views per title summed over page-view files (``.gz`` or plain, any fsspec URI), streamed line by line.

    Only lines of the given domain codes count; titles with a ``:`` (namespaces such as
    ``Special:`` or ``File:``) and empty ones are dropped.  Malformed lines (not four
    space-separated fields, views not a non-negative integer, title not UTF-8) are counted in
    ``malformed``; a file with lines and none well formed is an error naming it.
    """
    wanted = {p.encode() for p in projects}
    views = PageViews()
    for uri in (os.fspath(p) for p in paths):
        lines_read = bad = 0
        try:
            with files.open_read(uri, "page-view file") as raw, gzip.open(raw) if uri.endswith(".gz") else raw as lines:
                for line in lines:
                    lines_read += 1
                    fields = line.rstrip(b"\n").split(b" ")
                    if len(fields) != 4 or not fields[2].isdigit():
                        bad += 1
                        continue
                    try:
                        title = fields[1].decode()
                    except UnicodeDecodeError:
                        bad += 1
                        continue
                    if fields[0] not in wanted or ":" in title:
                        continue
                    title = title.replace("_", " ").strip()
                    if title:
                        views[title] += int(fields[2])
        except (OSError, EOFError, zlib.error) as e:
            raise CurationError(f"page-view file {uri} cannot be read: {e}") from e
        if lines_read and bad == lines_read:
            raise CurationError(
                f"page-view file {uri}: none of its {lines_read:,} lines is 'project title views bytes'"
            )
        views.malformed += bad
    return views


def select_titles(views: Mapping[str, int], min_views: int = MIN_VIEWS) -> list[tuple[str, int]]:
    """(title, views) for titles viewed at least ``min_views`` times, most viewed first, ties by title."""
    return sorted(((t, v) for t, v in views.items() if v >= min_views), key=lambda tv: (-tv[1], tv[0]))
