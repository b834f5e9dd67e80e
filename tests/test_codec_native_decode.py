"""The decoder in C (``consensus/_codec.c``) against the codec's Python decoder.

For any byte string and any limits, the C decoder either returns exactly the value the Python
decoder returns (same types throughout, maps in the same order), or hands the bytes back (None)
so that the Python decoder decides: it never returns a value for bytes the Python decoder
refuses. It must also decode the canonical encoding of every value of the exact built-in types
within the limits (else it would save nothing), and ``decode`` gives the same results with it
and without it. The properties feed it arbitrary bytes, canonical encodings, and encodings
changed byte by byte (flipped, cut, inserted, dropped), the inputs most likely to reach its
edge cases.
"""

from __future__ import annotations

import importlib
import random
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import codec
from consensus.codec import DEFAULT_LIMITS, CodecError, Limits, same_value
from tests.test_codec_fast_path import limits, values
from tests.test_codec_native import NEST_MAX, plain_limits, plain_values

native = pytest.importorskip("consensus._codec")


def unpack(data: bytes, limit: Limits) -> object:
    return codec._unpacked_natively(native.unpack, data, limit)


def agrees_or_hands_back(data: bytes, limit: Limits) -> None:
    """The property every input must have."""
    decoded = unpack(data, limit)
    if decoded is None:
        return
    ok, expected = codec._python_decoding(data, limit)
    assert ok, (data.hex(), expected)
    assert same_value(decoded, expected), data.hex()


@st.composite
def changed(draw: st.DrawFn, encodings: st.SearchStrategy[bytes]) -> bytes:
    """An encoding with one to three bytes flipped, cut, inserted or dropped."""
    data = bytearray(draw(encodings))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "drop"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data.insert(at, draw(st.integers(0, 255)))
        elif at < len(data):
            del data[at]
    return bytes(data)


def encodings_within(limit: Limits) -> st.SearchStrategy[bytes]:
    def encoded(value: object) -> bytes:
        return codec._python_encoding(value, limit) or b"\xc0"

    return plain_values.map(encoded)


# Header bytes of every format, so arbitrary bytes hit each one often.
headers = st.sampled_from(
    [
        *(0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5),
        *(0xC6, 0xC7, 0xCA, 0xCB, 0xCC, 0xCD, 0xCE, 0xCF, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD9),
        *(0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xE0, 0xFF),
    ]
)
format_heavy_bytes = st.lists(headers | st.integers(0, 255), max_size=40).map(bytes)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=64) | format_heavy_bytes, limits)
def test_the_c_decoder_agrees_or_hands_back_for_any_bytes(data: bytes, limit: Limits) -> None:
    agrees_or_hands_back(data, limit)


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(changed(encodings_within(plain_limits)), limits | st.just(plain_limits))
def test_the_c_decoder_agrees_or_hands_back_for_changed_encodings(
    data: bytes, limit: Limits
) -> None:
    agrees_or_hands_back(data, limit)


@settings(max_examples=600, deadline=None)
@given(values, limits, limits)
def test_the_c_decoder_agrees_or_hands_back_under_other_limits(
    value: object, encoded_under: Limits, decoded_under: Limits
) -> None:
    # A value valid under one set of limits, decoded under another: each limit's bound.
    data = codec._python_encoding(value, encoded_under)
    if data is not None:
        agrees_or_hands_back(data, decoded_under)


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plain_values)
def test_the_c_decoder_decodes_every_canonical_encoding(value: object) -> None:
    data = codec._python_encoding(value, plain_limits)
    assert data is not None
    ok, expected = codec._python_decoding(data, plain_limits)
    assert ok
    decoded = unpack(data, plain_limits)
    if value is None:
        assert decoded is None  # the value None is the Python decoder's to return
        return
    assert same_value(decoded, expected)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plain_values)
def test_decode_agrees_with_and_without_the_c_decoder(value: object) -> None:
    assert codec.decoder_status() == "native"
    data = codec.encode(value, plain_limits)  # type: ignore[arg-type]
    decoded = codec.decode(data, plain_limits)
    saved = codec._NATIVE_UNPACK
    codec._NATIVE_UNPACK = None
    try:
        assert same_value(codec.decode(data, plain_limits), decoded)
    finally:
        codec._NATIVE_UNPACK = saved


TIGHT = Limits(
    total_bytes_max=16, depth_max=1, str_bytes_max=3, bytes_max=3, array_len_max=3, map_len_max=2
)


@pytest.mark.parametrize(
    ("data", "limit", "reason"),
    [
        (b"\xca\x3f\x80\x00\x00", DEFAULT_LIMITS, "float"),
        (b"\xcb" + bytes(8), DEFAULT_LIMITS, "float"),
        (b"\xd4\x01\x00", DEFAULT_LIMITS, "extension_type"),
        (b"\xc7\x01\x01\x00", DEFAULT_LIMITS, "extension_type"),
        (b"\xc1", DEFAULT_LIMITS, "malformed"),
        (b"\xcc\x7f", DEFAULT_LIMITS, "non_canonical"),
        (b"\xcd\x00\xff", DEFAULT_LIMITS, "non_canonical"),
        (b"\xce\x00\x00\xff\xff", DEFAULT_LIMITS, "non_canonical"),
        (b"\xcf\x00\x00\x00\x00\xff\xff\xff\xff", DEFAULT_LIMITS, "non_canonical"),
        (b"\xd0\xe0", DEFAULT_LIMITS, "non_canonical"),
        (b"\xd0\x05", DEFAULT_LIMITS, "non_canonical"),
        (b"\xd1\xff\x80", DEFAULT_LIMITS, "non_canonical"),
        (b"\xd2\xff\xff\x80\x00", DEFAULT_LIMITS, "non_canonical"),
        (b"\xd3\xff\xff\xff\xff\x80\x00\x00\x00", DEFAULT_LIMITS, "non_canonical"),
        (b"\xd9\x01a", DEFAULT_LIMITS, "non_canonical"),
        (b"\xda\x00\x01a", DEFAULT_LIMITS, "non_canonical"),
        (b"\xc5\x00\x01a", DEFAULT_LIMITS, "non_canonical"),
        (b"\xdc\x00\x01\x01", DEFAULT_LIMITS, "non_canonical"),
        (b"\xde\x00\x01\xa1a\x01", DEFAULT_LIMITS, "non_canonical"),
        (b"\x82\xa1b\x01\xa1a\x02", DEFAULT_LIMITS, "non_canonical"),
        (b"\x82\xa1a\x01\xa1a\x02", DEFAULT_LIMITS, "non_canonical"),
        (b"\x82\xc4\x01a\x01\xa1a\x02", DEFAULT_LIMITS, "non_canonical"),
        (b"\x81\x01\x02", DEFAULT_LIMITS, "malformed"),
        (b"\xa2\xc3\x28", DEFAULT_LIMITS, "invalid_utf8"),
        (b"\xa3\xed\xa0\x80", DEFAULT_LIMITS, "invalid_utf8"),
        (b"\x92\x01", DEFAULT_LIMITS, "malformed"),
        (b"\xc4\x05ab", DEFAULT_LIMITS, "malformed"),
        (b"\x01\x02", DEFAULT_LIMITS, "trailing_bytes"),
        (b"\x91" * 40 + b"\x01", DEFAULT_LIMITS, "too_deep"),
        (b"\x92\x91\x91\x01\x01", TIGHT, "too_deep"),
        (b"\x81\xa1a\x91\x01", TIGHT, "too_deep"),
        (b"\xa4abcd", TIGHT, "malformed"),
        (b"\x81\xa4abcd\x01", TIGHT, "malformed"),
        (b"\xc4\x04abcd", TIGHT, "malformed"),
        (b"\x94\x01\x02\x03\x04", TIGHT, "malformed"),
        (b"\x83\xa1a\x01\xa1b\x02\xa1c\x03", TIGHT, "malformed"),
        (b"\xc4\x10" + bytes(16), TIGHT, "too_large"),
    ],
)
def test_the_c_decoder_hands_back_every_input_the_python_decoder_refuses(
    data: bytes, limit: Limits, reason: str
) -> None:
    with pytest.raises(CodecError) as error:
        codec.decode(data, limit)
    assert error.value.reason == reason
    assert unpack(data, limit) is None


def test_limits_at_their_bound_are_taken() -> None:
    assert unpack(b"\xa3abc", TIGHT) == "abc"
    assert unpack(b"\x81\xa3abc\x01", TIGHT) == {"abc": 1}
    assert unpack(b"\xc4\x03abc", TIGHT) == b"abc"
    assert unpack(b"\x93\x01\x02\x03", TIGHT) == (1, 2, 3)
    assert unpack(b"\x82\xa1a\x01\xa1b\x02", TIGHT) == {"a": 1, "b": 2}
    assert unpack(b"\x91\x91\x01", Limits(depth_max=2)) == ((1,),)
    assert unpack(b"\x91\x91\x01", Limits(depth_max=1)) is None
    assert unpack(b"\xc4\x0e" + bytes(14), Limits(total_bytes_max=16)) == bytes(14)
    assert unpack(b"\xc4\x0f" + bytes(15), Limits(total_bytes_max=16)) is None


def test_every_scalar_format_at_its_bounds_is_decoded() -> None:
    numbers = [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
    numbers += [-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)]
    texts: list[object] = ["", "a" * 31, "a" * 32, "a" * 255, "a" * 256, "é" * 40000, "€"]
    texts += [b"", b"\x00" * 255, b"\x01" * 256, b"\xff" * 65536, True, False]
    shapes: list[object] = [(), tuple(range(16)), tuple(range(65536)), {}]
    shapes += [{f"{index:03}": index for index in range(16)}]
    shapes += [{index.to_bytes(3, "big"): index for index in range(65536)}]
    large = Limits(str_bytes_max=1 << 20, map_len_max=1 << 17)
    for value in [*numbers, *texts, *shapes]:
        data = codec.encode(value, large)  # type: ignore[arg-type]
        assert same_value(unpack(data, large), value), repr(value)[:40]


def test_a_map_key_is_interned_as_msgpack_interns_it() -> None:
    key = "".join(["field", "_name", "_not_a_literal"])
    decoded = unpack(codec.encode({key: 1}), DEFAULT_LIMITS)
    assert isinstance(decoded, dict)
    [decoded_key] = decoded
    assert decoded_key is sys.intern(key)


def test_nesting_past_the_c_decoders_depth_goes_to_python() -> None:
    deep = b"\x91" * (NEST_MAX + 1) + b"\x01"
    limit = Limits(depth_max=NEST_MAX + 5)
    assert unpack(deep, limit) is None
    assert codec.decode(deep, limit) is not None
    assert unpack(b"\x91" * NEST_MAX + b"\x01", limit) is not None


def test_a_count_larger_than_the_bytes_left_allocates_nothing() -> None:
    # An array of 2**32 - 1 elements and a map of as many entries, in six bytes: handed back
    # before anything is allocated for them.
    assert unpack(b"\xdd\xff\xff\xff\xff\x01", Limits(array_len_max=2**40)) is None
    assert unpack(b"\xdf\xff\xff\xff\xff\x01", Limits(map_len_max=2**40)) is None
    assert unpack(b"\xdb\xff\xff\xff\xff", Limits(str_bytes_max=2**40)) is None
    assert unpack(b"\xc6\xff\xff\xff\xff", Limits(bytes_max=2**40)) is None


def test_only_exact_bytes_are_decoded_in_c() -> None:
    assert native.unpack(bytearray(b"\x92\x01\x02"), 99, 9, 9, 9, 9, 9) is None
    assert native.unpack(b"\x92\x01\x02", 99, 9, 9, 9, 9, 9) == (1, 2)
    assert codec.decode(bytearray(b"\x92\x01\x02")) == (1, 2)


def test_the_self_test_refuses_a_decoder_that_returns_other_values() -> None:
    def true_for_one(data: bytes, *bounds: int) -> object:
        value = native.unpack(data, *bounds)
        return True if value == 1 and type(value) is int else value

    def reordered(data: bytes, *bounds: int) -> object:
        value = native.unpack(data, *bounds)
        if type(value) is dict and len(value) > 1:
            return dict(reversed(list(value.items())))
        return value

    def takes_wide_ints(data: bytes, *bounds: int) -> object:
        return 127 if data == b"\xcc\x7f" else native.unpack(data, *bounds)

    def lists_for_arrays(data: bytes, *bounds: int) -> object:
        value = native.unpack(data, *bounds)
        return list(value) if type(value) is tuple else value

    def hands_everything_back(data: bytes, *bounds: int) -> object:
        return None

    assert codec._native_unpack_agrees(native.unpack)
    for wrong in (true_for_one, reordered, takes_wide_ints, lists_for_arrays):
        assert not codec._native_unpack_agrees(wrong), wrong.__name__
    assert codec._native_unpack_agrees(hands_everything_back)  # safe: Python decodes all


def test_same_value_tells_types_and_map_order_apart() -> None:
    assert same_value({"a": (1, b"x")}, {"a": (1, b"x")})
    assert not same_value(1, True)
    assert not same_value((1,), [1])
    assert not same_value({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not same_value({"a": (1,)}, {"a": (True,)})
    assert not same_value((1, 2), (1,))


def test_wrong_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        native.unpack(b"\x01")
    with pytest.raises(ValueError, match="positive"):
        native.unpack(b"\x01", 0, 1, 1, 1, 1, 1)


def test_without_the_decoder_the_python_decoder_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    class Old:
        pack = native.pack

    monkeypatch.setattr(importlib, "import_module", lambda name: Old)
    assert codec._load_native_unpack() == (
        None,
        "python (consensus._codec has no decoder: rebuild it)",
    )


def _random_value(rng: random.Random, depth: int) -> object:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([rng.randrange(-(2**63), 2**64), rng.randrange(-300, 70000)])
    if kind == 2:
        return "".join(rng.choice("aZ_é€\x00") for _ in range(rng.choice([0, 3, 31, 32, 40])))
    if kind == 3:
        return rng.randbytes(rng.choice([0, 1, 32, 64, 300]))
    if kind in (4, 5):
        return rng.randrange(2**32)
    if kind == 6:
        return tuple(_random_value(rng, depth + 1) for _ in range(rng.choice([0, 2, 15, 16])))
    return {
        rng.choice(["amount", "to", "k" * 33, "é", "", "zz"]) + str(index): _random_value(
            rng, depth + 1
        )
        for index in range(rng.choice([0, 1, 5, 16]))
    }


@pytest.mark.slow
def test_the_c_decoder_agrees_or_hands_back_on_two_million_changed_encodings() -> None:
    """The differential run at length: signed transactions of the demo mix and random values,
    encoded and then changed byte by byte, decoded under several limits (seed 0: the same
    inputs every run)."""
    from node.bench.execution import prepare_workload

    rng = random.Random(0)
    workload = prepare_workload("demo", 400, 100)
    seeds = [transaction for block in workload.blocks for transaction in block]
    seeds += [data for data, _ in codec._unpack_self_test_inputs()]
    seeds += [codec.encode(_random_value(rng, 0)) for _ in range(2000)]  # type: ignore[arg-type]
    limit_choices = [DEFAULT_LIMITS, codec._TIGHT, TIGHT, Limits(depth_max=3, map_len_max=5)]
    decoded_in_c = 0
    for _ in range(2_000_000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) + 1)
            kind = rng.randrange(4)
            if kind == 0 and at < len(data):
                data[at] = rng.randrange(256)
            elif kind == 1:
                del data[at : at + rng.randint(1, 4)]
            elif kind == 2:
                data.insert(at, rng.randrange(256))
            else:
                del data[at:]
        limit = rng.choice(limit_choices)
        if unpack(bytes(data), limit) is not None:
            decoded_in_c += 1
            agrees_or_hands_back(bytes(data), limit)
    assert decoded_in_c > 100_000  # the run reaches the decoder's acceptance often
