"""Signed API requests: every part of the signed content matters, replays and stale or
future timestamps are refused, and the replay cache stays bounded without forgetting a live
request."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.crypto import PrivateKey
from node.auth import (
    HEADER_KEY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIME,
    AuthenticationError,
    RequestVerifier,
    sign_request,
)

ALICE = PrivateKey(bytes(range(32)))
MALLORY = PrivateKey(bytes(range(1, 33)))
CHAIN = "auth-net"
NOW_MS = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now_ms = NOW_MS

    def __call__(self) -> int:
        return self.now_ms


def verifier(clock: Clock, **options: int) -> RequestVerifier:
    return RequestVerifier(CHAIN, clock_ms=clock, **options)


def signed(
    method: str = "POST",
    target: str = "/query",
    body: bytes = b"{}",
    *,
    key: PrivateKey = ALICE,
    chain: str = CHAIN,
    nonce: str | None = None,
) -> dict[str, str]:
    return sign_request(key, chain, method, target, body, time_ms=NOW_MS, nonce=nonce)


def test_a_signed_request_names_its_key_and_an_unsigned_one_is_anonymous() -> None:
    clock = Clock()
    check = verifier(clock)
    assert check.verify("POST", "/query", b"{}", signed()) == ALICE.public_key
    assert check.verify("GET", "/status", b"", {}) is None


@given(
    part=st.sampled_from(["method", "target", "body", "chain", "time", "nonce", "key"]),
)
def test_changing_any_signed_part_breaks_the_signature(part: str) -> None:
    clock = Clock()
    check = verifier(clock)
    headers = signed(nonce="00" * 8)
    method, target, body = "POST", "/query", b"{}"
    if part == "method":
        method = "PUT"
    elif part == "target":
        target = "/query?x=1"
    elif part == "body":
        body = b'{"app":"payments"}'
    elif part == "chain":
        headers = signed(chain="other-net", nonce="00" * 8)
    elif part == "time":
        headers[HEADER_TIME] = str(NOW_MS + 1)
    elif part == "nonce":
        headers[HEADER_NONCE] = "11" * 8
    elif part == "key":
        headers[HEADER_KEY] = MALLORY.public_key.hex()
    with pytest.raises(AuthenticationError) as refused:
        check.verify(method, target, body, headers)
    assert refused.value.reason == "bad_signature"
    assert refused.value.status == 401


def test_a_replayed_request_is_refused_and_a_fresh_nonce_is_not_a_replay() -> None:
    clock = Clock()
    check = verifier(clock)
    headers = signed()
    check.verify("POST", "/query", b"{}", headers)
    with pytest.raises(AuthenticationError) as replay:
        check.verify("POST", "/query", b"{}", headers)
    assert replay.value.reason == "replay"
    # The same request content with another nonce (same millisecond) is a new request.
    assert check.verify("POST", "/query", b"{}", signed()) == ALICE.public_key


def test_timestamps_outside_the_window_are_refused_on_both_sides() -> None:
    clock = Clock()
    check = verifier(clock, window_ms=30_000)
    headers = signed()
    clock.now_ms = NOW_MS + 30_001
    with pytest.raises(AuthenticationError, match="behind the node's clock") as stale:
        check.verify("POST", "/query", b"{}", headers)
    assert stale.value.reason == "stale"
    clock.now_ms = NOW_MS - 30_001
    with pytest.raises(AuthenticationError, match="ahead of the node's clock"):
        check.verify("POST", "/query", b"{}", signed())


def test_a_replay_after_the_window_is_refused_by_the_window_once_the_cache_forgot_it() -> None:
    clock = Clock()
    check = verifier(clock, window_ms=1_000)
    headers = signed()
    check.verify("POST", "/query", b"{}", headers)
    clock.now_ms = NOW_MS + 1_001
    fresh = sign_request(ALICE, CHAIN, "POST", "/query", b"{}", time_ms=clock.now_ms)
    check.verify("POST", "/query", b"{}", fresh)  # expires the old entry
    assert len(check) == 1
    with pytest.raises(AuthenticationError) as refused:
        check.verify("POST", "/query", b"{}", headers)
    assert refused.value.reason == "stale"


def test_a_full_replay_cache_refuses_instead_of_forgetting_a_live_request() -> None:
    clock = Clock()
    check = verifier(clock, entries_max=3)
    first = signed()
    check.verify("POST", "/query", b"{}", first)
    for _ in range(2):
        check.verify("POST", "/query", b"{}", signed())
    with pytest.raises(AuthenticationError) as full:
        check.verify("POST", "/query", b"{}", signed())
    assert full.value.status == 503
    assert full.value.reason == "cache_full"
    with pytest.raises(AuthenticationError) as replay:
        check.verify("POST", "/query", b"{}", first)
    assert replay.value.reason == "replay"


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        (HEADER_KEY, "zz", "suanpan-key must be 64 hex digits"),
        (HEADER_TIME, "-5", "suanpan-time-ms must be milliseconds"),
        (HEADER_TIME, "9" * 40, "suanpan-time-ms must be milliseconds"),
        # A digit to str.isdigit, not to int(): was a ValueError (500 over HTTP, where a raw
        # 0xB2 byte in the header reads as "²").
        (HEADER_TIME, "\u00b2", "suanpan-time-ms must be milliseconds"),
        (HEADER_NONCE, "short", "suanpan-nonce must be 16 hex digits"),
        (HEADER_SIGNATURE, "00", "suanpan-signature must be 128 hex digits"),
    ],
)
def test_malformed_headers_are_named(header: str, value: str, expected: str) -> None:
    check = verifier(Clock())
    headers = signed()
    headers[header] = value
    with pytest.raises(AuthenticationError, match=expected):
        check.verify("POST", "/query", b"{}", headers)


def test_a_partly_signed_request_names_the_missing_headers() -> None:
    check = verifier(Clock())
    headers = signed()
    del headers[HEADER_SIGNATURE]
    with pytest.raises(AuthenticationError, match="missing suanpan-signature"):
        check.verify("POST", "/query", b"{}", headers)
    assert check.refused == {"malformed": 1}
