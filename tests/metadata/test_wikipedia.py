"""Wikipedia unigrams and PMI bigrams: streaming the real dump sample, tokens, PMI by hand, pruning."""

from __future__ import annotations

import bz2
import math
from collections import Counter
from pathlib import Path

import pytest

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.dev.shared_data import WIKIPEDIA_SAMPLE
from metaclip_tasks.metadata.wikipedia import (
    NgramCounts,
    count_dumps,
    count_texts,
    iter_articles,
    pmi,
    select_bigrams,
    select_unigrams,
    tokenize,
)


@pytest.fixture(scope="module")
def sample() -> Path:
    if not WIKIPEDIA_SAMPLE.is_file():
        pytest.skip(f"shared Wikipedia sample not found at {WIKIPEDIA_SAMPLE} (../shared/data is absent)")
    return WIKIPEDIA_SAMPLE


def test_articles_are_streamed_without_redirects_or_other_namespaces(sample: Path) -> None:
    articles = list(iter_articles(sample))
    titles = [t for t, _ in articles]
    assert len(articles) == 106 and titles[0] == "Anarchism"
    assert not any(":" in t.split(" ")[0] and t.split(":")[0] in {"Wikipedia", "Template", "Category"} for t in titles)
    assert all(text and not text.startswith("#REDIRECT") for _, text in articles)


def test_bad_dumps_are_named(tmp_path: Path) -> None:
    with pytest.raises(CurationError, match="missing.xml.bz2 does not exist"):
        list(iter_articles(tmp_path / "missing.xml.bz2"))
    broken = tmp_path / "broken.xml.bz2"
    broken.write_bytes(bz2.compress(b"<mediawiki><page><title>x</title>"))
    with pytest.raises(CurationError, match="broken.xml.bz2 is not a readable pages-articles XML dump"):
        list(iter_articles(broken))


def test_markup_is_stripped_and_text_cut_at_punctuation() -> None:
    counts = count_texts(
        ["'''Anarchism''' is a [[political philosophy|philosophy]]. {{cite|x}} It's X-ray, (big) cats"]
    )
    assert counts.unigrams == Counter(
        {"Anarchism": 1, "is": 1, "a": 1, "philosophy": 1, "It's": 1, "X-ray": 1, "big": 1, "cats": 1}
    )
    assert set(counts.bigrams) == {"Anarchism is", "is a", "a philosophy", "It's X-ray"}
    assert tokenize("New York; new-york: U.S. 2019") == [["New", "York"], ["new-york"], ["U"], ["S"], ["2019"]]


def test_pmi_is_the_stated_formula_by_hand() -> None:
    counts = NgramCounts()
    counts.unigrams.update({"a": 4, "b": 2, "c": 2})
    counts.bigrams.update({"a b": 2, "a c": 1, "b c": 1})
    counts.tokens, counts.pairs = 8, 4
    # PMI(a b) = log2((2/4) / ((4/8) * (2/8))) = log2(0.5 / 0.125) = 2
    assert pmi(counts, "a b") == pytest.approx(2.0)
    assert pmi(counts, "a c") == pytest.approx(math.log2((1 / 4) / ((4 / 8) * (2 / 8))))  # 1 bit
    assert pmi(counts, "b c") == pytest.approx(math.log2((1 / 4) / ((2 / 8) * (2 / 8))))  # 2 bits
    assert select_bigrams(counts, min_pmi=1.5) == [("a b", pytest.approx(2.0)), ("b c", pytest.approx(2.0))]
    assert select_bigrams(counts, min_pmi=1.5, min_count=2) == [("a b", pytest.approx(2.0))]
    assert select_unigrams(counts, min_count=2) == [("a", 4), ("b", 2), ("c", 2)]
    assert select_unigrams(counts, min_count=2, limit=2) == [("a", 4), ("b", 2)]


def test_pruning_keeps_memory_bounded_with_a_stated_error() -> None:
    counts = NgramCounts()
    counts.bigrams.update({f"w{i} x": (i % 5) + 1 for i in range(100)})  # 20 each of counts 1..5
    counts.prune(max_distinct=50)
    # floor 1 leaves 80 > 25, floor 2 leaves 60, 3 -> 40, 4 -> 20 <= 25: counts <= 4 dropped
    assert len(counts.bigrams) == 20 and set(counts.bigrams.values()) == {5} and counts.pruned_floor == 4
    small = NgramCounts()
    small.bigrams.update({"a b": 1})
    assert small.prune(max_distinct=50).pruned_floor == 0 and small.bigrams == {"a b": 1}


@pytest.mark.cluster
def test_dask_counts_equal_serial_counts(sample: Path) -> None:
    from metaclip_tasks.runtime.cluster import dask_client

    serial = count_dumps([sample])
    with dask_client(work=2) as client:
        parallel = count_dumps([sample], client, batch_pages=7)
    assert parallel.unigrams == serial.unigrams and parallel.bigrams == serial.bigrams
    assert (parallel.tokens, parallel.pairs, parallel.pages) == (serial.tokens, serial.pairs, 106)
    assert serial.unigrams["the"] > 10_000 and serial.text_bytes > 5_000_000
