"""Per-entry match counts (paper section 3.3): per shard, summed over snapshots and pools."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa

from metaclip_tasks.core import files
from metaclip_tasks.core.arrays import list_parts
from metaclip_tasks.core.errors import CurationError

COUNTS_DTYPE = np.uint64
COUNTS = "counts.npy"  # the per-entry counts in a matched or pool_counts artifact


def count_entries(matched_entry_ids: Sequence[Sequence[int]] | pa.Array, num_entries: int) -> np.ndarray:
    """How many pairs matched each entry (each pair's ids are distinct)."""
    _, values = list_parts(matched_entry_ids)
    if len(values) and (values.min() < 0 or values.max() >= num_entries):
        raise CurationError(f"entry ids must lie in [0, {num_entries}); got {values.min()}..{values.max()}")
    return np.bincount(values, minlength=num_entries).astype(COUNTS_DTYPE)


def sum_counts(vectors: Iterable[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
    """The element-wise sum of count vectors; vectors of different lengths (metadata) are refused."""
    total: np.ndarray | None = None
    first = ""
    for i, vector in enumerate(vectors):
        name = names[i] if names else f"count vector {i}"
        vector = np.asarray(vector)
        if total is None:
            total, first = vector.astype(COUNTS_DTYPE, copy=True), name
        elif len(vector) != len(total):
            raise CurationError(
                f"count vectors differ in length: {first} has {len(total)} entries, {name} has {len(vector)} "
                "(counted against different metadata?)"
            )
        else:
            vector = vector.astype(COUNTS_DTYPE, copy=False)
            total += vector
            wrapped = total < vector  # an unsigned sum wrapped around exactly when it is below an addend
            if wrapped.any():
                raise CurationError(
                    f"the sum of the counts overflows 64 bits at {name} (entry {int(np.argmax(wrapped))})"
                )
    if total is None:
        raise CurationError("no count vectors to sum")
    return total


def add_counts(total: np.ndarray, entries: np.ndarray, counts: np.ndarray, name: str) -> None:
    """Add sparse counts (distinct ``entries``, their ``counts``) to a dense uint64 vector in place;
    an id outside it, or a sum past 64 bits, is refused before anything is added."""
    if len(entries) != len(counts):
        raise CurationError(f"{name}: {len(entries)} entry ids but {len(counts)} counts")
    if len(entries) and (entries.min() < 0 or entries.max() >= len(total)):
        raise CurationError(f"{name}: entry ids must lie in [0, {len(total)}) (counted against different metadata?)")
    counts = counts.astype(COUNTS_DTYPE, copy=False)
    added = total[entries] + counts
    wrapped = added < counts
    if wrapped.any():
        raise CurationError(
            f"the sum of the counts overflows 64 bits at {name} (entry {int(entries[np.argmax(wrapped)])})"
        )
    total[entries] = added


def load_counts(source: str | files.Stored) -> np.ndarray:
    """Read a count vector saved as ``.npy`` (any fsspec URI, or an artifact's verified file):
    one-dimensional, non-negative integers."""
    uri = files.location(source)
    with files.open_read(source, "count file") as f:
        try:
            counts = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise CurationError(f"count file {uri} is not a numpy .npy array: {e}") from e
    if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.integer):
        raise CurationError(f"count file {uri} holds {counts.dtype}{list(counts.shape)}, not a vector of integers")
    if np.issubdtype(counts.dtype, np.signedinteger) and len(counts) and counts.min() < 0:
        raise CurationError(f"count file {uri} has negative counts")
    return counts.astype(COUNTS_DTYPE, copy=False)


def top_entries(counts: np.ndarray, entries: Sequence[str], k: int = 20) -> list[tuple[str, int]]:
    """The ``k`` most matched entries with their counts (ties: lower entry id first), like Table 3."""
    counts = np.asarray(counts, dtype=COUNTS_DTYPE)
    order = np.lexsort((np.arange(len(counts)), np.iinfo(COUNTS_DTYPE).max - counts))[:k]
    return [(entries[i], int(counts[i])) for i in order]
