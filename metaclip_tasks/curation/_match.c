/* The token engine of matching (metaclip_tasks/curation/matching.py), compiled: spacing, token hashing and the
 * trie walk of each text in one pass, with no Python work per text or per match.
 *
 * A text is spaced as MetaCLIP spaces it (" " + text + " ", each of ,.;:?!` wrapped in spaces, tab,
 * newline and CR made spaces) and cut into its space-delimited tokens; a token's id is found in an
 * open-addressing table of the metadata's tokens (hash, then the bytes compared), and from each
 * token a trie over token ids is walked while the following tokens extend a key.  Every key reached
 * is a matched entry string, which stands for one or more entry ids.
 *
 * The tables are the arrays a Matcher builds (or memory-maps): every function takes them as one
 * tuple of buffers, TABLES, in this order:
 *   vocab_table  int64[S, 6]  per slot: token hash; id | length << 32; root | info << 32 (the state the
 *                             token leads to from the trie's root, -1: none, and that state's info);
 *                             the token's first 24 bytes, zero-padded.  Column 1 is -1 where a slot is empty
 *   vocab_offsets int64[V + 1], vocab_data uint8[...]  each token's bytes (compared beyond 24 bytes)
 *   edge_table   int64[E, 2]  per slot: state * V + token id; child | info << 32 (-1: empty)
 *   key_ptr      int64[K + 1], key_entries int32[...]  each key's entry ids, ascending
 * A state's info is (what + 1) << 2 | one << 1 | more: what it completes (-1: nothing), which is the entry
 * id itself when its key has one entry (one set: no look-up in key_ptr), else the key; more: whether the
 * state has children.
 * One probe of a table reads one slot, which holds all a step needs: a token costs one cache miss
 * and each step of the walk one more, and every text's slots are prefetched before they are read.
 *
 * token_hashes(offsets: int64 buffer, data: buffer) -> bytes   uint64 hash of each token
 * table(keys: uint64 buffer, rows: int64 buffer, width) -> bytes  the int64[S, width + 1] table of the
 *   keys and their rows of ``width`` values (each row's first value non-negative)
 * match_list(TABLES, texts: list) -> (offsets, ids)            None and non-strings match nothing
 * match_arrow(TABLES, offsets, offset_bytes, data, validity, first, n) -> (offsets, ids)
 *   the n texts of an arrow string array from element ``first`` (offset_bytes 4 or 8; validity
 *   None when there are no nulls)
 * to_lists(offsets, ids, ints) -> list[list[int]]   ``ints``: a list of an int object per entry id, None
 *   until the first time the id is output (then kept: a later list reuses it)
 *
 * (offsets, ids) are bytes: int64[n + 1] from 0 and int32 entry ids, sorted and distinct per text.
 * Hashes and tables are the same on every machine (bytes are read as little-endian words).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../_codes.h"

#define GOLDEN 0x9E3779B97F4A7C15ULL
#define INLINE 24                      /* the module's INLINE: bytes of a token kept in its vocabulary slot */
#define VOCAB_WIDTH (3 + INLINE / 8)   /* int64 words of a vocabulary slot */

/* The tables, in the order every function takes them: the module's TABLES. */
#define TABLES(X) X(vocab_table) X(vocab_offsets) X(vocab_data) X(edge_table) X(key_ptr) X(key_entries)
#define TABLE_INDEX(name) TABLE_##name,
enum { TABLES(TABLE_INDEX) N_TABLES };
static const char *const table_names[] = {TABLES(CODE_NAME)};

/* A state's info, the module's INFO_MORE, INFO_ONE and INFO_SHIFT: (what + 1) << INFO_SHIFT | INFO_ONE
 * (its key has one entry) | INFO_MORE (it has children). */
enum { INFO_MORE = 1, INFO_ONE = 2, INFO_SHIFT = 2 };

/* Spacing, the module's PUNCTS_TO_WRAP and CHARS_TO_SPACE: bytes wrapped in spaces, bytes made spaces. */
#define PUNCTS_TO_WRAP ",.;:?!`"
#define CHARS_TO_SPACE "\t\n\r"

static inline uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t load_le(const uint8_t *p, size_t n) {
    uint64_t w = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n == 8) {
        memcpy(&w, p, 8);
        return w;
    }
#endif
    for (size_t i = 0; i < n; i++) w |= (uint64_t)p[i] << (8 * i);
    return w;
}

/* A token's hash: its little-endian 8-byte words folded by multiply-xor, then its length, mixed. */
static inline uint64_t token_hash(const uint8_t *p, size_t n) {
    uint64_t h = 0x27BB2EE687B0B0FDULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) h = (h ^ load_le(p + i, 8)) * GOLDEN;
    if (i < n) h = (h ^ load_le(p + i, n - i)) * GOLDEN;
    return mix(h ^ (uint64_t)n);
}

/* The slot a key starts probing from, in a table of 2**bits slots. */
static inline uint64_t home(uint64_t key, int bits) { return (key * GOLDEN) >> (64 - bits); }

static int table_bits(Py_ssize_t n) {
    int bits = 4;
    while (((Py_ssize_t)1 << bits) < 2 * n) bits++; /* load factor at most 1/2 */
    return bits;
}

typedef struct {
    Py_buffer views[N_TABLES];
    int held;
    const int64_t *vocab_table, *vocab_offsets, *edge_table, *key_ptr;
    const uint8_t *vocab_data;
    const int32_t *key_entries;
    int vocab_bits, edge_bits;
    int64_t n_vocab;
} Tables;

static void release_tables(Tables *t) {
    for (int i = 0; i < t->held; i++) PyBuffer_Release(&t->views[i]);
    t->held = 0;
}

/* log2 of a table's slots, from its size in bytes (-1: not a power of two). */
static int bits_of(Py_ssize_t bytes, Py_ssize_t slot_bytes) {
    Py_ssize_t slots = bytes / slot_bytes;
    int bits = 0;
    while (((Py_ssize_t)1 << bits) < slots) bits++;
    return (slots > 0 && ((Py_ssize_t)1 << bits) == slots && slots * slot_bytes == bytes) ? bits : -1;
}

static int get_tables(PyObject *tuple, Tables *t) {
    t->held = 0;
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) != N_TABLES) {
        PyErr_Format(PyExc_TypeError, "tables must be a tuple of %d buffers", N_TABLES);
        return -1;
    }
    for (int i = 0; i < N_TABLES; i++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(tuple, i), &t->views[i], PyBUF_C_CONTIGUOUS) < 0) {
            release_tables(t);
            return -1;
        }
        t->held++;
    }
    t->vocab_table = t->views[TABLE_vocab_table].buf;
    t->vocab_offsets = t->views[TABLE_vocab_offsets].buf;
    t->vocab_data = t->views[TABLE_vocab_data].buf;
    t->edge_table = t->views[TABLE_edge_table].buf;
    t->key_ptr = t->views[TABLE_key_ptr].buf;
    t->key_entries = t->views[TABLE_key_entries].buf;
    t->n_vocab = (int64_t)(t->views[TABLE_vocab_offsets].len / 8) - 1;
    t->vocab_bits = bits_of(t->views[TABLE_vocab_table].len, 8 * VOCAB_WIDTH);
    t->edge_bits = bits_of(t->views[TABLE_edge_table].len, 16);
    if (t->vocab_bits < 0 || t->edge_bits < 0 || t->n_vocab < 0) {
        PyErr_SetString(PyExc_ValueError, "a hash table's size is not a power of two");
        release_tables(t);
        return -1;
    }
    return 0;
}

/* A text token: where it is, its hash, then what the vocabulary says of it. */
typedef struct {
    const uint8_t *p;
    uint64_t hash;
    int64_t len;
    int32_t id, state, info, pad;
} Token;

/* Fill in a token's id (-1: not a metadata token) and its root state and info from the vocabulary. */
static inline void resolve(const Tables *t, Token *k) {
    uint64_t mask = ((uint64_t)1 << t->vocab_bits) - 1;
    k->id = -1;
    k->state = -1;
    for (uint64_t slot = home(k->hash, t->vocab_bits);; slot = (slot + 1) & mask) {
        const int64_t *row = t->vocab_table + VOCAB_WIDTH * slot;
        if (row[1] < 0) return;
        if ((uint64_t)row[0] != k->hash || (row[1] >> 32) != k->len) continue;
        int32_t id = (int32_t)(row[1] & 0xFFFFFFFF);
        const uint8_t *bytes = k->len <= INLINE ? (const uint8_t *)(row + 3) : t->vocab_data + t->vocab_offsets[id];
        if (memcmp(bytes, k->p, (size_t)k->len) != 0) continue;
        k->id = id;
        k->state = (int32_t)(row[2] & 0xFFFFFFFF);
        k->info = (int32_t)(row[2] >> 32);
        return;
    }
}

/* A token of ``n`` bytes at ``p``: hashed, and its vocabulary slot fetched ahead of its resolution. */
static inline void add_token(const Tables *t, Token *k, const uint8_t *p, size_t n) {
    k->p = p;
    k->len = (int64_t)n;
    k->hash = token_hash(p, n);
    __builtin_prefetch(t->vocab_table + VOCAB_WIDTH * home(k->hash, t->vocab_bits));
}

static inline uint64_t edge_key(const Tables *t, int32_t state, int32_t token) {
    return (uint64_t)state * (uint64_t)t->n_vocab + (uint64_t)token;
}

/* The child of ``state`` by ``token`` (-1: none), and its info. */
static inline int32_t child_of(const Tables *t, int32_t state, int32_t token, int32_t *info) {
    uint64_t key = edge_key(t, state, token);
    uint64_t mask = ((uint64_t)1 << t->edge_bits) - 1;
    for (uint64_t slot = home(key, t->edge_bits);; slot = (slot + 1) & mask) {
        int64_t value = t->edge_table[2 * slot + 1];
        if (value < 0) return -1;
        if ((uint64_t)t->edge_table[2 * slot] == key) {
            *info = (int32_t)(value >> 32);
            return (int32_t)(value & 0xFFFFFFFF);
        }
    }
}

/* Growable scratch and output arrays. */
typedef struct {
    char *data;
    size_t len, cap;
} Vec;

static int reserve(Vec *v, size_t bytes) {
    if (v->len + bytes <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 4096;
    while (cap < v->len + bytes) cap *= 2;
    char *data = realloc(v->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    v->data = data;
    v->cap = cap;
    return 0;
}

typedef struct {
    Vec tokens, found, offsets, ids;
} Work;

static void free_work(Work *w) {
    free(w->tokens.data);
    free(w->found.data);
    free(w->offsets.data);
    free(w->ids.data);
}

static int cmp_int32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static void sort_int32(int32_t *a, size_t n) {
    if (n > 32) {
        qsort(a, n, sizeof(int32_t), cmp_int32);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        int32_t x = a[i];
        size_t j = i;
        for (; j > 0 && a[j - 1] > x; j--) a[j] = a[j - 1];
        a[j] = x;
    }
}

/* How spacing treats each byte: ",.;:?!`" are wrapped in spaces (2); space, tab, newline and CR are
 * (or become) spaces (1); any other byte is kept (0). */
static uint8_t KIND[256];

static void init_kinds(void) {
    for (const char *p = PUNCTS_TO_WRAP; *p; p++) KIND[(uint8_t)*p] = 2;
    KIND[' '] = 1;
    for (const char *p = CHARS_TO_SPACE; *p; p++) KIND[(uint8_t)*p] = 1;
}

/* The tokens of spaced[1:] (each ends with one space), read off the text itself: a run of other bytes is
 * a token in place, a wrapped punctuation byte one of its own, and a space, tab, newline or CR (or a
 * wrapped byte) ends the token before it, empty or not.  Returns the number of tokens. */
static size_t tokenize(const Tables *t, const uint8_t *s, size_t n, Token *tokens) {
    size_t n_tok = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        uint8_t kind = i < n ? KIND[s[i]] : 1;
        if (kind == 0) continue;
        add_token(t, &tokens[n_tok++], s + start, i - start);
        if (kind == 2) add_token(t, &tokens[n_tok++], s + i, 1);
        start = i + 1;
    }
    return n_tok;
}

/* Append the sorted, distinct entry ids of the keys found in ``tokens`` to w->ids, then the end offset. */
static int walk(const Tables *t, const Token *tokens, size_t n_tok, Work *w) {
    w->found.len = 0;
    for (size_t i = 0; i < n_tok; i++) {
        int32_t state = tokens[i].state, info = tokens[i].info;
        for (size_t j = i + 1; state >= 0; j++) {
            int32_t what = (info >> INFO_SHIFT) - 1;
            if (what >= 0) {
                int64_t a = 0, b = 1;
                const int32_t *ids = &what;
                if (!(info & INFO_ONE)) {
                    a = t->key_ptr[what];
                    b = t->key_ptr[what + 1];
                    ids = t->key_entries;
                }
                if (reserve(&w->found, 4 * (size_t)(b - a)) < 0) return -1;
                memcpy(w->found.data + w->found.len, ids + a, 4 * (size_t)(b - a));
                w->found.len += 4 * (size_t)(b - a);
            }
            if (!(info & INFO_MORE) || j >= n_tok || tokens[j].id < 0) break;
            state = child_of(t, state, tokens[j].id, &info);
        }
    }
    int32_t *found = (int32_t *)w->found.data;
    size_t n_found = w->found.len / 4, k = 0;
    sort_int32(found, n_found);
    if (reserve(&w->ids, 4 * n_found) < 0 || reserve(&w->offsets, 8) < 0) return -1;
    int32_t *out = (int32_t *)(w->ids.data + w->ids.len);
    for (size_t i = 0; i < n_found; i++)
        if (k == 0 || out[k - 1] != found[i]) out[k++] = found[i];
    w->ids.len += 4 * k;
    *(int64_t *)(w->offsets.data + w->offsets.len) = (int64_t)(w->ids.len / 4);
    w->offsets.len += 8;
    return 0;
}

/* Append the matches of text ``s`` (``n`` bytes; NULL: a null text, which matches nothing): tokenize
 * (prefetching vocabulary slots), resolve (prefetching each walk's first step), then walk. */
static int match_one(const Tables *t, const uint8_t *s, size_t n, Work *w) {
    if (s == NULL) return walk(t, NULL, 0, w);
    w->tokens.len = 0;
    if (reserve(&w->tokens, sizeof(Token) * (2 * n + 1)) < 0) return -1;
    Token *tokens = (Token *)w->tokens.data;
    size_t n_tok = tokenize(t, s, n, tokens);
    for (size_t i = 0; i < n_tok; i++) resolve(t, &tokens[i]);
    for (size_t i = 0; i + 1 < n_tok; i++)
        if (tokens[i].state >= 0 && (tokens[i].info & INFO_MORE) && tokens[i + 1].id >= 0)
            __builtin_prefetch(t->edge_table + 2 * home(edge_key(t, tokens[i].state, tokens[i + 1].id), t->edge_bits));
    return walk(t, tokens, n_tok, w);
}

static int start_work(Work *w) {
    memset(w, 0, sizeof(*w));
    if (reserve(&w->offsets, 8) < 0) return -1;
    *(int64_t *)w->offsets.data = 0;
    w->offsets.len = 8;
    return 0;
}

static PyObject *finish_work(Work *w) {
    PyObject *result = Py_BuildValue("(y#y#)", w->offsets.data, (Py_ssize_t)w->offsets.len, w->ids.data ? w->ids.data : "",
                                     (Py_ssize_t)w->ids.len);
    free_work(w);
    return result;
}

static PyObject *match_list(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *tables, *texts;
    if (!PyArg_ParseTuple(args, "OO!", &tables, &PyList_Type, &texts)) return NULL;
    Tables t;
    Work w;
    if (get_tables(tables, &t) < 0) return NULL;
    if (start_work(&w) < 0) goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(texts); i++) {
        PyObject *text = PyList_GET_ITEM(texts, i);
        int rc;
        if (!PyUnicode_Check(text)) {
            rc = match_one(&t, NULL, 0, &w);
        } else if (PyUnicode_IS_COMPACT_ASCII(text)) {
            rc = match_one(&t, (const uint8_t *)PyUnicode_DATA(text), (size_t)PyUnicode_GET_LENGTH(text), &w);
        } else {
            /* lone surrogates pass through as the metadata's do (not cached on the string, unlike PyUnicode_AsUTF8) */
            PyObject *bytes = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
            if (bytes == NULL) goto fail;
            rc = match_one(&t, (const uint8_t *)PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes), &w);
            Py_DECREF(bytes);
        }
        if (rc < 0) goto fail;
    }
    release_tables(&t);
    return finish_work(&w);
fail:
    release_tables(&t);
    free_work(&w);
    return NULL;
}

static PyObject *match_arrow(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *tables, *validity_obj;
    Py_buffer offsets, data, validity = {0};
    int offset_bytes;
    Py_ssize_t first, n;
    if (!PyArg_ParseTuple(args, "Oy*iy*Onn", &tables, &offsets, &offset_bytes, &data, &validity_obj, &first, &n)) return NULL;
    Tables t;
    Work w;
    int have_validity = validity_obj != Py_None;
    PyObject *result = NULL;
    if (have_validity && PyObject_GetBuffer(validity_obj, &validity, PyBUF_SIMPLE) < 0) goto done;
    if ((offset_bytes != 4 && offset_bytes != 8) || first < 0 || n < 0 ||
        (first + n + 1) * offset_bytes > offsets.len || (have_validity && (first + n + 7) / 8 > validity.len)) {
        PyErr_SetString(PyExc_ValueError, "the arrow buffers are smaller than the array");
        goto done;
    }
    if (get_tables(tables, &t) < 0) goto done;
    if (start_work(&w) < 0) {
        free_work(&w);
        release_tables(&t);
        goto done;
    }
    const uint8_t *bits = validity.buf;
    for (Py_ssize_t i = first; i < first + n; i++) {
        int64_t a, b;
        if (offset_bytes == 4) {
            a = ((const int32_t *)offsets.buf)[i];
            b = ((const int32_t *)offsets.buf)[i + 1];
        } else {
            a = ((const int64_t *)offsets.buf)[i];
            b = ((const int64_t *)offsets.buf)[i + 1];
        }
        int valid = !have_validity || (bits[i >> 3] >> (i & 7)) & 1;
        if (valid && (a < 0 || b < a || b > data.len)) {
            PyErr_SetString(PyExc_ValueError, "an arrow offset lies outside the data buffer");
            free_work(&w);
            release_tables(&t);
            goto done;
        }
        if (match_one(&t, valid ? (const uint8_t *)data.buf + a : NULL, (size_t)(b - a), &w) < 0) {
            free_work(&w);
            release_tables(&t);
            goto done;
        }
    }
    release_tables(&t);
    result = finish_work(&w);
done:
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    if (have_validity && validity.obj != NULL) PyBuffer_Release(&validity);
    return result;
}

static PyObject *token_hashes(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer offsets, data;
    if (!PyArg_ParseTuple(args, "y*y*", &offsets, &data)) return NULL;
    Py_ssize_t n = offsets.len / 8 - 1;
    const int64_t *off = offsets.buf;
    PyObject *result = NULL;
    if (n < 0 || (n >= 0 && off[n] > data.len)) {
        PyErr_SetString(PyExc_ValueError, "the offsets lie outside the data");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, 8 * n);
    if (result == NULL) goto done;
    uint64_t *out = (uint64_t *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < n; i++) out[i] = token_hash((const uint8_t *)data.buf + off[i], (size_t)(off[i + 1] - off[i]));
done:
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    return result;
}

static PyObject *table(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer keys, rows;
    int width;
    if (!PyArg_ParseTuple(args, "y*y*i", &keys, &rows, &width)) return NULL;
    Py_ssize_t n = keys.len / 8;
    PyObject *result = NULL;
    if (width < 1 || rows.len != n * 8 * width) {
        PyErr_SetString(PyExc_ValueError, "the rows are not ``width`` values per key");
        goto done;
    }
    int bits = table_bits(n);
    uint64_t mask = ((uint64_t)1 << bits) - 1;
    Py_ssize_t slot_size = width + 1;
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(8 * slot_size) << bits);
    if (result == NULL) goto done;
    int64_t *slots = (int64_t *)PyBytes_AS_STRING(result);
    memset(slots, 0, (size_t)(8 * slot_size) << bits);
    for (uint64_t s = 0; s <= mask; s++) slots[slot_size * s + 1] = -1;
    const uint64_t *k = keys.buf;
    const int64_t *v = rows.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t slot = home(k[i], bits);
        while (slots[slot_size * slot + 1] >= 0) slot = (slot + 1) & mask;
        slots[slot_size * slot] = (int64_t)k[i];
        memcpy(slots + slot_size * slot + 1, v + (Py_ssize_t)width * i, 8 * (size_t)width);
    }
done:
    PyBuffer_Release(&keys);
    PyBuffer_Release(&rows);
    return result;
}

static PyObject *to_lists(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer offsets, ids;
    PyObject *ints;
    if (!PyArg_ParseTuple(args, "y*y*O!", &offsets, &ids, &PyList_Type, &ints)) return NULL;
    const int64_t *off = offsets.buf;
    const int32_t *values = ids.buf;
    Py_ssize_t n = offsets.len / 8 - 1, n_ints = PyList_GET_SIZE(ints);
    /* the lists hold only ints, so they make no cycle: no collection while they are made */
    int collecting = PyGC_Disable();
    PyObject *lists = PyList_New(n < 0 ? 0 : n);
    for (Py_ssize_t i = 0; lists != NULL && i < n; i++) {
        PyObject *list = PyList_New((Py_ssize_t)(off[i + 1] - off[i]));
        if (list == NULL) {
            Py_CLEAR(lists);
            break;
        }
        PyList_SET_ITEM(lists, i, list);
        for (int64_t j = off[i]; j < off[i + 1]; j++) {
            /* one int object per entry id, kept in ``ints`` (None until first used) */
            PyObject *value = values[j] < n_ints ? PyList_GET_ITEM(ints, values[j]) : Py_None;
            if (value == Py_None) {
                value = PyLong_FromLong(values[j]);
                if (value == NULL) {
                    Py_CLEAR(lists);
                    break;
                }
                if (values[j] < n_ints) {
                    Py_INCREF(value);
                    PyList_SetItem(ints, values[j], value);
                }
            } else {
                Py_INCREF(value);
            }
            PyList_SET_ITEM(list, (Py_ssize_t)(j - off[i]), value);
        }
    }
    if (collecting) PyGC_Enable();
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&ids);
    return lists;
}

static PyMethodDef methods[] = {
    {"match_list", match_list, METH_VARARGS, "Matches of a list of texts: (int64 offsets, int32 entry ids) as bytes."},
    {"match_arrow", match_arrow, METH_VARARGS, "Matches of an arrow string array's texts: (int64 offsets, int32 entry ids)."},
    {"token_hashes", token_hashes, METH_VARARGS, "The uint64 hash of each token of an int64-offsets byte column."},
    {"table", table, METH_VARARGS, "The open-addressing table (int64[S, width + 1]) of uint64 keys and their int64 rows."},
    {"to_lists", to_lists, METH_VARARGS, "int64 offsets and int32 ids as a list of lists of ints (reusing the ints of ``ints``)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_match",
    .m_doc = "The token engine of matching.",
    .m_size = -1,
    .m_methods = methods,
};

/* The layout and spacing constants that matching.py builds its tables and spaces its texts by; -1 on a Python error. */
static int add_constants(PyObject *created) {
    if (add_names(created, "TABLES", table_names, N_TABLES) < 0) return -1;
    if (PyModule_AddIntMacro(created, INLINE) < 0 || PyModule_AddIntMacro(created, INFO_MORE) < 0
        || PyModule_AddIntMacro(created, INFO_ONE) < 0 || PyModule_AddIntMacro(created, INFO_SHIFT) < 0)
        return -1;
    if (PyModule_AddStringMacro(created, PUNCTS_TO_WRAP) < 0 || PyModule_AddStringMacro(created, CHARS_TO_SPACE) < 0) return -1;
    return 0;
}

PyMODINIT_FUNC PyInit__match(void) {
    init_kinds();
    PyObject *created = PyModule_Create(&module);
    if (created != NULL && add_constants(created) < 0) Py_CLEAR(created);
    return created;
}
