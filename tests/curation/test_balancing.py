"""Balancing: t and tail ratios, sampling probabilities, the counter-based keep rule, online balancing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.shards import MATCHED_SCHEMA
from metaclip_tasks.curation.balancing import (
    FAR,
    OnlineBalancer,
    achievable_tail_ratios,
    balance_shard,
    entry_probabilities,
    epoch_seed,
    keep_mask,
    keep_probabilities,
    resolve_t,
    t_for_tail_ratio,
    tail_ratio,
    tail_ratio_warning,
    uid_keys,
    uniform_draws,
)
from metaclip_tasks.ingest.uids import url_uid

COUNTS = st.lists(st.integers(0, 50), min_size=1, max_size=30).filter(any)
RATIOS = st.floats(0.001, 0.999)


def slow_tail_ratio(counts: list[int], t: int) -> float:
    return sum(c for c in counts if c < t) / sum(counts)


@given(COUNTS, st.integers(1, 60))
def test_tail_ratio_definition(counts: list[int], t: int) -> None:
    assert tail_ratio(np.array(counts), t) == pytest.approx(slow_tail_ratio(counts, t), abs=1e-12)


@given(COUNTS, RATIOS)
def test_t_for_tail_ratio_is_the_closest_smallest_t(counts: list[int], p: float) -> None:
    t = t_for_tail_ratio(np.array(counts), p)
    distances = {s: abs(slow_tail_ratio(counts, s) - p) for s in range(1, max(counts) + 3)}
    best = min(distances.values())
    assert t == min(s for s, d in distances.items() if d <= best + 1e-12)
    assert t == 1 or t - 1 in counts


@pytest.mark.parametrize(
    ("counts", "p", "message"),
    [
        ([1, 2], 0.0, r"in \(0, 1\), got 0.0"),
        ([1, 2], 1.0, r"in \(0, 1\), got 1.0"),
        ([1, 2], float("nan"), r"in \(0, 1\)"),
        ([0, 0], 0.5, "all zero"),
        ([], 0.5, "non-empty"),
    ],
)
def test_t_for_tail_ratio_errors(counts: list[int], p: float, message: str) -> None:
    with pytest.raises(CurationError, match=message):
        t_for_tail_ratio(np.array(counts, dtype=np.uint64), p)


@given(COUNTS)
def test_achievable_tail_ratios_are_every_ratio_a_t_gives(counts: list[int]) -> None:
    ts, ratios = achievable_tail_ratios(np.array(counts))
    assert ts[0] == 1 and ratios[0] == 0 and ratios[-1] == 1 and list(ts) == sorted(set(ts))
    assert set(ratios.tolist()) == {slow_tail_ratio(counts, t) for t in range(1, max(counts) + 3)}
    assert [tail_ratio(np.array(counts), int(t)) for t in ts] == pytest.approx(ratios.tolist())


# 10 matches: t=1 gives 0 (every entry in the head), t=2 0.2, t=3 0.4, t=7 1.0 (every entry in the tail)
STEPS = np.array([0, 1, 1, 2, 6])


@pytest.mark.parametrize(
    ("p", "message"),
    [
        (0.06, "target tail ratio 0.06 is not reachable on this pool: t=1 gives 0.0000, t=2 gives 0.2000; using t=1"),
        (0.3, "target tail ratio 0.3 is not reachable on this pool: t=2 gives 0.2000, t=3 gives 0.4000; using t=2"),
        (0.9, "target tail ratio 0.9 is not reachable on this pool: t=3 gives 0.4000, t=7 gives 1.0000; using t=7"),
        (0.2, None),  # exact
        (0.45, None),  # t=3 gives 0.4: within FAR * 0.45
        (0.55, "t=3 gives 0.4000, t=7 gives 1.0000; using t=3"),  # 0.15 off is more than FAR * 0.55
    ],
)
def test_an_unreachable_target_is_warned_of_with_the_two_nearest_ratios(p: float, message: str | None) -> None:
    warning = tail_ratio_warning(STEPS, p)
    if message is None:
        assert warning is None
    else:
        assert warning is not None and warning.endswith(message) and f"target tail ratio {p:g} " in warning
    assert FAR == 0.25


def test_a_given_t_at_an_extreme_is_warned_of_even_near_the_target() -> None:
    assert "using t=1" in tail_ratio_warning(STEPS, 0.01, 1)  # nothing in the tail
    assert "using t=7" in tail_ratio_warning(STEPS, 0.95, 7)  # everything in the tail, though 1.0 is near 0.95
    assert tail_ratio_warning(STEPS, 0.4, 3) is None


def test_resolve_t_needs_exactly_one() -> None:
    with pytest.raises(CurationError, match="exactly one"):
        resolve_t(np.array([1]), 3, 0.5)
    with pytest.raises(CurationError, match="exactly one"):
        resolve_t(np.array([1]))
    with pytest.raises(CurationError, match="t must be an integer >= 1, got 0"):
        resolve_t(np.array([1]), 0)


def test_entry_probabilities() -> None:
    probs = entry_probabilities(np.array([0, 1, 10, 20, 40], np.uint64), 20)
    assert probs.tolist() == [1.0, 1.0, 1.0, 1.0, 0.5]


def test_uniform_draws_are_uniform_and_keyed() -> None:
    keys = uid_keys([url_uid(f"u{i}") for i in range(200_000)])
    u = uniform_draws(keys, np.zeros(len(keys), np.int64), seed=7)
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 19_000
    v = uniform_draws(keys, np.ones(len(keys), np.int64), seed=7)
    assert abs(np.corrcoef(u, v)[0, 1]) < 0.01  # other entry, independent draw
    assert not np.array_equal(u, uniform_draws(keys, np.zeros(len(keys), np.int64), seed=8))


def slow_keep(uids: list[str], lists: list[list[int]], probs: np.ndarray, seed: int) -> list[bool]:
    """Algorithm 1, pair by pair: kept when some entry's own draw falls under its probability."""
    out = []
    for uid, ids in zip(uids, lists):
        key = uid_keys([uid])
        out.append(any(uniform_draws(key, np.array([e]), seed)[0] < probs[e] for e in ids))
    return out


PAIRS = st.lists(
    st.tuples(st.text(min_size=1, max_size=8), st.lists(st.integers(0, 9), max_size=4, unique=True)),
    max_size=25,
    unique_by=lambda p: p[0],
)


@settings(max_examples=60, deadline=None)
@given(PAIRS, st.lists(st.floats(0, 1), min_size=10, max_size=10), st.integers(0, 2**64 - 1))
def test_keep_mask_is_algorithm_1(pairs, probs, seed) -> None:
    uids, lists = [u for u, _ in pairs], [ids for _, ids in pairs]
    probs = np.array(probs)
    assert keep_mask(uids, lists, probs, seed).tolist() == slow_keep(uids, lists, probs, seed)


@settings(max_examples=40, deadline=None)
@given(PAIRS, st.integers(0, 2**32), st.randoms(use_true_random=False))
def test_selection_ignores_sharding_and_order(pairs, seed, rnd) -> None:
    probs = np.linspace(0.05, 0.95, 10)
    whole = {u for (u, _), k in zip(pairs, keep_mask([u for u, _ in pairs], [i for _, i in pairs], probs, seed)) if k}
    shuffled = list(pairs)
    rnd.shuffle(shuffled)
    cut = rnd.randint(0, len(shuffled))
    kept = set()
    for shard in (shuffled[:cut], shuffled[cut:]):  # two workers, another order
        mask = keep_mask(pa.array([u for u, _ in shard], pa.string()), [i for _, i in shard], probs, seed)
        kept |= {u for (u, _), k in zip(shard, mask) if k}
    assert kept == whole


def _zipf_pool(n: int, entries: int, seed: int = 0) -> tuple[list[str], pa.ListArray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lists = [np.unique(rng.zipf(1.4, rng.integers(1, 6)) % entries) for _ in range(n)]
    uids = [url_uid(f"https://img.example/{i}.jpg") for i in range(n)]
    counts = np.bincount(np.concatenate(lists), minlength=entries).astype(np.uint64)
    return uids, pa.array([x.tolist() for x in lists], pa.list_(pa.int32())), counts


def test_smaller_t_gives_a_subset_and_the_size_matches_its_expectation() -> None:
    uids, lists, counts = _zipf_pool(100_000, 5_000)
    previous = None
    for t in (1, 5, 20, 100, 1000):
        probs = entry_probabilities(counts, t)
        mask = keep_mask(uids, lists, probs, seed=3)
        q = keep_probabilities(lists, probs)
        assert abs(mask.sum() - q.sum()) <= 4 * math.sqrt((q * (1 - q)).sum()), t
        if previous is not None:
            assert not (previous & ~mask).any(), f"t={t} lost pairs kept by a smaller t"
        previous = mask


def test_tail_pairs_are_always_kept_and_head_entries_capped_near_t() -> None:
    uids, lists, counts = _zipf_pool(50_000, 2_000)
    t = 50
    mask = keep_mask(uids, lists, entry_probabilities(counts, t), seed=0)
    offsets = lists.offsets.to_numpy()
    values = lists.values.to_numpy()
    tail = counts[values] < t
    pair = np.repeat(np.arange(len(uids)), np.diff(offsets))
    assert mask[pair[tail]].all()
    kept = np.bincount(values[mask[pair]], minlength=len(counts))
    head = counts > 10 * t
    assert head.sum() > 5 and np.all(kept[head] >= t * 0.5)


def test_keep_mask_errors() -> None:
    with pytest.raises(CurationError, match="2 uids but 1 lists"):
        keep_mask(["a", "b"], [[0]], np.ones(1), 0)
    with pytest.raises(CurationError, match="metadata and counts disagree"):
        keep_mask(["a"], [[5]], np.ones(1), 0)
    with pytest.raises(CurationError, match="seed must be an integer"):
        keep_mask(["a"], [[0]], np.ones(1), -1)
    with pytest.raises(CurationError, match="null uid"):
        keep_mask(pa.array(["a", None]), [[0], [0]], np.ones(1), 0)


def test_online_balancer_redraws_the_head_each_epoch() -> None:
    uids, lists, counts = _zipf_pool(20_000, 1_000)
    table = pa.table({"uid": uids, "matched_entry_ids": lists})
    probs = entry_probabilities(counts, 20)
    balancer = OnlineBalancer(lambda: table.to_batches(max_chunksize=3000), probs, seed=11)
    epochs = []
    for epoch in range(3):
        balancer.set_epoch(epoch)
        epochs.append({u for batch in balancer for u in batch.column("uid").to_pylist()})
    offline = {u for u, k in zip(uids, keep_mask(uids, lists, probs, 11)) if k}
    assert epochs[0] == offline
    assert epochs[1] != epochs[0] and epochs[2] != epochs[1]
    always = {u for u, ids in zip(uids, lists.to_pylist()) if any(counts[e] <= 20 for e in ids)}
    assert all(always <= e for e in epochs)
    assert epoch_seed(11, 0) == 11 and epoch_seed(11, 1) != epoch_seed(11, 2)


def test_balance_shard_is_the_keep_mask(tmp_path: Path) -> None:
    uids, lists, counts = _zipf_pool(5_000, 300)
    table = pa.table(
        {
            "uid": uids,
            "url": [f"u{i}" for i in range(len(uids))],
            "text": ["x"] * len(uids),
            "matched_entry_ids": lists,
        },
        schema=MATCHED_SCHEMA,
    )
    pq.write_table(table, tmp_path / "m.parquet")
    probs = entry_probabilities(counts, 10)
    result, written = balance_shard(
        str(tmp_path / "m.parquet"), str(tmp_path / "out.parquet"), probs, 5, batch_rows=700
    )
    mask = keep_mask(uids, lists, probs, 5)
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema == MATCHED_SCHEMA
    assert out.column("uid").to_pylist() == [u for u, k in zip(uids, mask) if k]
    assert result.kept == mask.sum() and result.pairs_in == 5_000
    assert result.expected_kept == pytest.approx(keep_probabilities(lists, probs).sum())
    assert written.bytes == (tmp_path / "out.parquet").stat().st_size


def test_balance_totals_do_not_depend_on_the_order_shards_are_added() -> None:
    """Dask adds shards in a tree whose shape depends on the workers: the stats must not."""
    from metaclip_tasks.curation.balancing import ShardBalance

    parts = [ShardBalance(1, 1, (x,), (x / 3,), np.zeros(2, np.uint64)) for x in (0.1, 1e16, 0.3, -1e16, 0.7, 1 / 3)]
    left = ((parts[0] + parts[1]) + (parts[2] + parts[3])) + (parts[4] + parts[5])
    right = parts[5] + (parts[4] + (parts[3] + (parts[2] + (parts[1] + parts[0]))))
    assert left.expected_kept == right.expected_kept and left.variance == right.variance
    assert left.expected_kept == math.fsum([0.1, 1e16, 0.3, -1e16, 0.7, 1 / 3])
