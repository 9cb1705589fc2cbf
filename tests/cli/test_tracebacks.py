"""Inputs that used to end in a Python traceback end in the one-line error, status 1, nothing written:
unusable roots, invalid UTF-8, a missing or garbage WordNet, a corrupt sources file, a lone
surrogate, a bad root URL, an unusable demo root."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

SNAPSHOT = ["--snapshot", "CC-MAIN-2023-06"]


def _written(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.is_dir() else set()


def _refused(cli, root: Path | str, args: list, message: str) -> None:
    before = _written(Path(root)) if isinstance(root, Path) else None
    verb = 2 if args[0] in ("metadata", "artifacts") and args[1] in ("build", "import", "stats") else 1
    status, out, err = cli(*args[:verb], "--root", root, *args[verb:])
    assert status == 1, (status, out, err)
    assert err.startswith("metaclip: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    if before is not None:
        assert _written(Path(root)) == before


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    pq.write_table(pa.table({"url": ["https://x/1.jpg"], "text": ["a red car"]}), tmp_path / "p.parquet")
    return tmp_path / "p.parquet"


def test_a_root_that_is_a_file_or_below_one(tmp_path: Path, cli, pairs_file: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    for root in (tmp_path / "file", tmp_path / "file" / "below"):
        _refused(
            cli,
            root,
            ["pairs", *SNAPSHOT, "--sources", pairs_file, "--workers", "0"],
            "cannot write under the artifact root",
        )
    assert (tmp_path / "file").read_text() == "not a folder"


def test_a_read_only_root(tmp_path: Path, cli, pairs_file: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes through any permission; the root-is-a-file case covers the same error path")
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    _refused(
        cli,
        root,
        ["pairs", *SNAPSHOT, "--sources", pairs_file, "--workers", "0"],
        "cannot write under the artifact root",
    )


def test_a_bad_root_url(tmp_path: Path, cli, pairs_file: Path) -> None:
    _refused(
        cli,
        "nosuchprotocol://bucket/root",
        ["pairs", *SNAPSHOT, "--sources", pairs_file],
        "cannot open nosuchprotocol://bucket/root",
    )


def test_invalid_utf8_in_a_text_column(tmp_path: Path, cli) -> None:
    texts = pa.array([b"a red car", b"bad \xff byte"], pa.binary()).view(pa.string())  # a string column that lies
    pq.write_table(pa.table({"url": ["https://x/1.jpg", "https://x/2.jpg"], "text": texts}), tmp_path / "bad.parquet")
    _refused(
        cli,
        tmp_path / "root",
        ["pairs", *SNAPSHOT, "--sources", tmp_path / "bad.parquet", "--workers", "0"],
        "bad.parquet: column 'text' is not valid UTF-8 text",
    )


def test_a_missing_or_garbage_wordnet(tmp_path: Path, cli) -> None:
    _refused(
        cli,
        tmp_path / "root",
        ["metadata", "build", "--sources", "wordnet", "--wordnet-dir", tmp_path / "none"],
        f"WordNet data file {tmp_path / 'none' / 'data.noun'} not found",
    )
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    for pos in ("noun", "verb", "adj", "adv"):
        (garbage / f"data.{pos}").write_text("this is not\nwordnet at all\n")
    _refused(
        cli,
        tmp_path / "root",
        ["metadata", "build", "--sources", "wordnet", "--wordnet-dir", garbage],
        f"WordNet data file {garbage / 'data.noun'}, line 1, is not a WordNet 3.0 synset line",
    )
    (garbage / "data.noun").write_bytes(b"00001740 03 n 01 entity 0 \xff\xfe\n")
    _refused(
        cli,
        tmp_path / "root",
        ["metadata", "build", "--sources", "wordnet", "--wordnet-dir", garbage],
        "is not UTF-8 text",
    )


def test_a_corrupt_sources_file_of_a_metadata_artifact(tmp_path: Path, cli) -> None:
    import gzip

    views = tmp_path / "pageviews-20240101-000000.gz"
    with gzip.open(views, "wt") as f:
        f.write("en Albedo 90 0\n")
    status, out, err = cli(
        "metadata", "build", "--root", tmp_path / "root", "--sources", "title", "--pageview-files", views
    )
    assert status == 0, err
    version = out.split()[1]
    sources = tmp_path / "root" / "artifacts" / "metadata" / version / "entries.sources.json"
    sources.write_text("{broken" + " " * (sources.stat().st_size - 7))  # same size: caught by the checksum
    _refused(cli, tmp_path / "root", ["metadata", "stats", version], "entries.sources.json has sha256")


def test_a_lone_surrogate_in_an_imported_list(tmp_path: Path, cli) -> None:
    (tmp_path / "m.json").write_text(json.dumps(["dog", "\ud800cat"]))  # JSON escapes: valid JSON, not valid text
    _refused(
        cli,
        tmp_path / "root",
        ["metadata", "import", tmp_path / "m.json"],
        "entry 1 ('\\ud800cat') holds a lone surrogate",
    )


def test_an_unusable_demo_root(tmp_path: Path, cli) -> None:
    (tmp_path / "file").write_text("x")
    _refused(cli, tmp_path / "file", ["demo", "--workers", "0"], "cannot write under the artifact root")
