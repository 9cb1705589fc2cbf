"""Balancing speed on one core: the project's keep_mask against MetaCLIP's released loop.

Pairs: the real captions matched against the 500k-entry benchmark metadata, repeated with
fresh uids until there are ``--pairs`` of them (the real distribution of matched entries).
The reference is MetaCLIP's ``balance_sampling``: per pair, per entry, ``random.random() <
entry_prob[entry_id]``.  Figures are matched entries (pair, entry) per second.

    .venv/bin/python -m benchmarks.balancing [--pairs 2000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.metadata_500k import CAPTIONS, benchmark_metadata
from metaclip_tasks.curation.balancing import entry_probabilities, keep_mask, t_for_tail_ratio
from metaclip_tasks.curation.matching import Matcher
from metaclip_tasks.ingest.uids import url_uid


def reference_balance(matched: list[list[int]], entry_prob: np.ndarray) -> list[bool]:
    """MetaCLIP's released balancing loop (metaclip/balancing.py)."""
    kept = []
    for ids in matched:
        keep = False
        for entry_id in ids:
            if random.random() < entry_prob[entry_id]:
                keep = True
                break
        kept.append(keep)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2_000_000, help="pairs to balance")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    pa.set_cpu_count(1)

    entries = benchmark_metadata()
    table = pq.read_table(CAPTIONS, columns=["URL", "TEXT"])
    result = Matcher(entries).match_batch([t or "" for t in table.column("TEXT").to_pylist()])
    base = result.to_arrow().filter(pa.array(np.diff(result.offsets) > 0))
    copies = -(-args.pairs // len(base))
    lists = pa.concat_arrays([base] * copies).slice(0, args.pairs)
    uids = pa.array([url_uid(f"pair-{i}") for i in range(len(lists))])
    values = lists.flatten().to_numpy()
    counts = np.bincount(values, minlength=len(entries)).astype(np.uint64)
    t = t_for_tail_ratio(counts, 0.06)
    probs = entry_probabilities(counts, t)
    print(f"{len(lists):,} pairs, {len(values):,} matched entries, t={t} for a 6% tail")

    keep_mask(uids, lists, probs, 0)  # warm-up
    project = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        kept = keep_mask(uids, lists, probs, 0)
        project.append(len(values) / (time.perf_counter() - start))
    sample = lists.slice(0, 200_000)
    sample_lists, sample_values = sample.to_pylist(), len(sample.flatten())
    start = time.perf_counter()
    reference_balance(sample_lists, probs)
    reference = sample_values / (time.perf_counter() - start)
    speed = statistics.median(project)
    print(f"project keep_mask:   {speed / 1e6:8.2f} M matched entries/s  (kept {int(kept.sum()):,})")
    print(f"reference loop:      {reference / 1e6:8.2f} M matched entries/s  (on the first 200,000 pairs)")
    print(f"ratio:               {speed / reference:8.1f}x")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"entries_per_s": speed, "reference_entries_per_s": reference, "ratio": speed / reference}, out)


if __name__ == "__main__":
    main()
