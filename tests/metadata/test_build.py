"""The whole metadata build on the shared Wikipedia sample, with thresholds scaled down, as a
``metadata`` artifact (entries.json + entries.sources.json)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from metaclip_tasks.cli import main
from metaclip_tasks.core import params as P
from metaclip_tasks.core.artifacts import Artifact, ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.stage import run
from metaclip_tasks.dev.shared_data import WIKIPEDIA_SAMPLE
from metaclip_tasks.metadata.build import ENTRIES, SOURCES_FILE, MetadataBuildParams, build_metadata
from metaclip_tasks.stages import METADATA_BUILD, METADATA_IMPORT, MetadataImportParams

# the sample is ~0.5M tokens: the paper's thresholds scaled down
SCALED = {"min_unigram_count": 20, "min_pmi": 12.0, "min_bigram_count": 2, "min_title_views": 5}


@pytest.fixture(scope="module")
def pageviews(tmp_path_factory) -> tuple[str, ...]:
    """Two hours of page views: real article titles of the sample, and noise to drop."""
    directory = tmp_path_factory.mktemp("pageviews")
    lines = [
        "en Anarchism 4 0",
        "en Albedo 9 0",
        "en.m Anarchism 3 0",
        "en Special:Search 900 0",
        "de Anarchism 99 0",
        "en Alabama 2 0",
        "en Achilles 7 0",
        "en A_very_long_" + "x" * 300 + " 50 0",
        "en !!! 80 0",
        "en Ant 6 0",
    ]
    paths = []
    for hour in (0, 1):
        path = directory / f"pageviews-20220101-{hour:02d}0000.gz"
        with gzip.open(path, "wt") as f:
            f.write("\n".join(lines) + "\n")
        paths.append(str(path))
    return tuple(paths)


@pytest.fixture(scope="module")
def sample() -> str:
    if not WIKIPEDIA_SAMPLE.is_file():
        pytest.skip(f"shared Wikipedia sample not found at {WIKIPEDIA_SAMPLE} (../shared/data is absent)")
    return str(WIKIPEDIA_SAMPLE)


@pytest.fixture(scope="module")
def scaled(sample: str, pageviews: tuple[str, ...]) -> MetadataBuildParams:
    return MetadataBuildParams(**SCALED, wikipedia_dumps=(sample,), pageview_files=pageviews)


@pytest.fixture(scope="module")
def built(tmp_path_factory, wordnet, scaled: MetadataBuildParams) -> Artifact:
    """The metadata artifact of the scaled build, made by the stage."""
    return run(ArtifactStore(tmp_path_factory.mktemp("root")), METADATA_BUILD, scaled)


def test_per_source_counts_dedup_and_sources(built: Artifact) -> None:
    stats = built.stats
    entries, sources = built.read_json(ENTRIES), built.read_json(SOURCES_FILE)
    assert built.stage == "metadata" and built.files() == [ENTRIES, SOURCES_FILE]
    # exact for the pinned mwparserfromhell: 86,654 + 1,683 + 3,492 + 2 entries
    assert stats["by_source"] == {"wordnet": 86_654, "unigram": 1_683, "bigram": 3_492, "title": 2}
    assert stats["also_in"] == {"unigram": 1_725, "bigram": 122, "title": 2}
    # titles over 5 views: Albedo 18, Achilles 14, Anarchism 14 (desktop + mobile), Ant 12; Alabama has 4;
    # Special: pages, other wikis, punctuation-only and over-long titles are dropped
    assert sources["Albedo"] == ["title"] and sources["Ant"] == ["title"]
    assert sources["Anarchism"] == ["unigram", "title"] and sources["Alabama"] == ["unigram"]
    assert sources["physical entity"] == ["wordnet"] and sources["The"] == ["unigram"]
    assert list(sources) == entries  # the sources file follows the entries' order
    assert len(entries) == len(set(entries)) == stats["entries"] == stats["distinct"]
    assert stats["duplicated_entries"] == 0
    assert all(len(e) <= 256 and e == e.strip() for e in entries)
    assert stats["dropped"]["too_long"] == 1 and stats["dropped"]["empty_or_punctuation"] == 1


def test_order_follows_the_paper_and_builds_are_deterministic(built: Artifact, scaled: MetadataBuildParams) -> None:
    sources = built.read_json(SOURCES_FILE)
    firsts = [s[0] for s in sources.values()]
    order = ["wordnet", "unigram", "bigram", "title"]
    assert [order.index(f) for f in firsts] == sorted(order.index(f) for f in firsts)
    again = build_metadata(scaled)  # the library call without the stage: the same list
    assert again.entries == built.read_json(ENTRIES) and again.sources == sources
    rerun = run(built.store, METADATA_BUILD, scaled)
    assert rerun.cache_hit and rerun.version == built.version and rerun.manifest == built.manifest
    # the file locations are not part of the version, their content is: the inputs are fingerprinted
    assert built.manifest["external"]["dumps"][0]["bytes"] == WIKIPEDIA_SAMPLE.stat().st_size


def test_budget_is_enforced_with_titles_filling_the_rest(wordnet, pageviews: tuple[str, ...]) -> None:
    params = MetadataBuildParams(
        sources=("wordnet", "title"), budget=86_656, min_title_views=5, pageview_files=pageviews
    )
    result = build_metadata(params)
    assert len(result.entries) == 86_656
    assert result.entries[-2:] == ["Albedo", "Achilles"]  # most viewed first (18, 14), ties alphabetical
    assert result.stats()["dropped"]["over_budget"] == 2


def test_bad_parameters_and_missing_inputs_are_refused_before_writing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    with pytest.raises(CurationError, match=r"parameter sources\[1\] must be one of wordnet, unigram, bigram, title"):
        run(store, METADATA_BUILD, MetadataBuildParams(sources=("wordnet", "books")))
    with pytest.raises(CurationError, match="parameter sources needs at least 1 item"):
        P.check(MetadataBuildParams(sources=()))
    with pytest.raises(CurationError, match="parameter budget must be >= 1, got 0"):
        run(store, METADATA_BUILD, MetadataBuildParams(budget=0))
    with pytest.raises(CurationError, match="the unigram and bigram sources need wikipedia_dumps"):
        run(store, METADATA_BUILD, MetadataBuildParams(sources=("unigram",)))
    with pytest.raises(CurationError, match="the title source needs pageview_files"):
        build_metadata(MetadataBuildParams(sources=("title",)))
    with pytest.raises(CurationError, match="missing.xml.bz2 does not exist"):
        missing = (str(tmp_path / "missing.xml.bz2"),)
        run(store, METADATA_BUILD, MetadataBuildParams(sources=("unigram",), wikipedia_dumps=missing))
    assert not (tmp_path / "root").exists()


def test_command_line_build_and_stats(tmp_path: Path, wordnet, sample: str, pageviews: tuple[str, ...], capsys) -> None:
    root = tmp_path / "root"
    args = [
        "metadata",
        "build",
        "--root",
        str(root),
        "--wikipedia-dumps",
        sample,
        "--pageview-files",
        *pageviews,
        "--min-unigram-count",
        "20",
        "--min-pmi",
        "12",
        "--min-bigram-count",
        "2",
        "--min-title-views",
        "5",
        "--workers",
        "0",
    ]
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("metadata ") and " (built): 91,831 entries " in line
    (artifact,) = ArtifactStore(root).list("metadata")
    entries, sources = artifact.read_json(ENTRIES), artifact.read_json(SOURCES_FILE)
    assert entries[:3] == ["0", "1", "2"] and list(sources) == entries
    assert artifact.params["min_pmi"] == 12.0 and artifact.params["pageview_files"] == list(pageviews)
    assert main(["metadata", "stats", "--root", str(root), artifact.version]) == 0
    assert json.loads(capsys.readouterr().out)["by_source"]["wordnet"] == 86_654
    assert main(args) == 0 and " (cache hit): " in capsys.readouterr().out

    fresh = tmp_path / "fresh"
    assert main(["metadata", "build", "--root", str(fresh), "--sources", "wordnet", "books"]) == 1
    assert "metaclip: error: parameter sources[1] must be one of" in capsys.readouterr().err
    assert main(["metadata", "build", "--root", str(fresh), "--sources", "wordnet", "title"]) == 1
    assert "the title source needs pageview_files" in capsys.readouterr().err
    assert not fresh.exists()


def test_importing_an_existing_list_reports_and_stores_it(tmp_path: Path, capsys) -> None:
    root = tmp_path / "root"
    listed = tmp_path / "metadata.json"
    listed.write_text(json.dumps(["cat", "dog", "cat", "black cat"]))
    assert main(["metadata", "import", "--root", str(root), str(listed)]) == 0
    line = capsys.readouterr().out
    assert " (built): 4 entries (1 duplicated) " in line
    (artifact,) = ArtifactStore(root).list("metadata")
    assert artifact.stats == {"entries": 4, "distinct": 3, "duplicated_entries": 1}
    stored = root / "artifacts" / "metadata" / artifact.version / "entries.json"
    assert json.loads(stored.read_text()) == ["cat", "dog", "cat", "black cat"]
    assert run(ArtifactStore(root), METADATA_IMPORT, MetadataImportParams(str(listed))).cache_hit

    for content, message in (
        ({"not": "a list"}, "holds a JSON dict, not a list of strings"),
        ([], "holds no entries"),
        (["cat", "dog", " "], "entry 2 is blank (' '); a blank entry would match every text"),
        (["cat", ""], "entry 1 is blank"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(content))
        assert main(["metadata", "import", "--root", str(tmp_path / "other"), str(bad)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("metaclip: error: metadata file ") and message in err and "\n" not in err
    written = [p for p in (tmp_path / "other").rglob("*") if p.is_file() or len(p.relative_to(tmp_path).parts) > 3]
    assert written == []  # no artifact, no temporary folder
