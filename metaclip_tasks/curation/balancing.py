"""Balancing by independent sampling (paper sections 3.4-3.5, Algorithm 1 part 2, and A.2).

Entry ``e`` with ``count[e]`` matches keeps each of its pairs with probability
``min(1, t / count[e])``; a pair is kept when any of its entries keeps it.  The uniform
draw for (pair, entry) is a counter-based hash of (seed, uid, entry id), not a stateful
generator, so the selection is the same whatever the sharding, order, workers or retries,
and for one seed the subset for a smaller ``t`` is contained in the subset for a larger one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from metaclip_tasks.core.arrays import binary_parts, list_parts, to_binary
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.files import Stored
from metaclip_tasks.core.hashing import GOLDEN, splitmix64
from metaclip_tasks.core.shards import MATCHED_SCHEMA, ShardReader, ShardWriter

_CHUNK_PAIRS = 1 << 17  # pairs per vectorised step: temporaries stay small and cache-resident
_U64 = np.uint64


def _check_counts(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.ndim != 1 or not len(counts):
        raise CurationError("entry counts must be a non-empty vector")
    return counts.astype(_U64, copy=False)


def _check_t(t: object) -> int:
    if not (isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t >= 1):
        raise CurationError(f"t must be an integer >= 1, got {t!r}")
    return int(t)


def _check_seed(seed: object) -> int:
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and 0 <= seed < 2**64):
        raise CurationError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


def tail_ratio(counts: np.ndarray, t: int) -> float:
    """Share of all matches held by tail entries (count < t): ``sum(counts[counts < t]) / sum(counts)``."""
    counts = _check_counts(counts)
    total = int(counts.sum())
    if total == 0:
        raise CurationError("entry counts are all zero: no tail ratio")
    return int(counts[counts < t].sum()) / total


def _check_ratio(p: object) -> float:
    if not (isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p < 1):
        raise CurationError(f"target tail ratio must be in (0, 1), got {p!r}")
    return float(p)


def achievable_tail_ratios(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (t, tail ratio) the counts can give, t ascending: t = 1 (ratio 0) and t = c + 1 for each
    distinct count c (the ratio only changes there); one sort and one cumulative sum, O(n log n)."""
    counts = _check_counts(counts)
    distinct, per_value = np.unique(counts, return_counts=True)
    mass = np.cumsum(distinct * per_value.astype(_U64))  # matches held by entries with count <= c
    total = int(mass[-1])
    if total == 0:
        raise CurationError("entry counts are all zero: no t reaches a tail ratio")
    ts = np.concatenate([[1], distinct.astype(np.int64) + 1])
    ratios = np.concatenate([[0.0], mass / total])
    keep = np.concatenate([[True], distinct > 0])  # count 0 gives t = 1 again
    return ts[keep], ratios[keep]


def t_for_tail_ratio(counts: np.ndarray, p: float) -> int:
    """The integer t >= 1 whose tail ratio is closest to ``p`` (ties: the smaller t)."""
    p = _check_ratio(p)
    ts, ratios = achievable_tail_ratios(counts)
    return int(ts[int(np.argmin(np.abs(ratios - p)))])  # the first minimum: the smallest t among ties


FAR = 0.25  # an achieved tail ratio further than this share of the target from it is "not reachable"


def tail_ratio_warning(counts: np.ndarray, p: float, t: int | None = None) -> str | None:
    """A warning when the target ``p`` is not reachable: t (by default the chosen one) is 1 or leaves
    every entry in the tail, or its tail ratio is off by more than ``FAR * p``; it names the nearest
    achievable (t, tail ratio) below and above the target. None when the target is reachable."""
    p = _check_ratio(p)
    ts, ratios = achievable_tail_ratios(counts)
    t = t_for_tail_ratio(counts, p) if t is None else _check_t(t)
    achieved = tail_ratio(counts, t)
    if t > 1 and achieved < 1 and abs(achieved - p) <= FAR * p:
        return None
    below = int(np.searchsorted(ratios, p, side="right")) - 1  # ratio <= p: t = 1 (ratio 0) at least
    above = min(below + 1, len(ts) - 1)  # ratio > p: the last one is 1.0 > p
    return (
        f"target tail ratio {p:g} is not reachable on this pool: t={ts[below]} gives {ratios[below]:.4f}, "
        f"t={ts[above]} gives {ratios[above]:.4f}; using t={t}"
    )


def entry_probabilities(counts: np.ndarray, t: int) -> np.ndarray:
    """Sampling probability per entry: ``min(1, t / count)``, and 1 for entries never matched."""
    t = _check_t(t)
    counts = _check_counts(counts).astype(np.float64)
    return np.where(counts > t, t / np.maximum(counts, 1.0), 1.0)


def uid_keys(uids: Sequence[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit key per uid, from its UTF-8 bytes and length.

    The bytes, zero-padded to a multiple of 8, are read as little-endian 64-bit words
    w_1..w_k and chained: ``h = splitmix64(h ^ w_i)`` from ``h = splitmix64(length)``.
    Uids of one length are hashed together, one word column at a time.
    """
    array = to_binary(uids)
    if array.null_count:
        raise CurationError(f"{array.null_count} pairs have a null uid")
    offsets, data = binary_parts(array)
    lengths = np.diff(offsets)
    keys = np.zeros(len(lengths), dtype=_U64)
    fixed = len(lengths) and lengths.min() == lengths.max()
    for length in [int(lengths[0])] if fixed else np.unique(lengths).tolist():
        width = -(-length // 8) * 8
        if fixed and length == width:
            rows: slice | np.ndarray = slice(None)  # the common case, fixed-width uids: a zero-copy view
            matrix = data[offsets[0] : offsets[-1]].reshape(len(lengths), length)
        else:
            rows = np.flatnonzero(lengths == length)
            matrix = np.zeros((rows.size, width), dtype=np.uint8)
            matrix[:, :length] = data[offsets[rows][:, None] + np.arange(length)]
        words = np.ascontiguousarray(matrix).view("<u8")
        h = np.full(words.shape[0], splitmix64(np.array([length], dtype=_U64))[0], dtype=_U64)
        for j in range(words.shape[1]):
            h = splitmix64(h ^ words[:, j])
        keys[rows] = h
    return keys


def _streams(uid_key: np.ndarray, seed: int) -> np.ndarray:
    """Each pair's random stream: its uid key mixed with the seed."""
    seed = _check_seed(seed)
    return splitmix64(np.asarray(uid_key, dtype=_U64) ^ splitmix64(np.array([seed], dtype=_U64)))


def _draws(stream: np.ndarray, entry_ids: np.ndarray) -> np.ndarray:
    bits = splitmix64(stream + (np.asarray(entry_ids).astype(_U64) + _U64(1)) * GOLDEN)
    return (bits >> _U64(11)).astype(np.float64) * 2.0**-53


def uniform_draws(uid_key: np.ndarray, entry_ids: np.ndarray, seed: int) -> np.ndarray:
    """``u(seed, uid, entry)`` in [0, 1): a counter-based hash, one per (pair, entry).

    ``splitmix64(splitmix64(uid_key ^ splitmix64(seed)) + (entry + 1) * golden)``, top 53 bits.
    """
    return _draws(_streams(uid_key, seed), entry_ids)


def keep_mask(
    uids: Sequence[str] | pa.Array | pa.ChunkedArray,
    matched_entry_ids: Sequence[Sequence[int]] | pa.Array | pa.ChunkedArray,
    probs: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Which pairs balancing keeps: pair i when some entry e of it has ``u(seed, uid_i, e) < probs[e]``."""
    offsets, entry_ids = list_parts(matched_entry_ids)
    n = len(offsets) - 1
    if len(uids) != n:
        raise CurationError(f"{len(uids)} uids but {n} lists of matched entry ids")
    if len(entry_ids) and (entry_ids.min() < 0 or entry_ids.max() >= len(probs)):
        raise CurationError(f"matched entry ids must lie in [0, {len(probs)}): metadata and counts disagree")
    streams = _streams(uid_keys(uids), seed)
    probs = np.asarray(probs, dtype=np.float64)
    kept = np.zeros(n, dtype=bool)
    for a in range(0, n, _CHUNK_PAIRS):
        b = min(a + _CHUNK_PAIRS, n)
        ids = entry_ids[offsets[a] : offsets[b]]
        pair = np.repeat(np.arange(a, b), np.diff(offsets[a : b + 1]))
        passed = _draws(streams[pair], ids) < probs[ids]
        kept[pair[passed]] = True
    return kept


def keep_probabilities(matched_entry_ids: Sequence[Sequence[int]] | pa.Array, probs: np.ndarray) -> np.ndarray:
    """Each pair's chance of being kept: ``1 - prod_e (1 - probs[e])``."""
    offsets, entry_ids = list_parts(matched_entry_ids)
    pair = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    with np.errstate(divide="ignore"):
        log_miss = np.bincount(pair, np.log1p(-np.asarray(probs)[entry_ids]), minlength=len(offsets) - 1)
    return -np.expm1(log_miss)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed online balancing uses in ``epoch``; epoch 0 uses ``seed`` itself (= offline)."""
    if epoch == 0:
        return seed
    return int(splitmix64(np.array([seed], dtype=_U64) ^ splitmix64(np.array([epoch], dtype=_U64)))[0])


class OnlineBalancer:
    """Balancing in the data loader (paper A.2): each epoch re-draws which head pairs to keep.

    ``batches`` returns a fresh iterable of record batches (with a uid and a matched entry
    ids column) each time it is called.  Like a PyTorch sampler, call :meth:`set_epoch`
    before iterating; tail pairs appear every epoch, head pairs in a different sample.
    """

    def __init__(
        self,
        batches: Callable[[], Iterable[pa.RecordBatch | pa.Table]],
        probs: np.ndarray,
        seed: int,
        *,
        uid_column: str = "uid",
        entries_column: str = "matched_entry_ids",
    ) -> None:
        self.batches, self.probs, self.seed = batches, np.asarray(probs), seed
        self.uid_column, self.entries_column = uid_column, entries_column
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[pa.RecordBatch | pa.Table]:
        seed = epoch_seed(self.seed, self.epoch)
        for batch in self.batches():
            mask = keep_mask(batch.column(self.uid_column), batch.column(self.entries_column), self.probs, seed)
            if mask.any():
                yield batch.filter(pa.array(mask))


@dataclass(frozen=True)
class ShardBalance:
    """Figures of balancing some pairs; adding two gives the figures of both (a tree sum on Dask).

    The float figures are kept as one partial sum per shard and totalled with ``math.fsum`` (exactly
    rounded), so the totals do not depend on the order in which workers add shards up."""

    pairs_in: int
    kept: int
    expected_parts: tuple[float, ...]
    variance_parts: tuple[float, ...]
    kept_counts: np.ndarray  # uint64[num entries]: kept pairs per entry

    @classmethod
    def zero(cls, num_entries: int) -> ShardBalance:
        return cls(0, 0, (), (), np.zeros(num_entries, dtype=_U64))

    @property
    def expected_kept(self) -> float:
        return math.fsum(self.expected_parts)

    @property
    def variance(self) -> float:
        return math.fsum(self.variance_parts)

    def __add__(self, other: ShardBalance) -> ShardBalance:
        return ShardBalance(
            self.pairs_in + other.pairs_in,
            self.kept + other.kept,
            self.expected_parts + other.expected_parts,
            self.variance_parts + other.variance_parts,
            self.kept_counts + other.kept_counts,
        )


def balance_summary(counts: np.ndarray, t: int, seed: int, total: ShardBalance) -> dict:
    """Stats of a balanced subset: its size against expectation, head and tail coverage."""
    low, high = expected_kept_bounds(total.expected_kept, total.variance)
    head, matched = counts >= t, counts > 0
    return {
        "t": t,
        "seed": seed,
        "tail_ratio": tail_ratio(counts, t),
        "pairs_in": int(total.pairs_in),
        "kept": int(total.kept),
        "expected_kept": float(total.expected_kept),
        "kept_sd": math.sqrt(total.variance),
        "kept_within_4_sd": bool(low <= total.kept <= high),
        "head_entries": int(head.sum()),
        "head_entries_kept_mean": float(total.kept_counts[head].mean()) if head.any() else None,
        "tail_entries": int((matched & ~head).sum()),
        "tail_entries_covered": int(((total.kept_counts > 0) & matched & ~head).sum()),
    }


def balance_shard(
    source: str | Stored,
    output_uri: str,
    probs: np.ndarray,
    seed: int,
    *,
    drop: np.ndarray | None = None,
    batch_rows: int = 262144,
) -> tuple[ShardBalance, Stored]:
    """Keep the balanced subset of one matched shard (uid, url, text, matched_entry_ids) in ``output_uri``;
    the rows ``drop`` (duplicates of earlier pairs of the pool) are neither kept nor counted."""
    pairs_in = kept = position = 0
    expected = variance = 0.0
    kept_counts = np.zeros(len(probs), dtype=_U64)
    with ShardReader(source, MATCHED_SCHEMA.names, string_columns=["uid"]) as reader:
        reader.require_int_lists("matched_entry_ids")
        with ShardWriter(output_uri, MATCHED_SCHEMA) as writer:
            for batch in reader.batches(batch_rows):
                if drop is not None and len(drop):
                    rows = np.ones(len(batch), dtype=bool)
                    rows[drop[(drop >= position) & (drop < position + len(batch))] - position] = False
                    position += len(batch)
                    batch = batch.filter(pa.array(rows))
                matched = batch.column("matched_entry_ids")
                ids = list_parts(matched)[1]
                if len(ids) and (ids.min() < 0 or ids.max() >= len(probs)):
                    raise CurationError(
                        f"input shard {reader.uri}: entry ids {ids.min()}..{ids.max()} do not fit the "
                        f"{len(probs):,} entries of the counts (matched against other metadata?)"
                    )
                mask = keep_mask(batch.column("uid"), matched, probs, seed)
                chosen = batch.filter(pa.array(mask))
                writer.write(chosen)
                q = keep_probabilities(matched, probs)
                pairs_in += len(batch)
                kept += int(mask.sum())
                expected += float(q.sum())
                variance += float((q * (1 - q)).sum())
                kept_counts += np.bincount(
                    list_parts(chosen.column("matched_entry_ids"))[1], minlength=len(probs)
                ).astype(_U64)
            written = writer.close()
    return ShardBalance(pairs_in, kept, (expected,), (variance,), kept_counts), written


def expected_kept_bounds(expected: float, variance: float, sigmas: float = 4.0) -> tuple[float, float]:
    """The interval ``expected +- sigmas * sd`` the kept count should fall in."""
    sd = math.sqrt(variance)
    return expected - sigmas * sd, expected + sigmas * sd


def resolve_t(counts: np.ndarray, t: int | None = None, target_tail_ratio: float | None = None) -> int:
    """``t`` as given, or the one whose tail ratio is closest to ``target_tail_ratio``: exactly one of them."""
    if (t is None) == (target_tail_ratio is None):
        raise CurationError("give exactly one of t and a target tail ratio")
    if t is not None:
        return _check_t(t)
    assert target_tail_ratio is not None  # exactly one of the two, checked above
    return t_for_tail_ratio(counts, target_tail_ratio)
