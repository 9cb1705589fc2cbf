"""Source files for a metadata build: paths and fsspec URLs are checked, http(s) URLs downloaded once.

Wikipedia dump URLs are verified against the dump's published ``sha1sums.txt``; other URLs
are downloaded resumably without a checksum.  Re-running finds finished files in place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from metaclip_tasks.core import files
from metaclip_tasks.core.errors import CurationError

_DUMP = re.compile(r"(?P<lang>[a-z_]+)wiki-(?P<date>\d{8}|latest)-pages-articles[\w.\-]*\.bz2$")


def fetch_all(items: Sequence[str], directory: str | Path) -> list[str]:
    """Each item as a readable URI: http(s) URLs are downloaded into the local ``directory``,
    other paths and fsspec URLs must exist."""
    from metaclip_tasks.metadata import download

    local = []
    for item in items:
        if not re.match(r"https?://", item):
            fs, path = files.filesystem(item)
            if not fs.isfile(path):
                raise CurationError(f"source file {item} does not exist")
            local.append(item)
            continue
        name = item.rstrip("/").rsplit("/", 1)[-1]
        sha1 = None
        dump = _DUMP.search(name)
        if dump:
            sums_url = download.wikipedia_sha1sums_url(dump["date"], dump["lang"])
            sums_path = download.download(sums_url, Path(directory) / f"{dump['lang']}wiki-{dump['date']}-sha1sums.txt")
            sha1 = download.parse_sha1sums(sums_path.read_text()).get(name)
            if sha1 is None:  # e.g. "latest" sums list dated names: never download a dump unverified
                raise CurationError(f"{sums_url} lists no sha1 for {name}: give the dump's dated URL")
        local.append(str(download.download(item, Path(directory) / name, sha1=sha1)))
    return local
