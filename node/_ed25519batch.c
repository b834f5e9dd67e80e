/* Checks a batch of ed25519 signatures with the interpreter lock released once for the whole
 * batch (node/signatures.py says why and when this module is used).
 *
 * The check is libsodium's crypto_sign_ed25519_verify_detached, the function PyNaCl's
 * crypto_sign_open calls. This module links against nothing: the caller passes the function's
 * address, taken from PyNaCl's own libsodium (loaded and initialised by PyNaCl's import). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define SIGNATURE_BYTES 64
#define PUBLIC_KEY_BYTES 32

typedef int (*verify_detached_fn)(const unsigned char *signature, const unsigned char *message,
                                  unsigned long long message_bytes,
                                  const unsigned char *public_key);

typedef struct {
    const unsigned char *signature;
    const unsigned char *message;
    unsigned long long message_bytes;
    const unsigned char *public_key;
    int well_formed;
} check_t;

/* Fills checks[index] from items[index]; -1 with a TypeError naming the item if it is not a
 * (signature, message, public key) tuple of bytes. */
static int read_check(PyObject *items, Py_ssize_t index, check_t *check) {
    PyObject *item = PyTuple_GET_ITEM(items, index);
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
        PyErr_Format(PyExc_TypeError,
                     "verify_batch: item %zd is not a (signature, message, public key) tuple",
                     index);
        return -1;
    }
    PyObject *signature = PyTuple_GET_ITEM(item, 0);
    PyObject *message = PyTuple_GET_ITEM(item, 1);
    PyObject *public_key = PyTuple_GET_ITEM(item, 2);
    if (!PyBytes_Check(signature) || !PyBytes_Check(message) || !PyBytes_Check(public_key)) {
        PyErr_Format(PyExc_TypeError, "verify_batch: item %zd holds something not bytes", index);
        return -1;
    }
    check->signature = (const unsigned char *)PyBytes_AS_STRING(signature);
    check->message = (const unsigned char *)PyBytes_AS_STRING(message);
    check->message_bytes = (unsigned long long)PyBytes_GET_SIZE(message);
    check->public_key = (const unsigned char *)PyBytes_AS_STRING(public_key);
    /* A signature or key of the wrong length never verifies (and is never read). */
    check->well_formed = PyBytes_GET_SIZE(signature) == SIGNATURE_BYTES &&
                         PyBytes_GET_SIZE(public_key) == PUBLIC_KEY_BYTES;
    return 0;
}

static PyObject *verify_batch(PyObject *module, PyObject *args) {
    unsigned long long address;
    PyObject *items;
    (void)module;
    if (!PyArg_ParseTuple(args, "KO!:verify_batch", &address, &PyTuple_Type, &items)) {
        return NULL;
    }
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "verify_batch: the function's address is 0");
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(items);
    PyObject *verdicts = PyBytes_FromStringAndSize(NULL, count);
    if (verdicts == NULL) {
        return NULL;
    }
    check_t *checks = PyMem_Malloc(sizeof(check_t) * (size_t)(count > 0 ? count : 1));
    if (checks == NULL) {
        Py_DECREF(verdicts);
        return PyErr_NoMemory();
    }
    /* Every pointer is into a bytes object the argument tuple (immutable, and held by the
     * caller for the call) holds, so each stays valid while the lock is released. */
    for (Py_ssize_t index = 0; index < count; index++) {
        if (read_check(items, index, &checks[index]) != 0) {
            PyMem_Free(checks);
            Py_DECREF(verdicts);
            return NULL;
        }
    }
    char *out = PyBytes_AS_STRING(verdicts);
    verify_detached_fn verify = (verify_detached_fn)(uintptr_t)address;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t index = 0; index < count; index++) {
        const check_t *check = &checks[index];
        out[index] = (char)(check->well_formed &&
                            verify(check->signature, check->message, check->message_bytes,
                                   check->public_key) == 0);
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(checks);
    return verdicts;
}

static PyMethodDef methods[] = {
    {"verify_batch", verify_batch, METH_VARARGS,
     "verify_batch(address, items) -> bytes: for each (signature, message, public_key) of the "
     "tuple items, 1 if the signature verifies by the function at address, else 0; the "
     "interpreter lock is released once for all of them."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_ed25519batch", "Batches of ed25519 checks without the GIL.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__ed25519batch(void) { return PyModule_Create(&module_definition); }
