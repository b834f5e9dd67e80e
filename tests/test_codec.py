"""The canonical codec: round trips, canonical form, limits, and total robustness on garbage."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.codec import INT_MAX, INT_MIN, CodecError, Limits, Value, decode, encode

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN, max_value=INT_MAX)
    | st.binary(max_size=64)
    | st.text(max_size=32)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8), children, max_size=6)
    ),
    max_leaves=30,
)


def normalised(value: Value) -> Value:
    """What decode returns for a value: arrays as tuples, maps as plain dicts."""
    if isinstance(value, list | tuple):
        return tuple(normalised(item) for item in value)
    if isinstance(value, dict):
        return {key: normalised(item) for key, item in value.items()}
    return value


@given(values)
def test_every_value_kind_round_trips(value: Value) -> None:
    data = encode(value)
    assert decode(data) == normalised(value)
    assert encode(decode(data)) == data


@given(st.dictionaries(st.text(max_size=8), st.integers(0, 2**32), max_size=10))
def test_map_encoding_is_independent_of_insertion_order(mapping: dict[str, int]) -> None:
    reversed_mapping = dict(reversed(list(mapping.items())))
    assert encode(mapping) == encode(reversed_mapping)


@settings(max_examples=10_000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=256))
def test_decoding_arbitrary_bytes_returns_a_value_or_raises_codec_error(data: bytes) -> None:
    try:
        value = decode(data)
    except CodecError:
        return
    assert encode(value) == data


@settings(max_examples=2_000)
@given(values, st.data())
def test_mutated_encodings_never_raise_anything_else(value: Value, data: st.DataObject) -> None:
    encoded = bytearray(encode(value))
    position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[position] = data.draw(st.integers(min_value=0, max_value=255))
    with contextlib.suppress(CodecError):
        decode(bytes(encoded))


def test_floats_are_rejected_both_ways() -> None:
    with pytest.raises(CodecError, match="float"):
        encode(1.5)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="float"):
        decode(msgpack.packb(1.5))


def test_unsorted_map_is_not_canonical() -> None:
    data = b"\x82\xa1b\x01\xa1a\x02"  # {"b": 1, "a": 2} in insertion order
    with pytest.raises(CodecError, match="non_canonical"):
        decode(data)


def test_wide_integer_is_not_canonical() -> None:
    with pytest.raises(CodecError, match="non_canonical"):
        decode(b"\xcd\x00\x01")  # 1 as uint16


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(CodecError, match="trailing_bytes"):
        decode(encode(1) + b"\x00")


def test_extension_types_are_rejected() -> None:
    with pytest.raises(CodecError, match="extension"):
        decode(b"\xd4\x01\x00")


def test_invalid_utf8_is_rejected() -> None:
    with pytest.raises(CodecError, match="utf8"):
        decode(b"\xa2\xff\xfe")


def test_empty_input_is_rejected() -> None:
    with pytest.raises(CodecError, match="empty"):
        decode(b"")


@pytest.mark.parametrize(
    ("limits", "value", "reason"),
    [
        (Limits(total_bytes_max=10), b"x" * 20, "too_large"),
        (Limits(bytes_max=4), b"x" * 5, "bytes_too_long"),
        (Limits(str_bytes_max=4), "hello", "str_too_long"),
        (Limits(array_len_max=2), [1, 2, 3], "array_too_long"),
        (Limits(map_len_max=1), {"a": 1, "b": 2}, "map_too_long"),
        (Limits(depth_max=2), [[[[1]]]], "too_deep"),
    ],
)
def test_limits_are_enforced_with_a_named_reason(limits: Limits, value: Value, reason: str) -> None:
    with pytest.raises(CodecError, match=reason) as caught:
        encode(value, limits)
    assert caught.value.reason == reason
    with pytest.raises(CodecError):
        decode(encode(value), limits)


def test_deep_nesting_from_a_peer_is_rejected() -> None:
    data = b"\x91" * 100 + b"\x00"
    with pytest.raises(CodecError, match="too_deep"):
        decode(data)


def test_huge_declared_length_does_not_allocate() -> None:
    # A 4 GiB bin header with 3 bytes of data must fail fast, not allocate.
    with pytest.raises(CodecError):
        decode(b"\xc6\xff\xff\xff\xff abc")


def test_integer_range() -> None:
    with pytest.raises(CodecError, match="int_range"):
        encode(2**64)
    with pytest.raises(CodecError, match="int_range"):
        encode(-(2**63) - 1)


def test_non_string_map_keys_are_rejected() -> None:
    with pytest.raises(CodecError, match="map_key"):
        encode({1: 2})  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        decode(b"\x81\x01\x02")


def test_decode_takes_any_bytes_like_value_and_names_anything_else() -> None:
    data = encode({"amount": 70_000, "memo": "x"})
    for wrapped in (data, bytearray(data), memoryview(data)):
        assert decode(wrapped) == {"amount": 70_000, "memo": "x"}
    # Interpreted, ``CodecError`` (not_bytes); compiled, the argument check's ``TypeError``.
    for wrong in ("\x81\xa1a\x01", 7, None, [0x81]):
        with pytest.raises((CodecError, TypeError), match=type(wrong).__name__):
            decode(wrong)  # type: ignore[arg-type]
