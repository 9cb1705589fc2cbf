/* The WAT record scan of Common Crawl ingestion (metaclip_tasks/ingest/extract.py), compiled: one pass over a
 * record's JSON bytes for what the Python reader needs, without parsing the record.
 *
 * scan(data: bytes, page: int, pages: list, urls: list, alts: list, titles: list)
 *     -> None | (html: bool, base: bool, images: int, target: str | None)
 *
 *   html    the record holds "HTML-Metadata" (an HTML response's metadata: a page)
 *   base    it holds "Base" (the page has a <base href>: the reader parses the whole record)
 *   images  how many links it has whose path is "IMG@/src" (a link object starts with its path)
 *   target  the page URL: the envelope's "WARC-Target-URI" string, stripped, without the angle
 *           brackets some crawlers put around it (as ingest.target_uri); None when it is not one
 *           plain ASCII string in the record (the reader then takes the record's WARC header)
 *
 * For a page without a base, the url, alt and title of each image link whose alt is a non-empty
 * string are appended to urls, alts and titles (None where a key is absent, or the url empty), in
 * record order, and ``page`` to pages once per link: the columns of links.PageLinks, normalised as
 * it keeps them: the url stripped (``src.strip()``, then tabs and newlines removed), alt and title
 * squeezed (``" ".join(text.split())``).  Nothing is appended otherwise.
 *
 * None means "not certain": a page that is not one whole JSON object (its last byte other than '}'),
 * an image link not written as Common Crawl writes them ({"path":"IMG@/src", "key":"value",...}: flat,
 * compact, every value a JSON string, path first and only once), a literal "IMG@/src" anywhere else in
 * the record, a string that is not valid JSON or UTF-8, or a lone surrogate.  The reader then parses
 * the whole record with orjson, which gives the same links or refuses the record.
 *
 * frame(data, pos: int, limit: int, page_urls: list, bases: list, pages, urls, alts, titles)
 *     -> (pos, records, pages, images, status, block, block_end)
 *
 * The WARC records of inflated WAT bytes, from data[pos:], one after the other: records of the
 * standard's other types are skipped, each metadata record is scanned as above and, when it is a page
 * the scan is certain of, with no <base> and its URL in the JSON, its links appended and its URL to
 * page_urls and bases (the columns of links.PageLinks).  Returns where it stopped, the metadata
 * records and pages it read and the images of those pages, and why it stopped (status):
 *   NEED (0)   data[pos:] holds no whole record (the reader inflates more)
 *   FULL (1)   urls holds ``limit`` links or more (the reader resolves them)
 *   PARSE (2)  the metadata record at pos, its JSON at data[block:block_end], is the reader's: the
 *              scan is not certain of it, it has a <base>, or its page URL is in its WARC header
 *   ODD (3)    the record at pos is not framed as Common Crawl frames its records (the reader leaves
 *              the file to FastWARC)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../_codes.h"

/* Eight bytes at a time (SWAR): long URLs and texts are mostly bytes that need no attention. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static inline uint64_t load8(const char *p) {
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

/* Whether some byte of x is below n (n <= 128), or equal to c: exact as a yes/no. */
static inline uint64_t below(uint64_t x, unsigned n) { return (x - ONES * n) & ~x & HIGHS; }
static inline uint64_t equal(uint64_t x, unsigned char c) { return below(x ^ (ONES * c), 1); }

/* The first needle in [p, end), found by memchr on one of its rarer bytes (at ``at``): JSON is full of
 * quotes, which slow down searches that key on a needle's first or last byte. */
static const char *find(const char *p, const char *end, const char *needle, size_t length, size_t at) {
    const char *q = p + at;
    while (q < end && (q = memchr(q, needle[at], (size_t)(end - q))) != NULL) {
        const char *start = q - at;
        if ((size_t)(end - start) >= length && memcmp(start, needle, length) == 0) return start;
        q++;
    }
    return NULL;
}

#define NEEDLE(s, at) s, (sizeof(s) - 1), at

static int hex4(const char *p, const char *end, unsigned int *value) {
    unsigned int v = 0;
    if (end - p < 4) return 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned int)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned int)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned int)(c - 'A' + 10);
        else return 0;
    }
    *value = v;
    return 1;
}

static Py_ssize_t utf8(unsigned int cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The JSON string whose opening quote is at p, decoded into out (never longer than its source);
 * returns the position after its closing quote, or NULL when it is not a valid JSON string. */
static const char *json_string(const char *p, const char *end, char *out, Py_ssize_t *length) {
    Py_ssize_t n = 0;
    if (p >= end || *p != '"') return NULL;
    p++;
    while (p < end) {
        while (end - p >= 8) { /* a run of plain characters */
            uint64_t x = load8(p);
            if (equal(x, '"') | equal(x, '\\') | below(x, 0x20)) break;
            memcpy(out + n, &x, 8);
            p += 8, n += 8;
        }
        if (p >= end) break;
        unsigned char c = (unsigned char)*p++;
        if (c == '"') { *length = n; return p; }
        if (c < 0x20) return NULL;
        if (c != '\\') { out[n++] = (char)c; continue; }
        if (p >= end) return NULL;
        switch (*p++) {
            case '"': out[n++] = '"'; break;
            case '\\': out[n++] = '\\'; break;
            case '/': out[n++] = '/'; break;
            case 'b': out[n++] = '\b'; break;
            case 'f': out[n++] = '\f'; break;
            case 'n': out[n++] = '\n'; break;
            case 'r': out[n++] = '\r'; break;
            case 't': out[n++] = '\t'; break;
            case 'u': {
                unsigned int cp, low;
                if (!hex4(p, end, &cp)) return NULL;
                p += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return NULL;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, end, &low) || low < 0xDC00 || low > 0xDFFF)
                        return NULL;
                    p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                }
                n += utf8(cp, out + n);
                break;
            }
            default: return NULL;
        }
    }
    return NULL;
}

/* A decoded string as a Python str (strict UTF-8), or NULL with no exception set when it is not UTF-8. */
static PyObject *text(const char *s, Py_ssize_t n) {
    PyObject *value = PyUnicode_DecodeUTF8(s, n, "strict");
    if (value == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear();
    return value;
}

/* Python's whitespace among ASCII bytes (what str.split and str.strip remove). */
static int space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1C && c <= 0x1F); }

static int ascii(const char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (load8(s + i) & HIGHS) return 0;
    for (; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return 0;
    return 1;
}

static PyObject *ascii_text(const char *s, Py_ssize_t n) {
    PyObject *value = PyUnicode_New(n, 127);
    if (value != NULL) memcpy(PyUnicode_DATA(value), s, (size_t)n);
    return value;
}

enum Kind { SOURCE, TEXT };

/* A decoded url (SOURCE: stripped, then tabs and newlines removed) or alt/title (TEXT: squeezed) as
 * a str, in place for ASCII, by Python's own str methods otherwise; NULL as text() does. */
static PyObject *normalised(char *s, Py_ssize_t n, enum Kind kind) {
    if (!ascii(s, n)) {
        PyObject *value = text(s, n), *result = NULL;
        if (value == NULL) return NULL;
        if (kind == TEXT) {
            PyObject *words = PyUnicode_Split(value, NULL, -1), *blank = PyUnicode_FromString(" ");
            if (words != NULL && blank != NULL) result = PyUnicode_Join(blank, words);
            Py_XDECREF(words);
            Py_XDECREF(blank);
        } else {
            result = PyObject_CallMethod(value, "strip", NULL);
            const char *removed[] = {"\t", "\n", "\r"};
            for (int i = 0; i < 3 && result != NULL; i++) {
                PyObject *what = PyUnicode_FromString(removed[i]), *none = PyUnicode_FromString("");
                PyObject *next = what && none ? PyUnicode_Replace(result, what, none, -1) : NULL;
                Py_XDECREF(what);
                Py_XDECREF(none);
                Py_SETREF(result, next);
            }
        }
        Py_DECREF(value);
        return result;
    }
    Py_ssize_t start = 0, stop = n, w = 0;
    while (start < stop && space((unsigned char)s[start])) start++;
    while (stop > start && space((unsigned char)s[stop - 1])) stop--;
    if (kind == TEXT) {
        int gap = 0;
        for (Py_ssize_t i = start; i < stop; i++) {
            if (space((unsigned char)s[i])) { gap = 1; continue; }
            if (gap) s[w++] = ' ';
            gap = 0;
            s[w++] = s[i];
        }
    } else {
        Py_ssize_t i = start;
        while (i + 8 <= stop && !below(load8(s + i), '\r' + 1)) i += 8; /* tabs and newlines are rare in a URL */
        if (i + 8 > stop) {
            while (i < stop && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') i++;
            if (i == stop) return ascii_text(s + start, stop - start);
        }
        memmove(s, s + start, (size_t)(i - start));
        w = i - start;
        for (; i < stop; i++)
            if (s[i] != '\t' && s[i] != '\n' && s[i] != '\r') s[w++] = s[i];
    }
    return ascii_text(s, w);
}

/* 1 when valid UTF-8 (as orjson requires of what it parses), 0 when not, -1 on a Python error. */
static int valid(const char *s, Py_ssize_t n) {
    if (ascii(s, n)) return 1;
    PyObject *value = text(s, n);
    if (value == NULL) return PyErr_Occurred() ? -1 : 0;
    Py_DECREF(value);
    return 1;
}

enum { URL, ALT, TITLE, FIELDS };

/* The rest of a link object, from just after its path's value; 1 when read (fields set, new references
 * or NULL), 0 when it is not written as expected, -1 on a Python error. */
static int link_object(const char *p, const char *end, char *buffer, PyObject *fields[FIELDS]) {
    Py_ssize_t n;
    for (;;) {
        if (p >= end) return 0;
        if (*p == '}') return 1;
        if (*p++ != ',') return 0;
        p = json_string(p, end, buffer, &n);
        if (p == NULL || p >= end || *p++ != ':') return 0;
        int which = -1, ok;
        if (n == 3 && memcmp(buffer, "url", 3) == 0) which = URL;
        else if (n == 3 && memcmp(buffer, "alt", 3) == 0) which = ALT;
        else if (n == 5 && memcmp(buffer, "title", 5) == 0) which = TITLE;
        else if (n == 4 && memcmp(buffer, "path", 4) == 0) return 0; /* path given twice */
        else if ((ok = valid(buffer, n)) != 1) return ok;
        p = json_string(p, end, buffer, &n);
        if (p == NULL) return 0;
        if (which == URL && n == 0) {
            Py_XSETREF(fields[URL], Py_NewRef(Py_None)); /* an empty src: no source at all */
        } else if (which >= 0) {
            PyObject *value = normalised(buffer, n, which == URL ? SOURCE : TEXT);
            if (value == NULL) return PyErr_Occurred() ? -1 : 0;
            Py_XSETREF(fields[which], value); /* a repeated key: the last one, as JSON parsers read it */
        } else if ((ok = valid(buffer, n)) != 1) {
            return ok;
        }
    }
}

/* The page URL: the one "WARC-Target-URI" string of the record, when plain ASCII (else NULL, no error). */
static PyObject *target(const char *data, const char *end, char *buffer) {
    static const char key[] = "\"WARC-Target-URI\":";
    const char *at = find(data, end, NEEDLE(key, 13)), *p;
    Py_ssize_t n;
    if (at == NULL || find(at + 1, end, NEEDLE(key, 13)) != NULL) return NULL; /* 13: its U, rarer than its T */
    p = json_string(at + sizeof(key) - 1, end, buffer, &n);
    if (p == NULL || !ascii(buffer, n)) return NULL;
    Py_ssize_t start = 0, stop = n;
    while (start < stop && space((unsigned char)buffer[start])) start++;
    while (stop > start && space((unsigned char)buffer[stop - 1])) stop--;
    if (stop - start >= 2 && buffer[start] == '<' && buffer[stop - 1] == '>') {
        start++, stop--;
        while (start < stop && space((unsigned char)buffer[start])) start++;
        while (stop > start && space((unsigned char)buffer[stop - 1])) stop--;
    }
    return ascii_text(buffer + start, stop - start);
}

/* Whether the record ends as a JSON object does (``data.rstrip().endswith(b"}")``): else it is cut short. */
static int whole(const char *data, const char *end) {
    while (end > data && (end[-1] == ' ' || (end[-1] >= '\t' && end[-1] <= '\r'))) end--;
    return end > data && end[-1] == '}';
}

enum { PAGES, URLS, ALTS, TITLES, COLUMNS };

/* The scan of one record's JSON bytes, as scan() below: the tuple, None, or NULL on a Python error. */
static PyObject *scan_record(const char *data, Py_ssize_t size, PyObject *page, PyObject *columns[COLUMNS]) {
    const char *end = data + size;
    Py_ssize_t length[COLUMNS];
    for (int i = 0; i < COLUMNS; i++) length[i] = PyList_GET_SIZE(columns[i]);
    PyObject *result = NULL, *url = NULL;
    char *buffer = NULL;
    int certain = 0;
    int html = find(data, end, NEEDLE("\"HTML-Metadata\"", 1)) != NULL;
    if (!html) return Py_BuildValue("(OOnO)", Py_False, Py_False, (Py_ssize_t)0, Py_None);
    if (!whole(data, end)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    int base = find(data, end, NEEDLE("\"Base\"", 1)) != NULL;
    buffer = PyMem_Malloc((size_t)size + 1);
    if (buffer == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    url = target(data, end, buffer);
    if (url == NULL && PyErr_Occurred()) goto done;
    /* Every link object is an array item that starts {"path":"...": each path is decoded (an escaped
     * one too), and every literal "IMG@/src" in the record must be such a path, else the record is
     * parsed whole. */
    Py_ssize_t images = 0, literal = 0, written = 0, n;
    for (const char *q = data; (q = find(q, end, NEEDLE("\"IMG@/src\"", 3))) != NULL; q++) literal++;
    const char *p = data;
    const size_t prefix = sizeof("{\"path\":") - 1;
    for (;;) {
        const char *start = find(p, end, NEEDLE("{\"path\":", 0));
        if (start == NULL) break;
        p = start + prefix;
        if (p >= end || *p != '"' || start == data || (start[-1] != '[' && start[-1] != ',')) continue;  /* not an item of an array, as links are */
        const char *after = json_string(p, end, buffer, &n);
        if (after == NULL) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        p = after;
        if (n != 8 || memcmp(buffer, "IMG@/src", 8) != 0) continue;
        images++;
        written += after - (start + prefix) == (Py_ssize_t)(sizeof("\"IMG@/src\"") - 1);
        PyObject *fields[FIELDS] = {NULL, NULL, NULL};
        int read = link_object(after, end, buffer, fields);
        if (read == 1 && !base && fields[ALT] != NULL && PyUnicode_GET_LENGTH(fields[ALT]) > 0) { /* a blank alt squeezes to "" */
            PyObject *row[COLUMNS] = {page, fields[URL], fields[ALT], fields[TITLE]};
            for (int i = 0; i < COLUMNS && read == 1; i++)
                if (PyList_Append(columns[i], row[i] != NULL ? row[i] : Py_None) < 0) read = -1;
        }
        for (int i = 0; i < FIELDS; i++) Py_XDECREF(fields[i]);
        if (read == -1) goto done;
        if (read == 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    if (written != literal) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    result = Py_BuildValue("(OOnO)", Py_True, base ? Py_True : Py_False, images, url != NULL ? url : Py_None);
    certain = result != NULL;
done:
    if (!certain) /* nothing appended: the reader parses the record whole */
        for (int i = 0; i < COLUMNS; i++)
            if (PyList_GET_SIZE(columns[i]) > length[i] && PyList_SetSlice(columns[i], length[i], PyList_GET_SIZE(columns[i]), NULL) < 0)
                Py_CLEAR(result);
    Py_XDECREF(url);
    PyMem_Free(buffer);
    return result;
}

static int columns_of(PyObject *const *args, PyObject *columns[], int count, const char *function) {
    for (int i = 0; i < count; i++) {
        if (!PyList_CheckExact(args[i])) {
            PyErr_Format(PyExc_TypeError, "%s(): the columns must be lists", function);
            return -1;
        }
        columns[i] = args[i];
    }
    return 0;
}

static PyObject *scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 6) return PyErr_Format(PyExc_TypeError, "scan() takes 6 arguments (%zd given)", nargs);
    PyObject *columns[COLUMNS];
    if (!PyLong_Check(args[1])) return PyErr_Format(PyExc_TypeError, "scan(): page must be an int");
    if (columns_of(args + 2, columns, COLUMNS, "scan") < 0) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *result = scan_record(view.buf, view.len, args[1], columns);
    PyBuffer_Release(&view);
    return result;
}

/* ------------------------------------------------------------------------------------------ framing */

#define MAX_HEADER (1 << 20)   /* a WARC header longer than this is not one Common Crawl writes */
#define MAX_BLOCK (64 << 20)   /* nor a WAT record's JSON: the reader's FastWARC streams such a record */

/* Why frame() stopped (see above), in value order: the module's NEED, FULL, PARSE and ODD, and STATUSES. */
#define STATUSES(X) X(NEED) X(FULL) X(PARSE) X(ODD)
enum Status { STATUSES(CODE_MEMBER) };
static const char *const status_names[] = {STATUSES(CODE_NAME)};

/* Whether [s, s + n) is ``name``, ASCII letters in any case (WARC field names are case-insensitive). */
static int named(const char *s, Py_ssize_t n, const char *name) {
    Py_ssize_t length = (Py_ssize_t)strlen(name);
    if (n != length) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char a = s[i], b = name[i];
        if (a >= 'A' && a <= 'Z') a = (char)(a + 32);
        if (b >= 'A' && b <= 'Z') b = (char)(b + 32);
        if (a != b) return 0;
    }
    return 1;
}

/* The WARC record at p, framed as Common Crawl writes them: ``WARC/1.0`` (or 1.1) and CRLF, one field
 * per CRLF-ended line with one Content-Length (digits) and one WARC-Type, a blank line, the block, CRLF
 * CRLF.  NEED when [p, end) holds only part of it, ODD when it is framed otherwise (the reader then
 * leaves the file to FastWARC), else FULL with the block's bounds and the type. */
static enum Status record_at(const char *p, const char *end, const char **block, const char **block_end,
                             const char **type, Py_ssize_t *type_length) {
    if (end - p < 10) return NEED;
    if (memcmp(p, "WARC/1.0\r\n", 10) != 0 && memcmp(p, "WARC/1.1\r\n", 10) != 0) return ODD;
    const char *blank = find(p + 8, end, NEEDLE("\r\n\r\n", 1));
    if (blank == NULL) return end - p > MAX_HEADER ? ODD : NEED;
    long long length = -1;
    *type = NULL;
    for (const char *line = p + 10; line < blank;) {
        const char *eol = memchr(line, '\n', (size_t)(blank + 2 - line));
        if (eol == NULL || eol == line || eol[-1] != '\r' || *line == ' ' || *line == '\t') return ODD;
        const char *stop = eol - 1, *colon = memchr(line, ':', (size_t)(stop - line)), *value;
        if (colon == NULL) return ODD;
        for (value = colon + 1; value < stop && (*value == ' ' || *value == '\t'); value++) {}
        const char *value_end = stop;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t')) value_end--;
        if (named(line, colon - line, "Content-Length")) {
            if (length >= 0 || value == value_end || value_end - value > 12) return ODD;
            length = 0;
            for (const char *d = value; d < value_end; d++) {
                if (*d < '0' || *d > '9') return ODD;
                length = length * 10 + (*d - '0');
            }
        } else if (named(line, colon - line, "WARC-Type")) {
            if (*type != NULL) return ODD;
            *type = value, *type_length = value_end - value;
        }
        line = eol + 1;
    }
    if (length < 0 || *type == NULL || length > MAX_BLOCK) return ODD;
    *block = blank + 4;
    if (end - *block < length + 4) return NEED;
    *block_end = *block + length;
    return memcmp(*block_end, "\r\n\r\n", 4) == 0 ? FULL : ODD;
}

/* The record types of the WARC standard other than metadata: skipped. */
static int other_type(const char *type, Py_ssize_t n) {
    static const char *types[] = {"warcinfo", "response", "request", "resource", "revisit", "conversion", "continuation"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if ((Py_ssize_t)strlen(types[i]) == n && memcmp(type, types[i], (size_t)n) == 0) return 1;
    return 0;
}

enum { PAGE_URLS, BASES, PAGE_COLUMNS };

static PyObject *frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3 + PAGE_COLUMNS + COLUMNS) return PyErr_Format(PyExc_TypeError, "frame() takes 9 arguments (%zd given)", nargs);
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]), limit = PyLong_AsSsize_t(args[2]);
    if ((pos == -1 || limit == -1) && PyErr_Occurred()) return NULL;
    PyObject *page_columns[PAGE_COLUMNS], *columns[COLUMNS];
    if (columns_of(args + 3, page_columns, PAGE_COLUMNS, "frame") < 0 || columns_of(args + 5, columns, COLUMNS, "frame") < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    if (pos < 0 || pos > view.len) {
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "frame(): position %zd outside the data", pos);
    }
    const char *data = view.buf, *end = data + view.len, *p = data + pos, *block = NULL, *block_end = NULL, *type;
    Py_ssize_t records = 0, pages = 0, images = 0, type_length = 0;
    enum Status status;
    for (;;) {
        status = record_at(p, end, &block, &block_end, &type, &type_length);
        if (status != FULL) break;
        if (!(type_length == 8 && memcmp(type, "metadata", 8) == 0)) {
            if (!other_type(type, type_length)) {
                status = ODD;
                break;
            }
            p = block_end + 4;
            continue;
        }
        Py_ssize_t length[COLUMNS];
        for (int i = 0; i < COLUMNS; i++) length[i] = PyList_GET_SIZE(columns[i]);
        PyObject *page = PyLong_FromSsize_t(PyList_GET_SIZE(page_columns[PAGE_URLS]));
        PyObject *scanned = page != NULL ? scan_record(block, block_end - block, page, columns) : NULL;
        Py_XDECREF(page);
        if (scanned == NULL) goto error;
        if (scanned != Py_None && PyTuple_GET_ITEM(scanned, 0) == Py_False) { /* not a page */
            Py_DECREF(scanned);
            records++;
            p = block_end + 4;
            continue;
        }
        PyObject *url = scanned != Py_None && PyTuple_GET_ITEM(scanned, 1) == Py_False ? PyTuple_GET_ITEM(scanned, 3) : Py_None;
        if (url == Py_None) { /* not certain, a <base>, or the page URL in the WARC header: the reader's */
            for (int i = 0; i < COLUMNS; i++)
                if (PyList_GET_SIZE(columns[i]) > length[i] && PyList_SetSlice(columns[i], length[i], PyList_GET_SIZE(columns[i]), NULL) < 0) {
                    Py_DECREF(scanned);
                    goto error;
                }
            Py_DECREF(scanned);
            status = PARSE;
            break;
        }
        images += PyLong_AsSsize_t(PyTuple_GET_ITEM(scanned, 2));
        int failed = PyList_Append(page_columns[PAGE_URLS], url) < 0 || PyList_Append(page_columns[BASES], url) < 0;
        Py_DECREF(scanned);
        if (failed) goto error;
        records++, pages++;
        p = block_end + 4;
        if (PyList_GET_SIZE(columns[URLS]) >= limit) {
            status = FULL;
            break;
        }
    }
    PyBuffer_Release(&view);
    if (status != PARSE) block = block_end = p;
    return Py_BuildValue("(nnnnInn)", (Py_ssize_t)(p - data), records, pages, images, (unsigned int)status,
                         (Py_ssize_t)(block - data), (Py_ssize_t)(block_end - data));
error:
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "A WAT record's page flags and URL, its image links with an alt-text appended to the given lists; None when not certain."},
    {"frame", (PyCFunction)(void (*)(void))frame, METH_FASTCALL,
     "The whole WARC records of inflated WAT bytes from a position, their pages scanned into the given lists."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_watscan",
    .m_doc = "The WAT record framing and scan of ingestion.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__watscan(void) {
    PyObject *created = PyModule_Create(&module);
    if (created != NULL && add_codes(created, "STATUSES", status_names, Py_ARRAY_LENGTH(status_names)) < 0) Py_CLEAR(created);
    return created;
}
