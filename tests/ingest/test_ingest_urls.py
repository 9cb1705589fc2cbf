"""Image links (metaclip_tasks/ingest/links.py) against their literal definition, link by link: an
http(s) source kept as written (stripped, tabs and newlines removed), any other ``urljoin(base,
src)``; only http(s) results with a host kept; alt-texts and titles as ``" ".join(text.split())``,
empty alts dropped.  Many pages with different bases go through one batch, so each column fast path
(absolute, root-relative, directory-relative) and the one-by-one path are checked together."""

from __future__ import annotations

import re
import sys
from collections import Counter
from urllib.parse import urljoin

from hypothesis import given, settings
from hypothesis import strategies as st

from metaclip_tasks.ingest.links import PageLinks

BASES = [
    "http://example.com/a/b.html?q=1#f",
    "https://user@h.example:8443/dir/",
    "http://h",
    "HTTPS://H.example/x/y/z",
    "http://[::1]/a/",
    "http://h/a//b/../c;p/d?q",
    "http://h/./x/",
    "ftp://files.example/dir/",
    "not a url",
    "http://[broken/",
]
WHITESPACE = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())  # Python's own
HTTP = re.compile(r"https?://[^/?#]", re.IGNORECASE)  # an http(s) URL with a host: kept as written
PIECES = [
    "/",
    "//",
    ".",
    "..",
    "a",
    "b.jpg",
    "?",
    "#",
    ";p",
    "%2e",
    " ",
    "\\",
    ":",
    "@",
    "http:",
    "https:",
    "HtTp://",
    "data:",
    "x.y",
    "\t",
    "\n",
    "\x01",
    "\x1c",
    "\xa0",
    "\u3000",
    "é",
    "[",
    "]",
    "ſ",
]
SOURCES = st.one_of(st.none(), st.lists(st.sampled_from(PIECES), max_size=8).map("".join))
TEXTS = st.one_of(st.none(), st.text(alphabet=st.sampled_from(["a", "b", " ", *WHITESPACE, "\x00", "é"]), max_size=6))


def literal(base: str, src: str | None, alt: str | None, title: str | None) -> tuple[str, str, str | None] | None:
    """The rule, written out for one image: (url, alt, title) or None."""
    alt = " ".join(alt.split()) if alt else ""
    if not alt or not src:
        return None
    written = src.strip().translate(str.maketrans("", "", "\t\n\r"))
    try:
        url = (written if HTTP.match(written) else urljoin(base, written)) if written else None
    except ValueError:
        url = None
    if url is None or not HTTP.match(url):
        return None
    return url, alt, (" ".join(title.split()) or None) if title else None


def kind(base: str, src: str | None, alt: str | None) -> str | None:
    """How the rule counts one image with an alt-text and a source: kept as written, resolved, dropped, or None."""
    if not (alt and alt.split() and src):
        return None
    written = src.strip().translate(str.maketrans("", "", "\t\n\r"))
    if not written:
        return None
    if HTTP.match(written):
        return "absolute"
    return "relative_resolved" if literal(base, src, alt, None) else "non_http_dropped"


def resolved(pages: list[tuple[str, list[tuple]]]) -> tuple[list[tuple], Counter]:
    links, counts = PageLinks(), Counter()
    for base, images in pages:
        links.add("http://page.example/", base, [i[0] for i in images], [i[1] for i in images], [i[2] for i in images])
    table = links.resolve(counts)
    return [tuple(row.values()) for row in table.select(["url", "alt", "title"]).to_pylist()], counts


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(BASES), st.lists(st.tuples(SOURCES, TEXTS, TEXTS), max_size=6)), max_size=5))
def test_pages_resolve_as_the_literal_rule(pages):
    got, counts = resolved(pages)
    expected = [
        found for base, images in pages for src, alt, title in images if (found := literal(base, src, alt, title))
    ]
    assert got == expected
    assert counts["images"] == sum(len(images) for _, images in pages)
    assert counts["with_alt"] == sum(1 for _, images in pages for src, alt, _ in images if alt and alt.split() and src)
    kinds = Counter(kind(base, src, alt) for base, images in pages for src, alt, _ in images)
    assert (counts["relative_resolved"], counts["non_http_dropped"]) == (
        kinds["relative_resolved"],
        kinds["non_http_dropped"],
    )


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(BASES), st.lists(st.sampled_from(PIECES), max_size=8).map("".join))
def test_sources_resolve_as_urljoin(base, src):
    got, _ = resolved([(base, [(src, "an alt", None)])])
    found = literal(base, src, "an alt", None)
    assert got == ([found] if found else [])


def test_alt_and_title_whitespace_is_normalised_and_empty_alts_dropped():
    got, counts = resolved(
        [
            (
                "http://p/",
                [
                    ("/a.jpg", "  a\n\tdog  ", " a  title "),
                    ("/b.jpg", " \n ", None),
                    ("/c.jpg", None, None),
                    (None, "no src", None),
                ],
            )
        ]
    )
    assert got == [("http://p/a.jpg", "a dog", "a title")]
    assert (counts["images"], counts["with_alt"]) == (4, 1)


def test_list_values_read_as_their_first_string():
    got, _ = resolved([("http://p/", [(["/a.jpg", "/b.jpg"], ["a cat"], [None, "t"]), (7, "a dog", None)])])
    assert got == [("http://p/a.jpg", "a cat", "t")]


TRICKY = [
    "//h",
    "//h/",
    "//h?",
    "//h?q",
    "//h#",
    "//h/a/../b",
    "//é.example/x",
    "//[::1]/x",
    "//[bad/x",
    "//h:80/x;p",
    "//u@h/x",
    "/p?",
    "/p#",
    "/p?q#f",
    "/p#f?",
    "/a/./b",
    "/a;b/c",
    "/a//b",
    "a?",
    "a#",
    "a?q#f",
    "?q",
    "#f",
    "a;b",
    "a//b",
    "./a",
    "a/..",
    "x:y",
    "HTTP:x",
    "hTtPs://h/x",
    "data:image/png;base64,AAAA",
    "javascript:void(0)",
    "mailto:a@b",
    "\x01a",
    "a\x7fb",
    "é/ü.jpg",
    "%2e%2e/a",
    "a b.jpg",
]


def test_tricky_sources_on_every_base():
    pages = [(base, [(src, "an alt", None) for src in TRICKY]) for base in BASES]
    got, counts = resolved(pages)
    assert got == [
        found for base, images in pages for src, alt, title in images if (found := literal(base, src, alt, title))
    ]
    assert counts["with_alt"] == len(BASES) * len(TRICKY)
    kinds = Counter(kind(base, src, alt) for base, images in pages for src, alt, _ in images)
    assert (counts["relative_resolved"], counts["non_http_dropped"]) == (
        kinds["relative_resolved"],
        kinds["non_http_dropped"],
    )
