"""The four C extensions: a type stub beside each names exactly what the module exports, and the codes that
C and Python share are the extensions' own (defined once in C, exported as module constants), which the
Python side reads instead of copies of its own."""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path
from types import ModuleType

import pytest

import metaclip_tasks
from metaclip_tasks.curation import _match, matching
from metaclip_tasks.ingest import _inflate, _uids, _watscan, extract, uids

EXTENSIONS = (_watscan, _inflate, _uids, _match)


def _stub_names(module: ModuleType) -> tuple[set[str], set[str]]:
    """The public functions and constants that the ``.pyi`` beside an extension declares."""
    stub = Path(module.__file__).parent / f"{module.__name__.rsplit('.', 1)[1]}.pyi"
    functions, constants = set(), set()
    for node in ast.parse(stub.read_text(), str(stub)).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            functions.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            constants.add(node.target.id)
        elif isinstance(node, ast.Assign):
            constants.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {n for n in functions if not n.startswith("_")}, {n for n in constants if not n.startswith("_")}


@pytest.mark.parametrize("module", EXTENSIONS, ids=lambda m: m.__name__)
def test_each_extension_has_a_stub_of_exactly_its_public_names(module: ModuleType) -> None:
    """The stub's functions are the module's callables and its constants the rest, no name missing or extra."""
    functions, constants = _stub_names(module)
    public = {n for n in dir(module) if not n.startswith("_")}
    assert functions == {n for n in public if callable(getattr(module, n))}
    assert constants == {n for n in public if not callable(getattr(module, n))}


def test_the_package_is_marked_typed() -> None:
    """py.typed: type checkers read the package's annotations and the extensions' stubs."""
    assert (Path(metaclip_tasks.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize("module", [_watscan, _inflate], ids=lambda m: m.__name__)
def test_statuses_are_constants_numbered_in_order(module: ModuleType) -> None:
    """``STATUSES`` names each status constant, in the order of its value (the C enum's)."""
    assert module.STATUSES and [getattr(module, name) for name in module.STATUSES] == list(range(len(module.STATUSES)))


def _warc(body: bytes, kind: str = "metadata") -> bytes:
    """A WARC record of ``body``, framed as Common Crawl frames its records."""
    return f"WARC/1.0\r\nWARC-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body + b"\r\n\r\n"


def _page(envelope_url: bool) -> bytes:
    """A WAT page's JSON with one image link, its page URL in the envelope or (``envelope_url`` false) not."""
    links = [{"path": "IMG@/src", "url": "http://a/1.jpg", "alt": "a cat"}]
    payload = {"HTTP-Response-Metadata": {"HTML-Metadata": {"Links": links}}}
    header = {"WARC-Header-Metadata": {"WARC-Target-URI": "http://a/"}} if envelope_url else {}
    return json.dumps({"Envelope": {**header, "Payload-Metadata": payload}}, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("data", "limit", "status"),
    [
        (b"", 10, "NEED"),
        (_warc(_page(True))[:-1], 10, "NEED"),
        (_warc(_page(True)), 1, "FULL"),
        (_warc(_page(False)), 10, "PARSE"),
        (b"GET / HTTP/1.1\r\n\r\n", 10, "ODD"),
    ],
)
def test_frame_returns_its_exported_statuses(data: bytes, limit: int, status: str) -> None:
    """Cut short, full at ``limit`` links, a page the reader parses, a record framed otherwise: each its constant."""
    assert _watscan.frame(data, 0, limit, *[[] for _ in range(6)])[4] == getattr(_watscan, status)


@pytest.mark.parametrize(
    ("compressed", "room", "final", "status"),
    [
        (b"", 10, False, "MORE"),
        (gzip.compress(b"x" * 100), 100, False, "MORE"),
        (gzip.compress(b"x" * 100), 10, False, "ROOM"),
        (b"\x1f\x8b not a gzip member", 100, True, "BAD"),
    ],
)
def test_inflate_returns_its_exported_statuses(compressed: bytes, room: int, final: bool, status: str) -> None:
    """All read, no room for the next member, not gzip: each its constant."""
    assert _inflate.inflate(compressed, 0, bytearray(room), 0, final)[2] == getattr(_inflate, status)


def test_extract_takes_the_statuses_from_the_extensions() -> None:
    """extract.py imports every status it compares from the extension that returns it, and binds none itself."""
    tree = ast.parse(Path(extract.__file__).read_text())
    imported = {node.module: {a.name for a in node.names} for node in tree.body if isinstance(node, ast.ImportFrom)}
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    for module in (_watscan, _inflate):
        compared = used & set(module.STATUSES)
        assert compared and compared <= imported[module.__name__]
    statuses = set(_watscan.STATUSES) | set(_inflate.STATUSES)
    assigned = [node for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)]
    bound = {
        t.id for node in assigned for t in ast.walk(node) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)
    }
    assert not {name.lstrip("_") for name in bound} & statuses


def test_matching_takes_the_engine_s_layout_and_spacing_from_it() -> None:
    """The tables' order and names, and spacing's characters, are the token engine's."""
    assert matching.TABLES is _match.TABLES and len(set(_match.TABLES)) == len(_match.TABLES)
    assert "".join(matching.PUNCTS_TO_WRAP) == _match.PUNCTS_TO_WRAP
    assert "".join(matching.CHARS_TO_SPACE) == _match.CHARS_TO_SPACE
    assert matching.spacing("a,b\tc") == " a , b c "


def test_the_compiled_hash_writes_uids_as_long_as_url_uid_s() -> None:
    """The compiled column hash writes HEX_DIGITS digits a uid, the length of url_uid's."""
    assert _uids.HEX_DIGITS == uids.UID_CHARS == len(uids.url_uid("http://a/"))
