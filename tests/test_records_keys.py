"""State keys with a number at the end, built from their collection's prefix; the check
that a party is an active member."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps._records import active_identity, key, numbered_key, prefix, require_active
from apps.base import AppError, TxContext
from consensus.codec import Value

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


class _Answering:
    """A transaction context whose membership answers every identity query with ``answer``
    and every institution query with ``institution``."""

    def __init__(self, answer: Value, institution: Value) -> None:
        self.answer = answer
        self.institution = institution

    def query(self, app: str, path: str, arguments: Mapping[str, Value]) -> Value:
        assert app == "membership"
        assert path in ("identity", "institution"), path
        return self.answer if path == "identity" else self.institution


_STATUSES = st.sampled_from(["active", "suspended", "", "Active", 1, None, b"active"])
_ANSWERS = st.one_of(
    st.none(),
    st.builds(
        lambda status, institution: {"status": status, "institution": institution},
        _STATUSES,
        st.sampled_from(["lion-bank", 3]),
    ),
    st.just({"institution": "lion-bank"}),
    st.sampled_from([(), "active", 7]),
)
_INSTITUTIONS = st.one_of(
    st.none(),
    st.builds(lambda status: {"id": "lion-bank", "status": status}, _STATUSES),
    st.sampled_from([(), "active"]),
)


def _outcome(
    check: Callable[[TxContext, bytes, str], object], answer: Value, institution: Value
) -> str:
    try:
        check(cast(TxContext, _Answering(answer, institution)), b"\x05" * 32, "beneficiary")
    except AppError as error:
        return f"{error.code}: {error.message}"
    return "ok"


@given(_ANSWERS, _INSTITUTIONS)
def test_require_active_refuses_exactly_as_active_identity_does(
    answer: Value, institution: Value
) -> None:
    """Both accept exactly an active identity of an active institution."""
    expected = _outcome(active_identity, answer, institution)
    assert _outcome(require_active, answer, institution) == expected
    active = (
        isinstance(answer, dict)
        and cast(dict[str, Value], answer).get("status") == "active"
        and isinstance(institution, dict)
        and cast(dict[str, Value], institution).get("status") == "active"
    )
    assert (expected == "ok") == active
