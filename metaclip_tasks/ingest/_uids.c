/* Pair uids, compiled: the first 24 hex digits of sha224(url) for every URL of an Arrow string
 * column (metaclip_tasks/ingest/uids.py), by OpenSSL's libcrypto, one call for the whole column.
 *
 * sha224_hex24(data, offsets) -> bytes
 *
 *   data     the column's character buffer (any buffer)
 *   offsets  int64 offsets into it, one more than there are URLs (any contiguous buffer)
 *
 * The result holds 24 ASCII hex digits per URL, back to back: the values buffer of a string
 * array whose offsets are 0, 24, 48, ...
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>

#define HEX_DIGITS 24 /* the module's HEX_DIGITS: a uid's length */

static PyObject *sha224_hex24(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data, offsets;
    if (!PyArg_ParseTuple(args, "y*y*", &data, &offsets)) return NULL;
    PyObject *result = NULL;
    const int64_t *at = (const int64_t *)offsets.buf;
    Py_ssize_t count = offsets.len / (Py_ssize_t)sizeof(int64_t) - 1;
    if (count < 0 || offsets.len % (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "offsets must be int64, one more than there are URLs");
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (at[i] < 0 || at[i] > at[i + 1] || at[i + 1] > data.len) {
            PyErr_SetString(PyExc_ValueError, "offsets out of the data's bounds");
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize(NULL, count * HEX_DIGITS);
    if (result == NULL) goto done;
    char *out = PyBytes_AS_STRING(result);
    static const char hex[] = "0123456789abcdef";
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    EVP_MD *md = EVP_MD_fetch(NULL, "SHA224", NULL);  /* fetched once: an implicit fetch per digest costs more than the hash */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char digest[EVP_MAX_MD_SIZE];
    const unsigned char *bytes = (const unsigned char *)data.buf;
    ok = md != NULL && ctx != NULL;
    for (Py_ssize_t i = 0; ok && i < count; i++) {
        ok = EVP_DigestInit_ex(ctx, md, NULL) && EVP_DigestUpdate(ctx, bytes + at[i], (size_t)(at[i + 1] - at[i]))
             && EVP_DigestFinal_ex(ctx, digest, NULL);
        for (int j = 0; j < HEX_DIGITS / 2; j++) {
            out[i * HEX_DIGITS + 2 * j] = hex[digest[j] >> 4];
            out[i * HEX_DIGITS + 2 * j + 1] = hex[digest[j] & 15];
        }
    }
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(md);
    Py_END_ALLOW_THREADS
    if (!ok) {
        Py_CLEAR(result);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not compute SHA-224");
    }
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    return result;
}

static PyMethodDef methods[] = {
    {"sha224_hex24", sha224_hex24, METH_VARARGS, "The first 24 hex digits of sha224 of each URL, back to back."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_uids",
    .m_doc = "Pair uids: sha224 of URLs by libcrypto.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__uids(void) {
    PyObject *created = PyModule_Create(&module);
    if (created != NULL && PyModule_AddIntMacro(created, HEX_DIGITS) < 0) Py_CLEAR(created);
    return created;
}
