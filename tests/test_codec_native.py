"""The encoder in C (``consensus/_codec.c``) against the codec's Python encoder.

For any value (valid or not, built-in or subclass) and any limits, the C encoder either writes
exactly the bytes the Python encoder writes, or hands the value back (None) so that the Python
encoder decides: it never writes bytes for a value the Python encoder refuses. It must also
handle every value of the exact built-in types within the limits (else it would save nothing),
and ``encode`` / ``decode`` give the same results with it and without it.
"""

from __future__ import annotations

import importlib
import logging
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import codec
from consensus.codec import INT_MAX, INT_MIN, CodecError, Limits, Value
from tests.test_codec_fast_path import limits, values

# How deep the C encoder goes before it hands a value back (``NEST_MAX`` in the C source).
NEST_MAX = 64

native = pytest.importorskip("consensus._codec")


def pack(value: object, limit: Limits) -> bytes | None:
    return codec._packed_natively(native.pack, value, limit)


# Values of the exact built-in types only, within ``plain_limits``: the C encoder handles all.
# Strings and bytes at each header's bounds come from fixed samples (cheap to draw, so no
# health check fires on a slow machine).
plain_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN, max_value=INT_MAX)
    | st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63])
    | st.sampled_from([-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1])
    | st.binary(max_size=40)
    | st.text(max_size=20)
    | st.sampled_from(["a" * 31, "a" * 32, "é" * 16, "b" * 255, "b" * 256, "c" * 65536])
    | st.sampled_from([b"\0" * 255, b"\1" * 256, b"\2" * 65536])
)
plain_values = st.recursive(
    plain_scalars,
    lambda children: (
        st.lists(children, max_size=18)
        | st.lists(children, max_size=18).map(tuple)
        | st.dictionaries(
            st.text(max_size=12) | st.binary(max_size=12) | st.sampled_from(["k" * 40]),
            children,
            max_size=18,
        )
    ),
    max_leaves=30,
)
plain_limits = Limits(depth_max=NEST_MAX)


@settings(max_examples=1000, deadline=None)
@given(values, limits)
def test_the_c_encoder_writes_the_python_bytes_or_hands_the_value_back(
    value: object, limit: Limits
) -> None:
    packed = pack(value, limit)
    if packed is None:
        return
    assert packed == codec._python_encoding(value, limit)


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plain_values)
def test_the_c_encoder_handles_every_plain_value(value: object) -> None:
    expected = codec._python_encoding(value, plain_limits)
    assert expected is not None
    assert pack(value, plain_limits) == expected


@pytest.mark.parametrize(
    ("limit", "value"),
    [
        (Limits(total_bytes_max=4), "abcd"),  # 5 bytes packed
        (Limits(depth_max=1), [[1]]),
        (Limits(depth_max=1), {"a": {"b": 1}}),
        (Limits(str_bytes_max=3), "abcd"),
        (Limits(str_bytes_max=3), "é" * 2),  # 4 bytes of UTF-8 in 2 characters
        (Limits(str_bytes_max=3), {"abcd": 1}),
        (Limits(bytes_max=3), b"abcd"),
        (Limits(bytes_max=3), {b"abcd": 1}),
        (Limits(array_len_max=3), [1, 2, 3, 4]),
        (Limits(map_len_max=2), {"a": 1, "b": 2, "c": 3}),
        (Limits(), INT_MAX + 1),
        (Limits(), INT_MIN - 1),
        (Limits(), 1.0),
        (Limits(), chr(0xD800)),
        (Limits(), {1: 2}),
        (Limits(), [object()]),
    ],
)
def test_the_c_encoder_hands_back_every_value_the_python_encoder_refuses(
    limit: Limits, value: object
) -> None:
    with pytest.raises((CodecError, UnicodeError)):
        codec.encode(value, limit)  # type: ignore[arg-type]
    assert pack(value, limit) is None


def test_limits_at_their_bound_are_taken() -> None:
    limit = Limits(total_bytes_max=5, depth_max=1, str_bytes_max=4, map_len_max=1)
    assert pack("abcd", limit) == b"\xa4abcd"
    assert pack({"a": 1}, limit) == b"\x81\xa1a\x01"
    assert pack([[]], Limits(depth_max=1)) == b"\x91\x90"


def test_maps_come_out_in_canonical_order_whatever_their_insertion_order() -> None:
    # Packed keys sort by header first: fixstr (0xa0-0xbf) before bin 8 (0xc4) and str 8 (0xd9).
    value = {"b" * 40: 4, b"a": 3, "b": 2, "a": 1, "": 0}
    assert pack(value, Limits()) == codec._python_encoding(value, Limits())
    assert pack(value, Limits()) == (
        b"\x85\xa0\x00\xa1a\x01\xa1b\x02\xc4\x01a\x03\xd9\x28" + b"b" * 40 + b"\x04"
    )


def test_a_large_map_is_sorted_like_a_small_one() -> None:
    value = {f"k{index:04}": index for index in reversed(range(100))}
    assert pack(value, Limits()) == codec._python_encoding(value, Limits())


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plain_values)
def test_encode_and_decode_agree_with_and_without_the_c_encoder(value: object) -> None:
    assert codec.encoder_status() == "native"
    encoded = codec.encode(value, plain_limits)  # type: ignore[arg-type]
    decoded = codec.decode(encoded, plain_limits)
    saved = codec._NATIVE_PACK
    codec._NATIVE_PACK = None
    try:
        assert codec.encode(value, plain_limits) == encoded  # type: ignore[arg-type]
        assert codec.decode(encoded, plain_limits) == decoded
    finally:
        codec._NATIVE_PACK = saved


def test_decode_still_refuses_a_map_out_of_order_with_the_c_encoder() -> None:
    out_of_order = b"\x82\xa1b\x01\xa1a\x02"
    with pytest.raises(CodecError) as error:
        codec.decode(out_of_order)
    assert error.value.reason == "non_canonical"


def test_the_self_test_refuses_an_encoder_that_writes_other_bytes() -> None:
    def wrong(value: object, *bounds: int) -> bytes | None:
        packed = pack(value, Limits(*bounds))
        return None if packed is None or packed != b"\x90" else b"\xdc\x00\x00"

    def refuses_nothing(value: object, *bounds: int) -> bytes | None:
        return b"\xc0"

    def hands_everything_back(value: object, *bounds: int) -> bytes | None:
        return None

    assert codec._native_agrees(native.pack)
    assert not codec._native_agrees(wrong)
    assert not codec._native_agrees(refuses_nothing)
    assert codec._native_agrees(hands_everything_back)  # safe: Python encodes everything


@pytest.mark.parametrize("loader", ["_load_native_pack", "_load_native_unpack"])
def test_without_the_extension_the_python_encoder_and_decoder_run(
    monkeypatch: pytest.MonkeyPatch, loader: str
) -> None:
    monkeypatch.delitem(sys.modules, "consensus._codec")
    real_import = importlib.import_module

    def refuse(name: str, package: str | None = None) -> object:
        if name == "consensus._codec":
            raise ImportError("not built", name=name)
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", refuse)
    loaded, status = getattr(codec, loader)()
    assert loaded is None
    assert status == "python (consensus._codec is not available: not built)"


def test_wrong_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        native.pack(1)
    with pytest.raises(ValueError, match="positive"):
        native.pack(1, 0, 1, 1, 1, 1, 1)


def test_a_value_is_a_value_either_way() -> None:
    record: dict[str, Value] = {"id": 7, "to": b"\x01" * 32, "note": "ok", "items": (1, -1)}
    assert codec.decode(codec.encode(record)) == {**record}


@pytest.mark.parametrize(
    ("reporter", "status", "event", "reason"),
    [
        (
            "codec_encoder_status",
            "encoder_status",
            "codec_encoder_native_unavailable",
            "python (consensus._codec failed its self-test)",
        ),
        (
            "codec_decoder_status",
            "decoder_status",
            "codec_decoder_native_unavailable",
            "python (consensus._codec's decoder failed its self-test)",
        ),
    ],
)
def test_a_node_says_why_values_are_encoded_or_decoded_in_python(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    reporter: str,
    status: str,
    event: str,
    reason: str,
) -> None:
    import node.native

    report = getattr(node.native, reporter)
    with caplog.at_level(logging.WARNING, logger="suanpan.native"):
        assert report() == "native"
    assert not [r for r in caplog.records if r.msg == event]
    monkeypatch.setattr(codec, status, lambda: reason)
    with caplog.at_level(logging.WARNING, logger="suanpan.native"):
        assert report() == reason
    [record] = [r for r in caplog.records if r.msg == event]
    assert record.status == reason  # type: ignore[attr-defined]
