/* Codes that the C extensions and their Python callers share, defined once, here in C.
 *
 * A list of codes is an X-macro, ``#define STATUSES(X) X(NEED) X(FULL) ...``: ``enum { STATUSES(CODE_MEMBER) }``
 * makes its C enum (0, 1, ... in list order) and ``{STATUSES(CODE_NAME)}`` the array of its names, from which
 * the module's init adds them to the module (add_codes: an int constant per name, of its enum value, and
 * the tuple of the names in order), so Python reads the codes from the extension instead of copying them.
 */
#ifndef METACLIP_TASKS_CODES_H
#define METACLIP_TASKS_CODES_H

#include <Python.h>

#define CODE_MEMBER(name) name,
#define CODE_NAME(name) #name,

/* module.<tuple_name>: the names, as a tuple of str, in order; -1 on a Python error. */
static inline int add_names(PyObject *module, const char *tuple_name, const char *const names[], Py_ssize_t count) {
    PyObject *tuple = PyTuple_New(count);
    if (tuple == NULL) return -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyUnicode_FromString(names[i]);
        if (name == NULL) {
            Py_DECREF(tuple);
            return -1;
        }
        PyTuple_SET_ITEM(tuple, i, name);
    }
    int added = PyModule_AddObjectRef(module, tuple_name, tuple);
    Py_DECREF(tuple);
    return added;
}

/* add_names, and module.<names[i]> = i: the enum's values, each under its name; -1 on a Python error. */
static inline int add_codes(PyObject *module, const char *tuple_name, const char *const names[], Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++)
        if (PyModule_AddIntConstant(module, names[i], (long)i) < 0) return -1;
    return add_names(module, tuple_name, names, count);
}

#endif
