"""Sub-string matching of alt-texts against metadata entries (paper section 3.2).

The definition is MetaCLIP's: a text is *spaced* (see :func:`spacing`) and entry ``e``
matches when ``f" {e} "`` is a sub-string of the spaced text.  :class:`Matcher` computes
exactly that for whole batches of texts at a time, with no Python work per match:

* ``"tokens"`` (default): a spaced text is a sequence of space-separated tokens and a
  spaced entry matches exactly when its own token sequence is a contiguous run of the
  text's tokens.  Tokens become integer ids through one dictionary look-up each, and a
  trie over token ids is walked with numpy, one level per step, for a whole batch.
* ``"ahocorasick"``: one pyahocorasick automaton over the spaced entries (the released
  MetaCLIP approach), run once over a whole batch joined into one string.

Both return the same answer; ``benchmarks/matching.py`` measures them against the
reference (one automaton, one text at a time).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip_tasks.arrays import binary_parts, to_binary
from metaclip_tasks.files import Stored
from metaclip_tasks.hashing import ByteHasher, IntHashIndex
from metaclip_tasks.shards import MATCHED_SCHEMA, ShardReader, ShardWriter

PUNCTS_TO_WRAP = (",", ".", ";", ":", "?", "!", "`")
CHARS_TO_SPACE = ("\t", "\n", "\r")
# Characters used to join a batch into one string; one absent from the batch is picked.
_SEP_CANDIDATES = tuple(chr(c) for c in [*range(0x00, 0x20), 0x7F] if chr(c) not in CHARS_TO_SPACE)
_SPACE = 0x20
_HASH_BASES = (0x100000001B3, 0x2545F4914F6CDD1D, 0x5851F42D4C957F2D, 0x27BB2EE687B0B0FD)
Backend = Literal["tokens", "ahocorasick"]


def spacing(text: str) -> str:
    """The paper's spaced text: ``f" {text} "`` with punctuation wrapped in spaces."""
    spaced = f" {text} "
    for punct in PUNCTS_TO_WRAP:
        spaced = spaced.replace(punct, f" {punct} ")
    for char in CHARS_TO_SPACE:
        spaced = spaced.replace(char, " ")
    return spaced


_LOW_BYTES_MASK = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)


def _packed(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The bytes ``data[start:end]`` (at most 8) as one little-endian uint64, for each range.

    Every packed token ends with a space byte, so the packing is injective.
    """
    padded = np.concatenate([data, np.zeros(8, np.uint8)])
    words = np.ndarray((len(data),), dtype="<u8", buffer=padded, strides=(1,))  # unaligned view
    return words[starts] & _LOW_BYTES_MASK[ends - starts]


def _impossible_tokens(tokens: pa.LargeBinaryArray) -> np.ndarray:
    """Which tokens no spaced text contains: with tab/newline/CR, or wrapped punctuation inside."""
    offsets, data = binary_parts(tokens)
    lengths = np.diff(offsets)
    token_of_byte = np.repeat(np.arange(len(tokens)), lengths)
    data = data[offsets[0] : offsets[-1]]
    whitespace = np.bincount(token_of_byte, np.isin(data, list(b"\t\n\r")), minlength=len(tokens)) > 0
    punct = np.bincount(token_of_byte, np.isin(data, [ord(p) for p in PUNCTS_TO_WRAP]), minlength=len(tokens)) > 0
    return whitespace | (punct & (lengths > 1))


@dataclass(frozen=True)
class MatchResult:
    """Matches of a batch as a CSR: text ``i`` matched ``entry_ids[offsets[i]:offsets[i+1]]``."""

    offsets: np.ndarray  # int64[n + 1]
    entry_ids: np.ndarray  # int32[total matches], sorted and distinct within each text

    def to_arrow(self) -> pa.ListArray:
        """The matches as an arrow ``list<int32>`` array, one list per text."""
        return pa.ListArray.from_arrays(pa.array(self.offsets.astype(np.int32)), pa.array(self.entry_ids))

    def to_lists(self) -> list[list[int]]:
        """The matches as Python lists, one per text."""
        values = self.entry_ids.tolist()
        bounds = self.offsets.tolist()
        return [values[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


class Matcher:
    """Matches texts against a fixed list of metadata entries; build once, reuse for many texts."""

    def __init__(self, entries: Sequence[str], backend: Backend = "tokens", batch_size: int = 16384) -> None:
        if backend not in ("tokens", "ahocorasick"):
            raise ValueError(f"unknown matching backend {backend!r}: use 'tokens' or 'ahocorasick'")
        bad = next((i for i, e in enumerate(entries) if not isinstance(e, str)), None)
        if bad is not None:
            raise TypeError(f"metadata entry {bad} is {type(entries[bad]).__name__}, not a string")
        self.num_entries = len(entries)
        self.backend = backend
        self.batch_size = batch_size
        # Duplicated entries share one key; each key lists its entry ids (a CSR).
        encoded = to_binary(entries)
        keys = encoded.dictionary_encode()
        key_of_entry = keys.indices.to_numpy().astype(np.int64)
        n_keys = len(keys.dictionary)
        order = np.argsort(key_of_entry, kind="stable")
        self._key_ids = order.astype(np.int32)
        self._key_ptr = np.searchsorted(key_of_entry[order], np.arange(n_keys + 1)).astype(np.int64)
        self._single_id = bool(n_keys == len(entries))
        offsets, data = binary_parts(keys.dictionary)
        present = np.bincount(data[offsets[0] : offsets[-1]], minlength=256) > 0
        self._seps = [c for c in _SEP_CANDIDATES if not present[ord(c)]]
        if backend == "tokens":
            self._build_token_trie(keys.dictionary)
        else:
            self._build_automaton([k.decode("utf-8", "surrogatepass") for k in keys.dictionary.to_pylist()])
        del encoded, keys
        pa.default_memory_pool().release_unused()  # the build's temporaries are large and one-off

    # -- building ---------------------------------------------------------------------

    def _build_token_trie(self, keys: pa.LargeBinaryArray) -> None:
        """A trie over token ids, built level by level with numpy (no per-entry Python work)."""
        split = pc.split_pattern(keys, pattern=" ")
        key_off = split.offsets.to_numpy().astype(np.int64)
        encoded = split.flatten().dictionary_encode()
        tok, vocab = encoded.indices.to_numpy().astype(np.int64), encoded.dictionary
        n_vocab, n_keys = max(len(vocab), 1), len(keys)
        n_tok = np.diff(key_off)
        # keys with a token that no spaced text can contain never match: leave them out
        bad = np.bincount(np.repeat(np.arange(n_keys), n_tok), weights=_impossible_tokens(vocab)[tok], minlength=n_keys)
        state_of_key = np.zeros(n_keys, dtype=np.int64)
        alive = bad == 0
        parents, toks, children, n_states = [], [], [], 1
        for depth in range(int(n_tok.max(initial=0))):
            ks = np.flatnonzero(alive & (n_tok > depth))
            edge, new = np.unique(state_of_key[ks] * n_vocab + tok[key_off[ks] + depth], return_inverse=True)
            parents.append(edge // n_vocab)
            toks.append(edge % n_vocab)
            children.append(n_states + np.arange(len(edge)))
            state_of_key[ks] = n_states + new
            n_states += len(edge)
        parents, toks, children = (np.concatenate(a or [np.zeros(0, np.int64)]) for a in (parents, toks, children))
        self._state_key = np.full(n_states, -1, dtype=np.int64)
        self._state_key[state_of_key[alive]] = np.flatnonzero(alive)
        root = parents == 0
        self._root_child = np.full(n_vocab, -1, dtype=np.int64)
        self._root_child[toks[root]] = children[root]
        self._edges = IntHashIndex(parents[~root] * n_vocab + toks[~root], children[~root])
        self._has_children = np.zeros(n_states, dtype=bool)
        self._has_children[parents[~root]] = True
        self._n_vocab = n_vocab
        # Token ids by their bytes, each followed by one space: tokens of up to 8 bytes are
        # packed exactly into a uint64; longer ones are found by hash and then compared.
        space = pa.scalar(b" ", pa.large_binary())
        self._vocab_bytes = pc.binary_join_element_wise(vocab, space, pa.scalar(b"", pa.large_binary()))
        offsets, data = binary_parts(self._vocab_bytes)
        starts, ends = offsets[:-1], offsets[1:]
        short = ends - starts <= 8
        self._short_index = IntHashIndex(_packed(data, starts[short], ends[short]), np.flatnonzero(short))
        for base in _HASH_BASES:
            self._hasher = ByteHasher(base)
            hashes = self._hasher.hash_ranges(data, starts[~short], ends[~short])
            if len(np.unique(hashes)) == len(hashes):
                break
        else:  # pragma: no cover - four independent 64-bit hashes all colliding
            raise RuntimeError("could not find a collision-free hash for the metadata tokens")
        self._long_index = IntHashIndex(hashes, np.flatnonzero(~short))

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
        return self.match_batch(texts).to_lists()

    def match_batch(self, texts: Sequence[Any]) -> MatchResult:
        """Matches of ``texts`` as a CSR; null or non-string texts match nothing."""
        texts = list(texts)
        return _concat_results(self._match_chunk(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size))

    def _match_chunk(self, texts: list[Any]) -> MatchResult:
        if set(map(type, texts)) <= {str}:
            valid: np.ndarray | bool = True
        else:
            valid = np.fromiter((isinstance(t, str) for t in texts), dtype=bool, count=len(texts))
            texts = [t if ok else "" for t, ok in zip(texts, valid.tolist())]
        sep = self._separator_for(texts)
        if sep is None:  # every separator occurs in this chunk: match text by text
            flags = np.broadcast_to(valid, len(texts))
            return _concat_results([self._match_chunk_joined([t], "", v) for t, v in zip(texts, flags)])
        return self._match_chunk_joined(texts, sep, valid)

    def _separator_for(self, texts: list[str]) -> str | None:
        if len(texts) <= 1:
            return ""
        joined = "".join(texts)
        return next((s for s in self._seps if s not in joined), None)

    def _match_chunk_joined(self, texts: list[str], sep: str, valid: np.ndarray | bool) -> MatchResult:
        spaced = spacing(f" {sep} ".join(texts) if sep else texts[0])
        if self.backend == "tokens":
            text_idx, key_ids = self._walk_tokens(spaced, sep)
        else:
            text_idx, key_ids = self._scan_automaton(spaced, sep)
        keep = np.broadcast_to(np.asarray(valid), len(texts))[text_idx] if not np.all(valid) else slice(None)
        return self._collect(len(texts), text_idx[keep], key_ids[keep])

    def _token_ids(self, spaced: str, sep: str) -> tuple[np.ndarray, np.ndarray]:
        """Vocabulary id of each space-delimited token of ``spaced`` (-1: none), and its text."""
        data = spaced[1:].encode("utf-8", "surrogatepass")  # every token now ends with one space
        raw = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(raw == _SPACE) + 1
        starts = np.concatenate([np.zeros(1, np.int64), ends[:-1]])
        ids = np.full(len(ends), -1, dtype=np.int64)
        short = ends - starts <= 8
        ids[short] = self._short_index.lookup(_packed(raw, starts[short], ends[short]))
        long_ = np.flatnonzero(~short)
        candidate = self._long_index.lookup(self._hasher.hash_ranges(raw, starts[long_], ends[long_]))
        found = long_[candidate >= 0]
        if len(found):
            tokens = pa.LargeBinaryArray.from_buffers(
                pa.large_binary(), len(ends), [None, pa.py_buffer(np.concatenate([[0], ends])), pa.py_buffer(data)]
            )
            candidate = candidate[candidate >= 0]
            same = pc.equal(tokens.take(found), self._vocab_bytes.take(candidate)).to_numpy(zero_copy_only=False)
            ids[found[same]] = candidate[same]
        if not sep:
            return ids, np.zeros(len(ids), dtype=np.int64)
        is_sep = (ends - starts == 2) & (raw[starts] == ord(sep))
        return ids, np.cumsum(is_sep)

    def _walk_tokens(self, spaced: str, sep: str) -> tuple[np.ndarray, np.ndarray]:
        ids, text_of_token = self._token_ids(spaced, sep)
        known = np.flatnonzero(ids >= 0)
        state = self._root_child[ids[known]].astype(np.int64)
        hit = state >= 0
        pos, state = known[hit], state[hit]
        found_pos, found_state = [], []
        n_tok, n_vocab = len(ids), self._n_vocab
        depth = 1
        while len(pos):
            found_pos.append(pos)
            found_state.append(state)
            more = self._has_children[state] & (pos + depth < n_tok)
            pos, state = pos[more], state[more]
            tok = ids[pos + depth]
            ok = tok >= 0
            pos, state, tok = pos[ok], state[ok], tok[ok]
            child = self._edges.lookup(state * n_vocab + tok)
            ok = child >= 0
            pos, state = pos[ok], child[ok]
            depth += 1
        if not found_pos:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pos, state = np.concatenate(found_pos), np.concatenate(found_state)
        key_ids = self._state_key[state]
        is_key = key_ids >= 0
        return text_of_token[pos[is_key]], key_ids[is_key]

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
    return MatchResult(np.concatenate(offsets), np.concatenate([r.entry_ids for r in results] or [np.zeros(0, np.int32)]))


@dataclass(frozen=True)
class ShardMatch:
    """What matching one shard produced besides its parquet file."""

    counts: np.ndarray  # uint64[num entries]: pairs of the shard that matched each entry
    stats: dict[str, int]  # pairs_in, pairs_matched, matches
    written: Stored  # the matched shard's URI, size and sha256


def match_shard(source: str | Stored, output_uri: str, matcher: Matcher, *, batch_rows: int = 65536) -> ShardMatch:
    """Match one parquet shard of pairs (``uid``, ``url``, ``text``); write the pairs that matched
    with their sorted entry ids (``MATCHED_SCHEMA``), in input order, to ``output_uri``."""
    counts = np.zeros(matcher.num_entries, dtype=np.uint64)
    stats = {"pairs_in": 0, "pairs_matched": 0, "matches": 0}
    with (ShardReader(source, ["uid", "url", "text"], string_columns=["uid", "url", "text"]) as reader,
          ShardWriter(output_uri, MATCHED_SCHEMA) as writer):  # fmt: skip
        for batch in reader.batches(batch_rows):
            result = matcher.match_batch(batch.column("text").to_pylist())
            keep = pa.array(np.diff(result.offsets) > 0)
            matched = result.to_arrow().filter(keep)
            chosen = batch.filter(keep)
            writer.write(pa.Table.from_arrays([chosen.column("uid"), chosen.column("url"), chosen.column("text"), matched],
                                              schema=MATCHED_SCHEMA))  # fmt: skip
            ids = matched.flatten().to_numpy()
            counts += np.bincount(ids, minlength=matcher.num_entries).astype(np.uint64)
            stats["pairs_in"] += len(batch)
            stats["pairs_matched"] += len(chosen)
            stats["matches"] += len(ids)
        written = writer.close()
    return ShardMatch(counts, stats, written)
