/* The Merkle tree's update (apps/merkle.py's ``update``) in C: the same records and root for
 * the same tree and writes, with SHA-256 from OpenSSL's low-level functions (the library
 * Python's hashlib already loaded) instead of a hashlib object per hash.
 *
 * apps/merkle.py describes the tree, its records and the update; this file follows its
 * ``_apply``, ``_apply_node``, ``_build`` and ``_store_node`` step for step (``_descend``, the
 * Python path's shortcut for one change below a node, is ``apply_node`` with one change here),
 * so that the map of records it returns is the one the Python path returns (a test compares
 * the two on random trees and write sets). Records are read through the caller's
 * ``tree_node(key)``, with the interpreter lock held throughout.
 *
 * This module links against nothing: ``configure`` is given the addresses of SHA256_Init,
 * SHA256_Update and SHA256_Final (apps/merkle.py takes them from hashlib's libcrypto and
 * checks the result against hashlib before using them). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HASH_BYTES 32
#define LEAF_BYTES 64
#define HEADER_BYTES 4
#define FANOUT 16
#define DEPTH_MAX 64
#define RECORD_MAX (HEADER_BYTES + FANOUT * LEAF_BYTES)
/* OpenSSL's SHA256_CTX is 112 bytes; the context is given more room than any layout needs. */
#define CONTEXT_BYTES 512

typedef int (*sha_init_fn)(void *context);
typedef int (*sha_update_fn)(void *context, const void *data, size_t size);
typedef int (*sha_final_fn)(unsigned char *digest, void *context);

static sha_init_fn sha_init = NULL;
static sha_update_fn sha_update = NULL;
static sha_final_fn sha_final = NULL;

static const unsigned char NODE_PREFIX = 0x01;

/* SHA-256 of prefix (when given) followed by data. */
static void sha256(const unsigned char *prefix, const unsigned char *data, size_t size,
                   unsigned char *digest) {
    _Alignas(16) unsigned char context[CONTEXT_BYTES];
    sha_init(context);
    if (prefix != NULL) {
        sha_update(context, prefix, 1);
    }
    sha_update(context, data, size);
    sha_final(digest, context);
}

/* A slot: empty (size 0), a leaf (64 bytes: key hash || value hash) or a node's hash (32). */
typedef struct {
    Py_ssize_t size;
    unsigned char bytes[LEAF_BYTES];
} slot_t;

/* One write: the key's hash and the value's hash (absent: the key is deleted). */
typedef struct {
    unsigned char digest[HASH_BYTES];
    unsigned char value_hash[HASH_BYTES];
    int has_value;
} change_t;

typedef struct {
    PyObject *read; /* tree_node(key) -> bytes | None */
    PyObject *out;  /* dict: node key -> record bytes, or None to delete */
    const change_t *changes;
    /* The same records as (key, value) tuples, one list per depth (NULL: none yet). The walk
     * goes through the nibbles in order, so each depth's records arrive in key order. */
    PyObject *by_depth[DEPTH_MAX];
} walk_t;

static int nibble_at(const unsigned char *digest, int depth) {
    unsigned char byte = digest[depth >> 1];
    return (depth & 1) ? (byte & 0x0F) : (byte >> 4);
}

static int bit_count(unsigned int bits) { return __builtin_popcount(bits & 0xFFFF); }

/* node_key(digest, depth): one byte of depth, then the path's nibbles two to a byte. */
static PyObject *node_key(const unsigned char *digest, int depth) {
    unsigned char key[1 + HASH_BYTES];
    int half = depth >> 1;
    Py_ssize_t size = 1 + half;
    key[0] = (unsigned char)depth;
    memcpy(key + 1, digest, (size_t)half);
    if (depth & 1) {
        key[1 + half] = digest[half] & 0xF0;
        size += 1;
    }
    return PyBytes_FromStringAndSize((const char *)key, size);
}

/* out[key] = record (NULL: None); steals the reference to key. */
static int put_out(walk_t *walk, PyObject *key, const unsigned char *record, Py_ssize_t size) {
    if (key == NULL) {
        return -1;
    }
    PyObject *value;
    if (record == NULL) {
        value = Py_None;
        Py_INCREF(value);
    } else {
        value = PyBytes_FromStringAndSize((const char *)record, size);
        if (value == NULL) {
            Py_DECREF(key);
            return -1;
        }
    }
    int result = PyDict_SetItem(walk->out, key, value);
    if (result == 0) {
        /* A node key's first byte is its depth (below DEPTH_MAX: apply_node and build stop
         * before it). */
        int depth = ((const unsigned char *)PyBytes_AS_STRING(key))[0];
        PyObject *records = walk->by_depth[depth];
        if (records == NULL) {
            records = walk->by_depth[depth] = PyList_New(0);
        }
        PyObject *item = records == NULL ? NULL : PyTuple_Pack(2, key, value);
        if (item == NULL || PyList_Append(records, item) < 0) {
            result = -1;
        }
        Py_XDECREF(item);
    }
    Py_DECREF(key);
    Py_DECREF(value);
    return result;
}

/* Every record of the walk as one list of (key, value) tuples in key order (depth first,
 * then path); releases the per-depth lists either way. NULL with an exception on failure. */
static PyObject *records_in_order(walk_t *walk) {
    Py_ssize_t total = 0;
    for (int depth = 0; depth < DEPTH_MAX; depth++) {
        if (walk->by_depth[depth] != NULL) {
            total += PyList_GET_SIZE(walk->by_depth[depth]);
        }
    }
    PyObject *records = PyList_New(total);
    Py_ssize_t at = 0;
    for (int depth = 0; depth < DEPTH_MAX; depth++) {
        PyObject *level = walk->by_depth[depth];
        if (level == NULL) {
            continue;
        }
        if (records != NULL) {
            for (Py_ssize_t index = 0; index < PyList_GET_SIZE(level); index++) {
                PyObject *item = PyList_GET_ITEM(level, index);
                Py_INCREF(item);
                PyList_SET_ITEM(records, at++, item);
            }
        }
        Py_DECREF(level);
        walk->by_depth[depth] = NULL;
    }
    return records;
}

static void release_depths(walk_t *walk) {
    for (int depth = 0; depth < DEPTH_MAX; depth++) {
        Py_CLEAR(walk->by_depth[depth]);
    }
}

/* A node with these slots (16 of them, in nibble order): its record, stored at key (stolen),
 * or removed when it holds at most one leaf; *result is the slot its parent holds for it. */
static int store_node(walk_t *walk, PyObject *key, const slot_t *children, slot_t *result) {
    unsigned int bitmap = 0;
    unsigned int leafmap = 0;
    int count = 0;
    int only = -1;
    for (int index = 0; index < FANOUT; index++) {
        if (children[index].size != 0) {
            bitmap |= 0x8000u >> index;
            if (children[index].size == LEAF_BYTES) {
                leafmap |= 0x8000u >> index;
            }
            count++;
            only = index;
        }
    }
    if (count == 0) {
        result->size = 0;
        return put_out(walk, key, NULL, 0);
    }
    if (count == 1 && leafmap == bitmap) {
        *result = children[only];
        return put_out(walk, key, NULL, 0);
    }
    unsigned char record[RECORD_MAX];
    record[0] = (unsigned char)(bitmap >> 8);
    record[1] = (unsigned char)(bitmap & 0xFF);
    record[2] = (unsigned char)(leafmap >> 8);
    record[3] = (unsigned char)(leafmap & 0xFF);
    Py_ssize_t size = HEADER_BYTES;
    for (int index = 0; index < FANOUT; index++) {
        if (children[index].size != 0) {
            memcpy(record + size, children[index].bytes, (size_t)children[index].size);
            size += children[index].size;
        }
    }
    result->size = HASH_BYTES;
    sha256(&NODE_PREFIX, record, (size_t)size, result->bytes);
    return put_out(walk, key, record, size);
}

/* The stored record under key, parsed into its 16 slots; -1 with an exception when it is
 * missing or malformed. */
static int read_node(walk_t *walk, PyObject *key, slot_t *children) {
    PyObject *record = PyObject_CallOneArg(walk->read, key);
    if (record == NULL) {
        return -1;
    }
    if (record == Py_None) {
        Py_DECREF(record);
        PyObject *hex = PyObject_CallMethod(key, "hex", NULL);
        if (hex != NULL) {
            PyErr_Format(PyExc_AssertionError, "tree node %U is missing", hex);
            Py_DECREF(hex);
        }
        return -1;
    }
    if (!PyBytes_Check(record)) {
        PyErr_Format(PyExc_TypeError, "tree_node returned %.100s, not bytes or None",
                     Py_TYPE(record)->tp_name);
        Py_DECREF(record);
        return -1;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(record);
    Py_ssize_t size = PyBytes_GET_SIZE(record);
    int well_formed = size >= HEADER_BYTES;
    unsigned int bitmap = 0;
    unsigned int leafmap = 0;
    if (well_formed) {
        bitmap = ((unsigned int)data[0] << 8) | data[1];
        leafmap = ((unsigned int)data[2] << 8) | data[3];
        well_formed = (leafmap & ~bitmap) == 0 &&
                      size == HEADER_BYTES + HASH_BYTES * (bit_count(bitmap) + bit_count(leafmap));
    }
    if (!well_formed) {
        Py_DECREF(record);
        PyErr_SetString(PyExc_AssertionError, "a stored tree node is malformed");
        return -1;
    }
    Py_ssize_t position = HEADER_BYTES;
    for (int index = 0; index < FANOUT; index++) {
        unsigned int bit = 0x8000u >> index;
        if (bitmap & bit) {
            Py_ssize_t child = (leafmap & bit) ? LEAF_BYTES : HASH_BYTES;
            children[index].size = child;
            memcpy(children[index].bytes, data + position, (size_t)child);
            position += child;
        } else {
            children[index].size = 0;
        }
    }
    Py_DECREF(record);
    return 0;
}

/* The slot of the subtree at depth holding leaves[0:count] (sorted, distinct key hashes, on
 * one path down to depth); new node records go to out. */
static int build(walk_t *walk, int depth, const unsigned char *const *leaves, Py_ssize_t count,
                 slot_t *result) {
    if (count == 0) {
        result->size = 0;
        return 0;
    }
    if (count == 1) {
        result->size = LEAF_BYTES;
        memcpy(result->bytes, leaves[0], LEAF_BYTES);
        return 0;
    }
    if (depth >= DEPTH_MAX) {
        PyErr_SetString(PyExc_AssertionError, "two leaves with one key hash");
        return -1;
    }
    slot_t children[FANOUT];
    for (int index = 0; index < FANOUT; index++) {
        children[index].size = 0;
    }
    Py_ssize_t start = 0;
    while (start < count) {
        int index = nibble_at(leaves[start], depth);
        Py_ssize_t end = start + 1;
        while (end < count && nibble_at(leaves[end], depth) == index) {
            end++;
        }
        if (build(walk, depth + 1, leaves + start, end - start, &children[index]) < 0) {
            return -1;
        }
        start = end;
    }
    /* At least two leaves: the record is stored (build never collapses a node). */
    return store_node(walk, node_key(leaves[0], depth), children, result);
}

static int apply(walk_t *walk, int depth, const slot_t *old, Py_ssize_t low, Py_ssize_t high,
                 slot_t *result);

/* apply for a stored node at depth and the changes below it (one or more: the Python update's
 * ``_descend``, its path for one change, gives the same records as this). */
static int apply_node(walk_t *walk, int depth, Py_ssize_t low, Py_ssize_t high, slot_t *result) {
    if (depth >= DEPTH_MAX) {
        /* A damaged store: refused before the node key or a nibble is read past the hash. */
        PyErr_SetString(PyExc_AssertionError, "a stored tree path is deeper than a key hash");
        return -1;
    }
    PyObject *key = node_key(walk->changes[low].digest, depth);
    if (key == NULL) {
        return -1;
    }
    slot_t children[FANOUT];
    if (read_node(walk, key, children) < 0) {
        Py_DECREF(key);
        return -1;
    }
    Py_ssize_t start = low;
    while (start < high) {
        int index = nibble_at(walk->changes[start].digest, depth);
        Py_ssize_t end = start + 1;
        while (end < high && nibble_at(walk->changes[end].digest, depth) == index) {
            end++;
        }
        slot_t old = children[index];
        if (apply(walk, depth + 1, &old, start, end, &children[index]) < 0) {
            Py_DECREF(key);
            return -1;
        }
        start = end;
    }
    return store_node(walk, key, children, result);
}

/* The new slot at depth on the path shared by changes[low:high], given the old one. */
static int apply(walk_t *walk, int depth, const slot_t *old, Py_ssize_t low, Py_ssize_t high,
                 slot_t *result) {
    const change_t *changes = walk->changes;
    if (old->size == HASH_BYTES) {
        return apply_node(walk, depth, low, high, result);
    }
    /* An empty slot or a lone leaf: the subtree's new leaves, in key hash order. The old leaf
     * goes where it sorts among the changes, unless a change names its key. */
    Py_ssize_t count = high - low + 1;
    unsigned char **leaves = PyMem_Malloc((size_t)count * sizeof(unsigned char *));
    unsigned char *storage = PyMem_Malloc((size_t)count * LEAF_BYTES);
    if (leaves == NULL || storage == NULL) {
        PyMem_Free(leaves);
        PyMem_Free(storage);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t kept = 0;
    int old_placed = old->size == 0;
    for (Py_ssize_t index = low; index < high; index++) {
        const change_t *change = &changes[index];
        if (!old_placed) {
            int order = memcmp(old->bytes, change->digest, HASH_BYTES);
            if (order <= 0) {
                old_placed = 1;
                if (order < 0) {
                    memcpy(storage + kept * LEAF_BYTES, old->bytes, LEAF_BYTES);
                    leaves[kept] = storage + kept * LEAF_BYTES;
                    kept++;
                }
            }
        }
        if (change->has_value) {
            memcpy(storage + kept * LEAF_BYTES, change->digest, HASH_BYTES);
            memcpy(storage + kept * LEAF_BYTES + HASH_BYTES, change->value_hash, HASH_BYTES);
            leaves[kept] = storage + kept * LEAF_BYTES;
            kept++;
        }
    }
    if (!old_placed) {
        memcpy(storage + kept * LEAF_BYTES, old->bytes, LEAF_BYTES);
        leaves[kept] = storage + kept * LEAF_BYTES;
        kept++;
    }
    int status = build(walk, depth, (const unsigned char *const *)leaves, kept, result);
    PyMem_Free(leaves);
    PyMem_Free(storage);
    return status;
}

static int compare_changes(const void *first, const void *second) {
    return memcmp(((const change_t *)first)->digest, ((const change_t *)second)->digest,
                  HASH_BYTES);
}

/* Reads one write (key, value or None) into change; -1 with a TypeError naming the item. */
static int read_write(PyObject *item, Py_ssize_t index, change_t *change) {
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
        PyErr_Format(PyExc_TypeError, "update: write %zd is not a (key, value) pair", index);
        return -1;
    }
    PyObject *key = PyTuple_GET_ITEM(item, 0);
    PyObject *value = PyTuple_GET_ITEM(item, 1);
    if (!PyBytes_Check(key) || (value != Py_None && !PyBytes_Check(value))) {
        PyErr_Format(PyExc_TypeError, "update: write %zd is not bytes and bytes or None", index);
        return -1;
    }
    sha256(NULL, (const unsigned char *)PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key),
           change->digest);
    change->has_value = value != Py_None;
    if (change->has_value) {
        sha256(NULL, (const unsigned char *)PyBytes_AS_STRING(value),
               (size_t)PyBytes_GET_SIZE(value), change->value_hash);
    } else {
        memset(change->value_hash, 0, HASH_BYTES);
    }
    return 0;
}

static int slot_from_object(PyObject *object, slot_t *slot) {
    if (object == Py_None) {
        slot->size = 0;
        return 0;
    }
    if (!PyBytes_Check(object) ||
        (PyBytes_GET_SIZE(object) != HASH_BYTES && PyBytes_GET_SIZE(object) != LEAF_BYTES)) {
        PyErr_SetString(PyExc_AssertionError, "the stored root slot is malformed");
        return -1;
    }
    slot->size = PyBytes_GET_SIZE(object);
    memcpy(slot->bytes, PyBytes_AS_STRING(object), (size_t)slot->size);
    return 0;
}

/* update(tree_node, old_root, writes) -> (new root slot, records, the records in key order):
 * writes is a list of (key, value or None) with distinct keys; old_root is the stored root
 * slot (or None); records is a dict of node key -> record (None: delete), and the list holds
 * the same (key, value) pairs sorted by key, the root slot's key not among them. */
static PyObject *update(PyObject *module, PyObject *args) {
    PyObject *read;
    PyObject *old_root;
    PyObject *writes;
    (void)module;
    if (!PyArg_ParseTuple(args, "OOO!:update", &read, &old_root, &PyList_Type, &writes)) {
        return NULL;
    }
    if (sha_init == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "update: configure() was not called");
        return NULL;
    }
    slot_t root;
    if (slot_from_object(old_root, &root) < 0) {
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(writes);
    change_t *changes = PyMem_Malloc((size_t)(count > 0 ? count : 1) * sizeof(change_t));
    if (changes == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t index = 0; index < count; index++) {
        if (read_write(PyList_GET_ITEM(writes, index), index, &changes[index]) < 0) {
            PyMem_Free(changes);
            return NULL;
        }
    }
    qsort(changes, (size_t)count, sizeof(change_t), compare_changes);
    for (Py_ssize_t index = 1; index < count; index++) {
        if (memcmp(changes[index].digest, changes[index - 1].digest, HASH_BYTES) == 0) {
            PyMem_Free(changes);
            PyErr_SetString(PyExc_ValueError, "a write set changes one key twice");
            return NULL;
        }
    }
    PyObject *out = PyDict_New();
    if (out == NULL) {
        PyMem_Free(changes);
        return NULL;
    }
    walk_t walk = {read, out, changes, {NULL}};
    slot_t result = root;
    if (count > 0 && apply(&walk, 0, &root, 0, count, &result) < 0) {
        PyMem_Free(changes);
        release_depths(&walk);
        Py_DECREF(out);
        return NULL;
    }
    PyMem_Free(changes);
    PyObject *ordered = records_in_order(&walk);
    if (ordered == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    PyObject *slot;
    if (result.size == 0) {
        slot = Py_None;
        Py_INCREF(slot);
    } else {
        slot = PyBytes_FromStringAndSize((const char *)result.bytes, result.size);
        if (slot == NULL) {
            Py_DECREF(ordered);
            Py_DECREF(out);
            return NULL;
        }
    }
    return Py_BuildValue("(NNN)", slot, out, ordered);
}

/* configure(init, update, final): the addresses of OpenSSL's SHA256_Init, SHA256_Update and
 * SHA256_Final, which the caller keeps loaded. */
static PyObject *configure(PyObject *module, PyObject *args) {
    unsigned long long init_address;
    unsigned long long update_address;
    unsigned long long final_address;
    (void)module;
    if (!PyArg_ParseTuple(args, "KKK:configure", &init_address, &update_address,
                          &final_address)) {
        return NULL;
    }
    if (init_address == 0 || update_address == 0 || final_address == 0) {
        PyErr_SetString(PyExc_ValueError, "configure: an address is null");
        return NULL;
    }
    sha_init = (sha_init_fn)(uintptr_t)init_address;
    sha_update = (sha_update_fn)(uintptr_t)update_address;
    sha_final = (sha_final_fn)(uintptr_t)final_address;
    Py_RETURN_NONE;
}

/* digest(data): SHA-256 of data with the configured functions (the caller's self-test). */
static PyObject *digest(PyObject *module, PyObject *args) {
    const char *data;
    Py_ssize_t size;
    (void)module;
    if (!PyArg_ParseTuple(args, "y#:digest", &data, &size)) {
        return NULL;
    }
    if (sha_init == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "digest: configure() was not called");
        return NULL;
    }
    unsigned char out[HASH_BYTES];
    sha256(NULL, (const unsigned char *)data, (size_t)size, out);
    return PyBytes_FromStringAndSize((const char *)out, HASH_BYTES);
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Set the SHA-256 functions' addresses."},
    {"digest", digest, METH_VARARGS, "SHA-256 of bytes with the configured functions."},
    {"update", update, METH_VARARGS, "The tree's new root slot and records after writes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "apps._merkletree", "The Merkle tree's update in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__merkletree(void) { return PyModule_Create(&module_definition); }
