"""The matcher saved with the metadata artifact: listed in its manifest, byte-identical from run to
run, verified and memory-mapped (never built) by match workers, copied once per host from a remote root."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks import curation, pipeline
from metaclip_tasks.artifacts import Artifact, ArtifactStore
from metaclip_tasks.errors import CurationError
from metaclip_tasks.matching import TABLES, Matcher
from metaclip_tasks.pipeline import METADATA_IMPORT, PAIRS_IMPORT, MetadataImport, PairsImport
from metaclip_tasks.stage import run

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
    meta = run(store, METADATA_IMPORT, MetadataImport(str(tmp_path / "m.json")))
    return store, meta, run(store, PAIRS_IMPORT, PairsImport("CC-MAIN-2023-06", (str(raw),)))


def _matched_ids(matched: Artifact) -> list:
    with matched.open(matched.files(".parquet")[0]) as f:
        return pq.read_table(f).column("matched_entry_ids").to_pylist()


@pytest.fixture(autouse=True)
def _fresh_workers():
    pipeline._MATCHERS.clear()
    yield
    pipeline._MATCHERS.clear()


def test_the_metadata_artifact_holds_the_matcher_and_the_match_stage_loads_it(tmp_path: Path, monkeypatch) -> None:
    store, meta, pairs = _stores(tmp_path, str(tmp_path / "root"))
    assert set(SAVED) <= set(meta.files())
    other = run(ArtifactStore(tmp_path / "other"), METADATA_IMPORT, MetadataImport(str(tmp_path / "m.json")))
    assert other.version == meta.version and other.manifest["files"] == meta.manifest["files"]  # byte-identical

    def refuse(*args, **kwargs):
        raise AssertionError("a match worker built its matcher")

    monkeypatch.setattr(Matcher, "__init__", refuse)
    matched = curation.match(store, pairs, meta, None)
    monkeypatch.undo()
    (key, matcher), *_ = pipeline._MATCHERS.items()
    assert key == (meta.version, "tokens") and all(hasattr(a, "filename") for a in matcher.arrays().values())  # mapped
    assert _matched_ids(matched) == [ids for ids in Matcher(ENTRIES).match(TEXTS) if ids]


def test_a_changed_matcher_file_is_refused(tmp_path: Path) -> None:
    store, meta, pairs = _stores(tmp_path, str(tmp_path / "root"))
    path = Path(meta.stored("matcher/edge_table.npy").uri)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CurationError, match=r"matcher/edge_table\.npy has sha256 .* changed after it was published"):
        curation.match(store, pairs, meta, None)


def test_an_artifact_without_a_saved_matcher_builds_one(tmp_path: Path) -> None:
    _, meta, _ = _stores(tmp_path, str(tmp_path / "root"))
    files = [f for f in meta.manifest["files"] if not f["name"].startswith("matcher/")]
    older = dataclasses.replace(meta, manifest={**meta.manifest, "files": files})
    assert pipeline._saved_matcher(older) == ()
    matcher = pipeline._worker_matcher(older.stored("entries.json"), (), older.version, "tokens")
    assert matcher.match(TEXTS) == Matcher(ENTRIES).match(TEXTS)


def test_a_remote_root_is_copied_once_per_host(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline.tempfile, "gettempdir", lambda: str(tmp_path / "host"))
    store, meta, pairs = _stores(tmp_path, "memory://saved-matcher-root")
    matched = curation.match(store, pairs, meta, None)
    cached = sorted(p.name for p in (tmp_path / "host" / "metaclip-matchers").iterdir())
    assert cached == sorted(f"{meta.stored(name).sha256}.npy" for name in SAVED)  # verified copies only
    assert _matched_ids(matched) == [ids for ids in Matcher(ENTRIES).match(TEXTS) if ids]
