"""The memos of ``apps._records`` change speed, never a result.

State keys (``key``) are memoised for segments of names and public keys: the memo must give
exactly the key the segments build, and the same refusal for segments no key may have, whatever
was memoised before (``(1,)`` equals ``(True,)`` as a tuple). Decoded records (``get_record``)
are memoised by their bytes: every read must equal a fresh decode, and no reader may see what
another reader did to its copy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps import _records
from apps.state import MemoryBackend, NamespacedState, StateOverlay
from consensus.codec import Value, decode

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
    with pytest.raises(TypeError, match="cannot be a bool"):
        _records.key("seq", True)
    with pytest.raises(TypeError):  # (the compiled module refuses it at the call already)
        _records.key("seq", 1.0)  # type: ignore[arg-type]


def test_the_memo_stays_bounded() -> None:
    for index in range(_records._KEYS_MAX + 10):
        _records.key("e2e", f"id{index}")
    assert len(_records._KEYS) <= _records._KEYS_MAX
    assert _records.key("e2e", "id5") == b"e2e/id5"


RECORD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.lists(st.integers(0, 9), max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2),
)
RECORDS = st.dictionaries(st.text(max_size=6), RECORD_VALUES, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(RECORDS, min_size=1, max_size=6), st.lists(st.integers(0, 5), max_size=12))
def test_memoised_records_read_as_decoded_and_changing_a_copy_changes_nothing(
    records: list[dict[str, Value]], reads: list[int]
) -> None:
    """Records stored and read again (each read may come from the memo): every read equals a
    fresh decode of the stored bytes, in the same key order, and a reader that changes what
    it got (as apps do before storing it back) never changes what the next reader gets."""
    state = NamespacedState(StateOverlay(MemoryBackend()), "app", writable=True)
    for index, record in enumerate(records):
        _records.put_record(state, _records.key("r", index), record)
    for read in [*range(len(records)), *reads]:
        index = read % len(records)
        data = state.get(_records.key("r", index))
        assert data is not None
        expected = decode(data, _records.STATE_LIMITS)
        got = _records.get_record(state, _records.key("r", index))
        assert got is not None
        assert list(got.items()) == list(expected.items())  # type: ignore[union-attr]
        got["scribbled"] = True
        for field in list(got):
            if isinstance(got[field], dict):
                got[field]["scribbled"] = 1  # type: ignore[index, call-overload]


def test_the_record_memo_stays_bounded() -> None:
    state = NamespacedState(StateOverlay(MemoryBackend()), "app", writable=True)
    for index in range(_records._RECORDS_MAX + 10):
        _records.put_record(state, b"r", {"n": index})
        assert _records.get_record(state, b"r") == {"n": index}
    assert len(_records._RECORDS) <= _records._RECORDS_MAX


class _DictState:
    """A state that is not the host's ``NamespacedState`` (as an app's own test may use)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), RECORDS, st.integers(-5, 5)), max_size=12))
def test_the_helpers_read_and_write_any_state_as_the_hosts(
    steps: list[tuple[int, dict[str, Value], int]],
) -> None:
    """``get_record``/``put_record``/``get_int``/``put_int`` call the host's state directly and
    any other through its methods: the same steps give the same reads and the same bytes."""
    host = NamespacedState(StateOverlay(MemoryBackend()), "app", writable=True)
    other = _DictState()
    for index, record, number in steps:
        for state in (host, other):
            _records.put_record(state, _records.key("r", index), record)  # type: ignore[arg-type]
            _records.put_int(state, _records.key("n", index), number)  # type: ignore[arg-type]
        for name in ("r", "n"):
            assert host.get(_records.key(name, index)) == other.get(_records.key(name, index))
        assert _records.get_record(host, _records.key("r", index)) == _records.get_record(
            other,  # type: ignore[arg-type]
            _records.key("r", index),
        )
        assert _records.get_int(host, _records.key("n", index)) == _records.get_int(
            other,  # type: ignore[arg-type]
            _records.key("n", index),
        )
