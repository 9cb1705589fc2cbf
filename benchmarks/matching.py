"""Matching speed on one core: the project's Matcher against MetaCLIP's released way.

The reference is how MetaCLIP matches: one pyahocorasick automaton over the spaced entries,
then, for each text, ``spacing()`` and ``automaton.iter()``, the ids collected in a set.
All run in this process, on the same texts (the shared real captions, then COCO val2017's
captions) and the same 500k-entry metadata (WordNet names + words, word pairs and triples of
the shared Wikipedia sample), and must return the same matches.  The token engine is timed
twice: ``Matcher.match`` (a list of str in, lists of ints out) and ``Matcher.match_arrow``
(an arrow column in, a ``list<int32>`` array out, as ``match_shard`` uses it).  Speeds are of
CPU time (``time.process_time``), so that other work on a shared core does not count.  Build (or load)
time and the RSS of a fresh process holding the metadata and one matcher are measured too;
"tokens (loaded)" memory-maps the saved arrays instead of building.

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
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.metadata_500k import CAPTIONS, benchmark_metadata
from metaclip_tasks.curation.matching import Matcher, spacing
from metaclip_tasks.dev.shared_data import SHARED_DATA

COCO_CAPTIONS = SHARED_DATA / "captions" / "coco_captions_val2017.json"

_RSS_PROBE = """
import json, sys, time, gc, psutil
from metaclip_tasks.curation.matching import Matcher, TABLES
from benchmarks.matching import ReferenceMatcher
entries = json.load(open(sys.argv[1]))
start = time.perf_counter()
if sys.argv[2] == "reference":
    matcher = ReferenceMatcher(entries)
elif sys.argv[2] == "loaded":
    matcher = Matcher.load({name: f"{sys.argv[3]}/{name}.npy" for name in TABLES})
    matcher.match(["warm every page of the tables: " + " ".join(entries[::50])])
else:
    matcher = Matcher(entries, backend=sys.argv[2])
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


def _texts_per_second(match: Callable, texts: Sequence[str] | pa.Array, n: int) -> float:
    gc.collect()
    start = time.process_time()  # this process's CPU time: other work on a shared core does not count
    result = match(texts)
    elapsed = time.process_time() - start
    del result
    return n / elapsed


def _probe(metadata_path: str, kind: str, saved: str) -> dict:
    """Build (or load) one matcher in a fresh process; its RSS and build time."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, metadata_path, kind, saved],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def _compare(label: str, texts: list[str], matchers: dict[str, Callable], rounds: int) -> dict[str, float]:
    """Check every matcher against the reference on ``texts``; the median texts/s of each."""
    arrow = pa.array(texts, pa.string())
    expected = [sorted(ids) for ids in matchers["reference"](texts)]
    for name, match in matchers.items():
        got = match(arrow).to_pylist() if name.endswith("columnar)") else match(texts)
        if name != "reference" and got != expected:
            raise SystemExit(f"{name} disagrees with the reference on {label}")
    print(
        f"{label}: {len(texts):,} texts, all matchers agree: {sum(map(len, expected)):,} matches, "
        f"{sum(map(bool, expected)):,} texts with a match"
    )
    speeds: dict[str, list[float]] = {name: [] for name in matchers}
    for _ in range(rounds):
        for name, match in matchers.items():
            speeds[name].append(_texts_per_second(match, arrow if name.endswith("columnar)") else texts, len(texts)))
    return {name: statistics.median(v) for name, v in speeds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per matcher (median reported)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    pa.set_cpu_count(1)

    entries = benchmark_metadata()
    text_sets = {
        f"real captions ({CAPTIONS.name})": [
            t or "" for t in pq.read_table(CAPTIONS, columns=["TEXT"]).column("TEXT").to_pylist()
        ],
        f"COCO captions ({COCO_CAPTIONS.name})": [
            a["caption"] for a in json.loads(COCO_CAPTIONS.read_text())["annotations"]
        ],
    }
    print(f"metadata: {len(entries):,} entries")
    tokens = Matcher(entries)
    matchers: dict[str, Callable] = {
        "reference": ReferenceMatcher(entries).match,
        "project (tokens)": tokens.match,
        "project (tokens, columnar)": tokens.match_arrow,
        "project (ahocorasick)": Matcher(entries, backend="ahocorasick").match,
    }
    figures: dict[str, dict] = {}
    for label, texts in text_sets.items():
        speeds = _compare(label, texts, matchers, args.rounds)
        ref = speeds["reference"]
        print(f"\n{'matcher':<28}{'texts/s':>12}{'ratio':>8}")
        for name, tps in speeds.items():
            print(f"{name:<28}{tps:>12,.0f}{tps / ref:>7.2f}x")
        print()
        figures[label] = {name: {"texts_per_s": tps, "ratio": tps / ref} for name, tps in speeds.items()}

    with tempfile.TemporaryDirectory() as saved:
        for name, array in tokens.arrays().items():
            np.save(f"{saved}/{name}.npy", array)
        with open(f"{saved}/entries.json", "w") as f:
            json.dump(entries, f)
        kinds = {
            "reference": "reference",
            "tokens": "tokens",
            "tokens (loaded)": "loaded",
            "ahocorasick": "ahocorasick",
        }
        probes = {name: _probe(f"{saved}/entries.json", kind, saved) for name, kind in kinds.items()}
        saved_mb = sum(os.path.getsize(f"{saved}/{n}.npy") for n in tokens.arrays()) / 2**20
    print(f"{'matcher':<28}{'build s':>9}{'RSS MB':>8}   (fresh process: metadata + one matcher)")
    for name, probe in probes.items():
        print(f"{name:<28}{probe['build_s']:>9.2f}{probe['rss_mb']:>8.0f}")
    print(f"the token engine's saved arrays: {saved_mb:.0f} MB")
    figures["processes"] = {**probes, "saved_mb": saved_mb}
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
