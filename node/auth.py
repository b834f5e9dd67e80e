"""Signed API requests: who is asking, proven with the caller's ed25519 key.

Theory of operation
-------------------
A client signs each request with the key it already uses for transactions. Four headers carry
the proof:

=================== =====================================================================
``suanpan-key``       the caller's public key (64 hex digits)
``suanpan-time-ms``   the caller's clock, milliseconds since the epoch
``suanpan-nonce``     16 random hex digits (two identical requests in one millisecond differ)
``suanpan-signature`` 128 hex digits: the key's signature (below)
=================== =====================================================================

The signature covers ``consensus.crypto.signing_bytes(API_REQUEST_TAG, chain_id, payload)``
where ``payload`` is the canonical encoding of ``(method, target, SHA-256(body), time_ms,
nonce)``: the method in capitals, the request target exactly as sent (path and query, still
percent-encoded), the body's hash. The domain tag and the chain id mean a request signature
can never pass as a vote, a transaction or a request to another chain, and no signature of
another kind passes as a request.

``RequestVerifier`` accepts a request when the signature verifies, the timestamp is within
``window_ms`` of the node's clock (either side), and the exact signed content has not been seen
before inside that window: a **replay cache** keyed by the SHA-256 of everything signed
(signing bytes and key) remembers each accepted request until its timestamp leaves the window,
after which the window check alone refuses it. The cache is bounded (``entries_max``); when it
is full of live entries, new signed requests are refused with 503 rather than evicting an entry
that could then be replayed (per-key rate limits keep one caller from filling it).

A request without the headers is *anonymous*; whether that is enough is for the read rules
(``node.access``) to say. A request with some but not all headers, malformed values, a stale
timestamp, a replay or a bad signature is refused with 401 and the reason.
"""

from __future__ import annotations

import heapq
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from consensus.codec import encode
from consensus.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, PrivateKey, hash_bytes, verify
from node.digits import decimal_value

__all__ = [
    "API_REQUEST_TAG",
    "HEADER_KEY",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_TIME",
    "AuthenticationError",
    "RequestVerifier",
    "request_payload",
    "sign_request",
]

API_REQUEST_TAG: Final = b"suanpan/api-request/v1"
HEADER_KEY: Final = "suanpan-key"
HEADER_TIME: Final = "suanpan-time-ms"
HEADER_NONCE: Final = "suanpan-nonce"
HEADER_SIGNATURE: Final = "suanpan-signature"
_HEADERS: Final = (HEADER_KEY, HEADER_TIME, HEADER_NONCE, HEADER_SIGNATURE)
_HEX_KEY: Final = re.compile(r"[0-9a-f]{64}")
_HEX_SIGNATURE: Final = re.compile(r"[0-9a-f]{128}")
_NONCE: Final = re.compile(r"[0-9a-f]{16}")
# A timestamp is a few digits more than today's milliseconds; refuse absurd lengths up front.
_TIME_DIGITS_MAX: Final = 16
_NONCE_BYTES: Final = 8


class AuthenticationError(Exception):
    """A signed request the node refuses: ``reason`` (``malformed``, ``stale``,
    ``bad_signature``, ``replay``, ``cache_full``), ``status`` (401, or 503 when the replay cache
    is full) and a message naming the problem."""

    def __init__(self, reason: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


def request_payload(method: str, target: str, body: bytes, time_ms: int, nonce: str) -> bytes:
    """The canonical bytes a request signature covers (before the domain tag and chain id)."""
    return encode((method.upper(), target, hash_bytes(body), time_ms, nonce))


def sign_request(
    key: PrivateKey,
    chain_id: str,
    method: str,
    target: str,
    body: bytes,
    *,
    time_ms: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four headers that sign one request with ``key`` for ``chain_id``."""
    if time_ms is None:
        time_ms = int(time.time() * 1000)
    if nonce is None:
        nonce = os.urandom(_NONCE_BYTES).hex()
    payload = request_payload(method, target, body, time_ms, nonce)
    signature = key.sign(API_REQUEST_TAG, chain_id, payload)
    return {
        HEADER_KEY: key.public_key.hex(),
        HEADER_TIME: str(time_ms),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: signature.hex(),
    }


@dataclass(frozen=True, slots=True)
class _Signed:
    key: bytes
    time_ms: int
    nonce: str
    signature: bytes


def _parse(headers: Mapping[str, str]) -> _Signed | None:
    present = [name for name in _HEADERS if name in headers]
    if not present:
        return None
    missing = [name for name in _HEADERS if name not in headers]
    if missing:
        raise AuthenticationError(
            "malformed",
            f"a signed request needs all of {', '.join(_HEADERS)}; missing {', '.join(missing)}",
        )
    key_text = headers[HEADER_KEY].strip().lower()
    if not _HEX_KEY.fullmatch(key_text):
        raise AuthenticationError(
            "malformed", f"{HEADER_KEY} must be {2 * PUBLIC_KEY_BYTES} hex digits"
        )
    time_text = headers[HEADER_TIME].strip()
    sent_ms = decimal_value(time_text, _TIME_DIGITS_MAX)
    if sent_ms is None:
        raise AuthenticationError(
            "malformed", f"{HEADER_TIME} must be milliseconds since the epoch"
        )
    nonce = headers[HEADER_NONCE].strip().lower()
    if not _NONCE.fullmatch(nonce):
        raise AuthenticationError(
            "malformed", f"{HEADER_NONCE} must be {2 * _NONCE_BYTES} hex digits"
        )
    signature_text = headers[HEADER_SIGNATURE].strip().lower()
    if not _HEX_SIGNATURE.fullmatch(signature_text):
        raise AuthenticationError(
            "malformed", f"{HEADER_SIGNATURE} must be {2 * SIGNATURE_BYTES} hex digits"
        )
    return _Signed(bytes.fromhex(key_text), sent_ms, nonce, bytes.fromhex(signature_text))


class RequestVerifier:
    """Checks request signatures for one chain, with a bounded replay cache (module docstring)."""

    def __init__(
        self,
        chain_id: str,
        *,
        window_ms: int = 30_000,
        entries_max: int = 200_000,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.window_ms = window_ms
        self.entries_max = entries_max
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._seen: set[bytes] = set()
        self._expiries: list[tuple[int, bytes]] = []
        self.refused: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def verify(
        self, method: str, target: str, body: bytes, headers: Mapping[str, str]
    ) -> bytes | None:
        """The caller's public key for a correctly signed request, None for an unsigned one;
        raises ``AuthenticationError`` naming the problem otherwise."""
        try:
            signed = _parse(headers)
            if signed is None:
                return None
            return self._check(method, target, body, signed)
        except AuthenticationError as error:
            self.refused[error.reason] = self.refused.get(error.reason, 0) + 1
            raise

    def _check(self, method: str, target: str, body: bytes, signed: _Signed) -> bytes:
        now_ms = self._clock_ms()
        self._expire(now_ms)
        skew_ms = signed.time_ms - now_ms
        if abs(skew_ms) > self.window_ms:
            raise AuthenticationError(
                "stale",
                f"request time is {abs(skew_ms)} ms {'ahead of' if skew_ms > 0 else 'behind'}"
                f" the node's clock (at most {self.window_ms} ms); check the client's clock",
            )
        payload = request_payload(method, target, body, signed.time_ms, signed.nonce)
        if not verify(signed.key, API_REQUEST_TAG, self.chain_id, payload, signed.signature):
            raise AuthenticationError(
                "bad_signature",
                f"request signature does not verify for key {signed.key.hex()[:16]}... on chain"
                f" {self.chain_id!r} (signed: method, target, body hash, time, nonce)",
            )
        digest = hash_bytes(signed.key + signed.signature + payload)
        if digest in self._seen:
            raise AuthenticationError(
                "replay", "replayed request: this exact signed request was seen"
            )
        if len(self._seen) >= self.entries_max:
            raise AuthenticationError(
                "cache_full",
                "replay cache full: too many signed requests in the window; retry shortly",
                503,
            )
        self._seen.add(digest)
        heapq.heappush(self._expiries, (signed.time_ms + self.window_ms, digest))
        return signed.key

    def _expire(self, now_ms: int) -> None:
        """Forget requests whose timestamps left the window (the window check refuses them)."""
        while self._expiries and self._expiries[0][0] < now_ms:
            _, digest = heapq.heappop(self._expiries)
            self._seen.discard(digest)
