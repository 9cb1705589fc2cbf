"""The benchmarks' 500k-entry metadata from real words: WordNet names, then words, word
pairs and word triples of the shared Wikipedia sample, in order of first appearance."""

from __future__ import annotations

import bz2
import re

from metaclip_tasks.dev.shared_data import CAPTIONS, WIKIPEDIA_SAMPLE
from metaclip_tasks.metadata.wordnet import wordnet_entries

__all__ = ["CAPTIONS", "benchmark_metadata"]

_WORD = re.compile(r"\w+(?:['-]\w+)*")


def benchmark_metadata(size: int = 500_000) -> list[str]:
    """WordNet names padded with Wikipedia-sample unigrams, bigrams and trigrams to ``size``."""
    with bz2.open(WIKIPEDIA_SAMPLE, "rt", encoding="utf-8") as f:
        words = _WORD.findall(f.read())
    entries = dict.fromkeys(wordnet_entries())
    for n in (1, 2, 3):
        for i in range(len(words) - n + 1):
            entries.setdefault(" ".join(words[i : i + n]))
            if len(entries) >= size:
                return list(entries)
    return list(entries)
