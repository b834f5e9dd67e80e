"""State keys (``apps._records.key``) are memoised for segments of names and public keys: the
memo must give exactly the key the segments build, and the same refusal for segments no key
may have, whatever was memoised before (``(1,)`` equals ``(True,)`` as a tuple)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps import _records

SEGMENT = st.one_of(
    st.sampled_from(["bal", "cur", "ctl", "USD", "e2e"]),
    st.text(alphabet="abcXYZ019_.:-", min_size=1, max_size=8),
    st.binary(min_size=0, max_size=33),
    st.integers(0, 2**64 - 1),
    st.booleans(),
    st.just(1.0),
    st.just(bytearray(b"ab")),
)


def built(segments: tuple[object, ...]) -> object:
    try:
        return _records._build_key(segments)  # type: ignore[arg-type]
    except TypeError as error:
        return ("TypeError", str(error))


def memoised(segments: tuple[object, ...]) -> object:
    try:
        return _records.key(*segments)  # type: ignore[arg-type]
    except TypeError as error:
        return ("TypeError", str(error))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(SEGMENT, min_size=1, max_size=4).map(tuple), min_size=1, max_size=8))
def test_memoised_keys_are_the_keys_the_segments_build(calls: list[tuple[object, ...]]) -> None:
    """Twice each: the first call may remember the key, the second may take it from the memo."""
    for segments in calls:
        expected = built(segments)
        assert memoised(segments) == expected
        assert memoised(segments) == expected


def test_a_bool_or_float_segment_is_refused_after_the_equal_int_key_was_built() -> None:
    assert _records.key("seq", 1) == b"seq/0000000000000001"
    for bad in (True, 1.0):
        with pytest.raises(TypeError, match="cannot be a"):
            _records.key("seq", bad)  # type: ignore[arg-type]


def test_the_memo_stays_bounded() -> None:
    for index in range(_records._KEYS_MAX + 10):
        _records.key("e2e", f"id{index}")
    assert len(_records._KEYS) <= _records._KEYS_MAX
    assert _records.key("e2e", "id5") == b"e2e/id5"
