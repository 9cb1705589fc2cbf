"""Common Crawl-like files for the ingestion tests and benchmark: WARC files of HTTP responses, and
WAT files built from the records of real WARC files in Common Crawl's JSON envelope.

Records are written by hand, each as its own gzip member like Common Crawl's files, with SHA-1
block and payload digests (FastWARC verifies them).  The WAT follows Common Crawl's layout, as
written by ia-web-commons (``ExtractingParseObserver``): one ``metadata`` record per WARC record,
``Envelope.WARC-Header-Metadata``, ``Envelope.Payload-Metadata.HTTP-Response-Metadata`` with
``Response-Message``, ``Headers`` and, for HTML pages, ``HTML-Metadata`` (``Head``: ``Title``,
``Base`` when the page has ``<base href>``, ``Metas``, ``Link``, ``Scripts``; ``Links``: ``A@/href``
with its text, ``IMG@/src`` with ``alt``/``title`` when present, ``IMG@/longdesc``).  Attribute values
are entity-decoded but not resolved (Common Crawl keeps URLs as written).  The page is parsed with
lxml (libxml2), independently of the project's selectolax/lexbor parse.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import lxml.html
from fastwarc.warc import ArchiveIterator

DEFAULT_HTTP_HEADERS: dict[str, str] = {
    "Content-Type": "text/html; charset=utf-8",
    "Server": "nginx/1.24.0",
    "Date": "Sat, 18 May 2024 01:58:10 GMT",
}
WARC_DATE = "2024-05-18T01:58:10Z"
WAT_DATE = "2024-05-31T01:17:49Z"
HTML_TYPES = ("text/html", "application/xhtml+xml")
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.IGNORECASE)
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_MAX_ANCHOR_TEXT = 128  # ia-web-commons clips anchor texts

Page = tuple[str, bytes] | tuple[str, bytes, Mapping[str, str | None]]


# ---------------------------------------------------------------------------------------------- WARC


def _digest(data: bytes) -> str:
    """A WARC digest header value: ``sha1:`` and the base32 SHA-1."""
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode("ascii")


def _record_id(*parts: object) -> str:
    """A stable ``<urn:uuid:...>`` made from ``parts``."""
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, '#'.join(map(str, parts)))}>"


def warc_record(headers: Sequence[tuple[str, str]], block: bytes) -> bytes:
    """One WARC/1.0 record, uncompressed: ``headers`` (Content-Length and the block digest added)."""
    lines = [
        "WARC/1.0",
        *(f"{k}: {v}" for k, v in headers),
        f"Content-Length: {len(block)}",
        f"WARC-Block-Digest: {_digest(block)}",
    ]
    return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + block + b"\r\n\r\n"


def chunked(body: bytes, size: int = 100) -> bytes:
    """``body`` in HTTP/1.1 chunked transfer coding, ``size`` bytes a chunk (one with an extension)."""
    out = []
    for i, start in enumerate(range(0, len(body), size)):
        piece = body[start : start + size]
        out.append(f"{len(piece):x}{';ext=1' if i == 1 else ''}\r\n".encode("ascii") + piece + b"\r\n")
    return b"".join(out) + b"0\r\n\r\n"


def http_response(body: bytes, headers: Mapping[str, str | None], status: str = "200 OK") -> tuple[bytes, bytes]:
    """(the HTTP response message, its payload as sent): headers with a None value are left out;
    ``Transfer-Encoding: chunked`` chunks the body, else Content-Length is set."""
    given = {k: v for k, v in headers.items() if v is not None}
    if "chunked" in (given.get("Transfer-Encoding") or "").lower():
        body = chunked(body)
    else:
        given.setdefault("Content-Length", str(len(body)))
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in given.items()) + "\r\n"
    return head.encode("latin-1") + body, body


def write_warc(
    path: str | Path, pages: Sequence[Page], http_headers: Mapping[str, str | None] = DEFAULT_HTTP_HEADERS
) -> Path:
    """A gzipped WARC (a warcinfo record, then one ``response`` record per page, each its own gzip member).

    A page is ``(url, body)`` or ``(url, body, headers)``: its headers update ``http_headers`` (None
    removes one); ``Transfer-Encoding: chunked`` sends the body chunked."""
    path = Path(path)
    info = b"software: tests/commoncrawl_files.py\r\nformat: WARC File Format 1.0\r\n"
    members = [
        gzip.compress(
            warc_record(
                [
                    ("WARC-Type", "warcinfo"),
                    ("WARC-Date", WARC_DATE),
                    ("WARC-Filename", path.name),
                    ("WARC-Record-ID", _record_id(path.name, "info")),
                    ("Content-Type", "application/warc-fields"),
                ],
                info,
            )
        )
    ]
    for i, page in enumerate(pages):
        url, body = page[0], page[1]
        headers = {**http_headers, **(page[2] if len(page) > 2 else {})}  # type: ignore[misc]
        message, payload = http_response(body, headers)
        members.append(
            gzip.compress(
                warc_record(
                    [
                        ("WARC-Type", "response"),
                        ("WARC-Date", WARC_DATE),
                        ("WARC-Record-ID", _record_id(path.name, i)),
                        ("Content-Type", "application/http; msgtype=response"),
                        ("WARC-Target-URI", url),
                        ("WARC-Payload-Digest", _digest(payload)),
                    ],
                    message,
                )
            )
        )
    path.write_bytes(b"".join(members))
    return path


# ---------------------------------------------------------------------------------------------- HTML


def dechunk(data: bytes) -> bytes:
    """A chunked HTTP body decoded (a plain reading of RFC 9112 7.1; what does not parse is kept)."""
    out, pos = bytearray(), 0
    while True:
        eol = data.find(b"\n", pos)
        if eol < 0:
            return bytes(out) if out else data
        try:
            size = int(data[pos:eol].split(b";")[0].strip(), 16)
        except ValueError:
            return bytes(out) if out else data
        if size == 0:
            return bytes(out)
        out += data[eol + 1 : eol + 1 + size]
        pos = eol + 1 + size
        while data[pos : pos + 1] in (b"\r", b"\n"):
            pos += 1


def decode_html(body: bytes, charset: str | None) -> str:
    """The page's text: UTF-8 when valid, else the declared charset (HTTP, else ``<meta>``), else Windows-1252."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if not charset:
        found = _META_CHARSET.search(body[:4096])
        charset = found.group(1).decode("ascii") if found else None
    try:
        return body.decode(charset or "cp1252", errors="replace")
    except LookupError:
        return body.decode("cp1252", errors="replace")


def parse_html(body: bytes, charset: str | None) -> Any:
    """The page parsed by lxml (libxml2's HTML parser): its root element."""
    text = decode_html(body, charset)
    return lxml.html.document_fromstring(
        text.encode("utf-8") or b"<html></html>", parser=lxml.html.HTMLParser(encoding="utf-8")
    )


def elements(root: Any, tag: str | None = None) -> Iterator[Any]:
    """The root's elements (no comments or processing instructions), in document order."""
    for el in root.iter(tag) if tag else root.iter():
        if isinstance(el.tag, str):
            yield el


def base_href(root: Any) -> str | None:
    """The ``href`` of the page's first ``<base href>``, as written."""
    for el in elements(root, "base"):
        if el.get("href") is not None:
            return el.get("href")
    return None


# ----------------------------------------------------------------------------------------- HTTP + WAT


@dataclass
class HttpMessage:
    """An HTTP request or response read from a WARC record's block."""

    first_line: str
    headers: list[tuple[str, str]]
    body: bytes
    headers_length: int

    def header(self, name: str) -> str | None:
        """The last value of a header (case-insensitive)."""
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[-1] if found else None


def parse_http(block: bytes) -> HttpMessage | None:
    """A record block as an HTTP message, or None when it has no header end."""
    end = _HEAD_END.search(block)
    if end is None:
        return None
    lines = block[: end.start()].decode("latin-1").splitlines()
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return HttpMessage(lines[0] if lines else "", headers, block[end.end() :], end.end())


def content_type(message: HttpMessage) -> tuple[str, str | None]:
    """(the media type, lowercase; the charset parameter or None)."""
    value = message.header("Content-Type") or ""
    media, _, params = value.partition(";")
    found = re.search(r"charset\s*=\s*[\"']?([^\"';\s]+)", params, re.IGNORECASE)
    return media.strip().lower(), found.group(1) if found else None


def entity(message: HttpMessage) -> bytes:
    """The response's payload with its transfer and content codings removed (Common Crawl parses it so)."""
    body = message.body
    if "chunked" in (message.header("Transfer-Encoding") or "").lower():
        body = dechunk(body)
    coding = (message.header("Content-Encoding") or "").lower()
    if coding in ("gzip", "x-gzip", "deflate") and body[:1] in (b"\x1f", b"\x78"):
        try:
            body = zlib.decompressobj(47 if body[:1] == b"\x1f" else 15).decompress(body)
        except zlib.error:
            pass
    return body


def _attrs(el: Any, names: Sequence[str]) -> dict[str, str]:
    return {n: el.get(n) for n in names if el.get(n) is not None}


def html_metadata(body: bytes, charset: str | None, list_values: bool = False) -> dict:
    """``HTML-Metadata`` of a page as Common Crawl's WAT gives it (``Head`` and ``Links``)."""
    root = parse_html(body, charset)
    head: dict[str, Any] = {}
    metas, link, scripts, links = [], [], [], []
    base = base_href(root)
    for el in elements(root):
        tag = el.tag.lower()
        if tag == "title" and "Title" not in head:
            head["Title"] = " ".join((el.text_content() or "").split())
        elif tag == "meta":
            found = _attrs(el, ("name", "rel", "content", "http-equiv", "property"))
            if found:
                metas.append(found)
        elif tag == "link" and el.get("href") is not None:
            link.append({"path": "LINK@/href", "url": el.get("href"), **_attrs(el, ("rel", "type"))})
        elif tag == "script" and el.get("src") is not None:
            scripts.append({"path": "SCRIPT@/src", "url": el.get("src"), **_attrs(el, ("type",))})
        elif tag == "a" and el.get("href") is not None:
            entry = {
                "path": "A@/href",
                "url": el.get("href"),
                **_attrs(el, ("target", "alt", "title", "rel", "hreflang", "type")),
            }
            text = " ".join(el.text_content().split())[:_MAX_ANCHOR_TEXT]
            if text:
                entry["text"] = text
            links.append(entry)
        elif tag == "img":
            if el.get("src") is not None:
                links.append({"path": "IMG@/src", "url": el.get("src"), **_attrs(el, ("alt", "title"))})
            if el.get("longdesc") is not None:
                links.append({"path": "IMG@/longdesc", "url": el.get("longdesc")})
    if base is not None:
        head["Base"] = [base] if list_values else base
    for key, value in (("Metas", metas), ("Link", link), ("Scripts", scripts)):
        if value:
            head[key] = value
    out: dict[str, Any] = {}
    if head:
        out["Head"] = head
    if links:
        out["Links"] = links
    return out


def _fields(pairs: Sequence[tuple[str, str]], list_values: bool) -> dict[str, Any]:
    """Header pairs as a JSON object: repeated names give a list (Common Crawl from CC-MAIN-2024-51),
    every value a list when ``list_values``."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            out[k] = (out[k] if isinstance(out[k], list) else [out[k]]) + [v]
        else:
            out[k] = [v] if list_values else v
    return out


def _dumps(obj: dict) -> bytes:
    """Compact JSON as ia-web-commons writes it (non-ASCII kept, ``</`` written ``<\\/``)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/").encode("utf-8")


@dataclass
class WatSummary:
    """What a WAT file holds."""

    path: Path
    records: int  # metadata records, one copy
    pages: int  # of them with HTML-Metadata, one copy
    copies: int
    size: int  # bytes written (compressed)
    inflated: int  # bytes of the records uncompressed


def _source_records(warc_path: Path) -> Iterator[tuple[Any, bytes]]:
    """(record, its whole block) for every complete record of a WARC file."""
    with open(warc_path, "rb") as f:
        for record in ArchiveIterator(f, parse_http=False, quirks_mode=True):
            block = record.reader.read()
            if len(block) >= record.content_length:
                yield record, block


def wat_envelopes(warc_path: str | Path, list_values: bool = False) -> Iterator[tuple[str, str, dict]]:
    """(target URI, refers-to record id, the WAT JSON) for each request, response and metadata record of a WARC."""
    warc_path = Path(warc_path)
    for record, block in _source_records(warc_path):
        warc_headers = record.headers.items()
        warc_type = record.headers.get("WARC-Type") or ""
        target = record.headers.get("WARC-Target-URI") or ""
        payload: dict[str, Any]
        if warc_type in ("request", "response"):
            message = parse_http(block)
            if message is None:
                continue
            common = {
                "Headers-Length": str(message.headers_length),
                "Headers": _fields(message.headers, list_values),
                "Entity-Length": str(len(message.body)),
                "Entity-Trailing-Slop-Length": "0",
            }
            if warc_type == "request":
                method, _, rest = message.first_line.partition(" ")
                path, _, version = rest.rpartition(" ")
                payload = {
                    "Actual-Content-Type": "application/http; msgtype=request",
                    "HTTP-Request-Metadata": {
                        "Request-Message": {"Method": method, "Path": path, "Version": version},
                        **common,
                    },
                }
            else:
                version, _, status = message.first_line.partition(" ")
                code, _, reason = status.partition(" ")
                response: dict[str, Any] = {
                    "Response-Message": {"Version": version, "Status": code, "Reason": reason},
                    **common,
                }
                media, charset = content_type(message)
                if media.startswith(HTML_TYPES):
                    response["HTML-Metadata"] = html_metadata(entity(message), charset, list_values)
                payload = {
                    "Actual-Content-Type": "application/http; msgtype=response",
                    "HTTP-Response-Metadata": response,
                }
        elif warc_type == "metadata":
            fields = [line.partition(":") for line in block.decode("utf-8", "replace").splitlines()]
            payload = {
                "Actual-Content-Type": "application/metadata-fields",
                "WARC-Metadata-Metadata": {
                    "Metadata-Records": [{"Name": k, "Value": v.strip()} for k, s, v in fields if s]
                },
            }
        else:
            continue
        payload.update({"Actual-Content-Length": str(len(block)), "Trailing-Slop-Length": "4"})
        envelope = {
            "Format": "WARC",
            "WARC-Header-Length": str(sum(len(k) + len(v) + 4 for k, v in warc_headers) + 10),
            "Actual-Content-Length": str(len(block)),
            "WARC-Header-Metadata": _fields(warc_headers, list_values),
            "Block-Digest": _digest(block),
            "Payload-Metadata": payload,
        }
        container = {
            "Filename": warc_path.name,
            "Compressed": warc_path.suffix == ".gz",
            "Offset": str(record.stream_pos),
        }
        yield target, record.headers.get("WARC-Record-ID") or "", {"Container": container, "Envelope": envelope}


def write_wat(
    warc_paths: Sequence[str | Path], out_path: str | Path, list_values: bool = False, copies: int = 1
) -> WatSummary:
    """A gzipped WAT of the WARC files' request, response and metadata records (a warcinfo record
    first; one ``metadata`` record of Content-Type application/json per WARC record, each its own gzip
    member).  ``list_values`` writes WARC and HTTP header values and ``Head.Base`` as one-element lists;
    ``copies`` writes the records that many times (the same record ids)."""
    out_path = Path(out_path)
    info = b"Software-Info: tests/commoncrawl_files.py\r\nformat: WARC File Format 1.0\r\n"
    first = gzip.compress(
        warc_record(
            [
                ("WARC-Type", "warcinfo"),
                ("WARC-Date", WAT_DATE),
                ("WARC-Filename", out_path.name),
                ("WARC-Record-ID", _record_id(out_path.name, "info")),
                ("Content-Type", "application/warc-fields"),
            ],
            info,
        )
    )
    members, records, pages, inflated = [], 0, 0, 0
    for warc_path in warc_paths:
        for i, (target, refers_to, envelope) in enumerate(wat_envelopes(warc_path, list_values)):
            block = _dumps(envelope)
            raw = warc_record(
                [
                    ("WARC-Type", "metadata"),
                    ("WARC-Target-URI", target),
                    ("WARC-Date", WAT_DATE),
                    ("WARC-Record-ID", _record_id(out_path.name, warc_path, i)),
                    ("WARC-Refers-To", refers_to),
                    ("Content-Type", "application/json"),
                ],
                block,
            )
            members.append(gzip.compress(raw, compresslevel=6))
            records += 1
            inflated += len(raw)
            pages += "HTML-Metadata" in envelope["Envelope"]["Payload-Metadata"].get("HTTP-Response-Metadata", {})
    body = b"".join(members)
    with open(out_path, "wb") as f:
        f.write(first)
        f.writelines(body for _ in range(copies))
    return WatSummary(out_path, records, pages, copies, len(first) + copies * len(body), copies * inflated)


class ReadOnce(io.RawIOBase):
    """A stream that cannot be read again from its start (it tells its position, as FastWARC needs):
    what the WAT reader leaves to FastWARC throughout."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw, self._read = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._raw.readinto(buffer) or 0
        self._read += n
        return n

    def tell(self) -> int:
        return self._read
