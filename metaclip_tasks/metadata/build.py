"""The metadata union (paper section 3.1): WordNet, Wikipedia unigrams, PMI bigrams, titles.

Sources are added in the paper's order; each entry is stripped, and empty, punctuation-only
or over-long (> 256 characters) ones are dropped.  An entry already present keeps its place
and gains the later source's name, so every entry records all the sources it came from.
The budget (500k) caps the total: titles fill what the other sources leave.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from metaclip_tasks.metadata.store import save_metadata
from metaclip_tasks.metadata.wordnet import is_punctuation_only
from metaclip_tasks.storage import atomic_file

SOURCES = ("wordnet", "unigram", "bigram", "title")  # the paper's order
PAPER_TABLE_1 = {"wordnet": 86_654, "unigram": 251_465, "bigram": 100_646, "title": 61_235}


@dataclass
class MetadataBuild:
    """Entries in order, each with the sources it came from."""

    budget: int = 500_000
    max_length: int = 256
    sources: dict[str, list[str]] = field(default_factory=dict)  # entry -> sources, in insertion order
    dropped: Counter = field(default_factory=Counter)

    def add(self, source: str, candidates: Iterable[str]) -> int:
        """Add a source's candidates in their order of preference; returns how many were new."""
        added = 0
        for raw in candidates:
            entry = raw.strip()
            if not entry or is_punctuation_only(entry):
                self.dropped["empty_or_punctuation"] += 1
            elif len(entry) > self.max_length:
                self.dropped["too_long"] += 1
            elif entry in self.sources:
                if source not in self.sources[entry]:
                    self.sources[entry].append(source)
            elif len(self.sources) >= self.budget:
                self.dropped["over_budget"] += 1
            else:
                self.sources[entry] = [source]
                added += 1
        return added

    @property
    def entries(self) -> list[str]:
        return list(self.sources)

    def stats(self) -> dict[str, object]:
        """Entries per first source (like the paper's Table 1), overlaps and drops."""
        first = Counter(s[0] for s in self.sources.values())
        also = Counter(name for s in self.sources.values() for name in s[1:])
        return {
            "entries": len(self.sources),
            "budget": self.budget,
            "by_source": {s: first.get(s, 0) for s in SOURCES if s in first or s in also},
            "also_in": dict(also),
            "dropped": dict(self.dropped),
        }

    def save(self, path: str | os.PathLike) -> None:
        """``path``: the entries as a JSON list; beside it ``<stem>.sources.json``: entry -> sources."""
        save_metadata(path, self.entries)
        with atomic_file(sources_path(path)) as tmp:
            tmp.write_text(json.dumps(self.sources, ensure_ascii=False))


def sources_path(path: str | os.PathLike) -> str:
    """Where the per-entry sources of a metadata file live."""
    path = os.fspath(path)
    return (path[: -len(".json")] if path.endswith(".json") else path) + ".sources.json"


def source_stats(entries: Sequence[str], sources: dict[str, list[str]] | None) -> dict[str, object]:
    """Table 1 for a saved metadata file (entries only, when its sources file is missing)."""
    if sources is None:
        return {"entries": len(entries), "by_source": {}}
    build = MetadataBuild(budget=len(entries))
    build.sources = {e: sources.get(e, ["unknown"]) for e in entries}
    return build.stats()


@dataclass(frozen=True)
class MetadataParams:
    """Everything a metadata build depends on besides its input files (the paper's defaults)."""

    sources: tuple[str, ...] = SOURCES
    min_unigram_count: int = 100
    max_unigrams: int = 251_465
    min_pmi: float = 30.0
    min_bigram_count: int = 1
    max_bigrams: int = 100_646
    min_title_views: int = 70
    budget: int = 500_000
    max_length: int = 256

    def __post_init__(self) -> None:
        from metaclip_tasks.errors import CurationError

        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown or not self.sources:
            raise CurationError(f"unknown metadata sources {unknown or '(none given)'}: choose from {', '.join(SOURCES)}")
        if min(self.min_unigram_count, self.max_unigrams, self.min_bigram_count, self.max_bigrams, self.budget) < 1:
            raise CurationError("counts, limits and the budget must be >= 1")


def build_metadata(
    params: MetadataParams,
    *,
    wordnet_dir: str | os.PathLike | None = None,
    dumps: Sequence[str | os.PathLike] = (),
    pageview_files: Sequence[str | os.PathLike] = (),
    client: object | None = None,
) -> MetadataBuild:
    """Build the entry list from the chosen sources, in the paper's order."""
    from metaclip_tasks.errors import CurationError
    from metaclip_tasks.metadata import titles, wikipedia, wordnet

    build = MetadataBuild(budget=params.budget, max_length=params.max_length)
    if "wordnet" in params.sources:
        build.add("wordnet", wordnet.wordnet_entries(Path(wordnet_dir or wordnet.DEFAULT_WORDNET_DIR)))
    if {"unigram", "bigram"} & set(params.sources):
        if not dumps:
            raise CurationError("unigram and bigram sources need at least one Wikipedia dump")
        counts = wikipedia.count_dumps(dumps, client)
        if "unigram" in params.sources:
            chosen = wikipedia.select_unigrams(counts, params.min_unigram_count, params.max_unigrams)
            build.add("unigram", (w for w, _ in chosen))
        if "bigram" in params.sources:
            chosen = wikipedia.select_bigrams(counts, params.min_pmi, params.min_bigram_count, params.max_bigrams)
            build.add("bigram", (b for b, _ in chosen))
    if "title" in params.sources:
        if not pageview_files:
            raise CurationError("the title source needs page-view files")
        views = titles.count_pageviews(pageview_files)
        build.add("title", (t for t, _ in titles.select_titles(views, params.min_title_views)))
    return build
