"""Inputs that used to succeed with a wrong result (exit 0) are errors naming the problem, with
nothing written: wrong column types, empty or blank metadata, overflowing counts, garbage page
views, count vectors that do not fit the metadata or the matched ids."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.shards import MATCHED_SCHEMA
from metaclip_tasks.curation.balancing import balance_shard
from metaclip_tasks.curation.counting import sum_counts

SNAPSHOT = ["--snapshot", "CC-MAIN-2023-06"]


def _written(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def _refused(cli, root: Path, args: list, message: str) -> None:
    before = _written(root)
    verb = 2 if args[0] == "metadata" else 1  # --root follows the (sub-)command that takes it
    status, _, err = cli(*args[:verb], "--root", root, *args[verb:])
    assert status == 1 and err.strip().count("\n") == 0 and err.startswith("metaclip: error: "), (status, err)
    assert message in err, err
    assert _written(root) == before


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (pa.array([b"a red car", b"dog"], pa.binary()), "column 'text' is binary, not string"),
        (pa.array([1, 2]), "column 'text' is int64, not string"),
        (pa.nulls(2), "column 'text' is null, not string"),
    ],
)
def test_text_columns_must_be_strings(tmp_path: Path, cli, column: pa.Array, message: str) -> None:
    """Binary texts are refused too: MetaCLIP's alt-texts are text, and a binary column is not
    known to be UTF-8 (convert it, checked, before importing)."""
    pq.write_table(pa.table({"url": ["https://x/1.jpg", "https://x/2.jpg"], "text": column}), tmp_path / "p.parquet")
    _refused(
        cli, tmp_path / "root", ["pairs", *SNAPSHOT, "--sources", tmp_path / "p.parquet", "--workers", "0"], message
    )


def test_urls_and_uids_must_be_strings(tmp_path: Path, cli) -> None:
    pq.write_table(pa.table({"url": [1, 2], "text": ["a", "b"]}), tmp_path / "urls.parquet")
    _refused(
        cli,
        tmp_path / "root",
        ["pairs", *SNAPSHOT, "--sources", tmp_path / "urls.parquet", "--workers", "0"],
        "column 'url' is int64, not string",
    )
    pq.write_table(pa.table({"url": ["https://x/1.jpg"], "text": ["a"], "id": [7]}), tmp_path / "ids.parquet")
    _refused(
        cli,
        tmp_path / "root",
        ["pairs", *SNAPSHOT, "--sources", tmp_path / "ids.parquet", "--uid-column", "id", "--workers", "0"],
        "column 'id' is int64, not string",
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "holds no entries"),
        ('["dog", ""]', "entry 1 is blank ('')"),
        ('["dog", "cat", " \\t "]', "entry 2 is blank (' \\t ')"),
    ],
)
def test_metadata_must_have_entries_none_blank(tmp_path: Path, cli, content: str, message: str) -> None:
    """An empty list matched nothing with exit 0; a blank entry matched 142 of 500 captions."""
    (tmp_path / "m.json").write_text(content)
    _refused(cli, tmp_path / "root", ["metadata", "import", tmp_path / "m.json"], message)


def test_a_metadata_build_with_no_entries_is_an_error(tmp_path: Path, cli) -> None:
    with gzip.open(tmp_path / "pageviews-20240101-000000.gz", "wt") as f:
        f.write("en Special:Search 900 0\nen Talk:Cat 80 0\n")  # well formed, but no title survives
    _refused(
        cli,
        tmp_path / "root",
        ["metadata", "build", "--sources", "title", "--pageview-files", tmp_path / "pageviews-20240101-000000.gz"],
        "the metadata from title has no entries",
    )


def test_garbage_page_views_are_an_error_and_malformed_lines_are_counted(tmp_path: Path, cli) -> None:
    garbage = tmp_path / "pageviews-20240101-010000.gz"
    with gzip.open(garbage, "wb") as f:
        f.write(b"\x00\x01 binary junk\nnot a page view line\n")
    _refused(
        cli,
        tmp_path / "root",
        ["metadata", "build", "--sources", "title", "--pageview-files", garbage],
        "none of its 2 lines is 'project title views bytes'",
    )
    mixed = tmp_path / "pageviews-20240101-020000.gz"
    with gzip.open(mixed, "wt") as f:
        f.write("en Albedo 90 0\nen Ant 80 0\nthis line is broken\n")
    status, _, err = cli(
        "metadata", "build", "--root", tmp_path / "root", "--sources", "title", "--pageview-files", mixed
    )
    assert status == 0, err
    from metaclip_tasks.core.artifacts import ArtifactStore

    (built,) = ArtifactStore(tmp_path / "root").list("metadata")
    assert built.stats["entries"] == 2 and built.stats["dropped"]["malformed_pageview_lines"] == 1


def test_summed_counts_never_wrap_around() -> None:
    big = np.array([2**63, 1], dtype=np.uint64)
    with pytest.raises(CurationError, match="the sum of the counts overflows 64 bits at snapshot b \\(entry 0\\)"):
        sum_counts([big, big], names=["snapshot a", "snapshot b"])
    assert sum_counts([big, np.array([2**63 - 1, 1], np.uint64)]).tolist() == [2**64 - 1, 2]


def test_top_must_not_be_negative(small_chain, cli, tmp_path: Path) -> None:
    pools = tmp_path / "pools.toml"
    pools.write_text('[small]\nsnapshots = ["CC-MAIN-2023-06"]\ntarget_tail_ratio = 0.3\n')
    status, _, err = cli(
        "count",
        "--root",
        small_chain.root,
        "--pool",
        "small",
        "--metadata-version",
        small_chain.meta.version,
        "--top",
        "-1",
        pools=pools,
    )
    assert status == 1 and err == "metaclip: error: --top must be >= 0, got -1\n"


def test_entry_ids_must_fit_the_counts(tmp_path: Path) -> None:
    """Matched ids of 86,654-entry metadata balanced against 4-entry counts: exit 0 before."""
    shard = tmp_path / "m.parquet"
    pq.write_table(
        pa.table(
            {"uid": ["a", "b"], "url": ["u1", "u2"], "text": ["t", "t"], "matched_entry_ids": [[3], [86_000]]},
            schema=MATCHED_SCHEMA,
        ),
        shard,
    )
    with pytest.raises(CurationError, match="entry ids 3..86000 do not fit the 4 entries of the counts"):
        balance_shard(str(shard), str(tmp_path / "out.parquet"), np.ones(4), 0)


@pytest.mark.parametrize("ids", [pa.array([["3"], ["1"]]), pa.array([None, None], pa.list_(pa.null()))])
def test_entry_ids_must_be_integers(tmp_path: Path, ids: pa.Array) -> None:
    shard = tmp_path / "m.parquet"
    pq.write_table(
        pa.table({"uid": ["a", "b"], "url": ["u1", "u2"], "text": ["t", "t"], "matched_entry_ids": ids}), shard
    )
    with pytest.raises(CurationError, match="column 'matched_entry_ids' is list<.*>, not a list of integer entry ids"):
        balance_shard(str(shard), str(tmp_path / "out.parquet"), np.ones(4), 0)


def test_counts_must_fit_the_metadata(small_chain, tmp_path: Path) -> None:
    """Counts of one metadata against another metadata's entries: refused before any work."""
    from metaclip_tasks.core.stage import run
    from metaclip_tasks.stages import METADATA_IMPORT, MetadataImportParams, plan

    (tmp_path / "other.json").write_text(json.dumps(["a", "b", "c", "d"]))
    other = run(small_chain.store, METADATA_IMPORT, MetadataImportParams(str(tmp_path / "other.json")))
    before = _written(small_chain.root)
    with pytest.raises(
        CurationError, match=f"matched against metadata {small_chain.meta.version}, not {other.version}"
    ):
        plan.count_pool(small_chain.store, small_chain.pool, other, [small_chain.matched])
    assert _written(small_chain.root) == before
