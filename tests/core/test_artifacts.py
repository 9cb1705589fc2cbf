"""Versioned artifacts: cache hits, atomic publishing, typed accessors, fsspec roots, the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from metaclip_tasks.cli import main
from metaclip_tasks.core.artifacts import MANIFEST, ArtifactStore, Output, version_for
from metaclip_tasks.core.errors import CurationError


def _writer(calls: list, text: str = "x"):
    def build(output: Output) -> dict:
        calls.append(output.uri)
        output.write_text("data.txt", text)
        with output.writer("sub/more.txt") as f:
            f.write((text * 2).encode())
        return {"rows": 1}

    return build


def _publish(store: ArtifactStore, stage: str, key: dict, build, inputs=()) -> object:
    header = {"params": key, "inputs": [a.ref for a in inputs]}
    return store.publish(
        stage, version_for({"stage": stage, "params": key, "inputs": [a.version for a in inputs]}), header, build
    )


def test_publish_then_cache_hit_then_new_version(tmp_path: Path) -> None:
    store, calls = ArtifactStore(tmp_path), []
    first = _publish(store, "stage", {"t": 1}, _writer(calls))
    assert not first.cache_hit and len(calls) == 1
    again = _publish(store, "stage", {"t": 1}, _writer(calls))
    assert again.cache_hit and again.version == first.version and len(calls) == 1
    other = _publish(store, "stage", {"t": 2}, _writer(calls))
    assert other.version != first.version and len(calls) == 2
    manifest = first.manifest
    assert manifest["params"] == {"t": 1} and manifest["stats"] == {"rows": 1}
    assert [f["name"] for f in manifest["files"]] == ["data.txt", "sub/more.txt"]
    described = manifest["files"][1]
    assert described["bytes"] == 2 and described["sha256"] == hashlib.sha256(b"xx").hexdigest()
    assert sorted(p.name for p in (tmp_path / "artifacts" / "stage").iterdir()) == sorted(
        [first.version, other.version]
    )
    assert first.files(".txt", under="sub") == ["sub/more.txt"]
    with first.open("sub/more.txt") as f:
        assert f.read() == b"xx"
    with pytest.raises(CurationError, match="has no file nope.txt"):
        first.open("nope.txt")


def test_inputs_change_the_version_and_make_the_lineage(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    a = _publish(store, "a", {"n": 1}, _writer([]))
    b = _publish(store, "a", {"n": 2}, _writer([]))
    c1 = _publish(store, "c", {}, _writer([]), [a])
    c2 = _publish(store, "c", {}, _writer([]), [b])
    assert c1.version != c2.version
    assert store.lineage("c", c1.version)["inputs"][0] == {
        "stage": "a",
        "version": a.version,
        "params": {"n": 1},
        "inputs": [],
    }
    assert [x.version for x in store.list("c")] == [c1.version, c2.version]
    assert store.latest("a", n=2).version == b.version
    assert c1.inputs("a") == [a] and c1.input("a").params == {"n": 1}


def test_a_crash_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)

    def crash(output: Output) -> dict:
        output.write_text("half.parquet", "partial")
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        _publish(store, "stage", {}, crash)
    assert store.list() == [] and list(tmp_path.iterdir()) == []  # not even the folders it made
    (tmp_path / "artifacts" / "stage" / "abc").mkdir(parents=True)  # a folder without a manifest is ignored
    assert store.get("stage", "abc") is None
    with pytest.raises(CurationError, match="no complete stage artifact abc"):
        store.require("stage", "abc")


def test_fsspec_roots_publish_files_then_the_manifest() -> None:
    store = ArtifactStore("memory://metaclip-test-root")
    artifact = _publish(store, "stage", {"k": "v"}, _writer([], "hello"))
    assert artifact.uri == f"memory://metaclip-test-root/artifacts/stage/{artifact.version}"
    assert store.fs.cat(f"/metaclip-test-root/artifacts/stage/{artifact.version}/sub/more.txt") == b"hellohello"
    assert store.fs.isfile(f"/metaclip-test-root/artifacts/stage/{artifact.version}/{MANIFEST}")
    assert _publish(store, "stage", {"k": "v"}, _writer([])).cache_hit


def test_a_manifest_is_read_whole_so_a_concurrent_twin_cannot_break_the_read(s3_bucket: str, monkeypatch) -> None:
    """Two tasks making the same version on an object store (the matcher, on first use) both write its
    manifest. The topology test once failed reading it: s3fs's file pins the object's ETag at open, and
    its read failed ("... and Etag ... no longer exists") when the twin's manifest replaced it in between.
    A manifest is now one whole GET, never an opened file; the twin's bytes are read as they are."""
    store = ArtifactStore(f"{s3_bucket}/twins")
    artifact = _publish(store, "stage", {"k": "v"}, _writer([], "hello"))
    opened = store.fs.open
    monkeypatch.setattr(
        store.fs,
        "open",
        lambda path, *a, **k: pytest.fail(f"opened {path}") if path.endswith(MANIFEST) else opened(path, *a, **k),
    )
    path = store.path("stage", artifact.version, MANIFEST)
    twin = json.loads(store.fs.cat_file(path)) | {"created": "2026-12-03T14:06:04.000000+00:00"}
    store.fs.pipe_file(path, json.dumps(twin).encode())
    again = store.get("stage", artifact.version)
    assert again.manifest["created"] == twin["created"] and again.manifest["files"] == artifact.manifest["files"]


def test_files_written_elsewhere_are_described_by_reading_them_back(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)

    def build(output: Output) -> dict:
        Path(output.uri, "data").mkdir()
        Path(output.uri, "data", "x.bin").write_bytes(b"abc")  # e.g. a tool's output, not through output.writer
        return {}

    artifact = _publish(store, "stage", {}, build)
    assert artifact.manifest["files"] == [
        {"name": "data/x.bin", "bytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}
    ]


def test_artifacts_command_line(tmp_path: Path, capsys) -> None:
    store = ArtifactStore(tmp_path)
    a = _publish(store, "metadata", {"source": "x"}, _writer([]))
    b = _publish(store, "matched", {"backend": "tokens"}, _writer([]), [a])
    assert main(["artifacts", "--root", str(tmp_path), "list"]) == 0
    assert a.version in capsys.readouterr().out
    assert main(["artifacts", "--root", str(tmp_path), "show", "matched", b.version]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"] == [a.ref]
    assert main(["artifacts", "--root", str(tmp_path), "lineage", "matched", b.version]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(f"  metadata {a.version}")
    assert main(["artifacts", "--root", str(tmp_path), "show", "matched", "nope"]) == 1
    assert capsys.readouterr().err.startswith("metaclip: error: no complete matched artifact nope")
