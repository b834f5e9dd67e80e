"""The codec's shortcuts for exact built-in types behave exactly like the general walk.

``encode`` and ``decode`` use ``_normalise_fast`` / ``_check_decoded_fast`` (type shortcuts and
memoised packed map keys); the general ``_normalise`` / ``_check_decoded`` are the reference.
For any value (valid or not, built-in or subclass) and any limits, both must return the same
value in the same map order, or raise the same error with the same reason and detail.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import NamedTuple

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import codec
from consensus.codec import INT_MAX, INT_MIN, CodecError, Limits


class Colour(enum.IntEnum):
    RED = 1


class Name(str):
    """A str subclass: must take the general path and behave the same."""


class Pair(NamedTuple):
    left: int
    right: int


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN - 2, max_value=INT_MAX + 2)
    | st.binary(max_size=40)
    | st.text(max_size=24)
    | st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2)
    | st.floats(allow_nan=False)
    | st.just(Colour.RED)
    | st.builds(Name, st.text(max_size=6))
    | st.builds(Pair, st.integers(0, 9), st.integers(0, 9))
    | st.builds(bytearray, st.binary(max_size=4))
    | st.just(object())
)
keys = (
    st.text(max_size=10)
    | st.binary(max_size=10)
    | st.builds(Name, st.text(max_size=4))
    | st.integers(0, 3)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(keys, children, max_size=5)
        | st.dictionaries(st.text(max_size=6), children, max_size=5).map(OrderedDict)
    ),
    max_leaves=25,
)
limits = st.builds(
    Limits,
    total_bytes_max=st.just(1 << 20),
    depth_max=st.integers(1, 5),
    str_bytes_max=st.integers(1, 30),
    bytes_max=st.integers(1, 30),
    array_len_max=st.integers(1, 6),
    map_len_max=st.integers(1, 6),
)


def outcome(function: object, value: object, limit: Limits) -> object:
    """The result as nested item lists (so map order counts), or the error's identity."""
    try:
        result = function(value, limit, 0)  # type: ignore[operator]
    except CodecError as error:
        return ("CodecError", error.reason, error.detail)
    except Exception as error:
        return (type(error).__name__, str(error))
    return ordered(result)


def ordered(value: object) -> object:
    if isinstance(value, dict):
        return [("map", repr(key), ordered(item)) for key, item in value.items()]
    if isinstance(value, list | tuple):
        return [ordered(item) for item in value]
    return (type(value).__name__, repr(value))


@settings(max_examples=400, deadline=None)
@given(values, limits)
def test_encode_shortcuts_match_the_general_walk(value: object, limit: Limits) -> None:
    assert outcome(codec._normalise_fast, value, limit) == outcome(codec._normalise, value, limit)


valid_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN, max_value=INT_MAX)
    | st.binary(max_size=8)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=6), children, min_size=2, max_size=6)
        | st.dictionaries(st.text(max_size=4) | st.binary(max_size=4), children, max_size=6)
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(valid_values)
def test_valid_values_normalise_identically(value: object) -> None:
    limit = codec.DEFAULT_LIMITS
    assert outcome(codec._normalise_fast, value, limit) == outcome(codec._normalise, value, limit)


wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN, max_value=INT_MAX)
    | st.binary(max_size=40)
    | st.text(max_size=24)
    | st.floats(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=5)
        # Insertion order is kept by packb: maps arrive in canonical order or not.
        | st.dictionaries(st.text(max_size=6) | st.binary(max_size=6), children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(wire_values, limits)
def test_decode_shortcuts_match_the_general_check(value: object, limit: Limits) -> None:
    unpacked = msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False, use_list=False)
    fast = outcome(codec._check_decoded_fast, unpacked, limit)
    reference = outcome(codec._check_decoded, unpacked, limit)
    assert fast == reference


def test_memoised_keys_are_exactly_what_msgpack_packs() -> None:
    for key in ("amount", "a" * 31, "b" * 32, "é", "x" * 300):
        assert codec._packed_str_key(key) == msgpack.packb(key, use_bin_type=True)
        assert codec._packed_str_key(key) == msgpack.packb(key, use_bin_type=True)
    assert len(codec._PACKED_STR_KEYS) <= codec._PACKED_KEYS_MAX
    assert "x" * 300 not in codec._PACKED_STR_KEYS


def reference_encode(value: object, limit: Limits) -> object:
    """The encoding without any shortcut: the general walk, a fresh packer."""
    try:
        data = msgpack.packb(codec._normalise(value, limit, 0), use_bin_type=True)
    except CodecError as error:
        return ("CodecError", error.reason, error.detail)
    except Exception as error:
        return (type(error).__name__, str(error))
    if len(data) > limit.total_bytes_max:
        detail = f"encoded value is {len(data)} bytes, limit {limit.total_bytes_max}"
        return ("CodecError", "too_large", detail)
    return data


def fast_encode(value: object, limit: Limits) -> object:
    try:
        return codec.encode(value, limit)  # type: ignore[arg-type]
    except CodecError as error:
        return ("CodecError", error.reason, error.detail)
    except Exception as error:
        return (type(error).__name__, str(error))


@settings(max_examples=200, deadline=None)
@given(values | valid_values, limits | st.just(codec.DEFAULT_LIMITS))
def test_encode_gives_the_general_walks_bytes_and_errors(value: object, limit: Limits) -> None:
    """Twice: the first call may remember the maps' shapes, the second uses them."""
    expected = reference_encode(value, limit)
    assert fast_encode(value, limit) == expected
    assert fast_encode(value, limit) == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), valid_values, max_size=6), max_size=4))
def test_records_of_one_shape_encode_like_the_general_walk(records: list[object]) -> None:
    """Maps sharing a key order (as records do) take the remembered-shape path after the
    first (packed as they are when their order is the canonical one and every value packs as
    it is); every one must still encode exactly as the general walk does, errors included."""
    # Out of canonical order, in it (maps decoded from canonical bytes are), and one key.
    for shape in (("b", "a", "ccc", "dd"), ("a", "b", "dd", "ccc"), ("payment",)):
        for record in records:
            assert isinstance(record, dict)
            shaped = {key: record.get(key, len(key)) for key in shape}
            for limit in (codec.DEFAULT_LIMITS, Limits(str_bytes_max=3, depth_max=2)):
                assert fast_encode(shaped, limit) == reference_encode(shaped, limit)


def reference_decode(data: bytes) -> object:
    try:
        return ("ok", repr(codec._decode_general(data, codec.DEFAULT_LIMITS)))
    except CodecError as error:
        return ("CodecError", error.reason, error.detail)


def fast_decode(data: bytes) -> object:
    try:
        return ("ok", repr(codec.decode(data)))
    except CodecError as error:
        return ("CodecError", error.reason, error.detail)


@settings(max_examples=500, deadline=None)
@given(
    st.binary(min_size=1, max_size=9)
    | st.integers(INT_MIN, INT_MAX).map(lambda n: msgpack.packb(n))
    | st.tuples(st.sampled_from(sorted(codec._INT_FORMATS)), st.binary(max_size=9)).map(
        lambda pair: bytes([pair[0]]) + pair[1]
    )
)
def test_decode_shortcut_for_integers_matches_the_general_decode(data: bytes) -> None:
    assert fast_decode(data) == reference_decode(data)


def test_every_integer_width_boundary_decodes_like_the_general_path() -> None:
    for bound in (0x20, 0x80, 0x100, 0x8000, 0x1_0000, 0x8000_0000, 0x1_0000_0000, 2**63):
        for number in (bound - 1, bound, bound + 1, -bound - 1, -bound, -bound + 1):
            if INT_MIN <= number <= INT_MAX:
                data = msgpack.packb(number)
                assert codec.decode(data) == number
                assert fast_decode(data) == reference_decode(data)


def test_integers_in_a_wider_format_than_needed_are_refused_like_the_general_path() -> None:
    """Every boundary number written in every msgpack integer format that can hold it: only
    the narrowest is canonical, and the shortcut must agree with the general decode."""
    for first, (size, signed, _, _) in codec._INT_FORMATS.items():
        for bound in (0x20, 0x80, 0x100, 0x8000, 0x1_0000, 0x8000_0000, 0x1_0000_0000, 2**63):
            for number in (bound - 1, bound, bound + 1, -bound - 1, -bound, -bound + 1, 0, -1):
                try:
                    body = number.to_bytes(size, "big", signed=signed)
                except OverflowError:
                    continue
                data = bytes([first]) + body
                assert fast_decode(data) == reference_decode(data), data.hex()


# 2**62: where compiled code stops holding a number unboxed (the codec's range checks test
# below it first).
_WIDTH_BOUNDS = (
    0x20,
    0x80,
    0x100,
    0x8000,
    0x1_0000,
    0x8000_0000,
    0x1_0000_0000,
    2**62,
    2**63,
    2**64,
)


@settings(max_examples=1000, deadline=None)
@given(
    st.integers(INT_MIN, INT_MAX)
    | st.sampled_from(_WIDTH_BOUNDS).flatmap(
        lambda bound: st.sampled_from([bound - 1, bound, bound + 1, -bound - 1, -bound, -bound + 1])
    )
)
def test_an_integer_is_encoded_as_msgpack_packs_it(number: int) -> None:
    """``encode`` writes an integer's bytes itself: they must be msgpack's, at every width."""
    if INT_MIN <= number <= INT_MAX:
        assert codec.encode(number) == msgpack.packb(number, use_bin_type=True)
        assert codec.decode(codec.encode(number)) == number
    else:
        assert fast_encode(number, codec.DEFAULT_LIMITS) == reference_encode(
            number, codec.DEFAULT_LIMITS
        )
