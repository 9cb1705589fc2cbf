/* Whole gzip members inflated by libdeflate, for the WAT reader of ingestion (metaclip_tasks/ingest/extract.py).
 *
 * Common Crawl writes each WARC record as its own gzip member, a few kilobytes each: libdeflate
 * inflates a whole member in one call, faster here than a streaming inflater (~28 against ~33 us a
 * WAT page for isal's igzip, BENCHMARKS.md).
 *
 * inflate(compressed, start: int, out: writable buffer, filled: int, final: bool)
 *     -> (start, filled, status)
 *
 * Inflates the members of compressed[start:] one after the other into out[filled:], while each fits
 * whole, and returns where it stopped in both and why:
 *   MORE (0)  compressed[start:] holds no whole member: all of it read, or the start of a member that
 *             goes on in the next bytes of the file (not ``final``; a member longer than MAX_MEMBER is
 *             taken for a corrupt one)
 *   ROOM (1)  out has no room for the next member
 *   BAD (2)   compressed[start:] is not a gzip member (corrupt, or cut short at the end of the file)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <libdeflate.h>

#include "../_codes.h"

#define MAX_MEMBER (16 << 20) /* compressed bytes: a WAT record's member is a few kilobytes */

/* Why inflate() stopped (see above), in value order: the module's MORE, ROOM and BAD, and STATUSES. */
#define STATUSES(X) X(MORE) X(ROOM) X(BAD)
enum Status { STATUSES(CODE_MEMBER) };
static const char *const status_names[] = {STATUSES(CODE_NAME)};

static PyObject *inflate(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 5) return PyErr_Format(PyExc_TypeError, "inflate() takes 5 arguments (%zd given)", nargs);
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), filled = PyLong_AsSsize_t(args[3]);
    if ((start == -1 || filled == -1) && PyErr_Occurred()) return NULL;
    int final = PyObject_IsTrue(args[4]);
    if (final < 0) return NULL;
    Py_buffer in, out;
    if (PyObject_GetBuffer(args[0], &in, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(args[2], &out, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&in);
        return NULL;
    }
    enum Status status = MORE;
    struct libdeflate_decompressor *decompressor = NULL; /* one a call: the call lets other threads run */
    if (start < 0 || start > in.len || filled < 0 || filled > out.len) {
        PyErr_Format(PyExc_ValueError, "inflate(): position %zd or %zd outside its buffer", start, filled);
        goto error;
    }
    if ((decompressor = libdeflate_alloc_decompressor()) == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    Py_BEGIN_ALLOW_THREADS
    while (start < in.len) {
        size_t used = 0, made = 0;
        enum libdeflate_result result = libdeflate_gzip_decompress_ex(
            decompressor, (const char *)in.buf + start, (size_t)(in.len - start), (char *)out.buf + filled,
            (size_t)(out.len - filled), &used, &made);
        if (result == LIBDEFLATE_SUCCESS) {
            start += (Py_ssize_t)used, filled += (Py_ssize_t)made;
            continue;
        }
        if (result == LIBDEFLATE_INSUFFICIENT_SPACE) status = ROOM;
        else status = !final && in.len - start < MAX_MEMBER ? MORE : BAD; /* cut by the chunk, or corrupt */
        break;
    }
    Py_END_ALLOW_THREADS
    libdeflate_free_decompressor(decompressor);
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    return Py_BuildValue("(nnI)", start, filled, (unsigned int)status);
error:
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"inflate", (PyCFunction)(void (*)(void))inflate, METH_FASTCALL,
     "Whole gzip members of compressed[start:] inflated into out[filled:]: (start, filled, status)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_inflate",
    .m_doc = "Whole gzip members inflated by libdeflate.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__inflate(void) {
    PyObject *created = PyModule_Create(&module);
    if (created != NULL && add_codes(created, "STATUSES", status_names, Py_ARRAY_LENGTH(status_names)) < 0) Py_CLEAR(created);
    return created;
}
