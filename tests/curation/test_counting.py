"""Counting: per-entry counts, sums across shards and snapshots, count files on any fsspec storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.curation.counting import add_counts, count_entries, load_counts, sum_counts, top_entries


def test_count_entries_from_lists_and_arrow() -> None:
    lists = [[0, 2], [], None, [2]]
    assert count_entries(lists, 4).tolist() == [1, 0, 2, 0]
    arrow = pa.array(lists, type=pa.list_(pa.int32()))
    assert count_entries(arrow, 4).dtype == np.uint64
    assert count_entries(arrow.slice(2), 4).tolist() == [0, 0, 1, 0]
    with pytest.raises(CurationError, match=r"entry ids must lie in \[0, 2\)"):
        count_entries([[3]], 2)


def test_sum_counts_and_length_mismatch() -> None:
    assert sum_counts([np.array([1, 2], np.uint64), np.array([3, 4])]).tolist() == [4, 6]
    with pytest.raises(CurationError, match="a.npy has 2 entries, b.npy has 3"):
        sum_counts([np.zeros(2), np.zeros(3)], names=["a.npy", "b.npy"])
    with pytest.raises(CurationError, match="no count vectors"):
        sum_counts([])


def test_add_sparse_counts_as_the_dense_sum() -> None:
    total = np.array([1, 0, 5, 0], np.uint64)
    add_counts(total, np.array([0, 3]), np.array([2, 7], np.uint64), "shard 0")
    assert total.tolist() == [3, 0, 5, 7]
    add_counts(total, np.zeros(0, np.int64), np.zeros(0, np.uint64), "an empty shard")
    assert total.tolist() == [3, 0, 5, 7]
    for entries, counts, message in [
        ([4], [1], r"shard 1: entry ids must lie in \[0, 4\)"),
        ([-1], [1], "must lie in"),
        ([0, 1], [1], "shard 1: 2 entry ids but 1 counts"),
        ([1, 2], [2**64 - 1, 2**64 - 1], "overflows 64 bits at shard 1 \\(entry 2\\)"),
    ]:
        with pytest.raises(CurationError, match=message):
            add_counts(total, np.array(entries), np.array(counts, np.uint64), "shard 1")
        assert total.tolist() == [3, 0, 5, 7]  # refused before anything is added


def test_count_files_and_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.array([5, 0, 7]))
    assert load_counts(str(tmp_path / "c.npy")).tolist() == [5, 0, 7]
    assert load_counts(str(tmp_path / "c.npy")).dtype == np.uint64
    assert load_counts(f"file://{tmp_path}/c.npy").tolist() == [5, 0, 7]  # any fsspec URI
    with pytest.raises(CurationError, match="count file .*nope.npy does not exist"):
        load_counts(str(tmp_path / "nope.npy"))
    (tmp_path / "bad.npy").write_text("hello")
    with pytest.raises(CurationError, match="bad.npy is not a numpy .npy array"):
        load_counts(str(tmp_path / "bad.npy"))
    np.save(tmp_path / "float.npy", np.array([[1.0]]))
    with pytest.raises(CurationError, match="not a vector of integers"):
        load_counts(str(tmp_path / "float.npy"))
    np.save(tmp_path / "neg.npy", np.array([1, -1]))
    with pytest.raises(CurationError, match="negative counts"):
        load_counts(str(tmp_path / "neg.npy"))


def test_counts_on_object_storage_read_through_fsspec() -> None:
    import fsspec

    with fsspec.open("memory://metaclip-test-counting/counts.npy", "wb") as f:
        np.save(f, np.array([3, 1, 4], np.uint64))
    try:
        assert load_counts("memory://metaclip-test-counting/counts.npy").tolist() == [3, 1, 4]
        with pytest.raises(CurationError, match="count file memory://metaclip-test-counting/nope.npy does not exist"):
            load_counts("memory://metaclip-test-counting/nope.npy")
    finally:
        fsspec.filesystem("memory").rm("/metaclip-test-counting", recursive=True)


def test_top_entries_ties_by_id() -> None:
    counts = np.array([3, 9, 3, 0], np.uint64)
    assert top_entries(counts, ["a", "b", "c", "d"], 3) == [("b", 9), ("a", 3), ("c", 3)]
