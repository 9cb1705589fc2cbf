"""The metaclip command line, run as a real process: the stages end to end, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.balancing import entry_probabilities, keep_mask
from metaclip_tasks.matching import Matcher

SCRIPT = Path(sys.executable).parent / "metaclip"


def metaclip(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "metaclip_tasks.cli"]
    return subprocess.run(
        [*command, "--no-progress", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize("command", ["match", "count", "choose-t", "balance", "demo"])
def test_every_command_explains_itself(command: str) -> None:
    result = metaclip(command, "--help")
    assert result.returncode == 0 and "usage: metaclip" in result.stdout and len(result.stdout) > 300


def test_match_count_choose_balance_on_real_captions(
    tmp_path: Path, pair_shards: list[Path], metadata_file: Path, wordnet: list[str]
) -> None:
    matched = tmp_path / "matched"
    result = metaclip("match", "--metadata", metadata_file, "-o", matched, tmp_path / "pairs")
    assert result.returncode == 0, result.stderr
    assert "matched" in result.stdout
    names = sorted(p.name for p in matched.iterdir())
    assert names == [
        "counts.npy", "part-0.counts.npy", "part-0.parquet", "part-1.counts.npy", "part-1.parquet",
        "part-2.counts.npy", "part-2.parquet", "stats.json",
    ]  # fmt: skip
    texts = pa.concat_tables(pq.read_table(p) for p in pair_shards).column("text").to_pylist()
    direct = Matcher(wordnet).match_batch(texts)
    counts = np.load(matched / "counts.npy")
    assert counts.tolist() == np.bincount(direct.entry_ids, minlength=len(wordnet)).tolist()
    stats = json.loads((matched / "stats.json").read_text())
    assert stats["pairs_in"] == 10_000 and stats["pairs_matched"] == int((np.diff(direct.offsets) > 0).sum())

    total = tmp_path / "total.npy"
    result = metaclip("count", *sorted(matched.glob("part-*.counts.npy")), "-o", total, "--metadata", metadata_file)
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.load(total), counts)
    assert "in" in result.stdout.splitlines()[1]  # the top entry of these captions

    result = metaclip("choose-t", total, "--tail-ratio", "0.3", "--json")
    chosen = json.loads(result.stdout)
    assert result.returncode == 0 and chosen["t"] >= 1 and 0 <= chosen["tail_ratio"] <= 1
    result = metaclip("choose-t", matched, "--t", str(chosen["t"]))
    assert result.stdout.strip() == f"t={chosen['t']} tail_ratio={chosen['tail_ratio']:.6f}"

    curated = tmp_path / "curated"
    result = metaclip("balance", matched, "--counts", total, "--tail-ratio", "0.3", "--seed", "4", "-o", curated)
    assert result.returncode == 0, result.stderr
    kept = pa.concat_tables(pq.read_table(p) for p in sorted(curated.glob("*.parquet")))
    everything = pa.concat_tables(pq.read_table(p) for p in sorted(matched.glob("*.parquet")))
    mask = keep_mask(everything["uid"], everything["matched_entry_ids"], entry_probabilities(counts, chosen["t"]), 4)
    assert kept.column("uid").to_pylist() == everything.filter(pa.array(mask)).column("uid").to_pylist()
    stats = json.loads((curated / "stats.json").read_text())
    assert stats["t"] == chosen["t"] and stats["kept"] == kept.num_rows and stats["kept_within_4_sd"]

    before = {p.name: p.read_bytes() for p in curated.iterdir()}
    assert metaclip("balance", matched, "--counts", total, "--t", str(chosen["t"]), "--seed", "4", "-o", curated).returncode == 0
    after = {p.name: p.read_bytes() for p in curated.iterdir()}
    assert before.keys() == after.keys()
    assert all(before[n] == after[n] for n in before if n.endswith(".parquet"))  # re-running: same files


def _fails(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metaclip: error: ") and message in lines[0], result.stderr


def test_bad_input_is_one_line_nonzero_and_leaves_nothing(tmp_path: Path) -> None:
    pq.write_table(pa.table({"URL": ["u"], "TEXT": ["a cat"]}), tmp_path / "pairs.parquet")
    (tmp_path / "meta.json").write_text(json.dumps(["cat", "dog"]))
    out = tmp_path / "out"

    _fails(metaclip("match", "--metadata", tmp_path / "meta.json", "-o", out, tmp_path / "nope.parquet"),
           "nope.parquet does not exist")  # fmt: skip
    _fails(metaclip("match", "--metadata", tmp_path / "meta.json", "-o", out, tmp_path / "pairs.parquet"),
           "has no column 'url', 'text' (its columns: URL, TEXT)")  # fmt: skip
    (tmp_path / "dict.json").write_text('{"cat": 1}')
    _fails(metaclip("match", "--metadata", tmp_path / "dict.json", "-o", out, tmp_path / "pairs.parquet"),
           "holds a JSON dict, not a list of strings")  # fmt: skip
    (tmp_path / "ints.json").write_text('["cat", 3]')
    _fails(metaclip("match", "--metadata", tmp_path / "ints.json", "-o", out, tmp_path / "pairs.parquet"),
           "entry 1 is 3, not a string")  # fmt: skip
    (tmp_path / "broken.json").write_text('["cat", ')
    _fails(metaclip("match", "--metadata", tmp_path / "broken.json", "-o", out, tmp_path / "pairs.parquet"),
           "is not valid JSON")  # fmt: skip
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1garbagePAR1")
    _fails(metaclip("match", "--metadata", tmp_path / "meta.json", "-o", out, tmp_path / "corrupt.parquet"),
           "corrupt.parquet is not a readable parquet file")  # fmt: skip

    np.save(tmp_path / "c2.npy", np.array([1, 2], np.uint64))
    np.save(tmp_path / "c3.npy", np.array([1, 2, 3], np.uint64))
    _fails(metaclip("choose-t", tmp_path / "c2.npy", "--tail-ratio", "1.5"), "must be in (0, 1), got 1.5")
    _fails(metaclip("choose-t", tmp_path / "c2.npy", "--t", "0"), "t must be an integer >= 1, got 0")
    _fails(metaclip("count", tmp_path / "c2.npy", tmp_path / "c3.npy", "-o", tmp_path / "sum.npy"),
           "c2.npy has 2 entries")  # fmt: skip
    _fails(metaclip("balance", tmp_path / "pairs.parquet", "--counts", tmp_path / "c2.npy", "--t", "1", "-o", out),
           "has no column 'uid', 'url', 'text', 'matched_entry_ids'")  # fmt: skip
    _fails(metaclip("balance", tmp_path, "--counts", tmp_path / "c2.npy", "--tail-ratio", "0", "-o", out),
           "must be in (0, 1), got 0.0")  # fmt: skip

    assert not out.exists() and not (tmp_path / "sum.npy").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind

    usage = metaclip("choose-t", tmp_path / "c2.npy", "--t", "3", "--tail-ratio", "0.1")
    assert usage.returncode == 2 and "not allowed with argument" in usage.stderr
