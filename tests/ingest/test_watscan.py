"""The compiled WAT record scan (metaclip_tasks/ingest/_watscan.c) against its literal definition: the
record parsed whole by orjson, its ``HTML-Metadata.Links`` with ``path == "IMG@/src"``, those with a
string alt that is not blank, their values normalised by Python's own string methods.  Link objects written as Common Crawl writes them are always read; anything
else may be refused (None: the reader then parses the whole record), never read differently; a
Common Crawl link is refused only when "IMG@/src" also stands as another value, where the scan
cannot tell it from a link's start.  The scan appends a page's links to the reader's own lists
(links.PageLinks' columns), and nothing when it is not certain or the page has a ``<base>``."""

from __future__ import annotations

import json
import sys

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from metaclip_tasks.ingest._watscan import scan as scan_into
from metaclip_tasks.ingest.extract import target_uri

WHITESPACE = [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()]  # what str.split and str.strip remove
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(['"', "\\", "/", "}", "{", "\n", "\x00", "é", "😀", "\r", *WHITESPACE, *WHITESPACE]),
    ),
    max_size=12,
)
KEYS = st.sampled_from(["url", "alt", "title", "target", "rel", "text", "é", 'q"uote'])


def scan(data: bytes | bytearray, page: int = 7) -> tuple | None:
    """The scan's answer with the links it appended (after what the lists held), in one tuple: (html,
    base, images, urls, alts, titles); its page URL is checked apart."""
    held = ["held"]
    pages, urls, alts, titles = [*held], [*held], [*held], [*held]
    found = scan_into(data, page, pages, urls, alts, titles)
    assert pages[:1] == urls[:1] == alts[:1] == titles[:1] == held
    pages, urls, alts, titles = pages[1:], urls[1:], alts[1:], titles[1:]
    assert pages == [page] * len(urls) and len(urls) == len(alts) == len(titles)
    if found is None or not found[0] or found[1]:
        assert urls == [], "appended links though not certain, or for a page parsed whole"
    return None if found is None else (*found[:3], urls, alts, titles)


def record(links: list[dict], ensure_ascii: bool, base: bool = False) -> bytes:
    head = {"Title": "a page", **({"Base": "http://b/"} if base else {})}
    body = {
        "Envelope": {"Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {"Head": head, "Links": links}}}}
    }
    return json.dumps(body, ensure_ascii=ensure_ascii, separators=(",", ":")).encode()


def squeezed(text: str | None) -> str | None:
    return None if text is None else " ".join(text.split())


def stripped(src: str | None) -> str | None:
    return src.strip().replace("\t", "").replace("\n", "").replace("\r", "") if src else None


def literal(data: bytes) -> tuple:
    """What the scan means, from the whole record parsed: the image links with an alt-text that is not
    blank, the url stripped (None when empty), alt-texts and titles squeezed."""
    html = orjson.loads(data)["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
    images = [x for x in html["Links"] if x.get("path") == "IMG@/src"]
    kept = [x for x in images if isinstance(x.get("alt"), str) and x["alt"].split()]
    if "Base" in html["Head"]:
        return True, True, len(images), [], [], []  # the reader parses the record for its base
    return (
        True,
        False,
        len(images),
        [stripped(x.get("url")) for x in kept],
        [squeezed(x.get("alt")) for x in kept],
        [squeezed(x.get("title")) for x in kept],
    )


LINK = st.builds(
    lambda path, fields: {"path": path, **fields},
    st.sampled_from(["IMG@/src", "A@/href"]),
    st.dictionaries(KEYS, TEXT, max_size=4),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(LINK, max_size=6), st.booleans(), st.booleans())
@example([{"path": "IMG@/src", "url": "IMG@/src"}], False, False)
def test_common_crawl_written_links_are_read_as_parsed(links, ensure_ascii, base):
    data = record(links, ensure_ascii, base)
    found = scan(data)
    if found is None:  # refused only where "IMG@/src" is also another key's value: not a link's start
        assert any(v == "IMG@/src" for link in links for k, v in link.items() if k != "path"), data
    elif found[1] and not literal(data)[1]:  # "Base" stands as a value: the page is parsed whole, the same links
        assert b'"Base"' in data and found[2:] == (literal(data)[2], [], [], [])
    else:
        assert found == literal(data)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(LINK, max_size=4),
    st.integers(0, 400),
    st.sampled_from(
        [b" ", b"\\", b'"', b"\\u", b"\\ud800", b"\xff", b"\x01", b"null", b",", b"}", b'"path":"IMG@/src",']
    ),
)
def test_broken_or_unusual_links_are_refused_never_misread(links, at, insert):
    data = record(links, True)
    data = data[: min(at, len(data))] + insert + data[min(at, len(data)) :]
    found = scan(data)
    try:
        expected = literal(data)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        expected = None  # the reader would count a bad record; the scan may not know it
    if found is not None and found[0] and expected is not None:
        assert found[2:] == expected[2:]


def test_flags_and_plain_cases():
    assert scan(b'{"Envelope":{"WARC-Header-Metadata":{}}}') == (False, False, 0, [], [], [])
    page = b'{"HTML-Metadata":{"Links":[{"path":"IMG@/src","url":"/a.jpg","alt":"a \\u00e9 \\"dog\\""},{"path":"IMG@/src","url":"b"}]}}'
    assert scan(page) == (True, False, 2, ["/a.jpg"], ['a é "dog"'], [None])
    assert scan(b'{"HTML-Metadata":{"Links":[{"url":"x","path":"IMG@/src"}]}}') is None  # path not first
    assert scan(b'{"HTML-Metadata":{"Links":[{"path":"IMG@/src","alt":null}]}}') is None  # not a string
    assert scan(b'{"HTML-Metadata":{"Links":[{"path":"IMG@/src","alt":"\\ud800"}]}}') is None  # a lone surrogate
    assert scan(bytearray(b"no page")) == (False, False, 0, [], [], [])
    spaced = b'{"HTML-Metadata":{"Links":[{"path":"IMG@/src","url":" /a\\tb\\n ","alt":" a\\u00a0 b\\n","title":"\\u3000"},{"path":"IMG@/src","url":"","alt":"c"}]}}'
    assert scan(spaced) == (
        True,
        False,
        2,
        ["/ab", None],
        ["a b", "c"],
        ["", None],
    )  # stripped, squeezed; an empty url is None
    assert scan(b'{"HTML-Metadata":{"Links":[{"path":"IMG@/src","url":"/a","alt":" \\t "}]}}') == (
        True,
        False,
        1,
        [],
        [],
        [],
    )
    escaped = b'{"HTML-Metadata":{"Links":[{"path":"IMG@\\/src","url":"/a","alt":"x"}]}}'  # "\/" is "/" in JSON
    assert scan(escaped) == (True, False, 1, ["/a"], ["x"], [None])
    assert scan(b'{"HTML-Metadata":{"Head":{"path":"IMG@/src"},"Links":[]}}') is None  # not a link: parsed whole


def test_page_url_is_the_envelopes_target():
    def page(header: bytes) -> bytes:
        return b'{"Envelope":{"WARC-Header-Metadata":{' + header + b'},"HTML-Metadata":{"Links":[]}}}'

    def target(data: bytes) -> str | None:
        return scan_into(data, 0, [], [], [], [])[3]

    for value in [
        b'"http://a.example/p?q=1"',
        b'" <http://a.example/\\/> \\n"',
        b'"<http://a.example/>"',
        b'"http:\\/\\/a.example\\/"',
        b'"\\u001f http://a.example/ "',
        b'"<>"',
        b'""',
    ]:
        data = page(b'"WARC-Target-URI":' + value)
        assert target(data) == target_uri(orjson.loads(data)["Envelope"]["WARC-Header-Metadata"]["WARC-Target-URI"]), (
            value
        )
    assert target(page(b'"WARC-Target-URI":"http://\\u00e9.example/"')) is None  # not ASCII: the WARC header's
    assert target(page(b'"WARC-Target-URI":["http://a.example/"]')) is None  # the list form: the WARC header's
    assert target(page(b'"WARC-Target-URI":"http://a/","WARC-Target-URI":"http://b/"')) is None  # twice
    assert target(page(b'"WARC-Type":"metadata"')) is None
    assert scan_into(b'{"WARC-Target-URI":"http://a/"}', 0, [], [], [], []) == (False, False, 0, None)  # not a page


def test_a_page_cut_short_is_not_certain_and_arguments_are_checked():
    assert scan(b'{"HTML-Metadata":{"Links":[{"path":"IMG@/src","url":"/a","alt":"x"}]}}\r\n') is not None
    assert scan(b'{"HTML-Metadata":{"Links":[{"path":"IMG@/src","url":"/a","alt":"x"}]') is None  # truncated
    assert scan(b'{"no page":1') == (False, False, 0, [], [], [])  # not a page: not read further
    with pytest.raises(TypeError, match="6 arguments"):
        scan_into(b"{}", 0, [], [], [])
    with pytest.raises(TypeError, match="must be lists"):
        scan_into(b"{}", 0, [], (), [], [])
    with pytest.raises(TypeError, match="page must be an int"):
        scan_into(b"{}", "0", [], [], [], [])
