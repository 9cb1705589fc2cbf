"""Wikipedia unigrams and PMI bigrams, the metadata's second and third sources (paper Table 1).

Pages are streamed from a pages-articles dump (bz2 XML, never held whole in memory); only
articles (namespace 0, not redirects) count.  Markup is stripped with mwparserfromhell (a
maintained wikitext parser: templates, links, tables and tags become their plain text).
The text is cut at punctuation (``. , ; : ! ? ( ) [ ] { } "`` and the like) into segments;
a token is a run of word characters, with inner ``'`` ``’`` or ``-`` allowed (``don't``,
``X-ray``); case is kept, as entries are matched case-sensitively.  Unigrams count every
token; bigrams count adjacent tokens within one segment.

PMI of a bigram ``x y``, in bits, with N unigram tokens and B bigrams in the corpus:

    PMI(x, y) = log2( (c(x y) / B) / ((c(x) / N) * (c(y) / N)) )

The paper keeps PMI >= 30 (bits make 30 reachable: it needs c(x y) N^2 / (B c(x) c(y)) >=
2^30, rare pairs of rare words on a billions-of-tokens corpus), up to a budget of ~100k
bigrams; ``min_bigram_count`` (default 1, no extra filter, as MetaCLIP's release) can
demand more evidence.
"""

from __future__ import annotations

import bz2
import itertools
import math
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from metaclip_tasks.core import files
from metaclip_tasks.core.errors import CurationError

_SEGMENT = re.compile(r"[.,;:!?()\[\]{}\"“”«»|=*#<>/\\…–—\n]+")
_TOKEN = re.compile(r"\w+(?:['’-]\w+)*")


def iter_articles(dump: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """(title, wikitext) of each article of a pages-articles dump (``.bz2`` or plain XML), streamed."""
    uri = os.fspath(dump)
    try:
        with files.open_read(uri, "Wikipedia dump") as raw, bz2.open(raw) if uri.endswith(".bz2") else raw as f:
            for _, element in ET.iterparse(f, events=("end",)):
                if element.tag.rsplit("}", 1)[-1] != "page":
                    continue
                ns = element.findtext("{*}ns")
                if ns == "0" and element.find("{*}redirect") is None:
                    yield element.findtext("{*}title") or "", element.findtext("{*}revision/{*}text") or ""
                element.clear()
    except (ET.ParseError, OSError, EOFError) as e:
        raise CurationError(f"Wikipedia dump {uri} is not a readable pages-articles XML dump: {e}") from e


def plain_text(wikitext: str) -> str:
    """The article's readable text: markup, templates, tags and link targets removed."""
    import mwparserfromhell

    return mwparserfromhell.parse(wikitext).strip_code(normalize=True, collapse=True)


def tokenize(text: str) -> list[list[str]]:
    """Segments (cut at punctuation) of word tokens."""
    return [tokens for segment in _SEGMENT.split(text) if (tokens := _TOKEN.findall(segment))]


@dataclass
class NgramCounts:
    """Unigram and bigram counts of a corpus part; merging is associative (Counter addition)."""

    unigrams: Counter = field(default_factory=Counter)
    bigrams: Counter = field(default_factory=Counter)
    tokens: int = 0  # N
    pairs: int = 0  # B
    pages: int = 0
    text_bytes: int = 0
    pruned_floor: int = 0  # the sum of the pruning floors applied: counts are low by at most this

    def add_text(self, wikitext: str) -> None:
        self.pages += 1
        self.text_bytes += len(wikitext.encode("utf-8"))
        for tokens in tokenize(plain_text(wikitext)):
            self.unigrams.update(tokens)
            self.bigrams.update(f"{a} {b}" for a, b in itertools.pairwise(tokens))
            self.tokens += len(tokens)
            self.pairs += len(tokens) - 1

    def merge(self, other: NgramCounts) -> NgramCounts:
        self.unigrams.update(other.unigrams)
        self.bigrams.update(other.bigrams)
        self.tokens += other.tokens
        self.pairs += other.pairs
        self.pages += other.pages
        self.text_bytes += other.text_bytes
        self.pruned_floor += other.pruned_floor
        return self

    def prune(self, max_distinct: int) -> NgramCounts:
        """Keep memory bounded: while there are more than ``max_distinct`` bigrams (or unigrams),
        drop those with count <= f for f = 1, 2, ... until at most half remain.

        An n-gram whose true count exceeds ``pruned_floor`` (the sum of the floors applied) is
        never lost, and its count is low by at most ``pruned_floor`` (lossy counting).
        """
        for counter in (self.bigrams, self.unigrams):
            if len(counter) <= max_distinct:
                continue
            floor = 0
            while len(counter) > max_distinct // 2:
                floor += 1
                for key in [k for k, c in counter.items() if c <= floor]:
                    del counter[key]
            self.pruned_floor += floor
        return self


def count_texts(texts: Iterable[str]) -> NgramCounts:
    """N-gram counts of some articles' wikitext (a unit of parallel work)."""
    counts = NgramCounts()
    for text in texts:
        counts.add_text(text)
    return counts


def pmi(counts: NgramCounts, bigram: str) -> float:
    """PMI in bits of one counted bigram (see the module doc)."""
    x, y = bigram.split(" ", 1)
    joint = counts.bigrams[bigram] / counts.pairs
    return math.log2(joint / ((counts.unigrams[x] / counts.tokens) * (counts.unigrams[y] / counts.tokens)))


def select_unigrams(counts: NgramCounts, min_count: int = 100, limit: int | None = 251_465) -> list[tuple[str, int]]:
    """Unigrams with count >= ``min_count``, most frequent first (ties: alphabetical), at most ``limit``."""
    chosen = sorted(((w, c) for w, c in counts.unigrams.items() if c >= min_count), key=lambda x: (-x[1], x[0]))
    return chosen[:limit]


def select_bigrams(
    counts: NgramCounts, min_pmi: float = 30.0, min_count: int = 1, limit: int | None = 100_646
) -> list[tuple[str, float]]:
    """Bigrams with PMI >= ``min_pmi`` and count >= ``min_count``, highest PMI first
    (ties: more frequent, then alphabetical), at most ``limit``."""
    scored = [(b, pmi(counts, b), c) for b, c in counts.bigrams.items() if c >= min_count]
    chosen = sorted((s for s in scored if s[1] >= min_pmi), key=lambda s: (-s[1], -s[2], s[0]))
    return [(b, p) for b, p, _ in chosen[:limit]]


def count_dumps(
    dumps: Iterable[str | os.PathLike],
    client: Any = None,
    *,
    batch_pages: int = 200,
    max_distinct: int = 50_000_000,
) -> NgramCounts:
    """N-gram counts of whole dumps: batches of articles are parsed and counted on Dask workers
    (in this process without a client), merged as they finish, pruned past ``max_distinct``."""
    total = NgramCounts()

    def batches() -> Iterator[list[str]]:
        batch: list[str] = []
        for dump in dumps:
            for _, text in iter_articles(dump):
                batch.append(text)
                if len(batch) == batch_pages:
                    yield batch
                    batch = []
        if batch:
            yield batch

    if client is None:
        for batch in batches():
            total.merge(count_texts(batch)).prune(max_distinct)
        return total
    from dask.distributed import as_completed

    in_flight = as_completed()
    limit = 2 * max(len(client.scheduler_info()["workers"]), 1)  # bounded memory in the driver
    for batch in batches():
        in_flight.add(client.submit(count_texts, batch, pure=False))
        while in_flight.count() >= limit:
            total.merge(next(in_flight).result()).prune(max_distinct)
    for future in in_flight:
        total.merge(future.result()).prune(max_distinct)
    return total
