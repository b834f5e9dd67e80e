"""The signed transaction envelope every client submits.

A transaction names the app and operation it invokes, carries the operation's arguments as a
canonical map, and is signed by its sender over ``TX_TAG || chain id || body`` where the body
is the canonical encoding of every field but the signature. The per-sender nonce makes each
transaction unique and lets the host reject replays.

Wire form: the canonical encoding of the 8-tuple
``(version, chain_id, app, operation, arguments, sender, nonce, signature)``.
The transaction hash is SHA-256 of those bytes.

``Transaction.decode`` performs every *stateless* check (sizes, field types, names, signature)
and raises ``TransactionError`` naming the first problem. Stateful checks (is the sender an
active member, is the nonce the next one, does the app accept it) belong to the app host.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Final

from apps.schema import Identifier
from consensus.codec import SMALL_INT_MAX, CodecError, Limits, Value, decode, encode
from consensus.crypto import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    PrivateKey,
    verify,
)

__all__ = [
    "NAME_PATTERN",
    "TX_BYTES_MAX",
    "TX_LIMITS",
    "TX_TAG",
    "TX_VERSION",
    "Transaction",
    "TransactionError",
    "sign_transaction",
]

TX_TAG: Final = b"suanpan/tx/v1"
TX_VERSION: Final = 1
# A payment with full originator/beneficiary details is well under 2 KiB; 32 KiB leaves room
# for document hashes and lists without letting one transaction crowd out a block.
TX_BYTES_MAX: Final = 32 * 1024
TX_LIMITS: Final = Limits(
    total_bytes_max=TX_BYTES_MAX,
    depth_max=8,
    str_bytes_max=4096,
    bytes_max=4096,
    array_len_max=1024,
    map_len_max=256,
)
NONCE_MAX: Final = 2**63 - 1
# The body is the wire form without its last element (see ``Transaction.body``).
_BODY_HEADER: Final = b"\x97"
_SIGNATURE_SUFFIX: Final = -(2 + SIGNATURE_BYTES)
_SIGNATURE_HEADER: Final = b"\xc4\x40"
_NO_SIGNATURE: Final = bytes(SIGNATURE_BYTES)
# App and operation names: lowercase identifiers, as used in entry points and CLI commands.
NAME_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
# App and operation names recur in every transaction: the schema's identifier type remembers
# the names its pattern matched (bounded), a set lookup instead of a match.
_NAME: Final = Identifier(NAME_PATTERN)
_sha256: Final = hashlib.sha256
# A transaction's fields but the version, checked and typed (``_checked_fields``).
_Fields = tuple[str, str, str, Mapping[str, Value], bytes, int, bytes]


class TransactionError(ValueError):
    """A transaction failed a stateless check; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Transaction:
    """A signed request to run ``app.operation(arguments)`` as ``sender``.

    Every transaction is decoded from its wire bytes, ``encoded``: the constructor (and
    ``decode``, its usual spelling) takes the bytes and nothing else, and ``build`` encodes
    fields and then decodes the result. So the fields are always exactly the values any node
    decoding the same bytes gets (tuples for arrays, and so on), never a caller's objects,
    and they can never disagree with ``encoded`` or ``hash``. An executor may use them instead
    of decoding the bytes again.

    A value: its fields are ``Final``, and two transactions are equal when their bytes are.
    It is a plain class rather than a frozen dataclass so that, compiled, building one sets
    its fields in C (a dataclass's generated ``__init__`` runs as Python).
    """

    __slots__ = (
        "app",
        "arguments",
        "chain_id",
        "encoded",
        "hash",
        "nonce",
        "operation",
        "sender",
        "signature",
    )

    def __init__(self, data: bytes, *, chain_id: str, check_signature: bool = True) -> None:
        """Parse wire bytes with every stateless check; raise ``TransactionError`` on the first
        problem. ``chain_id`` is the chain this node serves: a transaction for another chain is
        rejected before its signature is checked."""
        if len(data) > TX_BYTES_MAX:
            raise TransactionError("too_large", f"{len(data)} bytes, limit {TX_BYTES_MAX}")
        try:
            value = decode(data, TX_LIMITS)
        except CodecError as error:
            raise TransactionError("encoding", str(error)) from None
        if not isinstance(value, tuple) or len(value) != 8:
            raise TransactionError("shape", "a transaction is an array of 8 fields")
        version, chain, app, operation, arguments, sender, nonce, signature = value
        # ``type(...) is int``: the boolean true equals 1 in Python but is other bytes on the
        # wire, which would let one signed transaction travel under two hashes.
        if type(version) is not int or version != TX_VERSION:
            raise TransactionError("version", f"unsupported version {version!r}")
        if chain != chain_id:
            if not isinstance(chain, str):
                raise TransactionError("chain_id", "chain id must be a string")
            raise TransactionError(
                "chain_id", f"transaction is for chain {chain!r}, not {chain_id!r}"
            )
        checked = _checked_fields(chain, app, operation, arguments, sender, nonce, signature)
        self.chain_id: Final[str] = checked[0]
        self.app: Final[str] = checked[1]
        self.operation: Final[str] = checked[2]
        self.arguments: Final[Mapping[str, Value]] = checked[3]
        self.sender: Final[bytes] = checked[4]
        self.nonce: Final[int] = checked[5]
        self.signature: Final[bytes] = checked[6]
        # ``data`` decoded canonically under TX_LIMITS, so encoding these very fields
        # reproduces it byte for byte.
        # (A copy only for a bytes-like argument: ``bytes(data)`` of bytes is a call to
        # ``bytes`` returning ``data``, which compiled goes through Python.)
        encoded = data if type(data) is bytes else bytes(data)
        self.encoded: Final[bytes] = encoded
        self.hash: Final[bytes] = _sha256(encoded).digest()
        if check_signature and not self.signature_valid():
            raise TransactionError("signature", "signature does not verify for sender")

    @staticmethod
    def decode(data: bytes, *, chain_id: str, check_signature: bool = True) -> Transaction:
        """The transaction ``data`` encodes, every stateless check made (the constructor)."""
        return Transaction(data, chain_id=chain_id, check_signature=check_signature)

    @staticmethod
    def build(
        chain_id: str,
        app: str,
        operation: str,
        arguments: Mapping[str, Value],
        sender: bytes,
        nonce: int,
        signature: bytes,
    ) -> Transaction:
        """The transaction of these fields, every stateless check made but the signature's
        (``sign_transaction`` builds a signed one)."""
        fields = _checked_fields(chain_id, app, operation, arguments, sender, nonce, signature)
        return Transaction(_encode_fields(fields), chain_id=chain_id, check_signature=False)

    def body(self) -> bytes:
        """The canonical bytes the signature covers (every field but the signature)."""
        # The encoding of the 7 body fields is a slice of the 8-field encoding: the canonical
        # encoding of an array is its header followed by its elements' encodings, the header
        # of 8 (7) elements is the single byte 0x98 (0x97), and the signature, always 64 bytes,
        # is the last element, encoded as 0xc4 0x40 followed by its bytes.
        return _BODY_HEADER + self.encoded[1:_SIGNATURE_SUFFIX]

    def signature_valid(self) -> bool:
        """True when ``signature`` is ``sender``'s signature of ``body()`` on ``chain_id``."""
        return verify(self.sender, TX_TAG, self.chain_id, self.body(), self.signature)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Transaction):
            return NotImplemented
        return self.encoded == other.encoded

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        return (
            f"Transaction(chain_id={self.chain_id!r}, app={self.app!r}, "
            f"operation={self.operation!r}, arguments={self.arguments!r}, "
            f"sender={self.sender!r}, nonce={self.nonce!r}, signature={self.signature!r})"
        )


def _checked_fields(
    chain_id: object,
    app: object,
    operation: object,
    arguments: object,
    sender: object,
    nonce: object,
    signature: object,
) -> _Fields:
    """The fields, typed, when each passes its check; ``TransactionError`` naming the first
    that does not. The encoding's own limits are checked by encoding."""
    if not isinstance(chain_id, str) or not 1 <= len(chain_id) <= 64:
        raise TransactionError("chain_id", "chain id must be a string of 1..64 characters")
    if not isinstance(app, str) or not _NAME.matches(app):
        raise TransactionError("app", f"app name {app!r} must match {NAME_PATTERN.pattern}")
    if not isinstance(operation, str) or not _NAME.matches(operation):
        raise TransactionError(
            "operation", f"operation name {operation!r} must match {NAME_PATTERN.pattern}"
        )
    if type(arguments) is not dict and not isinstance(arguments, Mapping):
        raise TransactionError("arguments", "arguments must be a map")
    for key in arguments:
        if not isinstance(key, str):
            raise TransactionError("arguments", f"argument names must be strings, not {key!r}")
    if not isinstance(sender, bytes) or len(sender) != PUBLIC_KEY_BYTES:
        raise TransactionError("sender", f"sender must be a {PUBLIC_KEY_BYTES}-byte key")
    if isinstance(nonce, bool) or not isinstance(nonce, int):
        raise TransactionError("nonce", "nonce must be an integer")
    # (Compiled, a number below 2**62 compares in C: tested first.)
    if not (0 <= nonce <= SMALL_INT_MAX or 0 <= nonce <= NONCE_MAX):
        raise TransactionError("nonce", f"nonce must be in [0, {NONCE_MAX}]")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise TransactionError("signature", f"signature must be {SIGNATURE_BYTES} bytes")
    return chain_id, app, operation, arguments, sender, nonce, signature


def _encode_fields(fields: _Fields) -> bytes:
    """The wire bytes of checked fields; ``TransactionError`` when they exceed the limits."""
    try:
        chain_id, app, operation, arguments, sender, nonce, signature = fields
        return encode(
            (TX_VERSION, chain_id, app, operation, dict(arguments), sender, nonce, signature),
            TX_LIMITS,
        )
    except CodecError as error:
        reason = "too_large" if error.reason == "too_large" else "arguments"
        raise TransactionError(reason, str(error)) from None


def sign_transaction(
    key: PrivateKey,
    *,
    chain_id: str,
    app: str,
    operation: str,
    arguments: Mapping[str, Value],
    nonce: int,
) -> Transaction:
    """Build and sign a transaction from ``key``'s public key."""
    sender = key.public_key
    unsigned = _encode_fields(
        _checked_fields(chain_id, app, operation, arguments, sender, nonce, _NO_SIGNATURE)
    )
    body = _BODY_HEADER + unsigned[1:_SIGNATURE_SUFFIX]
    signature = key.sign(TX_TAG, chain_id, body)
    # The signature is the encoding's last element, always 64 bytes: replace it in place.
    signed = unsigned[:_SIGNATURE_SUFFIX] + _SIGNATURE_HEADER + signature
    return Transaction(signed, chain_id=chain_id, check_signature=False)
