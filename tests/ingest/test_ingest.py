"""Common Crawl ingestion (metaclip_tasks/ingest/extract.py) on the shared real WARC files and on synthetic
ones: counts and pairs checked against an independent lxml parse, the URL and text rules, odd and
broken files, and the WAT path against the WARC path over the same pages."""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import tempfile
import threading
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaclip_tasks.dev.shared_data import WARC
from metaclip_tasks.ingest.extract import extract_file
from metaclip_tasks.ingest.language import LanguageFilter
from metaclip_tasks.ingest.uids import url_uid
from tests.ingest.commoncrawl_files import (
    HTML_TYPES,
    ReadOnce,
    base_href,
    content_type,
    elements,
    entity,
    parse_html,
    parse_http,
    warc_record,
    write_warc,
    write_wat,
)

# The shared WARC files with complete HTML responses (resiliparse_clipped.warc.gz is truncated).
READABLE = (
    "resiliparse_warcfile.warc.gz",
    "warc_sample-0000.warc.gz",
    "warc_sample-0001.warc.gz",
    "whirlwind.warc.gz",
    "resiliparse_clueweb-quirk.warc.gz",
    "warcio_example-iana.org-chunked.warc",
    "warcio_example.warc.gz",
)
Pair = tuple[str, str, str, str | None]


@pytest.fixture(scope="module")
def shared_warc() -> Path:
    """The shared real WARC files' directory (skipped when ../shared/data is absent)."""
    if not (WARC / "warc_sample-0000.warc.gz").is_file():
        pytest.skip(f"shared WARC files not found at {WARC} (../shared/data is absent)")
    return WARC


def _extract(
    path: Path | str, out: Path, languages: tuple[str, ...] = ("any",), fmt: str | None = None
) -> tuple[dict, list[dict]]:
    """extract_file's counters and its rows, in file order."""
    stats, _ = extract_file(str(path), str(out), LanguageFilter(list(languages)), fmt)
    return stats, pq.read_table(out).to_pylist()


def _pairs(rows: list[dict]) -> list[Pair]:
    return [(r["page_url"], r["url"], r["text"], r["title"]) for r in rows]


def _norm(text: str | None) -> str:
    return " ".join(text.split()) if text else ""


def lxml_expected(path: Path) -> tuple[Counter, list[Pair]]:
    """Pages, ``<img>``, with-alt counts and the pairs of a WARC file, from lxml and urllib alone:
    HTML responses (their HTTP head parsed here), chunked bodies decoded, ``<base href>`` resolved
    against the page URL, sources joined with ``urljoin``, http(s) with a host only."""
    counts: Counter = Counter()
    pairs: list[Pair] = []
    with open(path, "rb") as f:
        for record in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=False, quirks_mode=True):
            block = record.reader.read()
            message = parse_http(block)
            if len(block) < record.content_length or message is None:
                continue
            media, charset = content_type(message)
            if not media.startswith(HTML_TYPES):
                continue
            page = (
                record.headers.get("WARC-Target-URI").strip().removeprefix("<").removesuffix(">")
            )  # ClueWeb22's <uri>
            counts["pages"] += 1
            root = parse_html(entity(message), charset)
            base = page
            href = (base_href(root) or "").strip()
            if href:
                base = urljoin(page, href)
            for img in elements(root, "img"):
                counts["images"] += 1
                alt, src = _norm(img.get("alt")), (img.get("src") or "").strip()
                if not alt or not src:
                    continue
                counts["with_alt"] += 1
                try:
                    url = urljoin(base, src)
                except ValueError:
                    continue
                parts = urlsplit(url)
                if parts.scheme.lower() in ("http", "https") and parts.netloc:
                    pairs.append((page, url, alt, _norm(img.get("title")) or None))
    return counts, pairs


def agreement(a: list, b: list) -> float:
    """Shared items (as multisets) over the items of either."""
    ca, cb = Counter(a), Counter(b)
    union = sum((ca | cb).values())
    return sum((ca & cb).values()) / union if union else 1.0


# ------------------------------------------------------------------------------------ real WARC files


@pytest.mark.parametrize("name", READABLE[:-1])
def test_real_warc_matches_an_independent_lxml_parse(shared_warc, tmp_path, name):
    path = shared_warc / name
    stats, rows = _extract(path, tmp_path / "pairs.parquet")
    counts, expected = lxml_expected(path)
    got = _pairs(rows)
    rate = agreement(got, expected)
    print(
        f"{name}: {stats['pages']} pages, {stats['images']} <img>, {stats['with_alt']} with alt, {len(got)} pairs; "
        f"agreement with lxml {rate:.2%}"
    )
    assert (stats["pages"], stats["images"], stats["with_alt"]) == (
        counts["pages"],
        counts["images"],
        counts["with_alt"],
    )
    assert got == expected  # lexbor and libxml2 agree on every <img> of these real pages (agreement 100%)
    assert stats["pairs"] == len(rows) and stats["bad_records"] == 0 and stats["other_language"] == 0
    assert all(r["uid"] == url_uid(r["url"]) and r["lang"] for r in rows)


def test_real_warc_figures(shared_warc, tmp_path):
    """The counts the shared files are known by, and the ClueWeb file's EUC-JP alt-texts decoded."""
    figures = {}
    for name in ("resiliparse_warcfile.warc.gz", "warc_sample-0000.warc.gz", "resiliparse_clueweb-quirk.warc.gz"):
        stats, rows = _extract(shared_warc / name, tmp_path / f"{name}.parquet")
        figures[name] = (
            stats["records"],
            stats["pages"],
            stats["images"],
            stats["with_alt"],
            stats["relative_resolved"],
            stats["non_http_dropped"],
        )
        if "clueweb" in name:  # WARC/0.18 headers, EUC-JP pages
            assert (
                sum(any("\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff" for c in r["text"]) for r in rows) > 100
            )
    assert figures == {
        "resiliparse_warcfile.warc.gz": (16, 16, 153, 32, 4, 0),
        "warc_sample-0000.warc.gz": (22, 22, 240, 169, 14, 0),  # its page URLs are written <https://...>
        "resiliparse_clueweb-quirk.warc.gz": (29, 29, 1252, 556, 208, 0),
    }


def test_truncated_and_odd_real_files(shared_warc, tmp_path):
    stats, rows = _extract(shared_warc / "resiliparse_clipped.warc.gz", tmp_path / "clipped.parquet")
    assert stats["bad_records"] == 1 and stats["pages"] == 0 and rows == []  # shorter than its Content-Length
    stats, _ = _extract(shared_warc / "warcio_example-iana.org-chunked.warc", tmp_path / "chunked.parquet")
    assert (stats["records"], stats["pages"], stats["bad_records"]) == (1, 1, 0)
    stats, _ = _extract(shared_warc / "whirlwind.warc.wat.gz", tmp_path / "wat.parquet")  # a request record only
    assert (stats["records"], stats["pages"], stats["bad_records"]) == (1, 0, 0)


# ----------------------------------------------------------------------------------- synthetic WARC

EN = "A large brown dog is running across the green grass in the park"
DE = "Ein großer brauner Hund läuft über die grüne Wiese im Park"
MAIN = f"""<!DOCTYPE html><html><head><title>Main page</title></head><body>
<img src="/abs/root.jpg" alt="Root relative picture of a red bicycle">
<img src="//cdn.example.com/a.jpg" alt="Protocol relative picture of a mountain lake">
<img src="../img/a.png" alt="Parent directory picture of a sailing boat">
<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk" alt="inline data image">
<img src="javascript:void(0)" alt="script image">
<img src=" mailto:someone@example.com" alt="mail icon">
<img src="photo.jpg" alt="  A  photo
 of\tthe   beach at sunset  " title="  Sunset
 title ">
<img src="empty.jpg" alt="">
<img src="blank.jpg" alt="  \n  ">
<img src="noalt.jpg">
<img alt="an image without any source">
<img src="https://example.com/en.jpg" alt="{EN}">
<img src="https://example.com/de.jpg" alt="{DE}">
<IMG SRC="UPPER.JPG" ALT="Upper case tag and attributes">
<img src="q.jpg?size=large&amp;v=2" alt="Tom &amp; Jerry">
<!-- <img src="commented.jpg" alt="in a comment"> -->
</body></html>""".encode()
ABSOLUTE_BASE = b"""<html><head><base href="https://static.example.org/assets/"></head><body>
<img src="pic.jpg" alt="Picture under an absolute base"><img src="/root.jpg" alt="Root under an absolute base">
</body></html>"""
RELATIVE_BASE = b"""<html><head><base href=" ../media/ "></head><body><p><img src="p.gif" alt="Picture under a relative base"></p></body></html>"""
CHUNKED = (
    b"<html><body>"
    + b"<p>padding text</p>" * 8
    + b'<img src="chunked.png" alt="Image split across chunks">'
    + b"</body></html>"
)
LATIN1_DECLARED = '<html><body><img src="cafe.jpg" alt="Café crème brûlée on a plate"></body></html>'.encode()
CP1252 = '<html><body><img src="quotes.jpg" alt="“Smart quotes” – naïve café"></body></html>'.encode("cp1252")
META_CP1252 = (
    '<html><head><meta charset="windows-1252"></head><body><img src="m.jpg" alt="Résumé – €5"></body></html>'.encode(
        "cp1252"
    )
)
XHTML = b"""<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>X</title></head><body><img src="x.svg" alt="An XHTML image"/></body></html>"""
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF<html><img src='no.jpg' alt='not a page'></html>\xff\xd9"

SYNTHETIC_PAGES = [
    ("https://example.com/dir/page.html", MAIN),
    ("https://example.com/a/b.html", ABSOLUTE_BASE),
    ("http://example.net/x/y/z.html", RELATIVE_BASE),
    ("https://example.com/photo.jpg", JPEG, {"Content-Type": "image/jpeg"}),
    ("https://example.com/chunked.html", CHUNKED, {"Transfer-Encoding": "chunked"}),
    ("https://example.com/latin1.html", LATIN1_DECLARED, {"Content-Type": "text/html; charset=ISO-8859-1"}),
    ("https://example.com/cp1252.html", CP1252, {"Content-Type": "text/html; charset=windows-1252"}),
    ("https://example.com/meta.html", META_CP1252, {"Content-Type": "text/html"}),
    ("https://example.com/x.xhtml", XHTML, {"Content-Type": "application/xhtml+xml"}),
]
SYNTHETIC_PAIRS: list[Pair] = [
    (
        "https://example.com/dir/page.html",
        "https://example.com/abs/root.jpg",
        "Root relative picture of a red bicycle",
        None,
    ),
    (
        "https://example.com/dir/page.html",
        "https://cdn.example.com/a.jpg",
        "Protocol relative picture of a mountain lake",
        None,
    ),
    (
        "https://example.com/dir/page.html",
        "https://example.com/img/a.png",
        "Parent directory picture of a sailing boat",
        None,
    ),
    (
        "https://example.com/dir/page.html",
        "https://example.com/dir/photo.jpg",
        "A photo of the beach at sunset",
        "Sunset title",
    ),
    ("https://example.com/dir/page.html", "https://example.com/en.jpg", EN, None),
    ("https://example.com/dir/page.html", "https://example.com/de.jpg", DE, None),
    ("https://example.com/dir/page.html", "https://example.com/dir/UPPER.JPG", "Upper case tag and attributes", None),
    ("https://example.com/dir/page.html", "https://example.com/dir/q.jpg?size=large&v=2", "Tom & Jerry", None),
    (
        "https://example.com/a/b.html",
        "https://static.example.org/assets/pic.jpg",
        "Picture under an absolute base",
        None,
    ),
    ("https://example.com/a/b.html", "https://static.example.org/root.jpg", "Root under an absolute base", None),
    ("http://example.net/x/y/z.html", "http://example.net/x/media/p.gif", "Picture under a relative base", None),
    ("https://example.com/chunked.html", "https://example.com/chunked.png", "Image split across chunks", None),
    ("https://example.com/latin1.html", "https://example.com/cafe.jpg", "Café crème brûlée on a plate", None),
    ("https://example.com/cp1252.html", "https://example.com/quotes.jpg", "“Smart quotes” – naïve café", None),
    ("https://example.com/meta.html", "https://example.com/m.jpg", "Résumé – €5", None),
    ("https://example.com/x.xhtml", "https://example.com/x.svg", "An XHTML image", None),
]


@pytest.fixture
def synthetic_warc(tmp_path) -> Path:
    return write_warc(tmp_path / "synthetic.warc.gz", SYNTHETIC_PAGES)


def test_synthetic_warc_rules(synthetic_warc, tmp_path):
    stats, rows = _extract(synthetic_warc, tmp_path / "any.parquet")
    assert _pairs(rows) == SYNTHETIC_PAIRS
    # 9 responses, the image/jpeg one no page; 15 + 2 + 1 + 1 + 1 + 1 + 1 + 1 <img> (none in the comment);
    # with an alt-text and a source: 11 on the main page (not the empty, blank or missing alt, nor the one
    # without a source) and one on each other page; relative: 6 on the main page, 8 on the others
    assert stats == {
        "records": 9,
        "pages": 8,
        "images": 23,
        "with_alt": 19,
        "relative_resolved": 14,
        "non_http_dropped": 3,
        "other_language": 0,
        "bad_records": 0,
        "pairs": 16,
    }
    lang = {r["text"]: r["lang"] for r in rows}
    assert lang[EN] == "en" and lang[DE] == "de"

    en_stats, en_rows = _extract(synthetic_warc, tmp_path / "en.parquet", ("en",))
    assert _pairs(en_rows) == [p for p in SYNTHETIC_PAIRS if lang[p[2]] == "en"]
    assert DE not in {r["text"] for r in en_rows} and EN in {r["text"] for r in en_rows}
    assert en_stats["other_language"] == sum(v != "en" for v in (lang[p[2]] for p in SYNTHETIC_PAIRS)) >= 1
    assert en_stats["pairs"] + en_stats["other_language"] == stats["pairs"]
    assert {r["lang"] for r in en_rows} == {"en"}


def test_synthetic_pages_through_the_wat_path(synthetic_warc, tmp_path):
    """The same pages as a WAT (Common Crawl's parse of them) give the same pairs."""
    for list_values in (False, True):
        wat = write_wat(
            [synthetic_warc], tmp_path / f"synthetic-{list_values}.warc.wat.gz", list_values=list_values
        ).path
        stats, rows = _extract(wat, tmp_path / f"wat-{list_values}.parquet")
        assert _pairs(rows) == SYNTHETIC_PAIRS
        assert (stats["pages"], stats["images"], stats["with_alt"], stats["bad_records"]) == (
            8,
            22,
            19,
            0,
        )  # no src: not in a WAT


def test_written_files_verify(synthetic_warc, tmp_path, shared_warc):
    """The helper's WARC and WAT records carry correct block digests (FastWARC verifies them)."""
    wat = write_wat([shared_warc / "whirlwind.warc.gz"], tmp_path / "w.warc.wat.gz").path
    for path in (synthetic_warc, wat):
        with open(path, "rb") as f:
            verified = [record.verify_block_digest() for record in ArchiveIterator(f, parse_http=False)]
        assert verified and all(verified)


def test_truncated_synthetic_file_keeps_what_came_before(tmp_path):
    pages = [
        (f"https://example.com/{i}.html", f'<html><img src="{i}.jpg" alt="Picture number {i}"></html>'.encode())
        for i in range(3)
    ]
    data = write_warc(tmp_path / "full.warc.gz", pages).read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[: len(data) - 40])  # the last record's gzip member cut short
    stats, rows = _extract(cut, tmp_path / "cut.parquet")
    assert [r["text"] for r in rows] == ["Picture number 0", "Picture number 1"]
    assert stats["bad_records"] == 1 and stats["pages"] == 2


def test_empty_file(tmp_path):
    for name in ("empty.warc.gz", "empty.warc", "empty.warc.wat.gz"):
        (tmp_path / name).write_bytes(b"")
        stats, rows = _extract(tmp_path / name, tmp_path / f"{name}.parquet")
        assert rows == [] and all(v == 0 for v in stats.values())


def test_garbage_file_gives_no_pages(tmp_path):
    for name, data in (
        ("garbage.warc.gz", os.urandom(4096)),
        ("garbage.warc", os.urandom(4096)),
        ("html.warc.gz", gzip.compress(b"<html><body>403 Forbidden</body></html>" * 50)),
    ):
        (tmp_path / name).write_bytes(data)
        stats, rows = _extract(tmp_path / name, tmp_path / f"{name}.parquet")
        assert rows == [] and stats["pages"] == 0


def test_garbage_file_is_reported(tmp_path):
    path = tmp_path / "garbage.warc.gz"
    path.write_bytes(os.urandom(4096))
    stats, _ = _extract(path, tmp_path / "garbage.parquet")
    assert stats["bad_records"] >= 1


def test_content_encoded_page(tmp_path):
    html = b'<html><body><img src="/z.jpg" alt="A gzip encoded page"></body></html>'
    path = write_warc(
        tmp_path / "ce.warc.gz", [("https://example.com/", gzip.compress(html), {"Content-Encoding": "gzip"})]
    )
    _, rows = _extract(path, tmp_path / "ce.parquet")
    assert _pairs(rows) == [("https://example.com/", "https://example.com/z.jpg", "A gzip encoded page", None)]


def test_bad_wat_record_is_counted_and_skipped(tmp_path):
    good = write_wat([write_warc(tmp_path / "one.warc.gz", SYNTHETIC_PAGES[1:2])], tmp_path / "good.warc.wat.gz").path
    broken = gzip.compress(
        warc_record(
            [("WARC-Type", "metadata"), ("Content-Type", "application/json")],
            b'{"Envelope":{"Payload-Metadata":{"HTTP-Response-Metadata":{"HTML-Metadata":{',
        )
    )
    path = tmp_path / "mixed.warc.wat.gz"
    path.write_bytes(broken + good.read_bytes())
    stats, rows = _extract(path, tmp_path / "mixed.parquet")
    assert stats["bad_records"] == 1 and stats["pages"] == 1 and len(rows) == 2


# ---------------------------------------------------------------------------------------- WAT vs WARC


def test_wat_and_warc_paths_agree_on_the_shared_pages(shared_warc, tmp_path):
    sources = [shared_warc / name for name in READABLE]
    wat = write_wat(sources, tmp_path / "shared.warc.wat.gz")
    listed = write_wat(sources, tmp_path / "listed.warc.wat.gz", list_values=True)
    assert (wat.records, wat.pages) == (162, 85)
    warc_rows, warc_stats = [], Counter()
    for i, path in enumerate(sources):
        stats, rows = _extract(path, tmp_path / f"warc-{i}.parquet")
        warc_rows += rows
        warc_stats.update(stats)
    wat_stats, wat_rows = _extract(wat.path, tmp_path / "wat.parquet")
    listed_stats, listed_rows = _extract(listed.path, tmp_path / "listed.parquet")

    def triples(rows: list[dict]) -> set:
        return {(r["page_url"], r["url"], r["text"]) for r in rows}

    rate = agreement(sorted(triples(wat_rows)), sorted(triples(warc_rows)))
    print(
        f"WAT vs WARC: {len(triples(wat_rows))} and {len(triples(warc_rows))} distinct (page_url, url, text); agreement {rate:.2%}"
    )
    assert rate >= 0.99  # MetaCLIP reports ~99% between its WAT and WARC paths; here both see the same parse
    assert wat_rows == warc_rows  # in fact identical, in file order, titles, uids and languages included
    assert listed_rows == wat_rows and listed_stats == wat_stats  # header values written as lists read the same
    assert wat_stats["records"] == 162 and wat_stats["bad_records"] == 0  # request and metadata records skipped
    for key in ("pages", "with_alt", "relative_resolved", "non_http_dropped", "pairs"):
        assert wat_stats[key] == warc_stats[key], key
    assert wat_stats["images"] == warc_stats["images"] - 2  # two <img> without src: no IMG@/src link in a WAT


def test_a_file_failing_mid_read_leaves_no_part(tmp_path, monkeypatch):
    """A network error in the middle of a file removes the half-written part (the retry writes it anew)."""
    from metaclip_tasks.ingest import extract

    def broken(stream, counts):
        yield pa.table(
            {
                "page_url": ["https://example.com/"],
                "url": ["https://example.com/a.jpg"],
                "alt": ["A picture of a dog"],
                "title": pa.array([None], pa.string()),
            }
        )  # written first
        raise ConnectionResetError("the server went away")

    pages = [("https://example.com/", b'<html><img src="a.jpg" alt="A picture of a dog"></html>')]
    source = write_warc(tmp_path / "one.warc.gz", pages)
    monkeypatch.setitem(extract.READERS, "warc", broken)
    with pytest.raises(ConnectionResetError):
        extract_file(str(source), str(tmp_path / "part.parquet"), LanguageFilter(["any"]))
    assert not (tmp_path / "part.parquet").exists()


# ------------------------------------------------------------------------------------------ WAT framing
# A gzipped WAT that can be read again from its start is inflated member by member and framed by
# compiled code, and left to FastWARC from its start (after the records read) at anything else: its
# pairs, tables and counters must be FastWARC's own, which reads a stream that cannot be read again.


def _wat_read(stream, monkeypatch) -> tuple[list[list[dict]], dict, list[int]]:
    """wat_links' tables, counters and the ``skip`` of each FastWARC read it made."""
    from metaclip_tasks.ingest import extract

    skips, records = [], extract.records

    def spied(stream, record_type, counts, skip=0):
        skips.append(skip)
        return records(stream, record_type, counts, skip)

    monkeypatch.setattr(extract, "records", spied)
    counts: Counter = Counter()
    tables = [t.to_pylist() for t in extract.wat_links(stream, counts)]
    monkeypatch.setattr(extract, "records", records)
    return tables, {k: v for k, v in counts.items() if v}, skips


def _framed_as_fastwarc(data: bytes, tmp_path: Path, monkeypatch) -> list[int]:
    """Assert that the framed read of ``data`` gives FastWARC's tables and counters; its FastWARC skips."""
    path = tmp_path / "framed.warc.wat.gz"
    path.write_bytes(data)
    with open(path, "rb") as f:
        framed, framed_counts, skips = _wat_read(f, monkeypatch)
    fastwarc, fastwarc_counts, streamed = _wat_read(ReadOnce(io.BytesIO(data)), monkeypatch)
    assert streamed == [0]
    assert framed == fastwarc and framed_counts == fastwarc_counts
    return skips


@functools.cache
def synthetic_wat() -> bytes:
    """The synthetic pages' WAT, twice (18 metadata records: 16 pages, some with a <base>)."""
    with tempfile.TemporaryDirectory() as tmp:
        warc = write_warc(Path(tmp) / "synthetic.warc.gz", SYNTHETIC_PAGES)
        return write_wat([warc], Path(tmp) / "synthetic.warc.wat.gz", copies=2).path.read_bytes()


def test_framed_wat_reads_the_shared_pages_as_fastwarc(shared_warc, tmp_path, monkeypatch):
    from metaclip_tasks.ingest import extract

    monkeypatch.setattr(extract, "BATCH_LINKS", 40)  # tables cut at the same pages
    monkeypatch.setattr(extract, "WAT_CHUNK", 5000)  # members cut between reads, records longer than the buffer
    for list_values in (False, True):
        wat = write_wat(
            [shared_warc / name for name in READABLE], tmp_path / f"{list_values}.warc.wat.gz", list_values, copies=2
        )
        assert _framed_as_fastwarc(wat.path.read_bytes(), tmp_path, monkeypatch) == []  # framed whole: no FastWARC read


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0, 1), flip=st.booleans(), chunk=st.sampled_from([64, 3000, 1 << 20]))
def test_framed_wat_on_a_cut_or_corrupt_file_is_fastwarc(tmp_path, monkeypatch, cut, flip, chunk):
    """Cut short at any byte, or one byte inverted: the same pairs and counters as FastWARC alone,
    the file read ``chunk`` bytes at a time (small ones: members cut between reads, records longer
    than the buffer)."""
    from metaclip_tasks.ingest import extract

    monkeypatch.setattr(extract, "WAT_CHUNK", chunk)
    wat = synthetic_wat()
    at = int(cut * (len(wat) - 1))
    data = wat[:at] + bytes([wat[at] ^ 0xFF]) + wat[at + 1 :] if flip else wat[:at]
    _framed_as_fastwarc(data, tmp_path, monkeypatch)


def _member(headers: list[tuple[str, str]], block: bytes = b"{}") -> bytes:
    return gzip.compress(warc_record(headers, block))


def _page(url: str, envelope_url: bool = True) -> bytes:
    header = {"WARC-Target-URI": url} if envelope_url else {}
    links = [{"path": "IMG@/src", "url": "a.jpg", "alt": f"A picture on {url}"}]
    html = {
        "Envelope": {
            "WARC-Header-Metadata": header,
            "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {"Links": links}}},
        }
    }
    return _member(
        [("WARC-Type", "metadata"), ("WARC-Target-URI", url), ("Content-Type", "application/json")],
        json.dumps(html, separators=(",", ":")).encode(),
    )


@pytest.mark.parametrize(
    "odd, skips",
    [
        (b"", []),  # nothing between the pages
        (gzip.compress(b"WARC/1.0\nWARC-Type: metadata\nContent-Length: 2\n\n{}\n\n"), [1]),  # LF line ends
        (_member([("WARC-Type", "Metadata")]), [1]),  # a type not written as the standard writes it
        (_member([("WARC-Type", "metadata"), ("Content-Length", "2")]), [1]),  # Content-Length twice
        (gzip.compress(b"not a WARC record at all\r\n"), [1]),  # garbage in a member
        (b"garbage between members", [1]),
        (_member([("WARC-Type", "request"), ("WARC-Target-URI", "https://example.com/")]), []),  # skipped as it is
    ],
)
def test_framed_wat_leaves_odd_records_to_fastwarc(tmp_path, monkeypatch, odd, skips):
    """Framed otherwise: read again by FastWARC from the start, after the pages framed before (``skips``)."""
    data = _page("https://example.com/one.html") + odd + _page("https://example.com/two.html")
    assert _framed_as_fastwarc(data, tmp_path, monkeypatch) == skips


def test_framed_wat_takes_a_page_url_from_the_warc_header(tmp_path, monkeypatch):
    """A page whose JSON gives no page URL takes its WARC header's, a plain (not gzip) WAT is FastWARC's."""
    data = _page("https://example.com/one.html") + _page("https://example.com/dir/two.html", envelope_url=False)
    assert _framed_as_fastwarc(data, tmp_path, monkeypatch) == []
    tables, _, _ = _wat_read(io.BytesIO(data), monkeypatch)
    assert [r["url"] for r in tables[0]] == ["https://example.com/a.jpg", "https://example.com/dir/a.jpg"]
    assert _framed_as_fastwarc(gzip.decompress(data), tmp_path, monkeypatch) == [0]
    assert _framed_as_fastwarc(b"", tmp_path, monkeypatch) == [0]  # an empty file: nothing, nothing counted


def test_frame_checks_its_arguments():
    from metaclip_tasks.ingest._watscan import frame

    lists = [[] for _ in range(6)]
    with pytest.raises(TypeError, match="9 arguments"):
        frame(b"", 0, 10)
    with pytest.raises(TypeError, match="must be lists"):
        frame(b"", 0, 10, *lists[:5], ())
    with pytest.raises(ValueError, match="position 3 outside"):
        frame(b"WA", 3, 10, *lists)
    assert frame(b"WA", 0, 10, *lists) == (0, 0, 0, 0, 0, 0, 0)  # more bytes needed


def test_a_wat_reads_the_same_from_a_file_s3_and_http(tmp_path, s3_bucket):
    """A local file, an S3 object and an HTTP body are framed alike; a cut one is read again by FastWARC
    from its start (over HTTP, a second GET): the same pairs and counters from all three."""
    from metaclip_tasks.core import files

    wat = synthetic_wat()
    served = tmp_path / "served"
    served.mkdir()
    gets: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            gets.append(self.path)
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name, data in (("whole.warc.wat.gz", wat), ("cut.warc.wat.gz", wat[: len(wat) * 2 // 3])):
            (served / name).write_bytes(data)
            with files.open_write(f"{s3_bucket}/wat/{name}") as f:
                f.write(data)
            sources = (
                str(served / name),
                f"{s3_bucket}/wat/{name}",
                f"http://127.0.0.1:{server.server_address[1]}/{name}",
            )
            results = [_extract(uri, tmp_path / f"{name}-{i}.parquet") for i, uri in enumerate(sources)]
            assert results[0][1] and results[0] == results[1] == results[2]
            cut = name.startswith("cut")
            assert (results[0][0]["bad_records"] > 0) == cut
            assert gets.count(f"/{name}") == (2 if cut else 1)  # read again from its start where cut
    finally:
        server.shutdown()
        server.server_close()
