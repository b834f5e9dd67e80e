"""State keys with a number at the end, built from their collection's prefix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps._records import key, numbered_key, prefix

_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)
_SEGMENTS = st.lists(st.one_of(_NAMES, st.binary(min_size=1, max_size=33)), min_size=1, max_size=3)
_NUMBERS = st.integers(min_value=0, max_value=2**64 - 1)


@given(_SEGMENTS, _NUMBERS)
def test_a_numbered_key_is_the_key_with_the_number_as_its_last_segment(
    segments: list[str | bytes], number: int
) -> None:
    assert numbered_key(prefix(*segments), number) == key(*segments, number)


@given(_NUMBERS, _NUMBERS)
def test_numbered_keys_of_one_collection_sort_as_their_numbers(first: int, second: int) -> None:
    collection = prefix("hist", b"\x07" * 32)
    assert (numbered_key(collection, first) < numbered_key(collection, second)) == (first < second)


def test_a_numbered_key_needs_a_collection_prefix_and_a_number_in_range() -> None:
    with pytest.raises(AssertionError):
        numbered_key(key("pay"), 1)  # not a prefix: no "/" at the end
    with pytest.raises(AssertionError):
        numbered_key(prefix("pay"), -1)
    with pytest.raises(AssertionError):
        numbered_key(prefix("pay"), 2**64)
