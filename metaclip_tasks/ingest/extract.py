"""Common Crawl ingestion (paper A.2, Fig. 5): WARC or WAT files to image–alt-text pairs.

One file at a time, streamed (FastWARC; never a whole file in memory), tolerant of bad records
(a record that cannot be read is skipped and counted, never the file).  WARC ``response``
records are parsed as HTML with selectolax (lexbor: ~3,000 pages/s here against ~300 for
Resiliparse's tree with its encoding detection, measured in ``benchmarks/ingest.py``); WAT
records give the same ``<img>`` links from Common Crawl's own parse (``HTML-Metadata.Links``,
``path == "IMG@/src"``).  Relative sources are resolved against ``<base href>`` / ``Head.Base``,
else the page URL; only http(s) images with a non-empty alt-text are kept, their whitespace
normalised; the alt-text's language is identified offline (:mod:`metaclip_tasks.ingest.language`).
"""

from __future__ import annotations

import functools
import re
import zlib
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from typing import IO, Any
from urllib.parse import urljoin

import brotli
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from fastwarc.warc import ArchiveIterator, WarcRecordType
from selectolax.lexbor import LexborHTMLParser

from metaclip_tasks.core import files
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.shards import PAIRS_SCHEMA, ShardWriter
from metaclip_tasks.ingest._inflate import BAD, MORE, ROOM, inflate
from metaclip_tasks.ingest._watscan import NEED, ODD, PARSE, frame, scan
from metaclip_tasks.ingest.commoncrawl import open_stream, transient
from metaclip_tasks.ingest.language import LanguageFilter
from metaclip_tasks.ingest.links import PageLinks, first_string
from metaclip_tasks.ingest.uids import url_uids

FORMATS = ("warc", "wat")
COUNTERS = (
    "records",
    "pages",
    "images",
    "with_alt",
    "relative_resolved",
    "non_http_dropped",
    "other_language",
    "bad_records",
    "pairs",
)
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.IGNORECASE)
BATCH_LINKS = 32768  # image links resolved (and pairs written) at a time
WAT_CHUNK = 1 << 20  # WAT bytes read at a time (and half the buffer they are inflated into)
WAT_MAX_BUFFER = 1 << 28  # the inflated bytes of one record, at most, that the framer holds


def file_format(uri: str) -> str:
    """``warc`` or ``wat``, from the file's name (Common Crawl's ``.warc.gz`` / ``.warc.wat.gz``)."""
    name = uri.rsplit("/", 1)[-1].lower().removesuffix(".gz")
    if name.endswith(".wat"):
        return "wat"
    if name.endswith(".warc"):
        return "warc"
    kind = (
        "a WET file (extracted text: no images)"
        if name.endswith(".wet")
        else "neither a WARC (.warc[.gz]) nor a WAT (.wat[.gz]) file"
    )
    raise CurationError(f"input {uri} is {kind}")


def target_uri(value: Any) -> str:
    """A record's ``WARC-Target-URI``, without the angle brackets that the WARC 1.1 standard's examples
    put around it and some crawlers (ClueWeb22's) copied: a ``<https://...>`` page URL resolves nothing."""
    uri = (first_string(value) or "").strip()
    return uri[1:-1].strip() if uri.startswith("<") and uri.endswith(">") else uri


def _decode(body: bytes, charset: str | None) -> str:
    """The page's text: UTF-8 when it is valid UTF-8 (pages often declare Latin-1 and send UTF-8), else
    its declared charset (HTTP, else ``<meta>``), else Windows-1252; bad bytes replaced."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if not charset:
        found = _CHARSET.search(body, 0, 4096)
        charset = found.group(1).decode("ascii") if found else None
    try:
        return body.decode(charset or "cp1252", errors="replace")
    except LookupError:  # an unknown charset name
        return body.decode("cp1252", errors="replace")


def html_links(body: bytes, page_url: str, charset: str | None, links: PageLinks) -> None:
    """The ``<img>`` elements of one HTML page (``src``, ``alt``, ``title``), to resolve against ``<base href>``."""
    tree = LexborHTMLParser(_decode(body, charset))
    node = tree.css_first("base[href]")
    base = _resolve_base(page_url, node.attributes.get("href") if node is not None else None)
    images = [img.attributes for img in tree.css("img")]
    with_alt = [a for a in images if a.get("alt")]
    links.add(
        page_url,
        base,
        [a.get("src") for a in with_alt],
        [a.get("alt") for a in with_alt],
        [a.get("title") for a in with_alt],
        images=len(images),
    )


def records(stream: IO[bytes], record_type: Any, counts: Counter, skip: int = 0) -> Iterator[Any]:
    """The file's records of one type, read leniently, after the first ``skip`` of them (read already);
    a record that breaks the stream ends it, and a file with bytes but no WARC record at all (FastWARC
    skips what is not a record), are counted."""
    iterator = iter(ArchiveIterator(stream, parse_http=False, quirks_mode=True))
    any_record = False
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            break
        except OSError as e:  # a truncated or corrupt gzip member: nothing after it can be trusted
            if transient(e):
                raise  # a network error: the whole file is retried
            counts["bad_records"] += 1
            return
        any_record = True
        if record.record_type == record_type:
            if skip:
                skip -= 1
                continue
            counts["records"] += 1
            yield record
    if not any_record and _consumed(stream):
        counts["bad_records"] += 1


def _consumed(stream: IO[bytes]) -> bool:
    """Whether anything was read from the stream (an empty file is not a bad one)."""
    try:
        return stream.tell() > 0
    except (OSError, AttributeError, ValueError):
        return True


def _read_all(record: Any, counts: Counter) -> bytes | None:
    """The rest of a record's block, or None (counted) when it is shorter than its Content-Length
    (a truncated file): a partial page would give partial, wrong links."""
    try:
        data = record.reader.read()
    except OSError:
        counts["bad_records"] += 1
        return None
    if len(data) < record.content_length:
        counts["bad_records"] += 1
        return None
    return data


def dechunk(data: bytes) -> bytes:
    """An HTTP body sent with ``Transfer-Encoding: chunked``, decoded; what does not parse as chunks is kept."""
    out: list[bytes] = []
    pos = 0
    while True:
        eol = data.find(b"\n", pos)
        try:
            size = int(data[pos:eol].split(b";", 1)[0].strip(), 16) if eol >= 0 else -1
        except ValueError:
            size = -1
        if size < 0:
            return b"".join(out) + data[pos:] if out else data
        if size == 0:
            return b"".join(out)
        out.append(data[eol + 1 : eol + 1 + size])
        pos = eol + 1 + size
        pos += 2 if data.startswith(b"\r\n", pos) else 1 if data.startswith(b"\n", pos) else 0


def decode_content(body: bytes, encoding: str | None) -> bytes:
    """A payload stored with its ``Content-Encoding`` (gzip, deflate, br), decoded; Common Crawl stores
    decoded payloads but keeps the header, so what does not decode is taken as it is."""
    encoding = (encoding or "").strip().lower()
    decoders = {
        "gzip": (lambda b: zlib.decompress(b, 47),),
        "x-gzip": (lambda b: zlib.decompress(b, 47),),
        "deflate": (zlib.decompress, lambda b: zlib.decompress(b, -15)),
        "br": (brotli.decompress,),
    }
    for decode in decoders.get(encoding, ()):
        try:
            return decode(body)
        except (zlib.error, brotli.error):
            continue
    return body


def warc_links(stream: IO[bytes], counts: Counter) -> Iterator[pa.Table]:
    """Image links of every HTML ``response`` record of a WARC stream, in tables of about ``BATCH_LINKS``."""
    links = PageLinks()
    for record in records(stream, WarcRecordType.response, counts):
        try:
            record.parse_http(auto_decode="none", quirks_mode=True)
        except (OSError, ValueError):
            counts["bad_records"] += 1
            continue
        content_type = (record.http_content_type or "").lower()
        if not content_type.startswith(_HTML_TYPES):
            continue
        body = _read_all(record, counts)
        if body is None:
            continue
        if "chunked" in (record.http_headers.get("Transfer-Encoding") or "").lower():
            body = dechunk(body)
        body = decode_content(body, record.http_headers.get("Content-Encoding"))
        page_url = target_uri(record.headers.get("WARC-Target-URI"))
        counts["pages"] += 1
        html_links(body, page_url, record.http_charset, links)
        if len(links) >= BATCH_LINKS:
            yield links.resolve(counts)
    yield links.resolve(counts)


def _wat_html(data: bytes, counts: Counter) -> tuple[str | None, dict[str, Any]] | None:
    """A WAT record's page URL and ``HTML-Metadata``, its whole JSON parsed; None (counted) if broken."""
    try:
        envelope = orjson.loads(data)["Envelope"]
        page_url = target_uri(envelope["WARC-Header-Metadata"].get("WARC-Target-URI"))
        return page_url, envelope["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        counts["bad_records"] += 1
        return None


def wat_links(stream: IO[bytes], counts: Counter) -> Iterator[pa.Table]:
    """Image links of every page in a WAT stream, from its ``HTML-Metadata``, in tables of about ``BATCH_LINKS``.

    Each record is scanned by compiled code (:mod:`metaclip_tasks.ingest._watscan`): records without
    ``"HTML-Metadata"`` (requests, metadata, non-HTML responses) are not pages, and a page's image
    links with an alt-text are read straight from its bytes; the whole JSON is parsed only for a page
    with a ``<base>`` or links not written as Common Crawl writes them (the same result, ~3x the time).
    A gzipped file that can be read again from its start (a file; an HTTP body is requested again)
    is inflated member by member and its records framed by compiled code (:func:`_framed_wat`),
    without a Python object per record; where that framing meets anything else (a corrupt member, a
    record framed otherwise), the file is read again by FastWARC from its start, after the records
    already read: the same pairs and counters as FastWARC's alone, which reads any other stream."""
    links = PageLinks()
    read = 0
    if stream.seekable():
        framed = yield from _framed_wat(stream, links, counts)
        if framed is None:
            yield links.resolve(counts)
            return
        read = framed
        stream.seek(0)
    for record in records(stream, WarcRecordType.metadata, counts, skip=read):
        data = _read_all(record, counts)
        if data is not None:
            _wat_record(data, functools.partial(_header_url, record), links, counts)
        if len(links) >= BATCH_LINKS:
            yield links.resolve(counts)
    yield links.resolve(counts)


def _framed_wat(stream: IO[bytes], links: PageLinks, counts: Counter) -> Generator[pa.Table, None, int | None]:
    """A gzipped WAT's records framed by :func:`metaclip_tasks.ingest._watscan.frame` as its members are
    inflated whole (:func:`metaclip_tasks.ingest._inflate.inflate`, ``WAT_CHUNK`` bytes of the file read at a
    time) into one buffer, their links gathered in ``links`` (tables yielded as they fill); returns
    None when the whole file was read so, else how many metadata records were read before what it
    leaves to FastWARC (none for a file that is not gzip)."""
    compressed, start, final = stream.read(WAT_CHUNK), 0, False
    if not compressed.startswith(b"\x1f\x8b"):
        return 0
    out, filled, pos, read = bytearray(2 * WAT_CHUNK), 0, 0, 0
    while True:
        with memoryview(out) as view:
            start, after, inflated = inflate(compressed, start, view, filled, final)
        grew, filled = after > filled, after
        with memoryview(out) as view, view[:filled] as data:
            while True:
                pos, records, pages, images, status, block, block_end = frame(
                    data, pos, BATCH_LINKS, *links.frame_columns()
                )
                counts["records"] += records
                counts["pages"] += pages
                links.add_images(images)
                read += records
                if status == NEED:
                    break
                if status == ODD:
                    return read
                if status == PARSE:
                    counts["records"] += 1
                    read += 1
                    header = bytes(data[pos:block])
                    page_url = lambda header=header: target_uri(_warc_field(header, "WARC-Target-URI"))
                    _wat_record(bytes(data[block:block_end]), page_url, links, counts)
                    pos = block_end + 4
                if len(links) >= BATCH_LINKS:
                    yield links.resolve(counts)
        if inflated == BAD:
            return read  # a corrupt member, or one cut short at the end: FastWARC counts it
        out[: filled - pos] = out[pos:filled]  # the record begun, to the front
        filled, pos = filled - pos, 0
        if inflated == ROOM and not grew:  # not one more member fits behind the record begun
            if len(out) >= WAT_MAX_BUFFER:
                return read  # a record larger than any Common Crawl writes: FastWARC streams it
            out.extend(bytes(len(out)))
        if inflated == MORE:
            if final:
                return None if filled == 0 else read  # the file ends inside a record: FastWARC counts it
            more = stream.read(WAT_CHUNK)
            compressed, start, final = compressed[start:] + more, 0, not more


def _header_url(record: Any) -> str:
    """The page URL in a WARC record's header (for a WAT record whose JSON envelope has none)."""
    return target_uri(record.headers.get("WARC-Target-URI"))


def _wat_record(data: bytes, header_url: Callable[[], str], links: PageLinks, counts: Counter) -> None:
    """One WAT metadata record's JSON: its page's image links into ``links`` when it is a page (counted);
    ``header_url`` gives the page URL from the WARC header where the JSON's envelope has none."""
    scanned = scan(data, *links.columns())
    if scanned is not None and not scanned[0]:
        return  # not a page: no JSON parse
    if scanned is not None and not scanned[1]:
        counts["pages"] += 1
        page_url = scanned[3] or header_url()
        links.add_page(page_url, page_url, scanned[2])
        return
    parsed = _wat_html(data, counts)
    if parsed is None:
        return
    counts["pages"] += 1
    page_url, html = parsed[0] or header_url(), parsed[1]
    head = html.get("Head")
    base = first_string(head.get("Base")) if isinstance(head, dict) else None
    images = [x for x in html.get("Links") or () if isinstance(x, dict) and x.get("path") == "IMG@/src"]
    links.add(
        page_url,
        _resolve_base(page_url, base),
        [x.get("url") for x in images],
        [x.get("alt") for x in images],
        [x.get("title") for x in images],
    )


def _warc_field(header: bytes, name: str) -> str | None:
    """A field of a WARC header (the first when repeated; names in any case): a framed record's, read
    only for the rare page whose JSON gives no page URL."""
    for line in header.decode("utf-8", "replace").split("\r\n")[1:]:
        key, colon, value = line.partition(":")
        if colon and key.strip().lower() == name.lower():
            return value.strip()
    return None


def _resolve_base(page_url: str, given: str | None) -> str:
    """The URL relative links resolve against: ``<base href>`` resolved against the page, else the page."""
    given = (given or "").strip()
    if given:
        try:
            return urljoin(page_url, given)
        except ValueError:
            pass
    return page_url


READERS: dict[str, Callable[[IO[bytes], Counter], Iterator[pa.Table]]] = {"warc": warc_links, "wat": wat_links}


def _pairs(links: pa.Table, language: LanguageFilter, counts: Counter) -> pa.Table:
    """Resolved links as pairs (``PAIRS_SCHEMA``), those in the languages kept; counted."""
    alts = links.column("alt").combine_chunks().dictionary_encode()  # each distinct alt-text identified once
    langs, found = pa.array(language.identify(alts.dictionary.to_pylist()), pa.string()).take(alts.indices), len(links)
    if not language.keeps_all:
        kept = pc.is_in(langs, pa.array(language.languages))
        links, langs = links.filter(kept), langs.filter(kept)
    counts["other_language"] += found - len(links)
    counts["pairs"] += len(links)
    uids = url_uids(links.column("url"))
    return pa.Table.from_arrays(
        [uids, links.column("url"), links.column("alt"), links.column("page_url"), langs, links.column("title")],
        schema=PAIRS_SCHEMA,
    )


def extract_file(
    uri: str, output_uri: str, language: LanguageFilter, fmt: str | None = None
) -> tuple[dict[str, int], files.Stored]:
    """One WARC or WAT file's image–alt-text pairs in the languages kept, as a pairs parquet file at
    ``output_uri`` (in file order, duplicates included); with the file's counters."""
    fmt = fmt or file_format(uri)
    counts: Counter = Counter()
    with open_stream(uri) as stream, ShardWriter(output_uri, PAIRS_SCHEMA) as writer:
        for links in READERS[fmt](stream, counts):
            writer.write(_pairs(links, language, counts))
        written = writer.close()
    return {k: int(counts[k]) for k in COUNTERS}, written
