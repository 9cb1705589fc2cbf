"""The whole metadata build on the shared Wikipedia sample, with thresholds scaled down."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from metaclip_tasks.cli import main
from metaclip_tasks.errors import CurationError
from metaclip_tasks.metadata.build import MetadataBuild, MetadataParams, build_metadata, sources_path
from metaclip_tasks.shared_data import WIKIPEDIA_SAMPLE

SCALED = dict(min_unigram_count=20, min_pmi=12.0, min_bigram_count=2, min_title_views=5)  # the sample is ~0.5M tokens


@pytest.fixture(scope="module")
def pageviews(tmp_path_factory) -> list[Path]:
    """Two hours of page views: real article titles of the sample, and noise to drop."""
    directory = tmp_path_factory.mktemp("pageviews")
    lines = [
        "en Anarchism 4 0", "en Albedo 9 0", "en.m Anarchism 3 0", "en Special:Search 900 0", "de Anarchism 99 0",
        "en Alabama 2 0", "en Achilles 7 0", "en A_very_long_" + "x" * 300 + " 50 0", "en !!! 80 0", "en Ant 6 0",
    ]  # fmt: skip
    paths = []
    for hour in (0, 1):
        path = directory / f"pageviews-20220101-{hour:02d}0000.gz"
        with gzip.open(path, "wt") as f:
            f.write("\n".join(lines) + "\n")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def built(wordnet, pageviews) -> MetadataBuild:
    if not WIKIPEDIA_SAMPLE.is_file():
        pytest.skip(f"shared Wikipedia sample not found at {WIKIPEDIA_SAMPLE} (../shared/data is absent)")
    return build_metadata(MetadataParams(**SCALED), dumps=[WIKIPEDIA_SAMPLE], pageview_files=pageviews)


def test_per_source_counts_dedup_and_sources(built: MetadataBuild) -> None:
    stats = built.stats()
    # exact for the pinned mwparserfromhell: 86,654 + 1,683 + 3,492 + 2 entries
    assert stats["by_source"] == {"wordnet": 86_654, "unigram": 1_683, "bigram": 3_492, "title": 2}
    assert stats["also_in"] == {"unigram": 1_725, "bigram": 122, "title": 2}
    # titles over 5 views: Albedo 18, Achilles 14, Anarchism 14 (desktop + mobile), Ant 12; Alabama has 4;
    # Special: pages, other wikis, punctuation-only and over-long titles are dropped
    assert built.sources["Albedo"] == ["title"] and built.sources["Ant"] == ["title"]
    assert built.sources["Anarchism"] == ["unigram", "title"] and built.sources["Alabama"] == ["unigram"]
    assert built.sources["physical entity"] == ["wordnet"] and built.sources["The"] == ["unigram"]
    assert len(built.entries) == len(set(built.entries)) == stats["entries"]
    assert all(len(e) <= 256 and e == e.strip() for e in built.entries)
    assert stats["dropped"]["too_long"] == 1 and stats["dropped"]["empty_or_punctuation"] == 1


def test_order_follows_the_paper_and_builds_are_deterministic(built, pageviews) -> None:
    firsts = [s[0] for s in built.sources.values()]
    order = ["wordnet", "unigram", "bigram", "title"]
    assert [order.index(f) for f in firsts] == sorted(order.index(f) for f in firsts)
    again = build_metadata(MetadataParams(**SCALED), dumps=[WIKIPEDIA_SAMPLE], pageview_files=pageviews)
    assert again.entries == built.entries and again.sources == built.sources


def test_budget_is_enforced_with_titles_filling_the_rest(wordnet, pageviews) -> None:
    params = MetadataParams(sources=("wordnet", "title"), budget=86_656, min_title_views=5)
    result = build_metadata(params, pageview_files=pageviews)
    assert len(result.entries) == 86_656
    assert result.entries[-2:] == ["Albedo", "Achilles"]  # most viewed first (18, 14), ties alphabetical
    assert result.stats()["dropped"]["over_budget"] == 2


def test_bad_parameters_and_missing_inputs() -> None:
    with pytest.raises(CurationError, match="unknown metadata sources"):
        MetadataParams(sources=("wordnet", "books"))
    with pytest.raises(CurationError, match="need at least one Wikipedia dump"):
        build_metadata(MetadataParams(sources=("unigram",)))
    with pytest.raises(CurationError, match="needs page-view files"):
        build_metadata(MetadataParams(sources=("title",)))


def test_command_line_build_and_stats(tmp_path: Path, wordnet, pageviews, capsys) -> None:
    if not WIKIPEDIA_SAMPLE.is_file():
        pytest.skip("shared Wikipedia sample absent")
    out = tmp_path / "metadata.json"
    args = ["metadata", "build", "--wikipedia", str(WIKIPEDIA_SAMPLE), "--pageviews", *map(str, pageviews),
            "--min-unigram-count", "20", "--min-pmi", "12", "--min-bigram-count", "2", "--min-title-views", "5",
            "-o", str(out)]  # fmt: skip
    assert main(args) == 0
    entries = json.loads(out.read_text())
    sources = json.loads(Path(sources_path(out)).read_text())
    assert entries[:3] == ["0", "1", "2"] and list(sources) == entries
    capsys.readouterr()
    assert main(["metadata", "stats", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["by_source"]["wordnet"] == 86_654
    assert main(["metadata", "build", "--sources", "wordnet,books", "-o", str(tmp_path / "x.json")]) == 1
    assert not (tmp_path / "x.json").exists()


def test_importing_an_existing_list_reports_and_stores_it(tmp_path: Path, capsys) -> None:
    listed = tmp_path / "metadata.json"
    listed.write_text(json.dumps(["cat", "dog", "cat", " ", "black cat"]))
    assert main(["metadata", "import", str(listed), "--root", str(tmp_path / "root")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["entries"] == 5 and report["duplicated_entries"] == 1 and report["empty_entries"] == 1
    stored = tmp_path / "root" / "artifacts" / "metadata" / report["version"] / "entries.json"
    assert json.loads(stored.read_text()) == ["cat", "dog", "cat", " ", "black cat"]
    listed.write_text(json.dumps({"not": "a list"}))
    assert main(["metadata", "import", str(listed), "--root", str(tmp_path / "root")]) == 1
