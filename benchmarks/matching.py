"""Matching speed on one core: the project's Matcher against MetaCLIP's released way.

The reference is how MetaCLIP matches: one pyahocorasick automaton over the spaced entries,
then, for each text, ``spacing()`` and ``automaton.iter()``, the ids collected in a set.
Both run in this process, on the same real captions and the same 500k-entry metadata
(WordNet names + words, word pairs and triples of the shared Wikipedia sample), and must
return the same matches.  Build time and the RSS of a fresh process holding the metadata
and one built matcher are measured too.

    .venv/bin/python -m benchmarks.matching [--rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import ahocorasick
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.metadata_500k import CAPTIONS, benchmark_metadata
from metaclip_tasks.matching import Matcher, spacing

_RSS_PROBE = """
import json, sys, time, gc, psutil
from metaclip_tasks.matching import Matcher
from benchmarks.matching import ReferenceMatcher
entries = json.load(open(sys.argv[1]))
start = time.perf_counter()
matcher = ReferenceMatcher(entries) if sys.argv[2] == "reference" else Matcher(entries, backend=sys.argv[2])
build = time.perf_counter() - start
gc.collect()
print(json.dumps({"rss_mb": psutil.Process().memory_info().rss / 2**20, "build_s": build}))
"""


class ReferenceMatcher:
    """MetaCLIP's released matcher: one automaton, one text at a time, ids in a set."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.automaton = ahocorasick.Automaton()
        for entry_id, entry in enumerate(entries):
            self.automaton.add_word(f" {entry} ", (entry_id, entry))
        self.automaton.make_automaton()

    def match(self, texts: Sequence[str]) -> list[list[int]]:
        out = []
        for text in texts:
            matched = set()
            for _end, (entry_id, _entry) in self.automaton.iter(spacing(text)):
                matched.add(entry_id)
            out.append(list(matched))
        return out


def _texts_per_second(match: Callable[[Sequence[str]], list], texts: Sequence[str]) -> float:
    gc.collect()
    start = time.perf_counter()
    result = match(texts)
    elapsed = time.perf_counter() - start
    del result
    return len(texts) / elapsed


def _probe(metadata_path: str, backend: str) -> dict:
    """Build one matcher in a fresh process; its RSS and build time."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, metadata_path, backend], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per matcher (median reported)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    pa.set_cpu_count(1)

    entries = benchmark_metadata()
    texts = [t or "" for t in pq.read_table(CAPTIONS, columns=["TEXT"]).column("TEXT").to_pylist()]
    print(f"metadata: {len(entries):,} entries; texts: {len(texts):,} real captions ({CAPTIONS.name})")

    matchers: dict[str, Callable[[Sequence[str]], list]] = {"reference": ReferenceMatcher(entries).match}
    for backend in ("tokens", "ahocorasick"):
        matchers[f"project ({backend})"] = Matcher(entries, backend=backend).match
    expected = [sorted(ids) for ids in matchers["reference"](texts)]
    for name, match in matchers.items():
        if name != "reference" and match(texts) != expected:
            raise SystemExit(f"{name} disagrees with the reference")
    matches = sum(map(len, expected))
    print(f"all matchers agree: {matches:,} matches, {sum(map(bool, expected)):,} texts with a match")

    speeds: dict[str, list[float]] = {name: [] for name in matchers}
    for _ in range(args.rounds):
        for name, match in matchers.items():
            speeds[name].append(_texts_per_second(match, texts))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(entries, f)
    try:
        probes = {name: _probe(f.name, name.removeprefix("project (").rstrip(")")) for name in matchers}
    finally:
        os.unlink(f.name)

    ref = statistics.median(speeds["reference"])
    figures = {}
    print(f"\n{'matcher':<24}{'texts/s':>12}{'ratio':>8}{'build s':>9}{'RSS MB':>8}")
    for name in matchers:
        tps = statistics.median(speeds[name])
        figures[name] = {"texts_per_s": tps, "ratio": tps / ref, **probes[name]}
        print(f"{name:<24}{tps:>12,.0f}{tps / ref:>7.2f}x{probes[name]['build_s']:>9.2f}{probes[name]['rss_mb']:>8.0f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
