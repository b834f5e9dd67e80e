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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from consensus.codec import CodecError, Limits, Value, decode, encode
from consensus.crypto import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    PrivateKey,
    hash_bytes,
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
# App and operation names: lowercase identifiers, as used in entry points and CLI commands.
NAME_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")


class TransactionError(ValueError):
    """A transaction failed a stateless check; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Transaction:
    """A signed request to run ``app.operation(arguments)`` as ``sender``."""

    chain_id: str
    app: str
    operation: str
    arguments: Mapping[str, Value]
    sender: bytes
    nonce: int
    signature: bytes
    encoded: bytes = field(init=False, repr=False, compare=False)
    hash: bytes = field(init=False, repr=False, compare=False)
    # True when the fields were decoded from ``encoded`` (``decode``): they are then exactly
    # the values any node decoding the same bytes gets (tuples for arrays, and so on), so an
    # executor may use them instead of decoding the bytes again.
    from_wire: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check()
        try:
            data = encode(
                (TX_VERSION, *self._body_fields(), self.signature),
                TX_LIMITS,
            )
        except CodecError as error:
            reason = "too_large" if error.reason == "too_large" else "arguments"
            raise TransactionError(reason, str(error)) from None
        object.__setattr__(self, "encoded", data)
        object.__setattr__(self, "hash", hash_bytes(data))

    def _check(self) -> None:
        """Every field check but the encoding's own limits (``__post_init__`` encodes)."""
        _check_fields(self.chain_id, self.app, self.operation, self.arguments)
        if not isinstance(self.sender, bytes) or len(self.sender) != PUBLIC_KEY_BYTES:
            raise TransactionError("sender", f"sender must be a {PUBLIC_KEY_BYTES}-byte key")
        if isinstance(self.nonce, bool) or not isinstance(self.nonce, int):
            raise TransactionError("nonce", "nonce must be an integer")
        if not 0 <= self.nonce <= NONCE_MAX:
            raise TransactionError("nonce", f"nonce must be in [0, {NONCE_MAX}]")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_BYTES:
            raise TransactionError("signature", f"signature must be {SIGNATURE_BYTES} bytes")

    def _body_fields(self) -> tuple[Value, ...]:
        return (
            self.chain_id,
            self.app,
            self.operation,
            dict(self.arguments),
            self.sender,
            self.nonce,
        )

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

    @classmethod
    def _from_canonical(
        cls,
        chain_id: str,
        app: str,
        operation: str,
        arguments: Mapping[str, Value],
        sender: bytes,
        nonce: int,
        signature: bytes,
        encoded: bytes,
    ) -> Transaction:
        """A transaction from decoded fields whose canonical encoding is ``encoded``: the same
        checks as the constructor, without encoding again."""
        transaction = object.__new__(cls)
        object.__setattr__(transaction, "chain_id", chain_id)
        object.__setattr__(transaction, "app", app)
        object.__setattr__(transaction, "operation", operation)
        object.__setattr__(transaction, "arguments", arguments)
        object.__setattr__(transaction, "sender", sender)
        object.__setattr__(transaction, "nonce", nonce)
        object.__setattr__(transaction, "signature", signature)
        transaction._check()
        object.__setattr__(transaction, "encoded", encoded)
        object.__setattr__(transaction, "hash", hash_bytes(encoded))
        object.__setattr__(transaction, "from_wire", True)
        return transaction

    @classmethod
    def decode(cls, data: bytes, *, chain_id: str, check_signature: bool = True) -> Transaction:
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
        if not isinstance(chain, str):
            raise TransactionError("chain_id", "chain id must be a string")
        if chain != chain_id:
            raise TransactionError(
                "chain_id", f"transaction is for chain {chain!r}, not {chain_id!r}"
            )
        if not isinstance(app, str) or not isinstance(operation, str):
            raise TransactionError("name", "app and operation must be strings")
        if not isinstance(arguments, dict):
            raise TransactionError("arguments", "arguments must be a map")
        if not isinstance(sender, bytes):
            raise TransactionError("sender", "sender must be bytes")
        if not isinstance(nonce, int) or isinstance(nonce, bool):
            raise TransactionError("nonce", "nonce must be an integer")
        if not isinstance(signature, bytes):
            raise TransactionError("signature", "signature must be bytes")
        # ``data`` decoded canonically under TX_LIMITS, so encoding these very fields reproduces
        # ``data`` byte for byte: keep it instead of encoding again.
        transaction = cls._from_canonical(
            chain, app, operation, arguments, sender, nonce, signature, bytes(data)
        )
        if check_signature and not transaction.signature_valid():
            raise TransactionError("signature", "signature does not verify for sender")
        return transaction


def _check_fields(chain_id: str, app: str, operation: str, arguments: Mapping[str, Value]) -> None:
    if not isinstance(chain_id, str) or not 1 <= len(chain_id) <= 64:
        raise TransactionError("chain_id", "chain id must be a string of 1..64 characters")
    if not isinstance(app, str) or not NAME_PATTERN.fullmatch(app):
        raise TransactionError("app", f"app name {app!r} must match {NAME_PATTERN.pattern}")
    if not isinstance(operation, str) or not NAME_PATTERN.fullmatch(operation):
        raise TransactionError(
            "operation", f"operation name {operation!r} must match {NAME_PATTERN.pattern}"
        )
    if not isinstance(arguments, Mapping):
        raise TransactionError("arguments", "arguments must be a map")
    for key in arguments:
        if not isinstance(key, str):
            raise TransactionError("arguments", f"argument names must be strings, not {key!r}")


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
    unsigned = Transaction(
        chain_id, app, operation, dict(arguments), key.public_key, nonce, bytes(SIGNATURE_BYTES)
    )
    signature = key.sign(TX_TAG, chain_id, unsigned.body())
    return Transaction(chain_id, app, operation, dict(arguments), key.public_key, nonce, signature)
