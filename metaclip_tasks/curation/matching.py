"""Sub-string matching of alt-texts against metadata entries (paper section 3.2).

The definition is MetaCLIP's: a text is *spaced* (see :func:`spacing`) and entry ``e``
matches when ``f" {e} "`` is a sub-string of the spaced text.  :class:`Matcher` computes
exactly that for whole batches of texts at a time, with no Python work per text or per match:

* ``"tokens"`` (default): a spaced text is a sequence of space-separated tokens and a
  spaced entry matches exactly when its own token sequence is a contiguous run of the
  text's tokens.  A compiled kernel (``metaclip_tasks/curation/_match.c``) spaces each text, finds
  each token's id in a hash table of the metadata's tokens and walks a trie over token ids.
  Its tables are plain arrays, built once with numpy and saved with the metadata artifact
  (:meth:`Matcher.arrays`), so a worker memory-maps them (:meth:`Matcher.load`) instead of
  building, and worker processes on one host share their pages.
* ``"ahocorasick"``: one pyahocorasick automaton over the spaced entries (the released
  MetaCLIP approach), run once over a whole batch joined into one string.

Both return the same answer; ``benchmarks/matching.py`` measures them against the
reference (one automaton, one text at a time).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip_tasks.core.arrays import binary_parts, to_binary
from metaclip_tasks.curation import _match

# Spacing's characters, as the token engine spaces texts: wrapped in spaces, and made spaces.
PUNCTS_TO_WRAP = tuple(_match.PUNCTS_TO_WRAP)
CHARS_TO_SPACE = tuple(_match.CHARS_TO_SPACE)
# Characters used to join a batch into one string (the automaton); one absent from the batch is picked.
SEPARATORS = tuple(chr(c) for c in [*range(0x20), 0x7F] if chr(c) not in CHARS_TO_SPACE)
# The token engine's arrays, in the order the kernel takes them (see metaclip_tasks/curation/_match.c).
TABLES = _match.TABLES
_TABLE_TYPES = {
    "vocab_table": ("<i8", 2),
    "vocab_offsets": ("<i8", 1),
    "vocab_data": ("|u1", 1),
    "edge_table": ("<i8", 2),
    "key_ptr": ("<i8", 1),
    "key_entries": ("<i4", 1),
}  # dtype and ndim of each
Backend = Literal["tokens", "ahocorasick"]


def spacing(text: str) -> str:
    """The paper's spaced text: ``f" {text} "`` with punctuation wrapped in spaces."""
    spaced = f" {text} "
    for punct in PUNCTS_TO_WRAP:
        spaced = spaced.replace(punct, f" {punct} ")
    for char in CHARS_TO_SPACE:
        spaced = spaced.replace(char, " ")
    return spaced


def _impossible_tokens(tokens: pa.LargeBinaryArray) -> np.ndarray:
    """Which tokens no spaced text contains: with tab/newline/CR, or wrapped punctuation inside."""
    offsets, data = binary_parts(tokens)
    lengths = np.diff(offsets)
    token_of_byte = np.repeat(np.arange(len(tokens)), lengths)
    data = data[offsets[0] : offsets[-1]]
    whitespace = np.bincount(token_of_byte, np.isin(data, list(b"\t\n\r")), minlength=len(tokens)) > 0
    punct = np.bincount(token_of_byte, np.isin(data, [ord(p) for p in PUNCTS_TO_WRAP]), minlength=len(tokens)) > 0
    return whitespace | (punct & (lengths > 1))


def _hash_table(keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The kernel's open-addressing table (int64[2**k, 1 + width]: key, then its row; -1: an empty slot) of distinct keys."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    rows = rows.reshape(len(keys), rows.shape[1] if rows.ndim == 2 else 1)
    table = _match.table(np.ascontiguousarray(keys, dtype=np.uint64), rows, rows.shape[1])
    return np.frombuffer(table, dtype=np.int64).reshape(-1, 1 + rows.shape[1])


def _pair(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Two non-negative int32 columns as one int64: ``low | high << 32``."""
    return np.asarray(low, dtype=np.int64) | (np.asarray(high, dtype=np.int64) << 32)


@dataclass(frozen=True)
class MatchResult:
    """Matches of a batch as a CSR: text ``i`` matched ``entry_ids[offsets[i]:offsets[i+1]]``."""

    offsets: np.ndarray  # int64[n + 1]
    entry_ids: np.ndarray  # int32[total matches], sorted and distinct within each text

    def to_arrow(self) -> pa.ListArray:
        """The matches as an arrow ``list<int32>`` array, one list per text."""
        if self.offsets[-1] > np.iinfo(np.int32).max:
            raise ValueError("more than 2**31 matches in one batch: match fewer texts at a time")
        return pa.ListArray.from_arrays(pa.array(self.offsets.astype(np.int32)), pa.array(self.entry_ids))

    def to_lists(self, ints: list | None = None) -> list[list[int]]:
        """The matches as Python lists, one per text; ``ints`` (one slot per entry id, None until used)
        keeps one int object per id across calls, so lists share them instead of allocating."""
        offsets, ids = np.ascontiguousarray(self.offsets, np.int64), np.ascontiguousarray(self.entry_ids, np.int32)
        return _match.to_lists(offsets, ids, [] if ints is None else ints)


def _kernel_result(offsets_and_ids: tuple[bytes, bytes]) -> MatchResult:
    offsets, ids = offsets_and_ids
    return MatchResult(np.frombuffer(offsets, dtype=np.int64), np.frombuffer(ids, dtype=np.int32))


class Matcher:
    """Matches texts against a fixed list of metadata entries; build once (or load), reuse for many texts."""

    def __init__(self, entries: Sequence[str], backend: Backend = "tokens", batch_size: int = 16384) -> None:
        """``batch_size``: texts the automaton joins into one string (the token engine takes them all at once)."""
        if backend not in ("tokens", "ahocorasick"):
            raise ValueError(f"unknown matching backend {backend!r}: use 'tokens' or 'ahocorasick'")
        bad = next((i for i, e in enumerate(entries) if not isinstance(e, str)), None)
        if bad is not None:
            raise TypeError(f"metadata entry {bad} is {type(entries[bad]).__name__}, not a string")
        self.num_entries = len(entries)
        self.backend = backend
        self.batch_size = batch_size
        self._ints: list | None = None  # the int object of each entry id that match() returned
        # Duplicated entries share one key; each key lists its entry ids (a CSR).
        encoded = to_binary(entries)
        keys = encoded.dictionary_encode()
        key_of_entry = keys.indices.to_numpy().astype(np.int64)
        n_keys = len(keys.dictionary)
        order = np.argsort(key_of_entry, kind="stable")
        key_entries = order.astype(np.int32)
        key_ptr = np.searchsorted(key_of_entry[order], np.arange(n_keys + 1)).astype(np.int64)
        if backend == "tokens":
            self._tables = (*self._token_tables(keys.dictionary, key_ptr, key_entries), key_ptr, key_entries)
        else:
            self._key_ids, self._key_ptr, self._single_id = key_entries, key_ptr, bool(n_keys == len(entries))
            offsets, data = binary_parts(keys.dictionary)
            present = np.bincount(data[offsets[0] : offsets[-1]], minlength=256) > 0
            self._seps = [c for c in SEPARATORS if not present[ord(c)]]
            self._build_automaton([k.decode("utf-8", "surrogatepass") for k in keys.dictionary.to_pylist()])
        del encoded, keys
        pa.default_memory_pool().release_unused()  # the build's temporaries are large and one-off

    @classmethod
    def load(cls, arrays: Mapping[str, np.ndarray | str | Path]) -> Matcher:
        """The token engine from its saved arrays (:meth:`arrays`), or the paths of their .npy files,
        which are memory-mapped: nothing is built, and processes mapping the same files share pages."""
        missing = sorted(set(TABLES) - set(arrays))
        if missing:
            raise ValueError(f"a saved matcher needs the arrays {', '.join(missing)}")
        loaded = [
            a if isinstance(a, np.ndarray) else np.load(a, mmap_mode="r", allow_pickle=False)
            for a in (arrays[n] for n in TABLES)
        ]
        for name, array in zip(TABLES, loaded, strict=True):
            dtype, ndim = _TABLE_TYPES[name]
            if array.dtype.str != dtype or array.ndim != ndim or not array.flags.c_contiguous:
                raise ValueError(
                    f"saved matcher array {name} is {array.dtype.str}[{array.ndim}-d], not {dtype}[{ndim}-d]"
                )
        matcher = cls.__new__(cls)
        matcher.backend, matcher.batch_size, matcher._ints = "tokens", 16384, None
        matcher._tables = tuple(loaded)
        matcher.num_entries = len(matcher._tables[TABLES.index("key_entries")])
        return matcher

    def arrays(self) -> dict[str, np.ndarray]:
        """The token engine's tables by name, to save with the metadata (see :meth:`load`)."""
        if self.backend != "tokens":
            raise ValueError("only the token engine is saved; the automaton is built where it is used")
        return dict(zip(TABLES, self._tables, strict=True))

    # -- building ---------------------------------------------------------------------

    def _token_tables(
        self, keys: pa.LargeBinaryArray, key_ptr: np.ndarray, key_entries: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """The kernel's vocabulary and trie over token ids, built level by level with numpy."""
        limit = 31 - _match.INFO_SHIFT
        if len(key_entries) >= 1 << limit:
            raise ValueError(f"the token engine holds fewer than 2**{limit} entries (a state's info is an int32)")
        split = pc.split_pattern(keys, pattern=" ")
        key_off = split.offsets.to_numpy().astype(np.int64)
        encoded = split.flatten().dictionary_encode()
        tok, vocab = encoded.indices.to_numpy().astype(np.int64), encoded.dictionary
        n_vocab, n_keys = len(vocab), len(keys)
        n_tok = np.diff(key_off)
        # keys with a token that no spaced text can contain never match: leave them out
        bad = np.bincount(np.repeat(np.arange(n_keys), n_tok), weights=_impossible_tokens(vocab)[tok], minlength=n_keys)
        state_of_key = np.zeros(n_keys, dtype=np.int64)
        alive = bad == 0
        levels: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
        n_states = 1
        for depth in range(int(n_tok.max(initial=0))):
            ks = np.flatnonzero(alive & (n_tok > depth))
            edge, new = np.unique(state_of_key[ks] * n_vocab + tok[key_off[ks] + depth], return_inverse=True)
            levels[0].append(edge // n_vocab)
            levels[1].append(edge % n_vocab)
            levels[2].append(n_states + np.arange(len(edge)))
            state_of_key[ks] = n_states + new
            n_states += len(edge)
        parents, toks, children = (np.concatenate(a or [np.zeros(0, np.int64)]) for a in levels)
        # a state's info: (what it completes + 1) << INFO_SHIFT | INFO_ONE (one entry) | INFO_MORE (it has
        # children), where what it completes is the entry of a key of one entry, else the key (-1: no key)
        state_key = np.full(n_states, -1, dtype=np.int64)
        state_key[state_of_key[alive]] = np.flatnonzero(alive)
        key = np.maximum(state_key, 0)
        one = (state_key >= 0) & (key_ptr[key + 1] - key_ptr[key] == 1) if n_keys else np.zeros(n_states, dtype=bool)
        what = np.where(one, key_entries[key_ptr[key]] if n_keys else 0, state_key)
        state_info = (what + 1) << _match.INFO_SHIFT | one.astype(np.int64) * _match.INFO_ONE
        root = parents == 0
        state_info[parents[~root]] |= _match.INFO_MORE
        edge_table = _hash_table(
            parents[~root] * n_vocab + toks[~root], _pair(children[~root], state_info[children[~root]])
        )
        root_child = np.full(n_vocab, -1, dtype=np.int64)
        root_child[toks[root]] = children[root]
        offsets, data = binary_parts(vocab)
        vocab_data = data[offsets[0] : offsets[-1]].copy()
        vocab_offsets = offsets - offsets[0]
        lengths = np.diff(vocab_offsets)
        inline = np.zeros((n_vocab, _match.INLINE), dtype=np.uint8)  # each token's first bytes, zero-padded
        shown = np.minimum(lengths, _match.INLINE)
        row = np.repeat(np.arange(n_vocab), shown)
        column = np.arange(int(shown.sum())) - np.repeat(np.cumsum(shown) - shown, shown)
        inline[row, column] = vocab_data[vocab_offsets[row] + column]
        hashes = np.frombuffer(_match.token_hashes(vocab_offsets, vocab_data), np.uint64)
        root_info = np.where(root_child >= 0, state_info[np.maximum(root_child, 0)], 0)
        rows = np.column_stack(
            [_pair(np.arange(n_vocab), lengths), root_child & 0xFFFFFFFF | root_info << 32, inline.view(np.int64)]
        )
        return _hash_table(hashes, rows), vocab_offsets, vocab_data, edge_table

    def _build_automaton(self, keys: list[str]) -> None:
        import ahocorasick

        automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for key_id, key in enumerate(keys):
            automaton.add_word(f" {key} ", key_id)
        automaton.make_automaton()
        self._automaton = automaton if keys else None
        self._key_len = np.fromiter((len(k) + 2 for k in keys), dtype=np.int64, count=len(keys))

    # -- matching ---------------------------------------------------------------------

    def match(self, texts: Sequence[Any]) -> list[list[int]]:
        """For each text, the sorted, distinct ids of the entries it matches ([] for non-strings)."""
        if self._ints is None:
            self._ints = [None] * self.num_entries
        return self.match_batch(texts).to_lists(self._ints)

    def match_batch(self, texts: Sequence[Any]) -> MatchResult:
        """Matches of ``texts`` as a CSR; null or non-string texts match nothing."""
        texts = list(texts)
        if self.backend == "tokens":
            return _kernel_result(_match.match_list(self._tables, texts))
        return _concat_results(
            self._match_chunk(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)
        )

    def match_arrow(self, texts: pa.Array | pa.ChunkedArray) -> pa.ListArray:
        """Matches of an arrow string column as a ``list<int32>`` array (nulls match nothing), columnar:
        the token engine reads the arrow buffers, with no Python object per text."""
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
            raise TypeError(f"expected a string array of texts, got {texts.type}")
        if self.backend != "tokens":
            return self.match_batch(texts.to_pylist()).to_arrow()
        validity, offsets, data = texts.buffers()
        width = 8 if pa.types.is_large_string(texts.type) else 4
        found = _match.match_arrow(
            self._tables,
            offsets,
            width,
            data if data is not None else b"",
            validity if texts.null_count else None,
            texts.offset,
            len(texts),
        )
        return _kernel_result(found).to_arrow()

    def _match_chunk(self, texts: list[Any]) -> MatchResult:
        if set(map(type, texts)) <= {str}:
            valid: np.ndarray | bool = True
        else:
            valid = np.fromiter((isinstance(t, str) for t in texts), dtype=bool, count=len(texts))
            texts = [t if ok else "" for t, ok in zip(texts, valid.tolist())]
        sep = self.separator_for(texts)
        if sep is None:  # every separator occurs in this chunk: match text by text
            flags = np.broadcast_to(valid, len(texts))
            return _concat_results([self._match_chunk_joined([t], "", v) for t, v in zip(texts, flags)])
        return self._match_chunk_joined(texts, sep, valid)

    def separator_for(self, texts: list[str]) -> str | None:
        if len(texts) <= 1:
            return ""
        joined = "".join(texts)
        return next((s for s in self._seps if s not in joined), None)

    def _match_chunk_joined(self, texts: list[str], sep: str, valid: np.ndarray | bool) -> MatchResult:
        spaced = spacing(f" {sep} ".join(texts) if sep else texts[0])
        text_idx, key_ids = self._scan_automaton(spaced, sep)
        keep = np.broadcast_to(np.asarray(valid), len(texts))[text_idx] if not np.all(valid) else slice(None)
        return self._collect(len(texts), text_idx[keep], key_ids[keep])

    def _scan_automaton(self, spaced: str, sep: str) -> tuple[np.ndarray, np.ndarray]:
        if self._automaton is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        flat = np.fromiter(itertools.chain.from_iterable(self._automaton.iter(spaced)), dtype=np.int64)
        ends, key_ids = flat[0::2], flat[1::2]
        if not sep:
            return np.zeros(len(ends), np.int64), key_ids
        # Text i spans the characters after separator i-1 and up to separator i.
        seps = np.cumsum([len(part) + 1 for part in spaced.split(sep)])[:-1] - 1
        text_idx = np.searchsorted(seps, ends)
        starts = ends - self._key_len[key_ids] + 1
        inside = np.searchsorted(seps, starts) == text_idx
        return text_idx[inside], key_ids[inside]

    def _collect(self, n_texts: int, text_idx: np.ndarray, key_ids: np.ndarray) -> MatchResult:
        if self._single_id:
            entry_ids = self._key_ids[key_ids].astype(np.int64)  # key k is entry _key_ids[k]
        else:
            lengths = self._key_ptr[key_ids + 1] - self._key_ptr[key_ids]
            text_idx = np.repeat(text_idx, lengths)
            starts = np.repeat(self._key_ptr[key_ids] - np.cumsum(lengths) + lengths, lengths)
            entry_ids = self._key_ids[starts + np.arange(len(starts))].astype(np.int64)
        n = max(self.num_entries, 1)
        pairs = np.sort(text_idx * n + entry_ids)
        pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])] if len(pairs) else pairs
        text_of_pair = pairs // n
        offsets = np.searchsorted(text_of_pair, np.arange(n_texts + 1)).astype(np.int64)
        return MatchResult(offsets, (pairs - text_of_pair * n).astype(np.int32))


def _concat_results(results: Iterable[MatchResult]) -> MatchResult:
    results = list(results)
    offsets = [np.zeros(1, np.int64)]
    base = 0
    for r in results:
        offsets.append(r.offsets[1:] + base)
        base += int(r.offsets[-1])
    return MatchResult(
        np.concatenate(offsets), np.concatenate([r.entry_ids for r in results] or [np.zeros(0, np.int32)])
    )
