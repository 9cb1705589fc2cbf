"""Image URLs: an http(s) source kept as written (tabs and newlines removed), any other resolved
exactly as ``urljoin(base, src)`` (the literal definition), the fast paths included; only http(s) results with a host kept; whitespace in alt-texts normalised."""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import urljoin

from hypothesis import given, settings
from hypothesis import strategies as st

from metaclip_tasks.ingest import page_links

BASES = ["http://example.com/a/b.html?q=1#f", "https://user@h.example:8443/dir/", "http://h", "HTTPS://H.example/x/y/z", "http://[::1]/a/",
         "ftp://files.example/dir/", "not a url"]  # fmt: skip
HTTP = re.compile(r"https?://[^/?#]", re.IGNORECASE)  # an http(s) URL with a host: kept as written
PIECES = ["/", "//", ".", "..", "a", "b.jpg", "?", "#", ";p", "%2e", " ", "\\", ":", "@", "http:", "https:", "data:", "x.y", "\t", "\n", "é", "[", "]"]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(BASES), st.lists(st.sampled_from(PIECES), max_size=8).map("".join))
def test_sources_resolve_as_urljoin(base, src):
    counts: Counter = Counter()
    links = page_links("http://page.example/", base, [src], ["an alt"], [None], counts)
    written = src.strip().translate(str.maketrans("", "", "\t\n\r"))
    try:
        expected = (written if HTTP.match(written) else urljoin(base, written)) if written else None
    except ValueError:
        expected = None
    keep = expected is not None and HTTP.match(expected) is not None
    assert [x.url for x in links] == ([expected] if keep else [])
    assert counts["images"] == 1


def test_alt_and_title_whitespace_is_normalised_and_empty_alts_dropped():
    counts: Counter = Counter()
    links = page_links("http://p/", "http://p/", ["/a.jpg", "/b.jpg", "/c.jpg", None],
                       ["  a\n\tdog  ", " \n ", None, "no src"], [" a  title ", None, None, None], counts)  # fmt: skip
    assert [(x.url, x.alt, x.title) for x in links] == [("http://p/a.jpg", "a dog", "a title")]
    assert (counts["images"], counts["with_alt"]) == (4, 1)
