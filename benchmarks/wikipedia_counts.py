"""Unigram/bigram counting speed: MB of dump wikitext per second, one core and on Dask.

The shared Wikipedia sample (106 articles, 5.7 MB of wikitext) is parsed (mwparserfromhell),
tokenized and counted: first in this process on one core, then with ``count_dumps`` on a
LocalCluster of ``--workers`` single-threaded process workers.  Both must give equal counts.

    .venv/bin/python -m benchmarks.wikipedia_counts [--workers 2 --rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from metaclip_tasks.dev.shared_data import WIKIPEDIA_SAMPLE
from metaclip_tasks.metadata.wikipedia import count_dumps
from metaclip_tasks.runtime.cluster import dask_client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    single = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        serial = count_dumps([WIKIPEDIA_SAMPLE])
        single.append(serial.text_bytes / 1e6 / (time.perf_counter() - start))
    print(f"{serial.pages} articles, {serial.text_bytes / 1e6:.2f} MB of wikitext, {serial.tokens:,} tokens")
    print(f"one core (pid {os.getpid()}):       {statistics.median(single):6.2f} MB/s")

    with dask_client(work=args.workers) as client:
        parallel = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            counts = count_dumps([WIKIPEDIA_SAMPLE], client, batch_pages=8)
            parallel.append(counts.text_bytes / 1e6 / (time.perf_counter() - start))
    if counts.unigrams != serial.unigrams or counts.bigrams != serial.bigrams:
        raise SystemExit("Dask counts differ from the serial counts")
    rate = statistics.median(parallel)
    print(
        f"Dask, {args.workers} workers:            {rate:6.2f} MB/s = {rate / args.workers:.2f} MB/s per core "
        f"({rate / statistics.median(single):.2f}x one core)"
    )


if __name__ == "__main__":
    main()
