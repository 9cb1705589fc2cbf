"""Versioned artifacts: versions from (stage, code, params, inputs), cache hits, atomic publishing, fsspec roots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaclip_tasks.artifacts import ArtifactStore, code_version
from metaclip_tasks.cli import main
from metaclip_tasks.errors import CurationError


def _writer(calls: list, text: str = "x"):
    def build(workdir: Path) -> dict:
        calls.append(workdir)
        (workdir / "data.txt").write_text(text)
        (workdir / "sub").mkdir()
        (workdir / "sub" / "more.txt").write_text(text * 2)
        return {"rows": 1}

    return build


def test_publish_then_cache_hit_then_new_version(tmp_path: Path) -> None:
    store, calls = ArtifactStore(tmp_path), []
    first = store.publish("stage", {"t": 1}, [], _writer(calls))
    assert not first.cache_hit and len(calls) == 1
    again = store.publish("stage", {"t": 1}, [], _writer(calls))
    assert again.cache_hit and again.version == first.version and len(calls) == 1
    other = store.publish("stage", {"t": 2}, [], _writer(calls))
    assert other.version != first.version and len(calls) == 2
    manifest = first.manifest
    assert manifest["params"] == {"t": 1} and manifest["code"] == code_version() and manifest["stats"] == {"rows": 1}
    assert [f["name"] for f in manifest["files"]] == ["data.txt", "sub/more.txt"]
    assert manifest["files"][0]["bytes"] == 1 and len(manifest["files"][0]["sha256"]) == 64
    assert sorted(p.name for p in (tmp_path / "artifacts" / "stage").iterdir()) == sorted([first.version, other.version])


def test_inputs_change_the_version_and_make_the_lineage(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    a = store.publish("a", {"n": 1}, [], _writer([]))
    b = store.publish("a", {"n": 2}, [], _writer([]))
    c1 = store.publish("c", {}, [a], _writer([]))
    c2 = store.publish("c", {}, [b], _writer([]))
    assert c1.version != c2.version
    assert store.lineage("c", c1.version)["inputs"][0] == {"stage": "a", "version": a.version, "params": {"n": 1}, "inputs": []}
    assert [x.version for x in store.list("c")] == [c1.version, c2.version]
    assert store.latest("a", n=2).version == b.version


def test_a_crash_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)

    def crash(workdir: Path) -> dict:
        (workdir / "half.parquet").write_text("partial")
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        store.publish("stage", {}, [], crash)
    assert store.list() == [] and list((tmp_path / "artifacts" / "stage").iterdir()) == []
    (tmp_path / "artifacts" / "stage" / "abc").mkdir()  # a directory without a manifest is ignored
    assert store.get("stage", "abc") is None
    with pytest.raises(CurationError, match="no complete stage artifact abc"):
        store.require("stage", "abc")


def test_fsspec_roots_publish_files_then_the_manifest() -> None:
    store = ArtifactStore("memory://metaclip-test-root")
    artifact = store.publish("stage", {"k": "v"}, [], _writer([], "hello"))
    assert artifact.uri == f"memory://metaclip-test-root/artifacts/stage/{artifact.version}"
    assert store.fs.cat(f"/metaclip-test-root/artifacts/stage/{artifact.version}/sub/more.txt") == b"hellohello"
    assert store.publish("stage", {"k": "v"}, [], _writer([])).cache_hit


def test_artifacts_command_line(tmp_path: Path, capsys) -> None:
    store = ArtifactStore(tmp_path)
    a = store.publish("metadata", {"source": "x"}, [], _writer([]))
    b = store.publish("matched", {"snapshot": "CC-MAIN-2023-06"}, [a], _writer([]))
    assert main(["artifacts", "--root", str(tmp_path), "list"]) == 0
    assert a.version in capsys.readouterr().out
    assert main(["artifacts", "--root", str(tmp_path), "show", "matched", b.version]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"] == [a.ref]
    assert main(["artifacts", "--root", str(tmp_path), "lineage", "matched", b.version]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(f"  metadata {a.version}")
    assert main(["artifacts", "--root", str(tmp_path), "show", "matched", "nope"]) == 1
