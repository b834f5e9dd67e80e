"""Numbers read from outside text (``node.digits``): ASCII digits only, bounded before ``int``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.digits import decimal_value, is_decimal


@pytest.mark.parametrize(
    ("text", "digits_max", "value"),
    [
        ("0", 1, 0),
        ("000", 1, 0),
        ("65535", 5, 65535),
        ("0065535", 5, 65535),
        ("100000", 5, None),
        ("", 5, None),
        ("²", 5, None),
        ("٣", 5, None),
        ("1²", 5, None),
        ("-1", 5, None),
        ("+1", 5, None),
        (" 1", 5, None),
        ("1_000", 5, None),
        ("0x10", 5, None),
        ("9" * 5000, 19, None),
        ("0" * 5000 + "7", 19, 7),
    ],
)
def test_decimal_value_reads_ascii_digits_within_the_bound(
    text: str, digits_max: int, value: int | None
) -> None:
    assert decimal_value(text, digits_max) == value


@given(text=st.text(max_size=30), digits_max=st.integers(1, 25))
def test_decimal_value_never_raises_and_agrees_with_int_on_what_it_takes(
    text: str, digits_max: int
) -> None:
    value = decimal_value(text, digits_max)
    if value is None:
        assert not is_decimal(text) or len(text.lstrip("0")) > digits_max
    else:
        assert is_decimal(text)
        assert value == int(text)
        assert value < 10**digits_max


@given(number=st.integers(0, 10**30), zeros=st.integers(0, 5))
def test_every_number_written_in_ascii_reads_back(number: int, zeros: int) -> None:
    text = "0" * zeros + str(number)
    expected = number if len(str(number)) <= 20 else None
    assert decimal_value(text, 20) == expected
