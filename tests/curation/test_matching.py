"""Matching: the fast engines against the paper's definition, and match_shard's file contract."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.curation.matching import TABLES, Matcher, spacing
from metaclip_tasks.curation.shard_matching import match_shard
from metaclip_tasks.ingest.uids import url_uid

BACKENDS = ["tokens", "tokens (loaded)", "ahocorasick"]


def make_matcher(entries: list[str], backend: str, batch_size: int = 16384) -> Matcher:
    """A matcher of ``backend``; "tokens (loaded)" is the token engine saved as .npy files and memory-mapped back."""
    if backend != "tokens (loaded)":
        return Matcher(entries, backend=backend, batch_size=batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, array in Matcher(entries).arrays().items():
            paths[name] = Path(tmp, f"{name}.npy")
            np.save(paths[name], array)
        return Matcher.load(paths)  # the maps outlive the files' names


def naive_match(entries: list[str], texts: list) -> list[list[int]]:
    """The definition, literally: entry e matches when f" {e} " is in the spaced text."""
    out = []
    for text in texts:
        spaced = spacing(text) if isinstance(text, str) else None
        out.append([i for i, e in enumerate(entries) if spaced is not None and f" {e} " in spaced])
    return out


def naive_spacing(text: str) -> str:
    out = []
    for c in f" {text} ":
        out.append(f" {c} " if c in ",.;:?!`" else " " if c in "\t\n\r" else c)
    return "".join(out)


# Characters that stress the definition: spaces, wrapped punctuation, whitespace turned into
# spaces, other punctuation, non-ASCII, control characters (the batch separators) and surrogates.
PIECES = st.sampled_from(
    [
        " ",
        "  ",
        ",",
        ".",
        ";",
        ":",
        "?",
        "!",
        "`",
        "\t",
        "\n",
        "\r",
        "-",
        "'",
        "a",
        "b",
        "ab",
        "é",
        "日本",
        "\x00",
        "\x01",
        "\x1f",
        "\x7f",
        "\ud800",
        "0",
        "A",
    ]
)
SMALL_TEXT = st.lists(PIECES, max_size=12).map("".join)
ANY_TEXT = st.one_of(SMALL_TEXT, st.text(max_size=30))


@given(st.text())
def test_spacing_is_the_character_by_character_definition(text: str) -> None:
    assert spacing(text) == naive_spacing(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(st.one_of(SMALL_TEXT, st.text(max_size=6)), max_size=12),
    texts=st.lists(st.one_of(ANY_TEXT, st.none(), st.integers()), max_size=10),
    backend=st.sampled_from(BACKENDS),
    batch_size=st.integers(1, 5),
)
def test_matcher_equals_the_naive_definition(entries, texts, backend, batch_size) -> None:
    matcher = make_matcher(entries, backend=backend, batch_size=batch_size)
    assert matcher.match(texts) == naive_match(entries, texts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicated_entries_all_match(backend: str) -> None:
    entries = ["cat", "dog", "cat", "black cat", "cat"]
    assert make_matcher(entries, backend=backend).match(["a black cat."]) == [[0, 2, 3, 4]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_inner_punctuation_spaces_and_unicode(backend: str) -> None:
    entries = ["new york", "St. Louis", "st . louis", "u.s.", "café", "東京", "a  b", "", "x!", "?"]
    texts = ["I ♥ New York, new york!", "st. louis", "Café au lait; café.", "東京 tower", "a  b", "why?", "x!"]
    assert make_matcher(entries, backend=backend).match(texts) == naive_match(entries, texts)
    # "New York" is not "new york"; the empty entry matches wherever spacing leaves two spaces
    assert make_matcher(entries, backend=backend).match(texts)[0] == [0, 7]


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_very_long_texts(backend: str) -> None:
    entries = ["red", "red car", "car"]
    long_text = "a red car, " * 200_000 + "end"
    result = make_matcher(entries, backend=backend).match(["", long_text, "   "])
    assert result == [[], [0, 1, 2], []]


@pytest.mark.parametrize("backend", BACKENDS)
def test_texts_holding_every_separator_fall_back_exactly(backend: str) -> None:
    every_control = "".join(chr(c) for c in [*range(0x20), 0x7F])
    entries = ["x", "x y", "\x01"]
    texts = [every_control + " x y", "x \x01 y", "y"]
    assert make_matcher(entries, backend=backend).match(texts) == naive_match(entries, texts)


def test_non_strings_match_nothing() -> None:
    assert Matcher(["1", "None"]).match([None, 1, b"1", "1"]) == [[], [], [], [0]]


def test_metadata_must_be_strings() -> None:
    with pytest.raises(TypeError, match="metadata entry 1 is int"):
        Matcher(["a", 1])


def test_real_captions_against_metaclip_reference(captions_table: pa.Table, wordnet: list[str]) -> None:
    """On real captions and WordNet metadata, the same ids as MetaCLIP's own automaton loop."""
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for i, entry in enumerate(wordnet):
        automaton.add_word(f" {entry} ", i)
    automaton.make_automaton()
    texts = captions_table.column("text").to_pylist()
    expected = [sorted({i for _, i in automaton.iter(spacing(t))}) if t else [] for t in texts]
    assert Matcher(wordnet).match(texts) == expected
    assert sum(map(len, expected)) > 10_000


def _write(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


def _pairs(**columns) -> pa.Table:
    """A pairs shard as the pairs stage writes it (uid, url, text)."""
    return pa.table({"uid": [url_uid(u) for u in columns["url"]], **columns})


def test_match_shard_output_counts_and_stats(tmp_path: Path) -> None:
    table = _pairs(
        url=["http://a/1.jpg", "http://a/2.jpg", "http://a/3.jpg", "http://a/4.jpg", "http://a/5.jpg"],
        text=["a red car", "nothing here", "red", None, "Red car, red."],
    )
    entries = ["red", "car", "red car", "Red", "blue"]
    result = match_shard(str(_write(tmp_path / "in.parquet", table)), str(tmp_path / "out.parquet"), Matcher(entries))
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.names == ["uid", "url", "text", "matched_entry_ids"]
    assert out.schema.field("matched_entry_ids").type == pa.list_(pa.int32())
    assert out.column("url").to_pylist() == ["http://a/1.jpg", "http://a/3.jpg", "http://a/5.jpg"]
    assert out.column("uid").to_pylist() == [
        url_uid("http://a/1.jpg"),
        url_uid("http://a/3.jpg"),
        url_uid("http://a/5.jpg"),
    ]
    assert out.column("matched_entry_ids").to_pylist() == [[0, 1, 2], [0], [0, 1, 3]]
    assert result.counts.dtype == np.uint64
    assert (result.entries.tolist(), result.counts.tolist()) == ([0, 1, 2, 3], [3, 2, 1, 1])  # sparse: "blue" unmatched
    assert result.num_entries == 5
    assert result.stats == {"pairs_in": 5, "pairs_matched": 3, "matches": 7}
    written = (tmp_path / "out.parquet").read_bytes()
    assert result.written.bytes == len(written) and result.written.sha256 == hashlib.sha256(written).hexdigest()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(st.sampled_from(["a", "b", "a b", "c", "b c a"]), min_size=1, max_size=6),
    texts=st.lists(st.lists(st.sampled_from(["a", "b", "c", "x"]), max_size=6).map(" ".join), min_size=1, max_size=12),
    batch_rows=st.integers(1, 5),
)
def test_match_shard_counts_equal_its_rows_whatever_the_batches(entries, texts, batch_rows) -> None:
    """The shard's sparse counts are the per-entry counts of the rows it wrote, with its ids held and
    binned across batches (as many ids as entries bin them)."""
    with tempfile.TemporaryDirectory() as tmp:
        table = _pairs(url=[f"http://a/{i}.jpg" for i in range(len(texts))], text=pa.array(texts, pa.string()))
        result = match_shard(
            str(_write(Path(tmp, "in.parquet"), table)),
            str(Path(tmp, "out.parquet")),
            Matcher(entries),
            batch_rows=batch_rows,
        )
        rows = pq.read_table(Path(tmp, "out.parquet")).column("matched_entry_ids").to_pylist()
    expected = np.bincount([i for ids in naive_match(entries, texts) for i in ids], minlength=len(entries))
    assert rows == [ids for ids in naive_match(entries, texts) if ids]
    assert result.entries.dtype == np.int64 and result.counts.dtype == np.uint64
    assert result.entries.tolist() == np.flatnonzero(expected).tolist()
    assert result.counts.tolist() == expected[expected > 0].tolist()


def test_match_shard_bad_input_names_the_problem_and_writes_nothing(tmp_path: Path) -> None:
    matcher = Matcher(["a"])
    out = str(tmp_path / "out.parquet")
    with pytest.raises(CurationError, match=r"missing\.parquet does not exist"):
        match_shard(str(tmp_path / "missing.parquet"), out, matcher)
    src = _write(tmp_path / "in.parquet", pa.table({"URL": ["u"], "TEXT": ["a"]}))
    with pytest.raises(CurationError, match=r"has no column 'uid', 'url', 'text' \(its columns: URL, TEXT\)"):
        match_shard(str(src), out, matcher)
    ints = _write(tmp_path / "ints.parquet", pa.table({"uid": ["k"], "url": ["u"], "text": [7]}))
    with pytest.raises(CurationError, match="column 'text' is int64, not string"):  # matched 0 pairs with exit 0 before
        match_shard(str(ints), out, matcher)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(CurationError, match="corrupt.parquet is not a readable parquet file"):
        match_shard(str(corrupt), out, matcher)
    assert not (tmp_path / "out.parquet").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _encodable(text: str) -> bool:
    return "\ud800" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(st.one_of(SMALL_TEXT, st.text(max_size=6)), max_size=12),
    texts=st.lists(st.one_of(ANY_TEXT.filter(_encodable), st.none()), max_size=10),
    backend=st.sampled_from(BACKENDS),
    skip=st.integers(0, 2),
    large=st.booleans(),
)
def test_match_arrow_equals_the_naive_definition(entries, texts, backend, skip, large) -> None:
    """The columnar path reads an arrow column's buffers (offsets, validity, a slice's offset) as the definition reads its texts."""
    column = pa.array(["x y"] * skip + texts, type=pa.large_string() if large else pa.string()).slice(skip)
    matched = make_matcher(entries, backend=backend).match_arrow(column)
    assert matched.type == pa.list_(pa.int32())
    assert matched.to_pylist() == naive_match(entries, texts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tokens_longer_than_a_slot_holds(backend: str) -> None:
    """Tokens beyond the 24 bytes a vocabulary slot keeps are compared in full."""
    stem = "x" * 24
    entries = [stem + "a", stem + "b " + stem, stem, "é" * 20]
    texts = [f"{stem}a {stem}b {stem}", f"{stem}b {stem}c", stem + "a.", "é" * 20 + " " + "é" * 19]
    assert make_matcher(entries, backend=backend).match(texts) == naive_match(entries, texts)


def test_saved_arrays_are_deterministic() -> None:
    entries = ["red", "red car", "car", "a  b", "東京 tower", "x" * 40 + " y", "red"]
    first, second = Matcher(entries).arrays(), Matcher(list(entries)).arrays()
    assert list(first) == list(second) == list(TABLES)
    assert all(first[name].tobytes() == second[name].tobytes() for name in TABLES)
    assert Matcher.load(first).match(["a red car", "東京 tower"]) == [[0, 1, 2, 6], [4]]
    with pytest.raises(ValueError, match="needs the arrays key_entries"):
        Matcher.load({name: first[name] for name in TABLES[:-1]})
    with pytest.raises(ValueError, match=r"array key_entries is <i8\[1-d\], not <i4\[1-d\]"):
        Matcher.load({**first, "key_entries": first["key_entries"].astype(np.int64)})
    with pytest.raises(ValueError, match="only the token engine is saved"):
        Matcher(entries, backend="ahocorasick").arrays()


def test_match_arrow_takes_strings_only() -> None:
    with pytest.raises(TypeError, match="expected a string array of texts, got int64"):
        Matcher(["a"]).match_arrow(pa.array([1]))
