"""Nothing lost: commands write only their own version folders, never what they did not write or
their inputs; killed runs leave nothing that blocks or pollutes a later run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_tasks.core.artifacts import HOST, MANIFEST, ArtifactStore
from metaclip_tasks.core.stage import run
from metaclip_tasks.stages import PAIRS_IMPORT, PairsImportParams, plan

METACLIP = Path(sys.executable).parent / "metaclip"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_commands_leave_what_they_did_not_write_and_their_inputs(small_chain, tmp_path: Path) -> None:
    """Inputs inside the root, a user's files beside the artifacts and inside a stage folder: all untouched."""
    inside = small_chain.root / "incoming"
    inside.mkdir()
    for p in small_chain.raw.iterdir():
        (inside / p.name).write_bytes(p.read_bytes())
    (small_chain.root / "notes.txt").write_text("mine")
    (small_chain.root / "artifacts" / "pairs" / "README").write_text("mine too")
    before = _tree(small_chain.root)
    env = {**os.environ, "METACLIP_ROOT": str(small_chain.root)}
    for args in (
        ["pairs", "--snapshot", "CC-MAIN-2023-14", "--sources", str(inside), "--workers", "0"],
        ["pairs", "--snapshot", "CC-MAIN-2023-06", "--sources", str(inside), "--workers", "0"],
        ["match", "CC-MAIN-2023-14", "--metadata-version", small_chain.meta.version, "--workers", "0"],
    ):
        result = subprocess.run(
            [str(METACLIP), *args], check=False, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
    after = _tree(small_chain.root)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing existing changed or went
    assert all(k.startswith("artifacts/") and k.split("/")[2] != "README" for k in set(after) - set(before))


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(small_chain) -> None:
    stage_dir = small_chain.root / "artifacts" / "pairs"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = stage_dir / f".0123456789abcdef.tmp-{HOST}-{dead.pid}-deadbeef"
    live = stage_dir / f".0123456789abcdef.tmp-{HOST}-{os.getpid()}-cafecafe"
    other_host = stage_dir / f".0123456789abcdef.tmp-otherhost-{dead.pid}-feedfeed"
    for folder in (stale, live, other_host):
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "part-00000.parquet").write_bytes(b"half")
    assert [a.version for a in small_chain.store.list("pairs")] == [small_chain.pairs.version]  # ignored by readers
    run(small_chain.store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-14", (str(small_chain.raw),)))  # any publish
    assert not stale.exists() and live.exists() and other_host.exists()


def test_a_version_folder_without_manifest_never_blocks_a_publish(small_chain) -> None:
    version = Path(small_chain.curated.uri)
    expected = _tree(version)
    (version / MANIFEST).unlink()  # e.g. a writer of an older release killed before its manifest
    (version / "junk.txt").write_text("left over")
    assert small_chain.store.get("curated", small_chain.curated.version) is None
    again = plan.balance(small_chain.store, small_chain.counts, 20, 0)
    assert not again.cache_hit and again.version == small_chain.curated.version
    assert {k: v for k, v in _tree(version).items() if k != MANIFEST} == {
        k: v for k, v in expected.items() if k != MANIFEST
    }


def test_a_killed_run_leaves_no_output_and_rerunning_is_byte_identical(
    tmp_path: Path, captions_table: pa.Table
) -> None:
    """SIGKILL at a random moment of an import: nothing half-written under a final name; the re-run
    publishes exactly what an uninterrupted run publishes."""
    source = tmp_path / "captions.parquet"
    big = pa.concat_tables([captions_table] * 20)
    pq.write_table(big, source, row_group_size=10_000)
    code = (
        "import sys; from metaclip_tasks.core.artifacts import ArtifactStore; from metaclip_tasks.stages import *; "
        "from metaclip_tasks.core.stage import run; "
        "run(ArtifactStore(sys.argv[1]), PAIRS_IMPORT, PairsImportParams('CC-MAIN-2023-06', (sys.argv[2],), rows_per_shard=20_000))"
    )
    root = tmp_path / "root"
    victim = subprocess.Popen([sys.executable, "-c", code, str(root), str(source)])
    deadline = time.monotonic() + 120
    while not list((root / "artifacts" / "pairs").glob(".*/data/*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    store = ArtifactStore(root)
    assert store.list() == []  # nothing looks complete
    rerun = run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (str(source),), rows_per_shard=20_000))
    clean = run(
        ArtifactStore(tmp_path / "clean"),
        PAIRS_IMPORT,
        PairsImportParams("CC-MAIN-2023-06", (str(source),), rows_per_shard=20_000),
    )
    assert rerun.version == clean.version and rerun.manifest["files"] == clean.manifest["files"]
    assert sorted(p.name for p in (root / "artifacts" / "pairs").iterdir()) == [rerun.version]  # the temporary is gone


def test_no_command_takes_an_output_path(cli, tmp_path: Path) -> None:
    """`-o` used to delete whatever was there (even the command's own input): commands now write only
    into the store's version folders, so there is no output path to get wrong."""
    target = tmp_path / "precious"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    for command in (
        ["pairs-import"],
        ["pairs"],
        ["match"],
        ["pool-counts"],
        ["count"],
        ["choose-t"],
        ["balance"],
        ["download"],
        ["train"],
        ["evaluate"],
        ["t-ablation"],
        ["demo"],
        ["metadata-build"],
        ["metadata", "build"],
    ):
        status, _, err = cli(*command, "-o", target)
        assert status == 2 and ("unrecognized arguments: -o" in err or "the following arguments are required" in err), (
            err
        )
    assert (target / "keep.txt").read_text() == "mine" and [p.name for p in target.iterdir()] == ["keep.txt"]
