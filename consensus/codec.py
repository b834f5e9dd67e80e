"""The canonical encoding: every hashed, signed or transmitted value goes through here.

Theory of operation
-------------------
Suanpan has exactly one byte encoding for structured values: msgpack restricted to a small,
canonical subset. Two honest nodes must produce identical bytes for identical values (hashes
and signatures depend on it) and must agree on whether any given byte string is valid.

The value model (``Value``):

* ``None``, ``bool``, ``int`` in the signed/unsigned 64-bit range msgpack can carry;
* ``bytes`` (hashes, keys, signatures, opaque payloads) and ``str`` (names, valid UTF-8);
* arrays (``list``/``tuple`` on encode, always ``tuple`` on decode, so decoded values are
  immutable and hashable);
* maps whose keys are ``str`` or ``bytes``, written in the order of their encoded key bytes,
  so iteration order of the Python ``dict`` never leaks into the bytes.

Floats, extension types, timestamps and non-canonical encodings (a map out of order, an
integer in a wider format than needed, trailing bytes) are rejected: decoding checks that
re-encoding the value reproduces the input exactly. Amounts are integers in minor units;
time is integer milliseconds.

Encoding runs in C where the install built ``consensus/_codec.c``: it writes the same bytes
for the exact built-in types values are made of and hands anything else (subclasses, values
past a limit, anything to refuse) back to the Python encoder here, so every error is this
module's. It is used only after it wrote this module's bytes for a fixed set of values
(``_self_test_values``); ``encoder_status`` says which runs. Decoding checks its input by
encoding the decoded value again, through the same encoder.

Decoding runs in C there too, for bytes already in canonical form and within the limits: the
same module reads them in one pass, checking the form as it reads, and hands anything else
back to the Python decoder here (msgpack, the walk and the re-encoding), so it returns exactly
the value the Python decoder returns and every error is this module's. It is used only after
it agreed with this module on a fixed set of byte strings, valid and not
(``_unpack_self_test_inputs``); ``decoder_status`` says which runs.

Every decode is bounded by ``Limits`` (total size, nesting depth, string/bytes/array/map
lengths). The total size is checked before msgpack sees a byte, and msgpack's own length
limits are set from the same ``Limits`` so it never allocates beyond them. Decoding any byte
string either returns a valid ``Value`` or raises ``CodecError`` naming what was wrong:
nothing else, ever (a property test feeds it arbitrary bytes).
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Final, TypeAlias

import msgpack

__all__ = [
    "DEFAULT_LIMITS",
    "INT_MAX",
    "INT_MIN",
    "SMALL_INT_MAX",
    "CodecError",
    "Limits",
    "Value",
    "decode",
    "decoder_status",
    "encode",
    "encoder_status",
    "same_value",
    "utf8_size",
]

Value: TypeAlias = (
    "bool | int | bytes | str | tuple[Value, ...] | list[Value]"
    " | Mapping[str, Value] | Mapping[bytes, Value] | None"
)

INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1


class CodecError(ValueError):
    """Bytes or a value outside the canonical encoding; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard bounds for one decode (or encode). Each caller picks limits for its own message kind."""

    # Whole encoded value; checked before parsing. 16 MiB fits the largest block we allow.
    total_bytes_max: int = 16 * 1024 * 1024
    # Nesting of arrays/maps; our structures are at most a handful deep, 32 leaves room for apps.
    depth_max: int = 32
    # UTF-8 bytes of one string: names and free-text payment fields, never bulk data.
    str_bytes_max: int = 64 * 1024
    # One bytes value: a whole encoded transaction inside a block body is the largest.
    bytes_max: int = 8 * 1024 * 1024
    # Elements of one array: transactions in a block are the largest arrays.
    array_len_max: int = 200_000
    # Entries of one map: transaction arguments and genesis state.
    map_len_max: int = 100_000

    def __post_init__(self) -> None:
        for name in (
            "total_bytes_max",
            "depth_max",
            "str_bytes_max",
            "bytes_max",
            "array_len_max",
            "map_len_max",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be positive")


DEFAULT_LIMITS: Final = Limits()


# Packers for reuse: building a ``msgpack.Packer`` costs several times what packing a small
# value does. A packer is taken from the pool for one ``pack`` and put back (``list.pop`` and
# ``list.append`` are atomic, so threads never share one); the pool only grows to the number of
# threads that pack at the same time. A reused packer produces exactly ``msgpack.packb``'s
# bytes: ``pack`` resets its buffer after every call (``autoreset``).
_PACKERS: list[msgpack.Packer] = []


def _pack(value: object) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)``, with a pooled packer."""
    try:
        packer = _PACKERS.pop()
    except IndexError:
        packer = msgpack.Packer(use_bin_type=True)
    # A pack that raises may leave the packer's buffer dirty: it is then not put back.
    data: bytes = packer.pack(value)
    _PACKERS.append(packer)
    return data


# The largest number a compiled module holds unboxed (``2**62 - 1``): comparing with it is a
# C comparison, where comparing with ``INT_MAX`` calls into Python's integers. A range check
# that tests ``0 <= n <= SMALL_INT_MAX`` first (on ``n`` itself, typed or narrowed to int)
# stays in C for every number below it.
SMALL_INT_MAX: Final = 0x3FFF_FFFF_FFFF_FFFF

# The one-byte encodings: 0..127 (positive fixint) and -32..-1 (negative fixint).
_FIXINTS: Final = tuple(bytes((number,)) for number in range(0x80))
_NEGATIVE_FIXINTS: Final = tuple(bytes((0x100 + number,)) for number in range(-32, 0))
# The wider formats: a type byte and the number, big-endian. Up to 16 bits from tables of
# their bytes (compiled, ``int.to_bytes`` is a method call through Python, and a table lookup
# is C), wider ones packed by one C call each.
_BYTE: Final = tuple(bytes((byte,)) for byte in range(256))
_UINT8: Final = tuple(bytes((0xCC, byte)) for byte in range(256))
_UINT16_HIGH: Final = tuple(bytes((0xCD, byte)) for byte in range(256))
_UINT32: Final = struct.Struct(">BI").pack
_UINT64: Final = struct.Struct(">BQ").pack
_INT8: Final = struct.Struct(">Bb").pack
_INT16: Final = struct.Struct(">Bh").pack
_INT32: Final = struct.Struct(">Bi").pack
_INT64: Final = struct.Struct(">Bq").pack


def _pack_int(value: int) -> bytes:
    """``_pack(value)`` for an integer in [INT_MIN, INT_MAX], written here: msgpack's shortest
    format (unsigned when non-negative, signed when negative), without a packer's call."""
    if value >= 0:
        if value < 0x80:
            return _FIXINTS[value]
        if value <= 0xFF:
            return _UINT8[value]
        if value <= 0xFFFF:
            return _UINT16_HIGH[value >> 8] + _BYTE[value & 0xFF]
        if value <= 0xFFFF_FFFF:
            return _UINT32(0xCE, value)
        return _UINT64(0xCF, value)
    if value >= -0x20:
        return _NEGATIVE_FIXINTS[value + 32]
    if value >= -0x80:
        return _INT8(0xD0, value)
    if value >= -0x8000:
        return _INT16(0xD1, value)
    if value >= -0x8000_0000:
        return _INT32(0xD2, value)
    return _INT64(0xD3, value)


def encode(value: Value, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Encode ``value`` canonically. Raises ``CodecError`` for unsupported or oversized values."""
    # The commonest state value (balances, counters, nonces): the same checks, no walk.
    # Compiled, a number below 2**62 compares in C; the bounds of the range do not.
    if (
        type(value) is int
        and (0 <= value <= SMALL_INT_MAX or INT_MIN <= value <= INT_MAX)
        and limits.total_bytes_max >= 9
    ):
        return _pack_int(value)
    packed = _native_encoding(value, limits)
    if packed is not None:
        return packed
    return _encode_in_python(value, limits)


def _encode_in_python(value: object, limits: Limits) -> bytes:
    """The Python encoder: check and normalise ``value`` against ``limits``, pack it, check
    the total size."""
    data = _pack(_normalise_fast(value, limits, 0))
    if len(data) > limits.total_bytes_max:
        raise CodecError(
            "too_large", f"encoded value is {len(data)} bytes, limit {limits.total_bytes_max}"
        )
    return data


def decode(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Value:
    """Decode canonical bytes. Returns a ``Value`` (arrays as tuples, maps as dicts) or raises
    ``CodecError``; no other exception escapes for any byte string. (Compiled, an argument
    that is not a byte string is refused with ``TypeError`` before the check below.)"""
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CodecError("not_bytes", f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    _check_size(data, limits)
    if len(data) <= 9:
        number = _canonical_int(data)
        if number is not None:
            return number
    unpack = _NATIVE_UNPACK
    if unpack is not None:
        value = _unpacked_natively(unpack, data, limits)
        if value is not None:
            return value
    return _decode_general(data, limits)


def _check_size(data: bytes, limits: Limits) -> None:
    """``CodecError`` when ``data`` is empty or longer than ``limits`` allow."""
    if len(data) > limits.total_bytes_max:
        raise CodecError("too_large", f"{len(data)} bytes, limit {limits.total_bytes_max}")
    if not data:
        raise CodecError("empty", "no bytes to decode")


# Canonical (shortest) msgpack integer formats: first byte -> (body bytes, signed, the range
# [low, high) a number must be in to be written in this format and no narrower one: msgpack
# writes non-negative numbers unsigned and negative ones signed, each in the narrowest width).
# Anything else takes the general path.
_INT_FORMATS: Final = {
    0xCC: (1, False, 0x80, 0x100),
    0xCD: (2, False, 0x100, 0x1_0000),
    0xCE: (4, False, 0x1_0000, 0x1_0000_0000),
    0xCF: (8, False, 0x1_0000_0000, 2**64),
    0xD0: (1, True, -0x80, -0x20),
    0xD1: (2, True, -0x8000, -0x80),
    0xD2: (4, True, -0x8000_0000, -0x8000),
    0xD3: (8, True, -(2**63), -0x8000_0000),
}


def _canonical_int(data: bytes) -> int | None:
    """The integer ``data`` is the canonical encoding of, or None (not an integer, or not in
    its shortest form: the general path then gives the exact error)."""
    first = data[0]
    if len(data) == 1:
        if first <= 0x7F:
            return first
        if first >= 0xE0:
            return first - 0x100
        return None
    # The unsigned formats up to 32 bits (most counters and balances) read here, the others
    # through the table (compiled, ``int.from_bytes`` is a method call through Python).
    if first == 0xCC:
        if len(data) != 2:
            return None
        number = data[1]
        return number if number >= 0x80 else None
    if first == 0xCD:
        if len(data) != 3:
            return None
        number = (data[1] << 8) | data[2]
        return number if number >= 0x100 else None
    if first == 0xCE:
        if len(data) != 5:
            return None
        number = (data[1] << 24) | (data[2] << 16) | (data[3] << 8) | data[4]
        return number if number >= 0x1_0000 else None
    shape = _INT_FORMATS.get(first)
    if shape is None:
        return None
    size, signed, low, high = shape
    if len(data) != 1 + size:
        return None
    number = int.from_bytes(data[1:], "big", signed=signed)
    return number if low <= number < high else None


def _decode_general(data: bytes, limits: Limits) -> Value:
    """``decode`` for any bytes (the reference path; ``decode`` shortcuts canonical ints)."""
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_str_len=limits.str_bytes_max,
            max_bin_len=limits.bytes_max,
            max_array_len=limits.array_len_max,
            max_map_len=limits.map_len_max,
            max_ext_len=16,  # any extension is rejected by _reject_ext; bound its size too
            ext_hook=_reject_ext,
            timestamp=0,
        )
    except CodecError:
        raise
    except msgpack.ExtraData:
        raise CodecError("trailing_bytes", "bytes remain after one complete value") from None
    except UnicodeDecodeError:
        raise CodecError("invalid_utf8", "a string is not valid UTF-8") from None
    except Exception as error:  # msgpack raises a zoo of types; every one means "malformed".
        raise CodecError("malformed", f"{type(error).__name__}: {error}") from None
    _check_decoded_fast(value, limits, 0)
    # The checks passed: every map is in canonical order already, so the encoder in C (which
    # sorts maps) writes what msgpack would, or hands the value back.
    reencoded = _native_encoding(value, limits)
    try:
        if reencoded is None:
            reencoded = _pack(value)
    except Exception as error:  # pragma: no cover - a checked value always packs
        raise CodecError("malformed", f"cannot re-encode: {error}") from None
    if reencoded != data:
        raise CodecError(
            "non_canonical", "bytes are not the canonical encoding (map order or integer width)"
        )
    return value  # type: ignore[no-any-return]


# Packed map keys, memoised: every map key is packed to sort (encode) or to check the order
# (decode), and real traffic uses a few dozen distinct field names. The memo holds exactly what
# ``msgpack.packb`` returns for the key, so it changes speed, never bytes. Bounded: only short
# keys, and it stops growing when full (hostile input cannot grow it without limit).
_PACKED_STR_KEYS: dict[str, bytes] = {}
_PACKED_KEYS_MAX: Final = 4096
_PACKED_KEY_LENGTH_MAX: Final = 64


def _packed_str_key(key: str) -> bytes:
    """``msgpack.packb(key)`` for an exact ``str`` map key, memoised."""
    packed = _PACKED_STR_KEYS.get(key)
    if packed is None:
        packed = msgpack.packb(key, use_bin_type=True)
        if len(key) <= _PACKED_KEY_LENGTH_MAX and len(_PACKED_STR_KEYS) < _PACKED_KEYS_MAX:
            _PACKED_STR_KEYS[key] = packed
    return packed


def _reject_ext(code: int, _data: bytes) -> object:
    raise CodecError("extension_type", f"msgpack extension type {code} is not allowed")


def _normalise(value: object, limits: Limits, depth: int) -> object:
    """Check an outgoing value against the value model and return it with maps in key order."""
    if depth > limits.depth_max:
        raise CodecError("too_deep", f"nesting deeper than {limits.depth_max}")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise CodecError("int_range", f"integer {value} outside [{INT_MIN}, {INT_MAX}]")
        return value
    if isinstance(value, bytes):
        if len(value) > limits.bytes_max:
            raise CodecError("bytes_too_long", f"{len(value)} bytes, limit {limits.bytes_max}")
        return value
    if isinstance(value, str):
        size = len(value.encode("utf-8", "strict"))
        if size > limits.str_bytes_max:
            raise CodecError("str_too_long", f"{size} bytes, limit {limits.str_bytes_max}")
        return value
    if isinstance(value, float):
        raise CodecError("float", "floats are not allowed; use integers in minor units")
    if isinstance(value, Mapping):
        if len(value) > limits.map_len_max:
            raise CodecError("map_too_long", f"{len(value)} entries, limit {limits.map_len_max}")
        entries: list[tuple[bytes, object, object]] = []
        for key, item in value.items():
            if not isinstance(key, (str, bytes)):
                raise CodecError("map_key", f"map keys must be str or bytes, not {type(key)}")
            entries.append(
                (
                    msgpack.packb(_normalise(key, limits, depth + 1), use_bin_type=True),
                    key,
                    _normalise(item, limits, depth + 1),
                )
            )
        entries.sort(key=lambda entry: entry[0])
        return {key: item for _, key, item in entries}
    if isinstance(value, Sequence):
        if len(value) > limits.array_len_max:
            raise CodecError(
                "array_too_long", f"{len(value)} elements, limit {limits.array_len_max}"
            )
        return [_normalise(item, limits, depth + 1) for item in value]
    raise CodecError("type", f"cannot encode {type(value).__name__}")


def _normalise_fast(value: object, limits: Limits, depth: int) -> object:
    """``_normalise`` with shortcuts for the exact built-in types real values are made of;
    anything else (subclasses, other mappings and sequences) goes through ``_normalise``. Same
    checks in the same order: same result, same first error (a property test compares them).
    Integers and strings inside maps and arrays are checked inline (no call per scalar)."""
    depth_max = limits.depth_max
    if depth > depth_max:
        raise CodecError("too_deep", f"nesting deeper than {depth_max}")
    if type(value) is int:
        # Tested on ``value`` itself, so compiled it is an int: a number below 2**62 compares
        # in C (see ``SMALL_INT_MAX``).
        if not (0 <= value <= SMALL_INT_MAX or INT_MIN <= value <= INT_MAX):
            raise CodecError("int_range", f"integer {value} outside [{INT_MIN}, {INT_MAX}]")
        return value
    kind = type(value)
    if kind is str:
        _check_str(value, limits)  # type: ignore[arg-type]
        return value
    if kind is bytes:
        size = len(value)  # type: ignore[arg-type]
        if size > limits.bytes_max:
            raise CodecError("bytes_too_long", f"{size} bytes, limit {limits.bytes_max}")
        return value
    inner = depth + 1
    if kind is dict:
        mapping: dict[object, object] = value  # type: ignore[assignment]
        if len(mapping) > limits.map_len_max:
            raise CodecError("map_too_long", f"{len(mapping)} entries, limit {limits.map_len_max}")
        str_max = limits.str_bytes_max
        keys = tuple(mapping)
        shape = _KEY_ORDERS.get(keys)
        if shape is not None and inner <= depth_max and shape[1] <= str_max:
            # A map shape seen before (records are built the same way every time): its keys
            # are exact, memoised strs within these limits and their canonical order is
            # known. Any error takes the general loop below, so errors come in its order.
            try:
                if shape[2] and _packs_as_it_is(mapping, limits, inner):
                    return mapping
                return _normalise_shaped(mapping, keys, shape[0], limits, inner)
            except CodecError:
                pass
        entries: list[tuple[bytes, object, object]] = []
        for key, item in mapping.items():
            if type(key) is str:
                if inner > depth_max:
                    raise CodecError("too_deep", f"nesting deeper than {depth_max}")
                packed = _PACKED_STR_KEYS.get(key)
                # A memoised key's UTF-8 size is below its packed size: no need to measure it.
                if packed is None or len(packed) > str_max:
                    _check_str(key, limits)
                    packed = _packed_str_key(key)
            elif isinstance(key, (str, bytes)):
                packed = msgpack.packb(_normalise(key, limits, inner), use_bin_type=True)
            else:
                raise CodecError("map_key", f"map keys must be str or bytes, not {type(key)}")
            if inner <= depth_max and _plain(item, limits):
                entries.append((packed, key, item))
            else:
                entries.append((packed, key, _normalise_fast(item, limits, inner)))
        # Packed keys are unique (distinct keys never pack alike), so tuples compare on them.
        entries.sort()
        if shape is None:
            _remember_shape(keys)
        return {key: item for _, key, item in entries}
    if kind is list or kind is tuple:
        sequence: list[object] | tuple[object, ...] = value  # type: ignore[assignment]
        if len(sequence) > limits.array_len_max:
            raise CodecError(
                "array_too_long", f"{len(sequence)} elements, limit {limits.array_len_max}"
            )
        if inner > depth_max:
            return [_normalise_fast(item, limits, inner) for item in sequence]
        return [
            item if _plain(item, limits) else _normalise_fast(item, limits, inner)
            for item in sequence
        ]
    return _normalise(value, limits, depth)


# Map shapes seen: the key tuple in insertion order -> (the positions in canonical order, the
# longest packed key, whether the insertion order is the canonical one). Bounded like the
# packed-key memo; only maps whose keys are all memoised exact strs are remembered, so a
# shape's keys need no check beyond their size.
_KEY_ORDERS: dict[tuple[object, ...], tuple[tuple[int, ...], int, bool]] = {}
_KEY_ORDERS_MAX: Final = 1024
_SHAPE_KEYS_MAX: Final = 64


def _remember_shape(keys: tuple[object, ...]) -> None:
    if len(_KEY_ORDERS) >= _KEY_ORDERS_MAX or not 0 < len(keys) <= _SHAPE_KEYS_MAX:
        return
    packed: list[bytes] = []
    for key in keys:
        if type(key) is not str:
            return
        memo = _PACKED_STR_KEYS.get(key)
        if memo is None:
            return
        packed.append(memo)
    order = tuple(sorted(range(len(keys)), key=packed.__getitem__))
    _KEY_ORDERS[keys] = (
        order,
        max(len(item) for item in packed),
        order == tuple(range(len(keys))),
    )


def _normalise_shaped(
    mapping: dict[object, object],
    keys: tuple[object, ...],
    order: tuple[int, ...],
    limits: Limits,
    inner: int,
) -> dict[object, object]:
    """The normalised map for a remembered shape (the caller checked depth and key sizes)."""
    values = tuple(mapping.values())
    normalised: dict[object, object] = {}
    for position in order:
        item = values[position]
        normalised[keys[position]] = (
            item if _plain(item, limits) else _normalise_fast(item, limits, inner)
        )
    return normalised


def _packs_as_it_is(mapping: dict[object, object], limits: Limits, inner: int) -> bool:
    """For a map whose shape is already in canonical order (maps decoded from canonical bytes,
    records built in that order): True when every value packs as it is, as most do, so the
    map itself is its normalised form (no copy key by key)."""
    for item in mapping.values():
        if not _plain(item, limits) and _normalise_fast(item, limits, inner) is not item:
            return False
    return True


def _plain(item: object, limits: Limits) -> bool:
    """True for a scalar that passes every check as it is (the caller checked the depth)."""
    if type(item) is int:
        return 0 <= item <= SMALL_INT_MAX or INT_MIN <= item <= INT_MAX
    kind = type(item)
    if kind is str:
        return item.isascii() and len(item) <= limits.str_bytes_max  # type: ignore[attr-defined, arg-type]
    if kind is bytes:
        return len(item) <= limits.bytes_max  # type: ignore[arg-type]
    return item is None or kind is bool


def utf8_size(text: str) -> int:
    """``len(text.encode("utf-8"))`` (``UnicodeEncodeError`` for a lone surrogate): an ASCII
    string's is its length, with nothing encoded."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "strict"))


def _check_str(text: str, limits: Limits) -> None:
    size = utf8_size(text)
    if size > limits.str_bytes_max:
        raise CodecError("str_too_long", f"{size} bytes, limit {limits.str_bytes_max}")


def _check_decoded_fast(value: object, limits: Limits, depth: int) -> None:
    """``_check_decoded`` with shortcuts for msgpack's output (plain scalars checked inline,
    memoised packed map keys); anything else goes through ``_check_decoded``. Same checks in
    the same order. (``type(value) is ...`` narrows ``value`` itself, so compiled the loops
    walk a tuple or a dict directly rather than through Python's iterators.)"""
    depth_max = limits.depth_max
    if depth > depth_max:
        raise CodecError("too_deep", f"nesting deeper than {depth_max}")
    inner = depth + 1
    if type(value) is tuple:
        for item in value:
            if _plain_decoded(item):
                if inner > depth_max:
                    raise CodecError("too_deep", f"nesting deeper than {depth_max}")
            else:
                _check_decoded_fast(item, limits, inner)
        return
    if type(value) is dict:
        previous: bytes | None = None
        for key, item in value.items():
            if type(key) is str:
                packed_key = _packed_str_key(key)
            else:
                packed_key = msgpack.packb(key, use_bin_type=True)
            if previous is not None and packed_key <= previous:
                raise CodecError("non_canonical", "map keys are not in canonical order")
            previous = packed_key
            if _plain_decoded(item):
                if inner > depth_max:
                    raise CodecError("too_deep", f"nesting deeper than {depth_max}")
            else:
                _check_decoded_fast(item, limits, inner)
        return
    if _plain_decoded(value):
        return
    _check_decoded(value, limits, depth)


def _plain_decoded(item: object) -> bool:
    """True for a type msgpack decodes to that needs no check beyond the depth (int, str,
    bytes, bool, None; floats, arrays and maps do), tested by identity (compiled, C
    comparisons rather than a set lookup)."""
    kind = type(item)
    return kind is int or kind is str or kind is bytes or kind is bool or item is None


def _check_decoded(value: object, limits: Limits, depth: int) -> None:
    """Reject decoded values outside the value model (floats, excess depth, unsorted maps)."""
    if depth > limits.depth_max:
        raise CodecError("too_deep", f"nesting deeper than {limits.depth_max}")
    if value is None or isinstance(value, (bool, int, bytes, str)):
        return
    if isinstance(value, float):
        raise CodecError("float", "floats are not allowed")
    if isinstance(value, tuple):
        for item in value:
            _check_decoded(item, limits, depth + 1)
        return
    if isinstance(value, dict):
        previous: bytes | None = None
        for key, item in value.items():
            packed_key: bytes = msgpack.packb(key, use_bin_type=True)
            if previous is not None and packed_key <= previous:
                raise CodecError("non_canonical", "map keys are not in canonical order")
            previous = packed_key
            _check_decoded(item, limits, depth + 1)
        return
    raise CodecError("type", f"unexpected decoded type {type(value).__name__}")


# The encoder in C (``consensus/_codec.c``): (value, total_bytes_max, depth_max, str_bytes_max,
# bytes_max, array_len_max, map_len_max) -> the canonical bytes, or None for "encode it here".
NativePack = Callable[[object, int, int, int, int, int, int], "bytes | None"]

# What the encoder in C must write exactly as this module does (or hand back, for the values
# this module refuses) before it is used: every integer format at its bounds, strings and
# bytes at each header's bounds (ASCII and not), containers at theirs, maps with keys of both
# kinds out of order and nested, and values past each limit.
_TIGHT: Final = Limits(
    total_bytes_max=64, depth_max=2, str_bytes_max=8, bytes_max=8, array_len_max=4, map_len_max=3
)


def _native_encoding(value: object, limits: Limits) -> bytes | None:
    """The encoder in C's bytes for ``value``; None when it hands the value back or does not
    run."""
    native = _NATIVE_PACK
    return None if native is None else _packed_natively(native, value, limits)


def _packed_natively(pack: NativePack, value: object, limits: Limits) -> bytes | None:
    """``pack``'s bytes for ``value`` under ``limits`` (None: handed back)."""
    return pack(
        value,
        limits.total_bytes_max,
        limits.depth_max,
        limits.str_bytes_max,
        limits.bytes_max,
        limits.array_len_max,
        limits.map_len_max,
    )


def _self_test_values() -> list[tuple[object, Limits]]:
    numbers: list[object] = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32]
    numbers += [2**63 - 1, 2**63, INT_MAX, -1, -32, -33, -128, -129, -32768, -32769]
    numbers += [-(2**31), -(2**31) - 1, INT_MIN, INT_MAX + 1, INT_MIN - 1, True, False, None]
    texts: list[object] = ["", "a" * 31, "a" * 32, "a" * 255, "a" * 256, "é" * 40000, "€"]
    texts += [b"", b"\x00" * 255, b"\x01" * 256, b"\xff" * 65536, chr(0xD800), 1.5]
    shapes: list[object] = [
        [],
        (),
        list(range(15)),
        tuple(range(16)),
        list(range(65536)),
        {},
        {"b": 1, "a": [1, {"y": b"", b"x": None}], b"a": "z", "aa": -5},
        {str(index): index for index in range(17)},
        {index.to_bytes(2, "big"): index for index in range(300)},
        [[[[[]]]]],
        {"k": {"k": {"k": {}}}},
        {1: 2},
        bytearray(b"x"),
    ]
    values: list[tuple[object, Limits]] = [
        (value, DEFAULT_LIMITS) for value in [*numbers, *texts, *shapes]
    ]
    tight: list[object] = ["a" * 8, "a" * 9, "é" * 4, "é" * 5, b"x" * 8, b"x" * 9, [1] * 4]
    tight += [[1] * 5, {"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "c": 3, "d": 4}, [[]], [[[]]]]
    tight += [[[1]], {"a": {}}, {"a": {"b": 1}}, ["x" * 8] * 4, [b"y" * 8] * 4, [[b"y" * 8]]]
    tight += [{"a" * 8: 1}, {"a" * 9: 1}, {b"b" * 8: 1}, {b"b" * 9: 1}, {"é" * 5: 1}]
    tight += [[[[1]]], {"a": {"b": {"c": 1}}}, [["x" * 8] * 4, ["x" * 8] * 3], [["x" * 8] * 4] * 2]
    values += [(value, _TIGHT) for value in tight]
    return values


def _python_encoding(value: object, limits: Limits) -> bytes | None:
    """This module's bytes for ``value`` (None: it refuses the value)."""
    try:
        return _encode_in_python(value, limits)
    except (CodecError, UnicodeError):
        return None


def _native_agrees(pack: NativePack) -> bool:
    for value, limits in _self_test_values():
        expected = _python_encoding(value, limits)
        packed = _packed_natively(pack, value, limits)
        if packed is None:
            continue  # handed back: the Python encoder decides, as for any value
        if packed != expected:
            return False
    return True


def _native_module() -> tuple[ModuleType | None, str]:
    """``consensus._codec``, or None and the status saying why it is not there."""
    try:
        return importlib.import_module("consensus._codec"), "native"
    except ImportError as error:
        # Not built, or refused by the node's import guard (``SUANPAN_PURE_PYTHON=1``).
        return None, f"python (consensus._codec is not available: {error})"


def _load_native_pack() -> tuple[NativePack | None, str]:
    module, status = _native_module()
    if module is None:
        return None, status
    pack: NativePack = module.pack
    if not _native_agrees(pack):
        return None, "python (consensus._codec failed its self-test)"
    return pack, status


# The decoder in C (``consensus/_codec.c``): (data, total_bytes_max, depth_max, str_bytes_max,
# bytes_max, array_len_max, map_len_max) -> the decoded value, or None for "decode it here".
NativeUnpack = Callable[[bytes, int, int, int, int, int, int], object]


def _unpacked_natively(unpack: NativeUnpack, data: bytes, limits: Limits) -> Value:
    """``unpack``'s value for ``data`` under ``limits`` (None: handed back)."""
    return unpack(  # type: ignore[return-value]
        data,
        limits.total_bytes_max,
        limits.depth_max,
        limits.str_bytes_max,
        limits.bytes_max,
        limits.array_len_max,
        limits.map_len_max,
    )


def _python_decoding(data: bytes, limits: Limits) -> tuple[bool, object]:
    """This module's decoding of ``data`` without the decoder in C: (True, the value) or
    (False, the error's reason)."""
    try:
        _check_size(data, limits)
        return True, _decode_general(data, limits)
    except CodecError as error:
        return False, error.reason


def same_value(left: object, right: object) -> bool:
    """True when two decoded values are equal with the same types throughout, and their maps'
    entries in the same order (``==`` alone takes ``True`` for ``1`` and ignores map order)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, tuple) and isinstance(right, tuple):
        if len(left) != len(right):
            return False
        return all(same_value(item, right[index]) for index, item in enumerate(left))
    if isinstance(left, dict) and isinstance(right, dict):
        if list(left) != list(right):
            return False
        return all(same_value(item, right[key]) for key, item in left.items())
    return bool(left == right)


# The self-test's inputs cut short by a byte and with a byte after them: the encodings up to
# this size (the larger ones repeat the same formats, and decoding them costs start-up time).
_CHANGED_BYTES_MAX: Final = 1024


def _unpack_self_test_inputs() -> list[tuple[bytes, Limits]]:
    """Byte strings the decoder in C must decode as this module does (or hand back): the
    encodings of the encoder's self-test values, each integer, string, bytes, array and map
    format at its bounds written canonically and one size too wide, maps out of order and with
    a repeated key, floats, extension types, nil, invalid UTF-8, truncated and trailing bytes,
    and values at and past each limit."""
    inputs: list[tuple[bytes, Limits]] = []
    for value, limits in _self_test_values():
        encoded = _python_encoding(value, limits)
        if encoded is not None:
            inputs.append((encoded, limits))
            if len(encoded) <= _CHANGED_BYTES_MAX:
                inputs.append((encoded[:-1], limits))
                inputs.append((encoded + b"\x00", limits))
    wide = [
        b"\xcc\x7f",
        b"\xcd\x00\xff",
        b"\xce\x00\x00\xff\xff",
        b"\xcf" + bytes(4) + b"\xff" * 4,
        b"\xd0\xe0",
        b"\xd0\x05",
        b"\xd1\xff\x80",
        b"\xd2\xff\xff\x80\x00",
        b"\xd3" + b"\xff" * 4 + b"\x80" + bytes(3),
        b"\xd3" + bytes(8),
        b"\xd9\x1f" + b"a" * 31,
        b"\xda\x00\xff" + b"a" * 255,
        b"\xc5\x00\xff" + b"a" * 255,
        b"\xdc\x00\x0f" + bytes(15),
        b"\xde\x00\x01\xa1a\x01",
        b"\xdb\x00\x00\x00\x01a",
        b"\xc6\x00\x00\x00\x01a",
        b"\xdd\x00\x00\x00\x01\x01",
        b"\xdf\x00\x00\x00\x01\xa1a\x01",
    ]
    odd = [
        b"\xc0",
        b"\x91\xc0",
        b"\xc1",
        b"\xca\x3f\x80\x00\x00",
        b"\xcb" + bytes(8),
        b"\xd4\x01\x00",
        b"\xc7\x01\x01\x00",
        b"\xa2\xc3\x28",
        b"\xa3\xed\xa0\x80",
        b"\x82\xa1b\x01\xa1a\x02",
        b"\x82\xa1a\x01\xa1a\x02",
        b"\x82\xc4\x01a\x01\xa1a\x02",
        b"\x81\x01\x02",
        b"\x81\x90\x01",
        b"\x92\x01",
        b"\xdc\xff\xff",
        b"\xdf\xff\xff\xff\xff",
        b"\xc6\xff\xff\xff\xff",
        b"\x92\xc2\xc3",
        b"\x82\xa0\x01\xa1a\x91\x80",
    ]
    inputs += [(data, DEFAULT_LIMITS) for data in [*wide, *odd]]
    tight = [b"\xa8" + b"a" * 8, b"\xa9" + b"a" * 9, b"\x91\x91\x01", b"\x91\x90", b"\x91\x91\x90"]
    tight += [b"\x91\x91\x91\x01", b"\x91\x91\x91\x90", b"\x81\xa1a\x81\xa1b\x81\xa1c\x01"]
    tight += [b"\x94" + bytes(4), b"\x95" + bytes(5), b"\x83\xa1a\x01\xa1b\x02\xa1c\x03"]
    tight += [b"\x84\xa1a\x01\xa1b\x02\xa1c\x03\xa1d\x04", b"\x81\xa9" + b"k" * 9 + b"\x01"]
    tight += [b"\xc4\x08" + bytes(8), b"\xc4\x09" + bytes(9), b"\x81\xa1a\x81\xa1b\x01"]
    inputs += [(data, _TIGHT) for data in tight]
    return inputs


def _native_unpack_agrees(unpack: NativeUnpack) -> bool:
    for data, limits in _unpack_self_test_inputs():
        decoded = _unpacked_natively(unpack, data, limits)
        if decoded is None:
            continue  # handed back: the Python decoder decides, as for any bytes
        ok, expected = _python_decoding(data, limits)
        if not ok or not same_value(decoded, expected):
            return False
    return True


def _load_native_unpack() -> tuple[NativeUnpack | None, str]:
    module, status = _native_module()
    if module is None:
        return None, status
    unpack: NativeUnpack | None = getattr(module, "unpack", None)
    if unpack is None:
        return None, "python (consensus._codec has no decoder: rebuild it)"
    if not _native_unpack_agrees(unpack):
        return None, "python (consensus._codec's decoder failed its self-test)"
    return unpack, status


_NATIVE_PACK, _ENCODER_STATUS = _load_native_pack()
_NATIVE_UNPACK, _DECODER_STATUS = _load_native_unpack()


def encoder_status() -> str:
    """``"native"`` when values are encoded in C (``consensus/_codec.c``), else ``"python"``
    with the reason."""
    return _ENCODER_STATUS


def decoder_status() -> str:
    """``"native"`` when canonical bytes are decoded in C (``consensus/_codec.c``), else
    ``"python"`` with the reason."""
    return _DECODER_STATUS
