"""Fuzzing both matching engines against the literal definition (issue 10).

``tests/curation/test_matching.py`` already checks short random texts; here the texts are the hostile
ones a web shard holds: None and other non-strings, every control character (the characters
the engines join a batch with), lone surrogates, wrapped punctuation, non-ASCII and texts of
thousands of characters, with entries cut out of the texts themselves so that matches happen,
in batches of exactly 1, 3, more than a (small) ``batch_size`` and more than the default one.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from metaclip_tasks.curation.matching import CHARS_TO_SPACE, PUNCTS_TO_WRAP, SEPARATORS, Matcher, spacing
from tests.curation.test_matching import BACKENDS, make_matcher, naive_match

DEFAULT_BATCH_SIZE = inspect.signature(Matcher).parameters["batch_size"].default
CONTROLS = tuple(chr(c) for c in [*range(0x20), 0x7F])  # includes \t, \n and \r
EVERY_SEPARATOR = "".join(SEPARATORS)  # every control character but \t, \n and \r
ISSUE_TEXT = "".join(map(chr, [*range(9), 11, 12, *range(14, 32), 127]))
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

assert set(CHARS_TO_SPACE) <= set(CONTROLS) and ISSUE_TEXT == EVERY_SEPARATOR


def check(entries: list[str], texts: list, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
    """Both engines give the literal definition's answer."""
    expected = naive_match(entries, texts)
    for backend in BACKENDS:
        assert make_matcher(entries, backend=backend, batch_size=batch_size).match(texts) == expected, backend


# -- the crash of issue 10 -----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_issue_10_null_beside_a_text_of_every_separator(backend: str) -> None:
    # every separator occurs in the chunk, so it is matched text by text with a per-text flag
    assert make_matcher(["dog"], backend=backend).match([None, ISSUE_TEXT]) == [[], []]
    assert make_matcher(["dog"], backend=backend).match([ISSUE_TEXT + " dog", None, 7, "dog."]) == [[0], [], [], [0]]
    assert make_matcher(["dog"], backend=backend, batch_size=2).match([None, ISSUE_TEXT, "dog", None]) == [
        [],
        [],
        [0],
        [],
    ]


# -- strategies ----------------------------------------------------------------------------

SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
NON_ASCII = st.sampled_from(["é", "ß", "日本", "東京", "😀", "\u00a0", "\u2028", "\ufeff", "İ", "\U0010ffff"])
PIECE = st.one_of(
    st.sampled_from(CONTROLS),
    SURROGATE,
    st.sampled_from(PUNCTS_TO_WRAP),
    st.sampled_from([" ", "  ", "   "]),
    NON_ASCII,
    st.sampled_from(["a", "b", "ab", "dog", "Dog", "hot dog", "-", "'", "0"]),  # words that recur
    st.text(max_size=3),
)
SHORT_TEXT = st.lists(PIECE, max_size=16).map("".join)
# thousands of characters: a drawn text repeated, with a drawn head and tail
LONG_TEXT = st.builds(
    lambda head, body, n, tail: head + body * n + tail,
    SHORT_TEXT,
    st.lists(PIECE, min_size=1, max_size=8).map("".join),
    st.integers(300, 3000),
    SHORT_TEXT,
)
TEXT = st.one_of(SHORT_TEXT, SHORT_TEXT, LONG_TEXT)
# the last one leaves a Matcher no separator: every chunk of more than one text falls back
FIXED_ENTRY = st.sampled_from(["", "dog", "a , b", "hot dog", EVERY_SEPARATOR])
MAYBE_TEXT = st.one_of(TEXT, TEXT, TEXT, st.none(), st.sampled_from([7, float("nan"), b"dog", np.str_("hot dog")]))


@st.composite
def entries_for(draw: st.DrawFn, texts: list) -> list[str]:
    """Entries cut from the texts (a run of the spaced text's tokens, which must match, or any
    raw sub-string, inner punctuation and spaces included), random ones, and duplicates."""
    strings = [t for t in texts if isinstance(t, str)]
    entries = []
    for _ in range(draw(st.integers(0, 6)) if strings else 0):
        text = draw(st.sampled_from(strings))
        if draw(st.booleans()):
            tokens = spacing(text).split(" ")[1:-1]  # each token has a space before and after it
            a = draw(st.integers(0, len(tokens) - 1))
            b = draw(st.integers(a + 1, min(a + 4, len(tokens))))
            entries.append(" ".join(tokens[a:b]))
        else:
            a = draw(st.integers(0, len(text)))
            entries.append(text[a : a + draw(st.integers(0, 12))])
    entries += draw(st.lists(st.one_of(SHORT_TEXT, FIXED_ENTRY), max_size=3))
    if entries:
        entries += draw(st.lists(st.sampled_from(entries), max_size=3))  # duplicates
    return draw(st.permutations(entries))


def texts_and_entries(n: int, text: st.SearchStrategy = MAYBE_TEXT) -> st.SearchStrategy[tuple[list, list[str]]]:
    texts = st.lists(text, min_size=n, max_size=n)
    return texts.flatmap(lambda ts: st.tuples(st.just(ts), entries_for(ts)))


# -- properties ----------------------------------------------------------------------------


@settings(FUZZ, max_examples=300)
@given(texts_and_entries(1))
@example(([None], ["dog"]))
@example(([ISSUE_TEXT + " dog"], ["dog", "dog"]))
@example(([ISSUE_TEXT + "\ud800 dog\udfff dog ."], ["\ud800", "dog\udfff", "dog ."]))
def test_one_text(case) -> None:
    texts, entries = case
    check(entries, texts)


@settings(FUZZ, max_examples=300)
@given(texts_and_entries(3))
@example(([None, ISSUE_TEXT, "dog"], ["dog"]))
@example((["a, b", None, "x" * 5000 + " a , b"], ["a , b", "a, b", ""]))
@example(([None, "dog " + EVERY_SEPARATOR, EVERY_SEPARATOR], [EVERY_SEPARATOR, "dog"]))  # no separator left
def test_three_texts(case) -> None:
    texts, entries = case
    check(entries, texts)


@settings(FUZZ, max_examples=250)
@given(st.integers(1, 4).flatmap(lambda size: st.tuples(st.just(size), texts_and_entries(size + 2))))
def test_more_texts_than_a_small_batch_size(case) -> None:
    batch_size, (texts, entries) = case
    check(entries, texts, batch_size=batch_size)


@settings(FUZZ, max_examples=100)
@given(
    st.lists(st.sampled_from(CONTROLS), min_size=1).flatmap(
        lambda extra: st.tuples(st.just(extra), texts_and_entries(3), st.permutations(CONTROLS))
    ),
    st.integers(1, 4),
)
def test_chunks_holding_every_separator(case, batch_size: int) -> None:
    """Every candidate separator occurs in the chunk (spread over its texts), so no character can
    join it and it is matched text by text."""
    extra, (texts, entries), controls = case
    texts = [*texts, None]
    # deal the control characters round the texts, so only their union holds every separator
    for i, c in enumerate([*controls, *extra]):
        k = i % len(texts)
        texts[k] = (texts[k] if isinstance(texts[k], str) else "") + c + (" " if i % 3 else "")
    texts.insert(1, None)
    entries = [*entries, "dog", "\x01"]
    matcher = Matcher(entries, backend="ahocorasick")  # the engine that joins a chunk
    assert matcher.separator_for([t if isinstance(t, str) else "" for t in texts]) is None  # the fallback
    check(entries, texts)
    check(entries, texts, batch_size=batch_size)


@settings(FUZZ, max_examples=8)
@given(texts_and_entries(5, st.one_of(SHORT_TEXT, st.none())), st.integers(0, DEFAULT_BATCH_SIZE + 1))
def test_more_texts_than_the_default_batch_size(case, null_at: int) -> None:
    """Two chunks at the true default size: the drawn texts tiled to ``DEFAULT_BATCH_SIZE + 2``."""
    drawn, entries = case
    entries = [e for e in entries if e != EVERY_SEPARATOR]  # else all 16386 fall back, too slowly
    texts = [drawn[i % len(drawn)] for i in range(DEFAULT_BATCH_SIZE + 2)]
    texts[null_at] = None
    texts[-2:] = [None, EVERY_SEPARATOR + " dog"]  # the last chunk falls back to matching text by text
    check([*entries, "dog"], texts)
