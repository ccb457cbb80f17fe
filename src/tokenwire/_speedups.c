/* Optional accelerator for tokenwire.sse: the decoder's fast scanner in C.
 *
 * scan_simple(chunk, pos, stop, limit, last_event_id) has exactly the contract of
 * tokenwire.sse._scan_simple_py: decode the run of events at chunk[pos:stop] that are
 * an optional "event:<name>" line and one "data:<value>" line followed by a blank line
 * (LF endings, no CR before stop), returning (events, first unconsumed position). Everything else stays in Python,
 * which remains the reference; the test suite checks both give the same results.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyTypeObject *event_type = NULL;
static PyObject *descr_data = NULL, *descr_event = NULL, *descr_id = NULL, *descr_retry = NULL;
static PyObject *descr_last_id = NULL;
static PyObject *str_message = NULL;

static PyObject *
configure(PyObject *self, PyObject *args)
{
    PyObject *type, *d0, *d1, *d2, *d3, *d4;
    if (!PyArg_ParseTuple(args, "O!OOOOO", &PyType_Type, &type, &d0, &d1, &d2, &d3, &d4))
        return NULL;
    PyObject *objs[6] = {type, d0, d1, d2, d3, d4};
    for (int i = 1; i < 6; i++) {
        if (Py_TYPE(objs[i])->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "expected slot descriptors");
            return NULL;
        }
    }
    Py_INCREF(type); Py_XSETREF(event_type, (PyTypeObject *)type);
    Py_INCREF(d0); Py_XSETREF(descr_data, d0);
    Py_INCREF(d1); Py_XSETREF(descr_event, d1);
    Py_INCREF(d2); Py_XSETREF(descr_id, d2);
    Py_INCREF(d3); Py_XSETREF(descr_retry, d3);
    Py_INCREF(d4); Py_XSETREF(descr_last_id, d4);
    Py_RETURN_NONE;
}

static inline int
set_slot(PyObject *descr, PyObject *obj, PyObject *value)
{
    return Py_TYPE(descr)->tp_descr_set(descr, obj, value);
}

static PyObject *
scan_simple(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyBytes_Check(args[0]) || !PyUnicode_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "scan_simple(chunk: bytes, pos, stop, limit, last_event_id: str)");
        return NULL;
    }
    PyObject *last_id = args[4];
    if (event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() was not called");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t stop = PyLong_AsSsize_t(args[2]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred())
        return NULL;
    const char *buf = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (stop > size)
        stop = size;
    if (pos < 0)
        pos = 0;

    PyObject *events = PyList_New(0);
    if (events == NULL)
        return NULL;
    PyObject *name = NULL;  /* the current event's name (a new reference), or NULL */
    for (;;) {
        Py_ssize_t begin = pos;
        Py_CLEAR(name);
        if (pos + 6 <= stop && memcmp(buf + pos, "event:", 6) == 0) {
            const char *lf = memchr(buf + pos, '\n', (size_t)(stop - pos));
            if (lf == NULL)
                break;
            Py_ssize_t end = lf - buf;
            if (end - pos > limit)
                break;
            Py_ssize_t start = pos + 6;
            if (start < end && buf[start] == ' ')
                start++;
            if (start < end) {
                name = PyUnicode_DecodeUTF8(buf + start, end - start, "replace");
                if (name == NULL)
                    goto error;
                PyUnicode_InternInPlace(&name);  /* a stream repeats a few names */
            }
            pos = end + 1;
        }
        if (!(pos + 5 <= stop && memcmp(buf + pos, "data:", 5) == 0)) {
            pos = begin;
            break;
        }
        const char *lf = memchr(buf + pos, '\n', (size_t)(stop - pos));
        if (lf == NULL) {
            pos = begin;
            break;
        }
        Py_ssize_t end = lf - buf;
        if (end + 1 >= stop || buf[end + 1] != '\n' || end - pos > limit) {
            pos = begin;
            break;
        }
        Py_ssize_t start = pos + 5;
        if (start < end && buf[start] == ' ')
            start++;
        PyObject *data = PyUnicode_DecodeUTF8(buf + start, end - start, "replace");
        if (data == NULL)
            goto error;
        PyObject *ev = event_type->tp_alloc(event_type, 0);
        if (ev == NULL) {
            Py_DECREF(data);
            goto error;
        }
        if (set_slot(descr_data, ev, data) < 0
            || set_slot(descr_event, ev, name != NULL ? name : str_message) < 0
            || set_slot(descr_id, ev, Py_None) < 0 || set_slot(descr_retry, ev, Py_None) < 0
            || set_slot(descr_last_id, ev, last_id) < 0) {
            Py_DECREF(data);
            Py_DECREF(ev);
            goto error;
        }
        Py_DECREF(data);
        if (PyList_Append(events, ev) < 0) {
            Py_DECREF(ev);
            goto error;
        }
        Py_DECREF(ev);
        pos = end + 2;
    }
    Py_XDECREF(name);
    return Py_BuildValue("(Nn)", events, pos);

error:
    Py_XDECREF(name);
    Py_DECREF(events);
    return NULL;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Bind the event type and its slot descriptors."},
    {"scan_simple", (PyCFunction)(void (*)(void))scan_simple, METH_FASTCALL,
     "Decode a run of single-line (named) data events; see tokenwire.sse._scan_simple_py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tokenwire._speedups", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    str_message = PyUnicode_InternFromString("message");
    if (str_message == NULL)
        return NULL;
    return PyModule_Create(&module);
}
