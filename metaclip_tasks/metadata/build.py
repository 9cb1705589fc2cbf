"""The metadata union (paper section 3.1): WordNet, Wikipedia unigrams, PMI bigrams, titles.

Sources are added in the paper's order; each entry is stripped, and empty, punctuation-only
or over-long (> 256 characters) ones are dropped.  An entry already present keeps its place
and gains the later source's name, so every entry records all the sources it came from.
The budget (500k) caps the total: titles fill what the other sources leave.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from metaclip_tasks.metadata.wordnet import DEFAULT_WORDNET_DIR, is_punctuation_only

SOURCES = ("wordnet", "unigram", "bigram", "title")  # the paper's order
ENTRIES, SOURCES_FILE = "entries.json", "entries.sources.json"  # a metadata artifact's files
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

    def write(self, output) -> None:
        """``entries.json`` (the JSON list) and ``entries.sources.json`` (entry -> sources) into an artifact."""
        output.write_bytes(ENTRIES, json.dumps(self.entries, ensure_ascii=False).encode("utf-8"))
        output.write_bytes(SOURCES_FILE, json.dumps(self.sources, ensure_ascii=False).encode("utf-8"))


def source_stats(entries: Sequence[str], sources: dict[str, list[str]] | None) -> dict[str, object]:
    """Table 1 for a saved metadata file (entries only, when its sources file is missing)."""
    if sources is None:
        return {"entries": len(entries), "by_source": {}}
    build = MetadataBuild(budget=len(entries))
    build.sources = {e: sources.get(e, ["unknown"]) for e in entries}
    return build.stats()


@dataclass(frozen=True)
class MetadataBuildParams:
    """A metadata build: its sources and their files, and the paper's thresholds as defaults."""

    sources: tuple[str, ...] = field(
        default=SOURCES,
        metadata={"help": "which sources to unite, in the paper's order", "enum": list(SOURCES), "minItems": 1},
    )
    min_unigram_count: int = field(
        default=100, metadata={"help": "keep unigrams counted at least this often (paper: 100)", "minimum": 1}
    )
    max_unigrams: int = field(
        default=251_465,
        metadata={"help": "at most this many unigrams, most frequent first (paper: 251,465)", "minimum": 1},
    )
    min_pmi: float = field(default=30.0, metadata={"help": "keep bigrams with at least this PMI, in bits (paper: 30)"})
    min_bigram_count: int = field(default=1, metadata={"help": "and counted at least this often", "minimum": 1})
    max_bigrams: int = field(
        default=100_646,
        metadata={"help": "at most this many bigrams, highest PMI first (paper: 100,646)", "minimum": 1},
    )
    min_title_views: int = field(
        default=70, metadata={"help": "keep titles with at least this many page views (paper: 70)", "minimum": 1}
    )
    budget: int = field(default=500_000, metadata={"help": "the total number of entries (paper: 500k)", "minimum": 1})
    max_length: int = field(default=256, metadata={"help": "drop longer entries (characters)", "minimum": 1})
    wordnet_dir: str = field(
        default=str(DEFAULT_WORDNET_DIR), metadata={"help": "WordNet 3.0 database files", "identity": False}
    )
    wikipedia_dumps: tuple[str, ...] = field(
        default=(),
        metadata={"help": "pages-articles dumps (.xml.bz2), for the unigram and bigram sources", "identity": False},
    )
    pageview_files: tuple[str, ...] = field(
        default=(), metadata={"help": "hourly page-view files (.gz), for the title source", "identity": False}
    )

    def input_files(self) -> dict[str, list[str]]:
        """The files each chosen source reads; a source without its files is an error."""
        from metaclip_tasks.core.errors import CurationError
        from metaclip_tasks.metadata.wordnet import POS_FILES

        if {"unigram", "bigram"} & set(self.sources) and not self.wikipedia_dumps:
            raise CurationError("the unigram and bigram sources need wikipedia_dumps (paths or URLs)")
        if "title" in self.sources and not self.pageview_files:
            raise CurationError("the title source needs pageview_files (paths or URLs)")
        wordnet = [f"{self.wordnet_dir}/data.{pos}" for pos in POS_FILES] if "wordnet" in self.sources else []
        missing = next((path for path in wordnet if not Path(path).is_file()), None)
        if missing:
            raise CurationError(
                f"WordNet data file {missing} not found: install Debian's wordnet-base or give --wordnet-dir"
            )
        return {
            "wordnet": wordnet,
            "dumps": list(self.wikipedia_dumps) if {"unigram", "bigram"} & set(self.sources) else [],
            "pageviews": list(self.pageview_files) if "title" in self.sources else [],
        }


def build_metadata(params: MetadataBuildParams, client: object | None = None) -> MetadataBuild:
    """Build the entry list from the chosen sources, in the paper's order."""
    from metaclip_tasks.core.params import check
    from metaclip_tasks.metadata import titles, wikipedia, wordnet

    inputs = check(params).input_files()
    build = MetadataBuild(budget=params.budget, max_length=params.max_length)
    if "wordnet" in params.sources:
        build.add("wordnet", wordnet.wordnet_entries(Path(params.wordnet_dir)))
    if {"unigram", "bigram"} & set(params.sources):
        counts = wikipedia.count_dumps(inputs["dumps"], client)
        if "unigram" in params.sources:
            chosen = wikipedia.select_unigrams(counts, params.min_unigram_count, params.max_unigrams)
            build.add("unigram", (w for w, _ in chosen))
        if "bigram" in params.sources:
            bigrams = wikipedia.select_bigrams(counts, params.min_pmi, params.min_bigram_count, params.max_bigrams)
            build.add("bigram", (b for b, _ in bigrams))
    if "title" in params.sources:
        views = titles.count_pageviews(inputs["pageviews"])
        if views.malformed:
            build.dropped["malformed_pageview_lines"] += views.malformed
        build.add("title", (t for t, _ in titles.select_titles(views, params.min_title_views)))
    return build
