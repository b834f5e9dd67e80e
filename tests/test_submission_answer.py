"""The msgpack answer to ``POST /txs`` (``node.submission``): what the node encodes reads back
the same, a refused tail expands to one refusal per transaction, and a malformed answer is
refused naming its problem."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.submission import (
    Rejection,
    SubmissionAnswer,
    SubmissionError,
    decode_answer,
    encode_answer,
)


@st.composite
def answers(draw: st.DrawFn) -> SubmissionAnswer:
    count = draw(st.integers(1, 40))
    tail = draw(st.one_of(st.none(), st.integers(0, count - 1)))
    listed_below = count if tail is None else tail
    indices = sorted(draw(st.sets(st.integers(0, listed_below - 1))) if listed_below else set())
    rejected = tuple(
        Rejection(
            index,
            draw(st.one_of(st.none(), st.binary(min_size=32, max_size=32))),
            draw(st.sampled_from(["full", "nonce_gap", "signature", "behind_refused"])),
            draw(st.text(max_size=20)),
            draw(st.booleans()),
            draw(st.integers(0, 10_000)),
        )
        for index in indices
    )
    refusal = None
    if tail is not None:
        refusal = Rejection(tail, None, "full", "at capacity", True, draw(st.integers(0, 5000)))
    refused = len(rejected) + (0 if tail is None else count - tail)
    return SubmissionAnswer(count, count - refused, rejected, tail, refusal)


@given(answers())
def test_an_answer_reads_back_as_encoded(answer: SubmissionAnswer) -> None:
    assert decode_answer(encode_answer(answer), answer.count) == answer
    expanded = answer.rejections()
    assert len(expanded) == answer.count - answer.accepted
    assert [item.index for item in expanded] == sorted({item.index for item in expanded})
    if answer.refused_from is not None:
        tail = expanded[len(answer.rejected) :]
        assert [item.index for item in tail] == list(range(answer.refused_from, answer.count))
        assert all(item.code == "full" and item.hash is None for item in tail)


def _item(index: int, **changes: object) -> dict[str, object]:
    item: dict[str, object] = {
        "index": index,
        "hash": None,
        "code": "full",
        "error": "e",
        "retry": True,
        "retry_after_ms": 5,
    }
    item.update(changes)
    return item


_REFUSAL = {"code": "full", "error": "e", "retry": True, "retry_after_ms": 5}


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ([1, 2], "must be a msgpack map"),
        ({"rejected": []}, "accepted must be an integer"),
        ({"accepted": 4, "rejected": []}, "accepted must be an integer in 0..3"),
        ({"accepted": True, "rejected": []}, "accepted must be an integer"),
        ({"accepted": 3}, "rejected must be an array"),
        ({"accepted": 2, "rejected": [7]}, "rejected[0] must be a map"),
        ({"accepted": 2, "rejected": [_item(3)]}, "rejected[0].index must be an integer"),
        ({"accepted": 2, "rejected": [_item(0, hash="ab")]}, "hash must be bin or nil"),
        ({"accepted": 2, "rejected": [_item(0, code=1)]}, "code and error strings"),
        ({"accepted": 2, "rejected": [_item(0, retry=1)]}, "retry must be true or false"),
        ({"accepted": 2, "rejected": [_item(0, retry_after_ms="5")]}, "must be an integer"),
        ({"accepted": 1, "rejected": [_item(1), _item(0)]}, "indices must increase"),
        ({"accepted": 1, "rejected": [_item(1), _item(1)]}, "indices must increase"),
        ({"accepted": 2, "rejected": []}, "accounts for 2 transactions; the batch held 3"),
        (
            {"accepted": 1, "rejected": [_item(2)], "refused_from": 2, "refusal": _REFUSAL},
            "overlaps its refused tail",
        ),
        ({"accepted": 0, "rejected": [], "refused_from": 0}, "refusal must be a map"),
        (
            {"accepted": 0, "rejected": [], "refused_from": 3, "refusal": _REFUSAL},
            "refused_from must be an integer in 0..2",
        ),
    ],
)
def test_a_malformed_answer_is_named(document: object, named: str) -> None:
    with pytest.raises(SubmissionError, match=named.replace("[", r"\[").replace(".", r"\.")):
        decode_answer(msgpack.packb(document, use_bin_type=True), 3)


def test_bytes_that_are_not_msgpack_are_named() -> None:
    with pytest.raises(SubmissionError, match="not valid msgpack"):
        decode_answer(b"\xc1", 3)
    with pytest.raises(SubmissionError, match="not valid msgpack"):
        decode_answer(msgpack.packb({"accepted": 0}) + b"\x00", 3)
