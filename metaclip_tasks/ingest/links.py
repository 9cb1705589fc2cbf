"""Image links of many pages resolved at once, as Arrow columns: the per-image work of ingestion.

A link is kept when its alt-text is non-empty (whitespace normalised as ``" ".join(alt.split())``)
and its ``src`` gives an http(s) URL with a host: an http(s) ``src`` kept as written (surrounding
whitespace, tabs and newlines removed), any other ``urljoin(base, src)``.  The two common cases, an
absolute http(s) source and a plain root-relative one (``/path`` joined to the page's origin), are
computed as columns with Arrow's compute functions; the rest (relative paths, ``//host``, dot
segments, other schemes) goes through :func:`resolve_source`, one link at a time.  The rule is one:
``tests/test_ingest_urls.py`` checks both ways against the literal definition.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Python's whitespace (what str.split and str.strip remove); no code point above U+3000 is one.
_ABSOLUTE = re.compile(r"https?://[^/?#]", re.IGNORECASE)  # an http(s) URL with a host
_ABSOLUTE_ASCII = "^[hH][tT][tT][pP][sS]?://[^/?#]"  # the same in RE2, ASCII letters only (the rest: one by one)
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:")
_OTHER_SCHEME = ("^[a-zA-Z][a-zA-Z0-9+.-]*:", "^[hH][tT][tT][pP][sS]?:")  # data:, javascript:...: dropped
_EMPTY_PART = r"\?(?:#|$)|#$"  # an empty query or fragment: urljoin drops its delimiter


def origin(base: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) base URL, or None: what a root-relative path is appended to."""
    try:
        parts = urlsplit(base)
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


def scheme(base: str) -> str | None:
    """``http:`` or ``https:`` of an http(s) base URL, or None: what a network-path (``//host/...``) is appended to."""
    found = origin(base)
    return found[: found.index(":") + 1] if found else None


def directory(base: str) -> str | None:
    """What urljoin appends a plain relative path to (the base's directory, its dot segments and empty
    segments resolved), for an http(s) base URL; else None."""
    if origin(base) is None:
        return None
    try:
        joined = urljoin(base, "x")
    except ValueError:
        return None
    return joined[:-1] if joined.endswith("/x") else None


class _Join(NamedTuple):
    """Sources that urljoin only appends to a prefix of the base: those matching ``matches`` and not ``refuses``."""

    matches: str
    refuses: str
    prefix: Callable[[str], str | None]


# What each kind of source must not hold for urljoin to append it unchanged: dot segments (resolved),
# params (split off), an empty query or fragment, a backslash; a host with brackets (checked as IPv6)
# or other than printable ASCII (NFKC-checked); a relative path with a scheme-like colon, a control
# character (urlsplit strips leading ones) or an empty segment (removed).
_JOINS = (
    _Join("^/(?:[^/]|$)", r"/\.\.?(?:[/?#]|$)|[\\;]|" + _EMPTY_PART, origin),
    _Join("^//[^/?#]", r"^//[^/?#]*(?:[^!-~]|[\[\]\\])|;|" + _EMPTY_PART, scheme),
    _Join("^[^/?#]", r"[:;\\\x00-\x1f]|//|(?:^|/)\.\.?(?:[/?#]|$)|" + _EMPTY_PART, directory),
)
LINKS_SCHEMA = pa.schema(
    [("page_url", pa.string()), ("url", pa.string()), ("alt", pa.string()), ("title", pa.string())]
)


def squeeze(text: str) -> str:
    """An alt-text or title as kept: ``" ".join(text.split())``."""
    return " ".join(text.split())


def strip_source(src: str) -> str:
    """A ``src`` as resolved: ``src.strip()``, then tabs and newlines removed."""
    return src.strip().replace("\t", "").replace("\n", "").replace("\r", "")


def normalised(srcs: Sequence[Any], alts: Sequence[Any], titles: Sequence[Any]) -> tuple[list, list, list]:
    """A page's image attributes as :class:`PageLinks` keeps them: each value read with
    :func:`first_string`, a source stripped (an empty one is None), alt-texts and titles squeezed."""
    sources = [strip_source(v) if (v := first_string(x)) else None for x in srcs]
    return (
        sources,
        [squeeze(v) if (v := first_string(x)) is not None else None for x in alts],
        [squeeze(v) if (v := first_string(x)) is not None else None for x in titles],
    )


def first_string(value: Any) -> str | None:
    """A value given as a string or, from CC-MAIN-2024-51 on when repeated, as a list: the first string."""
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str)), None)
    return value if isinstance(value, str) else None


def _per_link(pages: pa.Array, needed: np.ndarray, bases: list[str], of_base: Callable[[str], str | None]) -> pa.Array:
    """``of_base`` of each link's page base, computed once per page and only for the links ``needed``."""
    values: list[str | None] = [None] * len(bases)
    for p in np.unique(pages.to_numpy()[needed]).tolist():
        values[p] = of_base(bases[p])
    return pa.array(values, pa.string()).take(pages)


def resolve_source(base: str, src: str) -> tuple[str | None, bool]:
    """One stripped ``src`` (tabs and newlines removed) as an absolute http(s) URL, or None; and whether
    it was dropped as a non-http(s) or unusable URL (an empty source is neither kept nor dropped)."""
    if _ABSOLUTE.match(src):
        return src, False
    if not src:
        return None, False
    scheme = _SCHEME.match(src)
    if scheme and scheme.group(0).lower() not in ("http:", "https:"):  # data:, javascript:, ftp:...
        return None, True
    try:
        url = urljoin(base, src)
    except ValueError:  # e.g. an invalid IPv6 host
        return None, True
    return (url, False) if _ABSOLUTE.match(url) else (None, True)


def _mask(values: pa.Array) -> np.ndarray:
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def _matches(texts: pa.Array, pattern: str) -> np.ndarray:
    """Whether each string matches an RE2 ``pattern`` (False for nulls)."""
    return _mask(pc.match_substring_regex(texts, pattern))


def _matches_where(texts: pa.Array, where: np.ndarray, pattern: str) -> np.ndarray:
    """:func:`_matches` tested only where ``where`` holds (False elsewhere): each source is tested
    against the patterns of the one kind of join it can be, not against all of them."""
    found = np.zeros(len(texts), dtype=bool)
    at = np.flatnonzero(where)
    if len(at) == len(texts):
        return _matches(texts, pattern)
    if len(at):
        found[at] = _matches(texts.take(at), pattern)
    return found


class PageLinks:
    """The ``<img>`` attributes (src, alt, title) of many pages, gathered and then resolved as columns."""

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.page_urls: list[str] = []
        self.bases: list[str] = []
        self.pages: list[int] = []
        self.srcs: list[Any] = []
        self.alts: list[Any] = []
        self.titles: list[Any] = []
        self.images = 0

    def __len__(self) -> int:
        return len(self.srcs)

    def add(
        self,
        page_url: str,
        base: str,
        srcs: Sequence[Any],
        alts: Sequence[Any],
        titles: Sequence[Any],
        images: int | None = None,
    ) -> None:
        """One page's images; ``images`` counts them when those without an alt-text were left out already."""
        if not len(srcs) == len(alts) == len(titles):
            raise ValueError("srcs, alts and titles differ in length")
        srcs, alts, titles = normalised(srcs, alts, titles)
        if srcs:
            self.pages += [len(self.page_urls)] * len(srcs)
            self.srcs += srcs
            self.alts += alts
            self.titles += titles
        self.add_page(page_url, base, len(srcs) if images is None else images)

    def columns(self) -> tuple[int, list[int], list[Any], list[Any], list[Any]]:
        """The next page's index and the lists a compiled reader appends its links to, already as
        :func:`normalised` makes them (the WAT scan, :mod:`metaclip_tasks.ingest._watscan`); then :meth:`add_page`."""
        return len(self.page_urls), self.pages, self.srcs, self.alts, self.titles

    def frame_columns(self) -> tuple[list[str], list[str], list[int], list[Any], list[Any], list[Any]]:
        """The page URL and base lists, then the link columns, that the compiled WAT framer appends
        whole pages to (:func:`metaclip_tasks.ingest._watscan.frame`); then :meth:`add_images`."""
        return self.page_urls, self.bases, self.pages, self.srcs, self.alts, self.titles

    def add_images(self, images: int) -> None:
        """The images of the pages appended through :meth:`frame_columns`."""
        self.images += images

    def add_page(self, page_url: str, base: str, images: int) -> None:
        """A page whose links (if any) are in the columns already, with its count of images."""
        self.images += images
        self.page_urls.append(page_url)
        self.bases.append(base)

    def _resolve_rest(self, src: pa.Array, page: pa.Array, counts: Counter) -> pa.Array:
        """Sources that are not absolute http(s) URLs resolved (null when dropped or empty), counted."""
        url, rest, joined_count = pa.nulls(len(src), pa.string()), np.ones(len(src), dtype=bool), 0
        for join in _JOINS:
            chosen = _matches_where(src, rest, join.matches)
            chosen &= ~_matches_where(src, chosen, join.refuses)
            if chosen.any():
                joined = pc.binary_join_element_wise(_per_link(page, chosen, self.bases, join.prefix), src, "")
                chosen &= _mask(pc.is_valid(joined))
                url = pc.if_else(pa.array(chosen), joined, url)
                rest &= ~chosen
                joined_count += int(chosen.sum())
        other_scheme = _matches_where(src, rest, _OTHER_SCHEME[0])
        other_scheme &= ~_matches_where(src, other_scheme, _OTHER_SCHEME[1])
        rest &= ~other_scheme
        one_by_one = np.flatnonzero(rest)
        dropped, resolved = int(other_scheme.sum()), []
        for p, s in zip(page.to_numpy()[one_by_one].tolist(), src.take(one_by_one).to_pylist(), strict=True):
            found, drop = resolve_source(self.bases[p], s)
            resolved.append(found)
            dropped += drop
            joined_count += found is not None and not _ABSOLUTE.match(s)
        if len(one_by_one):
            url = pc.replace_with_mask(url, pa.array(rest), pa.array(resolved, pa.string()))
        counts["relative_resolved"] += joined_count
        counts["non_http_dropped"] += dropped
        return url

    def resolve(self, counts: Counter) -> pa.Table:
        """The links with an alt-text and an http(s) URL, in page order (``LINKS_SCHEMA``), counted
        (images, with_alt, relative_resolved, non_http_dropped); the gathered pages are then cleared."""
        page = pa.array(self.pages, pa.int32())
        src, alt, title = (pa.array(values, pa.string()) for values in (self.srcs, self.alts, self.titles))
        candidate = _mask(pc.not_equal(alt, "")) & _mask(pc.is_valid(src))  # a blank src counts, resolving to nothing
        absolute = candidate & _matches(src, _ABSOLUTE_ASCII)
        rest = np.flatnonzero(candidate & ~absolute)  # the few that are not absolute: resolved apart
        rest_url = self._resolve_rest(src.take(rest), page.take(rest), counts)
        url = pc.if_else(pa.array(absolute), src, pa.nulls(len(src), pa.string()))
        if len(rest):
            chosen = np.zeros(len(url), dtype=bool)
            chosen[rest] = True
            url = pc.replace_with_mask(url, pa.array(chosen), rest_url)
        keep = candidate & _mask(pc.is_valid(url))
        counts["images"] += self.images
        counts["with_alt"] += int(candidate.sum())
        rows = pa.array(keep)
        title = pc.if_else(pc.equal(title, ""), pa.nulls(len(title), pa.string()), title)
        table = pa.Table.from_arrays(
            [
                pa.array(self.page_urls, pa.string()).take(page.filter(rows)),
                url.filter(rows),
                alt.filter(rows),
                title.filter(rows),
            ],
            schema=LINKS_SCHEMA,
        )
        self._clear()
        return table
