"""``metaclip ingest``: WARC/WAT files or a crawl id to a pairs artifact and, with ``-o``, a parquet
dataset under a new directory; bad input refused with one line and nothing written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.dev.shared_data import WARC
from metaclip_tasks.ingest.export import MARKER

SAMPLES = [WARC / "warc_sample-0000.warc.gz", WARC / "warc_sample-0001.warc.gz"]


@pytest.fixture
def samples() -> list[Path]:
    if not all(p.is_file() for p in SAMPLES):
        pytest.skip(f"shared WARC samples not found at {WARC} (../shared/data is absent)")
    return SAMPLES


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_ingest_writes_an_artifact_and_a_dataset_and_reruns_identically(tmp_path, cli, samples):
    out = tmp_path / "out"
    status, stdout, err = cli(
        "ingest",
        "--root",
        tmp_path / "root",
        "--workers",
        0,
        "--snapshot",
        "CC-MAIN-2023-06",
        "--languages",
        "en",
        "-o",
        out,
        *samples,
    )
    assert status == 0, err
    assert "pairs of CC-MAIN-2023-06 from 2 files" in stdout
    (artifact,) = ArtifactStore(tmp_path / "root").list("pairs")
    table = pd.read_parquet(out)
    assert len(table) == artifact.stats["pairs"] > 0 and set(table["lang"]) == {"en"}
    assert list(table.columns) == ["uid", "url", "text", "page_url", "lang", "title"]
    first = _digests(out)
    status, _, err = cli(
        "ingest",
        "--root",
        tmp_path / "root",
        "--workers",
        0,
        "--snapshot",
        "CC-MAIN-2023-06",
        "--languages",
        "en",
        "-o",
        out,
        *samples,
    )
    assert status == 0, err
    assert _digests(out) == first and MARKER in first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left beside OUT
    status, _, err = cli(
        "ingest",
        "--root",
        tmp_path / "root",
        "--workers",
        0,
        "--snapshot",
        "CC-MAIN-2023-06",
        "--languages",
        "any",
        *samples,
    )
    assert status == 0, err
    assert len(ArtifactStore(tmp_path / "root").list("pairs")) == 2


def test_bad_ingest_commands_write_nothing(tmp_path, cli, samples):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.warc.gz").write_bytes(samples[0].read_bytes())
    cases = [
        ((*samples,), "give --snapshot: the crawl the files belong to"),
        (
            ("--snapshot", "CC-MAIN-2023-06", "-o", foreign, *samples),
            f"output {foreign} exists and was not written by metaclip",
        ),
        (("--snapshot", "CC-MAIN-2023-06", "-o", inputs, inputs / "a.warc.gz"), f"output {inputs} overlaps input"),
        (("--snapshot", "CC-MAIN-2023-06", "-o", tmp_path / "root" / "x", *samples), "overlaps the artifact root"),
        (("--snapshot", "CC-MAIN-2023-06", "--languages", "en,klingon", *samples), "unknown language code(s) klingon"),
        (("--snapshot", "CC-MAIN-2023-06", tmp_path / "missing.warc.gz"), "missing.warc.gz does not exist"),
        (("--snapshot", "CC-MAIN-2023-06", "--max-files", 0, *samples), "max_files"),
    ]
    for args, message in cases:
        status, _, err = cli("ingest", "--root", tmp_path / "root", "--workers", 0, *args)
        assert status == 1, (args, err)
        assert err.startswith("metaclip: error: ") and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "root").exists() or not ArtifactStore(tmp_path / "root").list()
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert [p.name for p in inputs.iterdir()] == ["a.warc.gz"]
