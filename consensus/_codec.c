/* The canonical encoding of a value (consensus/codec.py states it), written in C for the values
 * real messages and records are made of.
 *
 * ``pack(value, total_bytes_max, depth_max, str_bytes_max, bytes_max, array_len_max,
 * map_len_max)`` returns the bytes ``consensus.codec.encode`` returns for ``value`` under those
 * limits, or None when it does not handle the value: anything but the exact built-in types
 * (None, bool, int, str, bytes, list, tuple, dict), a value outside a limit, a string that is
 * not valid Unicode, a map key that is neither str nor bytes, nesting deeper than
 * ``NEST_MAX``. The caller then encodes the value in Python, which raises the error the value
 * deserves (or encodes what only Python takes, such as a subclass): this module never raises
 * for a value, so a value's error is always the Python encoder's, in its order.
 *
 * The bytes are msgpack's (as ``msgpack.packb(value, use_bin_type=True)`` writes them) with
 * every map's entries in canonical order: sorted by their keys' packed bytes, compared
 * bytewise. Integers take the shortest form (positive fixint, then uint 8/16/32/64 for values
 * above zero; negative fixint, then int 8/16/32/64 below), strings fixstr/str 8/16/32, bytes
 * bin 8/16/32, arrays fixarray/array 16/32, maps fixmap/map 16/32. ``consensus.codec`` checks
 * this module against its own encoder on a fixed set of values before it uses it.
 *
 * ``unpack(data, total_bytes_max, depth_max, str_bytes_max, bytes_max, array_len_max,
 * map_len_max)`` is the other direction: the value ``consensus.codec.decode`` returns for the
 * bytes ``data``, or None when it does not decode them here. It takes only what is already in
 * canonical form and within the limits, and reads nothing twice: every integer, string,
 * bytes, array and map header in its shortest format (as above), every map's keys str or bytes
 * and strictly increasing by their packed bytes, strings valid UTF-8 (Python's strict
 * decoder), every value at a depth of at most ``depth_max`` (the outermost at 0), exactly one
 * value and no byte after it. Anything else (a float, an extension type, a wider format than
 * needed, keys out of order or repeated, a value past a limit, a truncated input, nesting
 * deeper than ``NEST_MAX``) is handed back: the Python decoder then decides, and raises the
 * error the bytes deserve. So a decoded value is always the one the Python decoder returns for
 * the same bytes (arrays as tuples, maps as dicts in the order of their bytes, map keys
 * interned as msgpack interns them), and every error is the Python decoder's. (The bytes of
 * the value None decode to None, which reads as handed back: the Python decoder returns None
 * for them.) A count is checked against the bytes left before anything is allocated for it.
 *
 * Pure: no state, no clock, no I/O; the interpreter lock is held throughout. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Deeper values go to the Python encoder (it handles any depth within its limits). */
#define NEST_MAX 64
/* Maps of up to this many entries are sorted in place with an insertion sort. */
#define SMALL_MAP 16
/* Values are encoded into a buffer of this size on the stack, moved to the heap beyond it. */
#define STACK_BYTES 2048

typedef struct {
    unsigned char *data;
    size_t length;
    size_t capacity;
    size_t limit; /* total_bytes_max: past it the value is not handled */
    int owned;    /* data was allocated here (it starts on the caller's stack) */
} buffer;

typedef struct {
    long long total_bytes_max;
    long long depth_max;
    long long str_bytes_max;
    long long bytes_max;
    long long array_len_max;
    long long map_len_max;
} limits;

/* 1: written; 0: not handled here (past a limit, a type this module leaves to Python, or out
 * of memory). */
static int reserve(buffer *out, size_t extra) {
    size_t needed = out->length + extra;
    if (needed > out->limit) return 0;
    if (needed <= out->capacity) return 1;
    size_t capacity = out->capacity * 2;
    while (capacity < needed) capacity *= 2;
    unsigned char *grown = out->owned ? realloc(out->data, capacity) : malloc(capacity);
    if (grown == NULL) return 0;
    if (!out->owned) memcpy(grown, out->data, out->length);
    out->data = grown;
    out->capacity = capacity;
    out->owned = 1;
    return 1;
}

static int put_header(buffer *out, unsigned char type, uint64_t length, int size) {
    if (!reserve(out, (size_t)size + 1)) return 0;
    unsigned char *at = out->data + out->length;
    at[0] = type;
    for (int i = 0; i < size; i++) at[1 + i] = (unsigned char)(length >> (8 * (size - 1 - i)));
    out->length += (size_t)size + 1;
    return 1;
}

static int put_bytes(buffer *out, const char *data, size_t length) {
    if (!reserve(out, length)) return 0;
    memcpy(out->data + out->length, data, length);
    out->length += length;
    return 1;
}

/* The header of a str (kind 0) or bytes (kind 1) of `length` bytes, into `header`; returns its
 * size. */
static int raw_header(unsigned char header[5], int kind, size_t length) {
    if (kind == 0 && length < 32) {
        header[0] = (unsigned char)(0xa0 | length);
        return 1;
    }
    int size;
    if (length < 256) {
        header[0] = kind == 0 ? 0xd9 : 0xc4;
        size = 1;
    } else if (length < 65536) {
        header[0] = kind == 0 ? 0xda : 0xc5;
        size = 2;
    } else {
        header[0] = kind == 0 ? 0xdb : 0xc6;
        size = 4;
    }
    for (int i = 0; i < size; i++) header[1 + i] = (unsigned char)(length >> (8 * (size - 1 - i)));
    return 1 + size;
}

static int container_header(buffer *out, int is_map, size_t count) {
    if (count < 16) return put_header(out, (unsigned char)((is_map ? 0x80 : 0x90) | count), 0, 0);
    if (count < 65536) return put_header(out, is_map ? 0xde : 0xdc, count, 2);
    return put_header(out, is_map ? 0xdf : 0xdd, count, 4);
}

static int pack_int(buffer *out, PyObject *value) {
    int overflow = 0;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (number == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (overflow > 0) {
        unsigned long long big = PyLong_AsUnsignedLongLong(value);
        if (big == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0; /* above 2**64 - 1: INT_MAX */
        }
        return put_header(out, 0xcf, big, 8);
    }
    if (overflow < 0) return 0; /* below -2**63: INT_MIN */
    if (number >= 0) {
        uint64_t n = (uint64_t)number;
        if (n < 128) return put_header(out, (unsigned char)n, 0, 0);
        if (n < 256) return put_header(out, 0xcc, n, 1);
        if (n < 65536) return put_header(out, 0xcd, n, 2);
        if (n < 4294967296ULL) return put_header(out, 0xce, n, 4);
        return put_header(out, 0xcf, n, 8);
    }
    if (number >= -32) return put_header(out, (unsigned char)(number & 0xff), 0, 0);
    uint64_t bits = (uint64_t)number;
    if (number >= -128) return put_header(out, 0xd0, bits & 0xff, 1);
    if (number >= -32768) return put_header(out, 0xd1, bits & 0xffff, 2);
    if (number >= -2147483648LL) return put_header(out, 0xd2, bits & 0xffffffffULL, 4);
    return put_header(out, 0xd3, bits, 8);
}

/* A str's UTF-8 bytes, or NULL (not valid Unicode: left to Python). */
static const char *utf8_of(PyObject *text, Py_ssize_t *length) {
    const char *data = PyUnicode_AsUTF8AndSize(text, length);
    if (data == NULL) PyErr_Clear();
    return data;
}

/* A map key: its type (0 str, 1 bytes), data, and packed header, for the sort. */
typedef struct {
    PyObject *value;
    const char *data;
    size_t length;
    unsigned char header[5];
    int header_size;
} entry;

/* Compares the packed bytes (header then data) of two keys, bytewise, as Python compares
 * bytes. A header's first byte is its format, and each format has one header size, so keys
 * whose first bytes are equal have headers of one size. */
static int compare_packed(const entry *a, const entry *b) {
    if (a->header[0] != b->header[0]) return a->header[0] < b->header[0] ? -1 : 1;
    int order = memcmp(a->header + 1, b->header + 1, (size_t)a->header_size - 1);
    if (order) return order;
    size_t common = a->length < b->length ? a->length : b->length;
    order = memcmp(a->data, b->data, common);
    if (order) return order;
    return a->length < b->length ? -1 : a->length > b->length ? 1 : 0;
}

static int compare_entries(const void *a, const void *b) {
    return compare_packed((const entry *)a, (const entry *)b);
}

static int pack_value(buffer *out, PyObject *value, long long depth, const limits *bounds);

static int pack_map(buffer *out, PyObject *map, long long depth, const limits *bounds) {
    Py_ssize_t count = PyDict_GET_SIZE(map);
    /* A key sits at its value's depth: the value's check covers both. */
    if (count > bounds->map_len_max) return 0;
    entry small[SMALL_MAP];
    entry *entries = small;
    if (count > SMALL_MAP) {
        entries = malloc(sizeof(entry) * (size_t)count);
        if (entries == NULL) return 0;
    }
    int handled = 0;
    Py_ssize_t position = 0, index = 0;
    PyObject *key, *item;
    while (PyDict_Next(map, &position, &key, &item)) {
        entry *e = &entries[index++];
        e->value = item;
        Py_ssize_t length;
        if (PyUnicode_CheckExact(key)) {
            e->data = utf8_of(key, &length);
            if (e->data == NULL || length > bounds->str_bytes_max) goto done;
            e->header_size = raw_header(e->header, 0, (size_t)length);
        } else if (PyBytes_CheckExact(key)) {
            e->data = PyBytes_AS_STRING(key);
            length = PyBytes_GET_SIZE(key);
            if (length > bounds->bytes_max) goto done;
            e->header_size = raw_header(e->header, 1, (size_t)length);
        } else {
            goto done;
        }
        e->length = (size_t)length;
    }
    if (count <= SMALL_MAP) {
        for (Py_ssize_t i = 1; i < count; i++) {
            entry moving = entries[i];
            Py_ssize_t j = i;
            while (j > 0 && compare_packed(&entries[j - 1], &moving) > 0) {
                entries[j] = entries[j - 1];
                j--;
            }
            entries[j] = moving;
        }
    } else {
        qsort(entries, (size_t)count, sizeof(entry), compare_entries);
    }
    if (!container_header(out, 1, (size_t)count)) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        entry *e = &entries[i];
        if (!put_bytes(out, (const char *)e->header, (size_t)e->header_size) ||
            !put_bytes(out, e->data, e->length) || !pack_value(out, e->value, depth + 1, bounds))
            goto done;
    }
    handled = 1;
done:
    if (entries != small) free(entries);
    return handled;
}

static int pack_value(buffer *out, PyObject *value, long long depth, const limits *bounds) {
    if (depth > bounds->depth_max || depth > NEST_MAX) return 0;
    PyTypeObject *type = Py_TYPE(value);
    if (type == &PyLong_Type) return pack_int(out, value);
    if (type == &PyUnicode_Type) {
        Py_ssize_t length;
        const char *data = utf8_of(value, &length);
        if (data == NULL || length > bounds->str_bytes_max) return 0;
        unsigned char header[5];
        int size = raw_header(header, 0, (size_t)length);
        return put_bytes(out, (const char *)header, (size_t)size) &&
               put_bytes(out, data, (size_t)length);
    }
    if (type == &PyBytes_Type) {
        Py_ssize_t length = PyBytes_GET_SIZE(value);
        if (length > bounds->bytes_max) return 0;
        unsigned char header[5];
        int size = raw_header(header, 1, (size_t)length);
        return put_bytes(out, (const char *)header, (size_t)size) &&
               put_bytes(out, PyBytes_AS_STRING(value), (size_t)length);
    }
    if (value == Py_None) return put_header(out, 0xc0, 0, 0);
    if (value == Py_False) return put_header(out, 0xc2, 0, 0);
    if (value == Py_True) return put_header(out, 0xc3, 0, 0);
    if (type == &PyDict_Type) return pack_map(out, value, depth, bounds);
    if (type == &PyList_Type || type == &PyTuple_Type) {
        Py_ssize_t count = PySequence_Fast_GET_SIZE(value);
        if (count > bounds->array_len_max) return 0;
        if (!container_header(out, 0, (size_t)count)) return 0;
        for (Py_ssize_t i = 0; i < count; i++) {
            if (!pack_value(out, PySequence_Fast_GET_ITEM(value, i), depth + 1, bounds)) return 0;
        }
        return 1;
    }
    return 0; /* anything else: the Python encoder's */
}

/* ---------------------------------------------------------------------------------------- */
/* Decoding canonical bytes.                                                                */

typedef struct {
    const unsigned char *data;
    size_t length;
    size_t at;
} reader;

/* Reads a `size`-byte big-endian number; 0 when fewer bytes are left. */
static int read_number(reader *in, int size, uint64_t *number) {
    if (in->length - in->at < (size_t)size) return 0;
    uint64_t n = 0;
    for (int i = 0; i < size; i++) n = (n << 8) | in->data[in->at + (size_t)i];
    in->at += (size_t)size;
    *number = n;
    return 1;
}

static PyObject *unpack_value(reader *in, long long depth, const limits *bounds);

/* The str (valid UTF-8, strict) or bytes whose header byte `first` was just read, its length in
 * the shortest format, or NULL (not a str or bytes format, past a limit or the bytes left, not
 * UTF-8; an error may be set: unpack_value clears it). */
static PyObject *unpack_raw(reader *in, unsigned char first, const limits *bounds) {
    int is_str = 1;
    uint64_t length, shortest = 0;
    int size = 0;
    if ((first & 0xe0) == 0xa0) {
        length = first & 0x1f;
    } else {
        switch (first) {
        case 0xd9: size = 1, shortest = 32; break;
        case 0xda: size = 2, shortest = 256; break;
        case 0xdb: size = 4, shortest = 65536; break;
        case 0xc4: is_str = 0, size = 1; break;
        case 0xc5: is_str = 0, size = 2, shortest = 256; break;
        case 0xc6: is_str = 0, size = 4, shortest = 65536; break;
        default: return NULL;
        }
        if (!read_number(in, size, &length) || length < shortest) return NULL;
    }
    uint64_t most = (uint64_t)(is_str ? bounds->str_bytes_max : bounds->bytes_max);
    if (length > most || length > in->length - in->at) return NULL;
    const char *at = (const char *)in->data + in->at;
    PyObject *value = is_str ? PyUnicode_DecodeUTF8(at, (Py_ssize_t)length, "strict")
                             : PyBytes_FromStringAndSize(at, (Py_ssize_t)length);
    if (value != NULL) in->at += (size_t)length;
    return value;
}

static PyObject *unpack_map(reader *in, uint64_t count, long long depth, const limits *bounds) {
    /* Each entry takes at least two bytes. */
    if (count > (uint64_t)bounds->map_len_max || count > (in->length - in->at) / 2) return NULL;
    PyObject *map = PyDict_New();
    if (map == NULL) return NULL;
    const unsigned char *previous = NULL;
    size_t previous_length = 0;
    for (uint64_t i = 0; i < count; i++) {
        size_t start = in->at;
        if (in->at >= in->length) goto fail;
        PyObject *key = unpack_raw(in, in->data[in->at++], bounds);
        if (key == NULL) goto fail;
        /* The packed key, as it stands in the input, must sort after the one before it. */
        const unsigned char *packed = in->data + start;
        size_t packed_length = in->at - start;
        if (previous != NULL) {
            size_t common = previous_length < packed_length ? previous_length : packed_length;
            int order = memcmp(previous, packed, common);
            if (order > 0 || (order == 0 && previous_length >= packed_length)) {
                Py_DECREF(key);
                goto fail;
            }
        }
        previous = packed;
        previous_length = packed_length;
        if (PyUnicode_CheckExact(key)) PyUnicode_InternInPlace(&key);
        PyObject *item = unpack_value(in, depth + 1, bounds);
        if (item == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        int stored = PyDict_SetItem(map, key, item);
        Py_DECREF(key);
        Py_DECREF(item);
        if (stored < 0) goto fail;
    }
    return map;
fail:
    Py_DECREF(map);
    return NULL;
}

static PyObject *unpack_array(reader *in, uint64_t count, long long depth,
                              const limits *bounds) {
    /* Each element takes at least one byte. */
    if (count > (uint64_t)bounds->array_len_max || count > in->length - in->at) return NULL;
    PyObject *array = PyTuple_New((Py_ssize_t)count);
    if (array == NULL) return NULL;
    for (uint64_t i = 0; i < count; i++) {
        PyObject *item = unpack_value(in, depth + 1, bounds);
        if (item == NULL) {
            Py_DECREF(array);
            return NULL;
        }
        PyTuple_SET_ITEM(array, (Py_ssize_t)i, item);
    }
    return array;
}

/* unpack_value's work; NULL possibly with an error set (out of memory). */
static PyObject *unpack_any(reader *in, long long depth, const limits *bounds) {
    if (depth > bounds->depth_max || depth > NEST_MAX || in->at >= in->length) return NULL;
    unsigned char first = in->data[in->at++];
    if (first <= 0x7f) return PyLong_FromLong(first);
    if (first >= 0xe0) return PyLong_FromLong((long)first - 0x100);
    if ((first & 0xe0) == 0xa0) return unpack_raw(in, first, bounds);
    if ((first & 0xf0) == 0x90) return unpack_array(in, first & 0x0f, depth, bounds);
    if ((first & 0xf0) == 0x80) return unpack_map(in, first & 0x0f, depth, bounds);
    uint64_t n;
    PyObject *number;
    switch (first) {
    case 0xc4:
    case 0xc5:
    case 0xc6:
    case 0xd9:
    case 0xda:
    case 0xdb: return unpack_raw(in, first, bounds);
    case 0xc0: return Py_NewRef(Py_None);
    case 0xc2: return Py_NewRef(Py_False);
    case 0xc3: return Py_NewRef(Py_True);
    case 0xcc:
        if (!read_number(in, 1, &n) || n < 0x80) return NULL;
        return PyLong_FromUnsignedLongLong(n);
    case 0xcd:
        if (!read_number(in, 2, &n) || n < 0x100) return NULL;
        return PyLong_FromUnsignedLongLong(n);
    case 0xce:
        if (!read_number(in, 4, &n) || n < 0x10000) return NULL;
        return PyLong_FromUnsignedLongLong(n);
    case 0xcf:
        if (!read_number(in, 8, &n) || n < 0x100000000ULL) {
            return NULL;
        }
        number = PyLong_FromUnsignedLongLong(n);
        break;
    /* Signed formats: two's complement of the width, below the narrower format's range. */
    case 0xd0:
        if (!read_number(in, 1, &n)) return NULL;
        if ((int8_t)(uint8_t)n >= -32) return NULL;
        return PyLong_FromLong((int8_t)(uint8_t)n);
    case 0xd1:
        if (!read_number(in, 2, &n)) return NULL;
        if ((int16_t)(uint16_t)n >= -128) return NULL;
        return PyLong_FromLong((int16_t)(uint16_t)n);
    case 0xd2:
        if (!read_number(in, 4, &n)) return NULL;
        if ((int32_t)(uint32_t)n >= -32768) return NULL;
        return PyLong_FromLongLong((int32_t)(uint32_t)n);
    case 0xd3:
        if (!read_number(in, 8, &n)) return NULL;
        if ((int64_t)n >= -2147483648LL) return NULL;
        number = PyLong_FromLongLong((int64_t)n);
        break;
    case 0xdc:
        if (!read_number(in, 2, &n) || n < 16) return NULL;
        return unpack_array(in, n, depth, bounds);
    case 0xdd:
        if (!read_number(in, 4, &n) || n < 65536) return NULL;
        return unpack_array(in, n, depth, bounds);
    case 0xde:
        if (!read_number(in, 2, &n) || n < 16) return NULL;
        return unpack_map(in, n, depth, bounds);
    case 0xdf:
        if (!read_number(in, 4, &n) || n < 65536) return NULL;
        return unpack_map(in, n, depth, bounds);
    default:
        /* Floats, extension types, 0xc1. */
        return NULL;
    }
    return number;
}

/* A new reference to the value at the reader, or NULL with no error set: not decoded here. */
static PyObject *unpack_value(reader *in, long long depth, const limits *bounds) {
    PyObject *value = unpack_any(in, depth, bounds);
    if (value == NULL && PyErr_Occurred()) PyErr_Clear();
    return value;
}

/* The six limits, positive, from args[1..6]; 0 with an exception set. */
static int read_limits(PyObject *const *args, limits *bounds) {
    long long *fields[6] = {&bounds->total_bytes_max, &bounds->depth_max,
                            &bounds->str_bytes_max,   &bounds->bytes_max,
                            &bounds->array_len_max,   &bounds->map_len_max};
    for (int i = 0; i < 6; i++) {
        *fields[i] = PyLong_AsLongLong(args[1 + i]);
        if (*fields[i] == -1 && PyErr_Occurred()) return 0;
        if (*fields[i] < 1) {
            PyErr_SetString(PyExc_ValueError, "limits must be positive");
            return 0;
        }
    }
    return 1;
}

static PyObject *codec_unpack(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "unpack takes bytes and six limits");
        return NULL;
    }
    limits bounds;
    if (!read_limits(args, &bounds)) return NULL;
    if (!PyBytes_CheckExact(args[0])) return Py_NewRef(Py_None);
    reader in = {(const unsigned char *)PyBytes_AS_STRING(args[0]),
                 (size_t)PyBytes_GET_SIZE(args[0]), 0};
    if (in.length == 0 || in.length > (size_t)bounds.total_bytes_max) return Py_NewRef(Py_None);
    PyObject *value = unpack_value(&in, 0, &bounds);
    if (value == NULL) return Py_NewRef(Py_None);
    if (in.at != in.length) {
        Py_DECREF(value);
        return Py_NewRef(Py_None);
    }
    return value;
}

static PyObject *codec_pack(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "pack takes a value and six limits");
        return NULL;
    }
    limits bounds;
    if (!read_limits(args, &bounds)) return NULL;
    unsigned char start[STACK_BYTES];
    buffer out = {start, 0, sizeof start, (size_t)bounds.total_bytes_max, 0};
    PyObject *result;
    if (pack_value(&out, args[0], 0, &bounds)) {
        result = PyBytes_FromStringAndSize((const char *)out.data, (Py_ssize_t)out.length);
    } else {
        result = Py_NewRef(Py_None);
    }
    if (out.owned) free(out.data);
    return result;
}

static PyMethodDef codec_methods[] = {
    {"pack", (PyCFunction)(void (*)(void))codec_pack, METH_FASTCALL,
     "pack(value, total_bytes_max, depth_max, str_bytes_max, bytes_max, array_len_max, "
     "map_len_max) -> bytes | None\n\nThe canonical bytes of value, or None when the Python "
     "encoder is to encode it."},
    {"unpack", (PyCFunction)(void (*)(void))codec_unpack, METH_FASTCALL,
     "unpack(data, total_bytes_max, depth_max, str_bytes_max, bytes_max, array_len_max, "
     "map_len_max) -> object\n\nThe value the canonical bytes data encode, or None when the "
     "Python decoder is to decode them."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef codec_module = {
    PyModuleDef_HEAD_INIT, "_codec", "The canonical encoding of plain values, both ways, in C.", -1,
    codec_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__codec(void) { return PyModule_Create(&codec_module); }
