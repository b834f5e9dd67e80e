"""The plaintext inside one encrypted frame: a type byte, then a type-specific body.

=========  ====  ==========================================================================
type       byte  body
=========  ====  ==========================================================================
Ping       0x01  empty; keeps an idle connection alive
Gossip     0x02  msgpack array of transaction byte strings (a batch)
Message    0x03  kind (1 byte, chosen by the node) || payload (opaque bytes)
Request    0x04  request id (8 bytes, big-endian) || payload
Response   0x05  request id (8 bytes) || status (1 byte) || payload
Announce   0x06  SHA-256 hashes of transactions the sender has (32 bytes each)
Fetch      0x07  hashes of announced transactions the sender wants (answered with Gossip)
=========  ====  ==========================================================================

The layer never looks inside payloads or transactions: meaning belongs to the node. Every
length is bounded by ``NetworkLimits`` and checked during decoding (msgpack is given the same
limits, so it never allocates beyond them); anything else is a ``MessageError``.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgpack

from network.errors import MessageError
from network.limits import NetworkLimits

__all__ = [
    "GOSSIP_FRAME_TYPES",
    "HASH_BYTES",
    "KIND_MAX",
    "Announce",
    "Fetch",
    "Gossip",
    "Message",
    "NetworkMessage",
    "Ping",
    "Request",
    "Response",
    "ResponseStatus",
    "decode_message",
    "encode_announce",
    "encode_fetch",
    "encode_gossip",
    "encode_message",
    "encode_ping",
    "encode_request",
    "encode_response",
]

KIND_MAX: Final = 255
_TYPE_PING: Final = 0x01
_TYPE_GOSSIP: Final = 0x02
_TYPE_MESSAGE: Final = 0x03
_TYPE_REQUEST: Final = 0x04
_TYPE_RESPONSE: Final = 0x05
_TYPE_ANNOUNCE: Final = 0x06
_TYPE_FETCH: Final = 0x07
HASH_BYTES: Final = 32
# First bytes of the frames that carry transaction gossip (for CPU accounting by traffic kind).
GOSSIP_FRAME_TYPES: Final = frozenset({_TYPE_GOSSIP, _TYPE_ANNOUNCE, _TYPE_FETCH})
_REQUEST_HEADER: Final = struct.Struct(">BQ")
_RESPONSE_HEADER: Final = struct.Struct(">BQB")


class ResponseStatus(enum.IntEnum):
    """How a request ended at the server."""

    OK = 0
    ERROR = 1  # the handler raised; payload is a UTF-8 reason
    BUSY = 2  # too many requests from us in flight at the server


@dataclass(frozen=True, slots=True)
class Ping:
    """Keep-alive."""


@dataclass(frozen=True, slots=True)
class Gossip:
    """A batch of gossiped transactions (opaque byte strings)."""

    transactions: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Message:
    """A consensus (or other node-level) message of a node-chosen ``kind``."""

    kind: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Request:
    """A request (block sync) expecting one ``Response`` with the same id."""

    request_id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to ``Request`` ``request_id``."""

    request_id: int
    status: ResponseStatus
    payload: bytes


@dataclass(frozen=True, slots=True)
class Announce:
    """Hashes of transactions the sender holds and we may not have."""

    hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Fetch:
    """Hashes of announced transactions the sender wants us to send in full."""

    hashes: tuple[bytes, ...]


NetworkMessage = Ping | Gossip | Message | Request | Response | Announce | Fetch

_PING_BYTES: Final = bytes((_TYPE_PING,))


def encode_ping() -> bytes:
    """A Ping frame plaintext."""
    return _PING_BYTES


def encode_gossip(transactions: Sequence[bytes]) -> bytes:
    """A Gossip frame plaintext for a batch of transactions."""
    packed: bytes = msgpack.packb(list(transactions), use_bin_type=True)
    return bytes((_TYPE_GOSSIP,)) + packed


def encode_announce(hashes: Sequence[bytes]) -> bytes:
    """An Announce frame plaintext."""
    return bytes((_TYPE_ANNOUNCE,)) + b"".join(hashes)


def encode_fetch(hashes: Sequence[bytes]) -> bytes:
    """A Fetch frame plaintext."""
    return bytes((_TYPE_FETCH,)) + b"".join(hashes)


def encode_message(kind: int, payload: bytes) -> bytes:
    """A Message frame plaintext."""
    if not 0 <= kind <= KIND_MAX:
        raise ValueError(f"message kind must be in [0, {KIND_MAX}]")
    return bytes((_TYPE_MESSAGE, kind)) + payload


def encode_request(request_id: int, payload: bytes) -> bytes:
    """A Request frame plaintext."""
    return _REQUEST_HEADER.pack(_TYPE_REQUEST, request_id) + payload


def encode_response(request_id: int, status: ResponseStatus, payload: bytes) -> bytes:
    """A Response frame plaintext."""
    return _RESPONSE_HEADER.pack(_TYPE_RESPONSE, request_id, status) + payload


def decode_message(plaintext: bytes, limits: NetworkLimits) -> NetworkMessage:
    """Parse one decrypted frame; ``MessageError`` names the problem for any bad input."""
    if not plaintext:
        raise MessageError("empty", "frame has no type byte")
    frame_type = plaintext[0]
    if frame_type == _TYPE_GOSSIP:
        return Gossip(_decode_transactions(plaintext, limits))
    if frame_type == _TYPE_MESSAGE:
        if len(plaintext) < 2:
            raise MessageError("truncated", "message frame has no kind byte")
        payload = plaintext[2:]
        _check_payload(payload, limits)
        return Message(plaintext[1], payload)
    if frame_type == _TYPE_ANNOUNCE:
        return Announce(_decode_hashes(plaintext, limits))
    if frame_type == _TYPE_FETCH:
        return Fetch(_decode_hashes(plaintext, limits))
    if frame_type == _TYPE_PING:
        if len(plaintext) != 1:
            raise MessageError("bad_ping", "ping frame carries a body")
        return Ping()
    if frame_type == _TYPE_REQUEST:
        if len(plaintext) < _REQUEST_HEADER.size:
            raise MessageError("truncated", "request frame shorter than its header")
        _, request_id = _REQUEST_HEADER.unpack_from(plaintext)
        payload = plaintext[_REQUEST_HEADER.size :]
        _check_payload(payload, limits)
        return Request(request_id, payload)
    if frame_type == _TYPE_RESPONSE:
        if len(plaintext) < _RESPONSE_HEADER.size:
            raise MessageError("truncated", "response frame shorter than its header")
        _, request_id, status = _RESPONSE_HEADER.unpack_from(plaintext)
        try:
            response_status = ResponseStatus(status)
        except ValueError:
            raise MessageError("bad_status", f"unknown response status {status}") from None
        payload = plaintext[_RESPONSE_HEADER.size :]
        _check_payload(payload, limits)
        return Response(request_id, response_status, payload)
    raise MessageError("unknown_type", f"unknown frame type 0x{frame_type:02x}")


def _decode_hashes(plaintext: bytes, limits: NetworkLimits) -> tuple[bytes, ...]:
    size = len(plaintext) - 1
    if size == 0 or size % HASH_BYTES:
        raise MessageError("bad_hashes", f"hash list of {size} bytes is not whole hashes")
    if size > limits.announce_hashes_max * HASH_BYTES:
        raise MessageError("bad_hashes", f"more than {limits.announce_hashes_max} hashes")
    return tuple(plaintext[start : start + HASH_BYTES] for start in range(1, size + 1, HASH_BYTES))


def _check_payload(payload: bytes, limits: NetworkLimits) -> None:
    if len(payload) > limits.message_bytes_max:
        raise MessageError(
            "payload_too_large", f"{len(payload)} bytes, limit {limits.message_bytes_max}"
        )


def _decode_transactions(plaintext: bytes, limits: NetworkLimits) -> tuple[bytes, ...]:
    try:
        value = msgpack.unpackb(
            memoryview(plaintext)[1:],
            use_list=False,
            raw=True,
            max_bin_len=limits.transaction_bytes_max,
            max_array_len=limits.transaction_batch_count_max,
            max_str_len=0,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack raises many types; each one means "malformed".
        raise MessageError("bad_gossip", f"{type(error).__name__}: {error}") from None
    if not isinstance(value, tuple):
        raise MessageError("bad_gossip", "gossip body must be an array")
    for transaction in value:
        if type(transaction) is not bytes or not transaction:
            raise MessageError("bad_gossip", "every gossiped transaction must be non-empty bytes")
    return value
