"""One parquet shard of pairs matched (``match_shard``): the pairs that matched, written with their entry
ids, and the shard's per-entry counts, binned once (``Tally``) and returned sparse."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip_tasks.core.files import Stored
from metaclip_tasks.core.shards import MATCHED_SCHEMA, ShardReader, ShardWriter
from metaclip_tasks.curation.matching import Matcher


@dataclass(frozen=True)
class ShardMatch:
    """What matching one shard produced besides its parquet file; its counts sparse (a shard matches
    a few percent of the entries: 16x less to send and to add than a dense vector)."""

    entries: np.ndarray  # int64, ascending: the entries that some pair of the shard matched
    counts: np.ndarray  # uint64, aligned: how many pairs of the shard matched each of them
    num_entries: int  # the metadata's entries (the dense vector's length)
    stats: dict[str, int]  # pairs_in, pairs_matched, matches
    written: Stored  # the matched shard's URI, size and sha256


class Tally:
    """A shard's matches counted per entry.  Entry ids are held until there are as many as entries,
    then binned at once: a pass over every entry's count costs as much as binning that many ids,
    and per batch it took a tenth of a 31k-pair shard's time (five times what binning once does)."""

    def __init__(self, num_entries: int) -> None:
        self.num_entries = num_entries
        self._counts: np.ndarray | None = None  # int64, dense, once something is binned
        self._held: list[np.ndarray] = []
        self._held_ids = 0

    def add(self, ids: np.ndarray) -> None:
        self._held.append(ids)
        self._held_ids += len(ids)
        if self._held_ids >= self.num_entries:
            self._bin()

    def _bin(self) -> None:
        binned = np.bincount(np.concatenate(self._held or [np.zeros(0, np.int32)]), minlength=self.num_entries)
        self._counts = binned if self._counts is None else self._counts + binned
        self._held, self._held_ids = [], 0

    def sparse(self) -> tuple[np.ndarray, np.ndarray]:
        """The entries matched (int64, ascending) and how many times each (uint64)."""
        if self._held or self._counts is None:
            self._bin()
        counts = self._counts
        assert counts is not None  # binned just now
        entries = np.flatnonzero(counts)
        return entries, counts[entries].astype(np.uint64)


def match_shard(source: str | Stored, output_uri: str, matcher: Matcher, *, batch_rows: int = 65536) -> ShardMatch:
    """Match one parquet shard of pairs (``uid``, ``url``, ``text``); write the pairs that matched
    with their sorted entry ids (``MATCHED_SCHEMA``), in input order, to ``output_uri``."""
    tally = Tally(matcher.num_entries)
    stats = {"pairs_in": 0, "pairs_matched": 0, "matches": 0}
    with (
        ShardReader(source, ["uid", "url", "text"], string_columns=["uid", "url", "text"]) as reader,
        ShardWriter(output_uri, MATCHED_SCHEMA) as writer,
    ):
        for batch in reader.batches(batch_rows):
            found = matcher.match_arrow(batch.column("text"))
            keep = pc.greater(pc.list_value_length(found), 0)
            chosen = batch.filter(keep)
            writer.write(
                pa.Table.from_arrays(
                    [chosen.column("uid"), chosen.column("url"), chosen.column("text"), found.filter(keep)],
                    schema=MATCHED_SCHEMA,
                )
            )
            ids = found.values.to_numpy()
            tally.add(ids)
            stats["pairs_in"] += len(batch)
            stats["pairs_matched"] += len(chosen)
            stats["matches"] += len(ids)
        written = writer.close()
    return ShardMatch(*tally.sparse(), matcher.num_entries, stats, written)
