"""Ingestion speed on one core: the project's WAT and WARC readers against a cc2dataset-style reference.

Input: the readable shared WARCs (``../shared/data/warc``: 85 HTML pages of Common Crawl, dolma,
ClueWeb and warcio files).  The WAT is built from them with ``tests.ingest.commoncrawl_files.write_wat``
(Common Crawl's envelope, one metadata record per request, response and metadata record, the page
links from an lxml parse), its records repeated ``--copies`` times; the WARC is the shared files'
gzip members concatenated ``--warc-copies`` times.

The reference is rom1504/cc2dataset's ``extract_documents_from_wat`` for images (main.py, the
version that resolves relative links) step by step, with the rows its ``process_wat`` yields:
FastWARC over the metadata records, each record's whole JSON parsed, the ``HTML-Metadata.Links``
entries with ``path == "IMG@/src"`` and a non-empty ``alt`` as dicts, made absolute with
``urljoin(Head.Base or page URL, url)`` unless already http(s), http(s) only, each given its
``md5(alt + url)`` uid, the WAT's file name and the page URL; once with ``json.loads`` and once
with pysimdjson's ``loads`` (what cc2dataset calls).  Like the project, it takes the page URL
without angle brackets (ClueWeb22 writes ``<https://...>``), so that both keep the same pairs.
Before timing, the reference pairs (alt-texts whitespace-normalised, the empty ones dropped) must
equal the project's ``wat_links`` pairs.  The project's readers are timed as they run in the
product: ``wat_links`` gives Arrow tables of resolved links (from a file: libdeflate and the
compiled framer; from a stream read once: FastWARC), ``extract_file`` adds uids (sha224),
language identification and the parquet file, with languages ["en"] and ["any"]; and the floor:
FastWARC reading the WAT's records without parsing them.  Rounds interleave the readers.

    .venv/bin/python -m benchmarks.ingest [--copies 30] [--warc-copies 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO
from urllib.parse import urljoin

import pyarrow as pa
import simdjson
from fastwarc.warc import ArchiveIterator, WarcRecordType

from metaclip_tasks.dev.shared_data import WARC
from metaclip_tasks.ingest.extract import extract_file, warc_links, wat_links
from metaclip_tasks.ingest.language import LanguageFilter
from tests.ingest.commoncrawl_files import ReadOnce, write_wat

SOURCES = (
    "resiliparse_warcfile.warc.gz",
    "warc_sample-0000.warc.gz",
    "warc_sample-0001.warc.gz",
    "whirlwind.warc.gz",
    "resiliparse_clueweb-quirk.warc.gz",
    "warcio_example.warc.gz",
    "warcio_example-iana.org-chunked.warc",
)
Pair = tuple[str, str, str]
MiB = 2**20


def _absolute(url: str, base_url: str) -> str:
    """cc2dataset's ``make_link_absolute``: urljoin unless already http(s), the URL as it was on an error."""
    if url.startswith(("http://", "https://")):
        return url
    try:
        return urljoin(base_url, url)
    except ValueError:
        return url


def reference_rows(path: Path, loads: Callable[[bytes], dict]) -> tuple[list[tuple[str, ...]], int]:
    """cc2dataset's ``extract_documents_from_wat`` (main.py, images) step by step, and its rows as
    ``process_wat`` yields them: (uid, url, alt, cc_filename, page_url); with the records read."""
    documents: list[dict[str, str]] = []
    records = 0
    with open(path, "rb") as f:
        for record in ArchiveIterator(f, record_types=WarcRecordType.metadata, parse_http=False):
            records += 1
            try:
                data = loads(record.reader.read())
            except ValueError:
                continue
            envelope = data["Envelope"]
            payload = envelope["Payload-Metadata"]
            if "HTTP-Response-Metadata" not in payload:
                continue
            http_resp = payload["HTTP-Response-Metadata"]
            if "HTML-Metadata" not in http_resp:
                continue
            metadata = http_resp["HTML-Metadata"]
            if "Links" not in metadata:
                continue
            cc_filename = data["Container"]["Filename"]
            page_url = envelope["WARC-Header-Metadata"]["WARC-Target-URI"].strip(
                "<>"
            )  # ClueWeb22's <uri>, as the project
            base_url = page_url
            if "Head" in metadata and "Base" in metadata["Head"]:
                try:
                    base_url = urljoin(base_url, metadata["Head"]["Base"])
                except ValueError:
                    pass
            images = [
                {"url": link["url"], "alt": link["alt"]}
                for link in metadata["Links"]
                if link.get("path", "") == "IMG@/src" and len(link.get("alt", "")) > 0
            ]
            images = [{"url": _absolute(image["url"], base_url), "alt": image["alt"]} for image in images]
            images = [
                image for image in images if image["url"].startswith("http://") or image["url"].startswith("https://")
            ]
            for image in images:
                image["uid"] = str(hashlib.md5((image["alt"] + image["url"]).encode()).hexdigest())
                image["cc_filename"] = cc_filename
                image["page_url"] = page_url
            documents.extend(images)
    return [(d["uid"], d["url"], d["alt"], d["cc_filename"], d["page_url"]) for d in documents], records


def reference_pairs(path: Path, loads: Callable[[bytes], dict]) -> list[Pair]:
    """The reference's (page URL, image URL, alt) pairs."""
    return [(page_url, url, alt) for _, url, alt, _, page_url in reference_rows(path, loads)[0]]


def _pairs(tables: Iterable[pa.Table]) -> list[Pair]:
    return [
        row for t in tables for row in zip(*(t.column(c).to_pylist() for c in ("page_url", "url", "alt")), strict=True)
    ]


def project_wat_pairs(path: Path) -> tuple[list[Pair], Counter]:
    """The project's ``wat_links``: (page URL, image URL, alt) and its counters."""
    counts: Counter = Counter()
    with open(path, "rb") as f:
        return _pairs(wat_links(f, counts)), counts


def project_warc_pairs(path: Path) -> tuple[list[Pair], Counter]:
    """The project's ``warc_links``: (page URL, image URL, alt) and its counters."""
    counts: Counter = Counter()
    with open(path, "rb") as f:
        return _pairs(warc_links(f, counts)), counts


def project_links(
    reader: Callable[[IO[bytes], Counter], Iterator[pa.Table]], path: Path, streamed: bool = False
) -> int:
    """What is timed of a project reader: its resolved links as Arrow tables (the product's form);
    ``streamed``: the file as a stream that cannot be read again from its start (FastWARC's path,
    which a framed file falls back to)."""
    with open(path, "rb") as f:
        return sum(len(t) for t in reader(ReadOnce(f) if streamed else f, Counter()))


def _timed(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """The wall times of each run in ``rounds`` rounds (the runs interleaved), after one untimed round."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(rounds + 1):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            if i:
                times[name].append(time.perf_counter() - start)
    return times


def _ratio(reference: list[float], times: list[float]) -> float:
    """How many times faster than the reference: the median of each round's own ratio (a round's runs
    follow each other within a second or two and share the machine's speed, which drifts between rounds)."""
    return statistics.median(r / t for r, t in zip(reference, times, strict=True))


def read_only(path: Path) -> int:
    """The floor: FastWARC's iteration over the metadata records and their bytes read, nothing parsed."""
    with open(path, "rb") as f:
        return sum(
            len(record.reader.read())
            for record in ArchiveIterator(f, record_types=WarcRecordType.metadata, parse_http=False)
        )


def _inflated_size(path: Path) -> int:
    with gzip.open(path, "rb") as f:
        return sum(len(chunk) for chunk in iter(lambda: f.read(1 << 20), b""))


def build_inputs(tmp: Path, copies: int, warc_copies: int) -> tuple[Path, Path]:
    """The benchmark's WAT (``copies`` times the shared WARCs' records) and WARC (``warc_copies`` times their members)."""
    sources = [WARC / name for name in SOURCES]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise SystemExit(f"shared WARC files not found: {', '.join(missing)} (../shared/data is absent)")
    wat = write_wat(sources, tmp / "bench.warc.wat.gz", copies=copies).path
    members = b"".join(p.read_bytes() if p.suffix == ".gz" else gzip.compress(p.read_bytes()) for p in sources)
    warc = tmp / "bench.warc.gz"
    warc.write_bytes(members * warc_copies)
    return wat, warc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=30, help="times the WAT repeats the shared WARCs' records")
    parser.add_argument("--warc-copies", type=int, default=20, help="times the WARC repeats the shared WARC files")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per reader (median reported)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        wat, warc = build_inputs(tmp, args.copies, args.warc_copies)
        wat_mib, wat_raw_mib = wat.stat().st_size / MiB, _inflated_size(wat) / MiB
        warc_mib = warc.stat().st_size / MiB

        ours, counts = project_wat_pairs(wat)
        expected = [(p, u, " ".join(a.split())) for p, u, a in reference_pairs(wat, json.loads) if a.split()]
        if reference_pairs(wat, simdjson.loads) != reference_pairs(wat, json.loads):
            raise SystemExit("the json and simdjson references disagree")
        if ours != expected:
            diff = Counter(ours) - Counter(expected), Counter(expected) - Counter(ours)
            raise SystemExit(
                f"project and reference disagree: only project {list(diff[0])[:3]}, only reference {list(diff[1])[:3]}"
            )
        records, pages, pairs = counts["records"], counts["pages"], len(ours)
        warc_pairs, warc_counts = project_warc_pairs(warc)
        print(
            f"WAT: {wat_mib:.1f} MiB gzip ({wat_raw_mib:.1f} MiB of records), the shared WARCs' records x {args.copies}: "
            f"{records:,} metadata records, {pages:,} pages, {counts['images']:,} IMG@/src links, {pairs:,} pairs"
        )
        print(
            f"WARC: {warc_mib:.1f} MiB gzip, the shared WARC files x {args.warc_copies}: {warc_counts['records']:,} response "
            f"records, {warc_counts['pages']:,} pages, {len(warc_pairs):,} pairs"
        )
        print(f"project wat_links == reference pairs (alt normalised, empty dropped): {pairs:,} identical")
        distinct = sorted({a for _, _, a in ours})
        lang_s = statistics.median(
            _timed({"identify": lambda: LanguageFilter(["en"]).identify(distinct)}, 3)["identify"]
        )
        print(
            f"language identification (py3langid, fresh filter): {len(distinct) / lang_s:,.0f} texts/s on the "
            f"{len(distinct):,} distinct alt-texts; extract_file identifies each distinct text once per file, and "
            f"the copies repeat them"
        )

        out = tmp / "out.parquet"
        wat_runs: dict[str, Callable[[], object]] = {
            "floor: FastWARC read, no JSON": lambda: read_only(wat),
            "reference, json.loads": lambda: reference_rows(wat, json.loads),
            "reference, simdjson (cc2dataset)": lambda: reference_rows(wat, simdjson.loads),
            "project wat_links": lambda: project_links(wat_links, wat),
            "project wat_links, FastWARC path": lambda: project_links(wat_links, wat, streamed=True),
            "project extract_file ['en']": lambda: extract_file(str(wat), str(out), LanguageFilter(["en"])),
            "project extract_file ['any']": lambda: extract_file(str(wat), str(out), LanguageFilter(["any"])),
        }
        warc_runs: dict[str, Callable[[], object]] = {
            "project warc_links": lambda: project_links(warc_links, warc),
            "project extract_file ['en']": lambda: extract_file(str(warc), str(out), LanguageFilter(["en"])),
            "project extract_file ['any']": lambda: extract_file(str(warc), str(out), LanguageFilter(["any"])),
        }
        wat_times = _timed(wat_runs, args.rounds)
        warc_times = _timed(warc_runs, args.rounds)

    figures: dict[str, dict] = {"wat": {}, "warc": {}}
    ref = wat_times["reference, json.loads"]
    ref_simd = wat_times["reference, simdjson (cc2dataset)"]
    print(f"\nWAT, one core, median of {args.rounds} rounds (ratios: the median of each round's)")
    print(
        f"{'reader':<34}{'records/s':>11}{'pages/s':>10}{'pairs/s':>11}{'MiB/s gz':>10}{'MiB/s raw':>10}{'vs json':>9}{'vs simdjson':>12}"
    )
    for name, times in wat_times.items():
        s = statistics.median(times)
        row = {
            "records_per_s": records / s,
            "pages_per_s": pages / s,
            "pairs_per_s": pairs / s,
            "mib_per_s": wat_mib / s,
            "raw_mib_per_s": wat_raw_mib / s,
            "ratio_json": _ratio(ref, times),
            "ratio_simdjson": _ratio(ref_simd, times),
        }
        figures["wat"][name] = row
        print(
            f"{name:<34}{row['records_per_s']:>11,.0f}{row['pages_per_s']:>10,.0f}{row['pairs_per_s']:>11,.0f}"
            f"{row['mib_per_s']:>10.1f}{row['raw_mib_per_s']:>10.1f}{row['ratio_json']:>8.2f}x{row['ratio_simdjson']:>11.2f}x"
        )
    print(f"\nWARC, one core, median of {args.rounds}")
    print(f"{'reader':<34}{'records/s':>11}{'pages/s':>10}{'pairs/s':>11}{'MiB/s gz':>10}")
    for name, times in warc_times.items():
        s = statistics.median(times)
        row = {
            "records_per_s": warc_counts["records"] / s,
            "pages_per_s": warc_counts["pages"] / s,
            "pairs_per_s": len(warc_pairs) / s,
            "mib_per_s": warc_mib / s,
        }
        figures["warc"][name] = row
        print(
            f"{name:<34}{row['records_per_s']:>11,.0f}{row['pages_per_s']:>10,.0f}{row['pairs_per_s']:>11,.0f}{row['mib_per_s']:>10.1f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
