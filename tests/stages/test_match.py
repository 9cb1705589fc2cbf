"""The matcher saved beside the metadata (a ``matcher`` artifact the match stage makes on first use):
byte-identical from run to run, leaving the metadata's and the match's versions alone, verified and
memory-mapped (never built) by match workers, copied once per host from a remote root."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.core.artifacts import Artifact, ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.stage import find, run
from metaclip_tasks.curation.matching import TABLES, Matcher
from metaclip_tasks.stages import (
    MATCHER_BUILD,
    METADATA_IMPORT,
    PAIRS_IMPORT,
    MatcherBuildParams,
    MetadataImportParams,
    PairsImportParams,
    plan,
)
from metaclip_tasks.stages import match as match_stages

ENTRIES = ["red", "car", "red car", "dog", "black dog", "東京", "red"]
TEXTS = ["a red car.", "black dog", "nothing", "東京 dog", None]
SAVED = [f"matcher/{name}.npy" for name in TABLES]


def _stores(tmp_path: Path, root: str) -> tuple[ArtifactStore, Artifact, Artifact]:
    """A store at ``root`` with the metadata ENTRIES and one shard of pairs of TEXTS."""
    (tmp_path / "m.json").write_text(json.dumps(ENTRIES, ensure_ascii=False))
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    urls = [f"https://x/{i}.jpg" for i in range(len(TEXTS))]
    pq.write_table(pa.table({"url": urls, "text": TEXTS}), raw / "p.parquet")
    store = ArtifactStore(root)
    meta = run(store, METADATA_IMPORT, MetadataImportParams(str(tmp_path / "m.json")))
    return store, meta, run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (str(raw),)))


def _matched_ids(matched: Artifact) -> list:
    with matched.open(matched.files(".parquet")[0]) as f:
        return pq.read_table(f).column("matched_entry_ids").to_pylist()


@pytest.fixture(autouse=True)
def _fresh_workers():
    match_stages.WORKER_MATCHERS.clear()
    yield
    match_stages.WORKER_MATCHERS.clear()


def _matcher(store: ArtifactStore, meta: Artifact) -> Artifact:
    return run(store, MATCHER_BUILD, MatcherBuildParams(), {"metadata": meta})


def test_the_match_stage_saves_the_matcher_beside_the_metadata_and_loads_it(tmp_path: Path, monkeypatch) -> None:
    store, meta, pairs = _stores(tmp_path, str(tmp_path / "root"))
    assert meta.files() == ["entries.json"]  # the metadata as it was: its version and every match's unchanged
    assert find(store, MATCHER_BUILD, MatcherBuildParams(), {"metadata": meta}) is None
    saved = _matcher(store, meta)
    assert set(saved.files()) == set(SAVED) and saved.input("metadata") == meta
    other_store = ArtifactStore(tmp_path / "other")
    other_meta = run(other_store, METADATA_IMPORT, MetadataImportParams(str(tmp_path / "m.json")))
    other = _matcher(other_store, other_meta)
    assert other.version == saved.version and other.manifest["files"] == saved.manifest["files"]  # byte-identical

    def refuse(*args, **kwargs):
        raise AssertionError("a match worker built its matcher")

    monkeypatch.setattr(Matcher, "__init__", refuse)
    matched = plan.match(store, pairs, meta, None)
    monkeypatch.undo()
    (key, matcher), *_ = match_stages.WORKER_MATCHERS.items()
    assert key == (meta.version, "tokens") and all(hasattr(a, "filename") for a in matcher.arrays().values())  # mapped
    assert _matched_ids(matched) == [ids for ids in Matcher(ENTRIES).match(TEXTS) if ids]


def test_a_match_makes_the_matcher_once(tmp_path: Path) -> None:
    store, meta, pairs = _stores(tmp_path, str(tmp_path / "root"))
    plan.match(store, pairs, meta, None)
    assert [a.version for a in store.list("matcher")] == [_matcher(store, meta).version]
    assert _matcher(store, meta).cache_hit


def test_a_changed_matcher_file_is_refused(tmp_path: Path) -> None:
    store, meta, pairs = _stores(tmp_path, str(tmp_path / "root"))
    path = Path(_matcher(store, meta).stored("matcher/edge_table.npy").uri)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CurationError, match=r"matcher/edge_table\.npy has sha256 .* changed after it was published"):
        plan.match(store, pairs, meta, None)


def test_the_other_backend_builds_from_the_entries(tmp_path: Path) -> None:
    _, meta, _ = _stores(tmp_path, str(tmp_path / "root"))
    matcher = match_stages.worker_matcher(meta.stored("entries.json"), (), meta.version, "ahocorasick")
    assert matcher.match(TEXTS) == Matcher(ENTRIES).match(TEXTS)


def test_a_remote_root_is_copied_once_per_host(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(match_stages.tempfile, "gettempdir", lambda: str(tmp_path / "host"))
    store, meta, pairs = _stores(tmp_path, "memory://saved-matcher-root")
    matched = plan.match(store, pairs, meta, None)
    cached = sorted(p.name for p in (tmp_path / "host" / "metaclip-matchers").iterdir())
    assert cached == sorted(
        f"{_matcher(store, meta).stored(name).sha256}.npy" for name in SAVED
    )  # verified copies only
    assert _matched_ids(matched) == [ids for ids in Matcher(ENTRIES).match(TEXTS) if ids]
