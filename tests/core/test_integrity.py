"""Integrity: every read of an artifact is checked against its manifest (size always, sha256 once per
process), on every cache hit too; broken manifests and lineage cycles are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.cli import main
from metaclip_tasks.core import files
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.stages import plan


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fresh_process_cache() -> None:
    files.VERIFIED.clear()  # a new process: checksums are checked again


def test_a_rewritten_matched_shard_is_refused_by_every_consumer(small_chain) -> None:
    """A matched shard rewritten as valid parquet with fewer rows: used silently before (4,765 pairs instead of 5,065)."""
    shard = small_chain.matched.data_files()[0]
    table = pq.read_table(shard.uri)
    pq.write_table(table.slice(0, len(table) - 30), shard.uri)
    _fresh_process_cache()
    before = _tree(small_chain.root)
    message = rf"matched {small_chain.matched.version}: file .*{shard.name} has [\d,]+ bytes, its manifest says"
    with pytest.raises(CurationError, match=message):  # balancing it on a new seed
        plan.balance(small_chain.store, small_chain.counts, 20, 1)
    with pytest.raises(CurationError, match=message):  # matching again: a cache hit is verified
        plan.match(small_chain.store, small_chain.pairs, small_chain.meta)
    assert _tree(small_chain.root) == before  # nothing written


def test_same_size_edits_are_caught_by_the_checksum(small_chain) -> None:
    counts = small_chain.counts.stored("counts.npy")
    vector = np.load(counts.uri)
    vector[0] += 50_000  # an edited counts.npy gave a pool of 67,279 matches instead of 17,279
    np.save(counts.uri, vector)
    _fresh_process_cache()
    with pytest.raises(
        CurationError,
        match=rf"pool_counts {small_chain.counts.version}: file .*counts.npy has sha256 .*"
        "its manifest says .*changed after it was published",
    ):
        plan.balance(small_chain.store, small_chain.counts, 7, 0)
    with pytest.raises(CurationError, match="counts.npy has sha256"):
        plan.pool_t(small_chain.counts, None, 0.5)


def test_a_missing_file_is_named(small_chain) -> None:
    Path(small_chain.curated.data_files()[0].uri).unlink()
    with pytest.raises(CurationError, match=r"curated .*: file .*part-00000.parquet is missing"):
        plan.balance(small_chain.store, small_chain.counts, 20, 0)  # the cache hit


def test_artifacts_verify_command(small_chain, capsys) -> None:
    root = str(small_chain.root)
    assert main(["artifacts", "--root", root, "verify"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok      ") == 6 and "FAILED" not in out  # pairs, metadata, matcher, matched, pool_counts, curated
    assert main(["artifacts", "--root", root, "verify", "matched", small_chain.matched.version]) == 0
    capsys.readouterr()
    shard = Path(small_chain.curated.data_files()[0].uri)
    shard.write_bytes(shard.read_bytes()[:-1] + b"X")  # same size, other bytes
    _fresh_process_cache()
    assert main(["artifacts", "--root", root, "verify"]) == 1
    captured = capsys.readouterr()
    assert f"FAILED  curated {small_chain.curated.version}: file {shard} has sha256" in captured.out
    assert captured.out.count("ok      ") == 5
    assert captured.err.strip() == "metaclip: error: 1 of 6 artifacts failed verification (see above)"


@pytest.mark.parametrize("content", [b"", b"{not json", b"[]", b'{"params": {}}'])
def test_a_broken_manifest_is_reported_not_fatal(small_chain, capsys, content: bytes) -> None:
    manifest = Path(small_chain.counts.uri) / "manifest.json"
    manifest.write_bytes(content)
    root = str(small_chain.root)
    assert main(["artifacts", "--root", root, "list"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 5  # the other artifacts are listed
    assert captured.err.startswith(f"metaclip: warning: pool_counts {small_chain.counts.version}: manifest.json ")
    assert main(["artifacts", "--root", root, "verify"]) == 1
    captured = capsys.readouterr()
    assert "BROKEN  pool_counts" in captured.out and "1 of 6 artifacts failed" in captured.err
    with pytest.raises(CurationError, match=f"pool_counts {small_chain.counts.version}: manifest.json"):
        small_chain.store.require("pool_counts", small_chain.counts.version)


def test_a_lineage_cycle_is_an_error_not_a_recursion_error(small_chain, capsys) -> None:
    manifest_path = Path(small_chain.pairs.uri) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["inputs"] = [{"role": "x", **small_chain.curated.ref}]  # pairs "made from" curated: a cycle
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CurationError, match="the lineage of curated .* has a cycle: curated .* -> pairs .* -> curated"):
        small_chain.store.lineage("curated", small_chain.curated.version)
    assert main(["artifacts", "--root", str(small_chain.root), "lineage", "curated", small_chain.curated.version]) == 1
    assert capsys.readouterr().err.startswith("metaclip: error: the lineage of curated")


def test_checksums_are_checked_once_per_process(small_chain, monkeypatch, tmp_path) -> None:
    calls = []
    real = files.describe
    monkeypatch.setattr(files, "describe", lambda fs, path: calls.append(path) or real(fs, path))
    monkeypatch.setenv("METACLIP_CHECKED_DIR", str(tmp_path / "new-host"))  # nothing checked on this host yet
    _fresh_process_cache()
    small_chain.matched.verify()
    first = len(calls)
    small_chain.matched.verify()
    plan.match(small_chain.store, small_chain.pairs, small_chain.meta)  # a cache hit
    assert first == len(small_chain.matched.manifest["files"]) and len(calls) == first


def test_reads_on_s3_are_verified_too(tmp_path: Path, s3_bucket: str) -> None:
    from metaclip_tasks.core.artifacts import ArtifactStore
    from metaclip_tasks.core.stage import run
    from metaclip_tasks.stages import METADATA_IMPORT, MetadataImportParams

    (tmp_path / "m.json").write_text('["red", "dog"]')
    store = ArtifactStore(f"{s3_bucket}/integrity")
    meta = run(store, METADATA_IMPORT, MetadataImportParams(str(tmp_path / "m.json")))
    fs, path = files.filesystem(meta.path("entries.json"))
    fs.pipe(path, b'["red", "cat"]')  # same size, other content
    _fresh_process_cache()
    with pytest.raises(CurationError, match=f"metadata {meta.version}: file s3://.*entries.json has sha256"):
        run(store, METADATA_IMPORT, MetadataImportParams(str(tmp_path / "m.json")))  # the cache hit
