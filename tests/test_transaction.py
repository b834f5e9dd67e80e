"""The signed transaction envelope: stateless validation with precise errors."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.transaction import (
    TX_BYTES_MAX,
    Transaction,
    TransactionError,
    sign_transaction,
)
from consensus.codec import decode, encode
from consensus.crypto import PrivateKey

KEY = PrivateKey(b"\x07" * 32)
CHAIN = "suanpan-test"


def make(**overrides: object) -> Transaction:
    fields: dict[str, object] = {
        "chain_id": CHAIN,
        "app": "payments",
        "operation": "transfer",
        "arguments": {"amount": 1250, "currency": "USD", "to": b"\x02" * 32},
        "nonce": 1,
    }
    fields.update(overrides)
    return sign_transaction(KEY, **fields)  # type: ignore[arg-type]


def test_round_trip_and_hash() -> None:
    transaction = make()
    decoded = Transaction.decode(transaction.encoded, chain_id=CHAIN)
    assert decoded == transaction
    assert decoded.hash == transaction.hash
    assert len(transaction.hash) == 32


@pytest.mark.parametrize(
    ("field_index", "replacement"),
    [
        (1, "other-chain"),
        (2, "assets"),
        (3, "redeem"),
        (4, {"amount": 999_999, "currency": "USD", "to": b"\x02" * 32}),
        (5, b"\x09" * 32),
        (6, 2),
    ],
)
def test_tampered_field_invalidates_signature(field_index: int, replacement: object) -> None:
    decoded = decode(make().encoded)
    assert isinstance(decoded, tuple)
    fields: list[object] = list(decoded)
    fields[field_index] = replacement
    tampered = encode(fields)  # type: ignore[arg-type]
    chain = replacement if field_index == 1 else CHAIN
    with pytest.raises(TransactionError, match="signature"):
        Transaction.decode(tampered, chain_id=chain)  # type: ignore[arg-type]


def test_wrong_chain_is_rejected_before_signature() -> None:
    with pytest.raises(TransactionError, match="chain_id"):
        Transaction.decode(make().encoded, chain_id="another-chain")


def test_oversize_is_rejected_with_its_limit() -> None:
    with pytest.raises(TransactionError, match=str(TX_BYTES_MAX)):
        Transaction.decode(b"\x00" * (TX_BYTES_MAX + 1), chain_id=CHAIN)
    with pytest.raises(TransactionError, match="limit"):
        make(arguments={f"k{i}": "x" * 4000 for i in range(10)})


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"app": "Payments"}, "app"),
        ({"operation": "do-it"}, "operation"),
        ({"nonce": -1}, "nonce"),
        ({"arguments": {"amount": 1.5}}, "arguments"),
        ({"arguments": {1: "x"}}, "arguments"),
        ({"arguments": ("amount", 1)}, "arguments"),
        ({"nonce": 2**63}, "nonce"),
        ({"chain_id": ""}, "chain_id"),
        ({"chain_id": "c" * 65}, "chain_id"),
    ],
)
def test_malformed_fields_are_named(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(TransactionError) as caught:
        make(**overrides)
    assert caught.value.reason == reason


def test_shape_and_version_errors() -> None:
    with pytest.raises(TransactionError, match="8 fields"):
        Transaction.decode(encode([1, 2, 3]), chain_id=CHAIN)
    decoded = decode(make().encoded)
    assert isinstance(decoded, tuple)
    with pytest.raises(TransactionError, match="version"):
        Transaction.decode(encode((9, *decoded[1:])), chain_id=CHAIN)


def test_boolean_version_is_not_a_second_encoding_of_the_same_transaction() -> None:
    decoded = decode(make().encoded)
    assert isinstance(decoded, tuple)
    malleated = encode((True, *decoded[1:]))
    assert malleated != make().encoded
    with pytest.raises(TransactionError, match="version"):
        Transaction.decode(malleated, chain_id=CHAIN)


def test_signature_of_wrong_length_is_rejected() -> None:
    signed = make()
    fields = (signed.chain_id, signed.app, signed.operation, signed.arguments, signed.sender)
    with pytest.raises(TransactionError, match="64 bytes"):
        Transaction.build(*fields, signed.nonce, b"\x00" * 10)
    decoded = decode(signed.encoded)
    assert isinstance(decoded, tuple)
    with pytest.raises(TransactionError, match="64 bytes"):
        Transaction.decode(encode((*decoded[:7], b"\x00" * 10)), chain_id=CHAIN)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_transaction_error(data: bytes) -> None:
    with contextlib.suppress(TransactionError):
        Transaction.decode(data, chain_id=CHAIN)


@pytest.mark.parametrize(
    ("field_index", "replacement", "reason"),
    [
        (1, 7, "chain_id"),
        (2, "Payments", "app"),
        (2, b"payments", "app"),
        (3, "do-it", "operation"),
        (4, ("amount", 1), "arguments"),
        (4, {b"amount": 1}, "arguments"),
        (5, b"\x02" * 31, "sender"),
        (5, "sender", "sender"),
        (6, -1, "nonce"),
        (6, False, "nonce"),
        (6, "1", "nonce"),
        (7, b"\x00" * 63, "signature"),
        (7, "signature", "signature"),
    ],
)
def test_every_field_check_fires_on_decoded_bytes(
    field_index: int, replacement: object, reason: str
) -> None:
    """What ``build`` refuses is refused in wire bytes too, before any signature check."""
    decoded = decode(make().encoded)
    assert isinstance(decoded, tuple)
    fields: list[object] = list(decoded)
    fields[field_index] = replacement
    with pytest.raises(TransactionError) as caught:
        Transaction.decode(encode(fields), chain_id=CHAIN)  # type: ignore[arg-type]
    assert caught.value.reason == reason


def test_transactions_are_equal_only_when_their_bytes_are() -> None:
    one = make(arguments={"flag": 1})
    true = make(arguments={"flag": True})
    assert one.arguments == true.arguments  # Python's True == 1; the wire's are other bytes
    assert one != true
    assert one.hash != true.hash
    again = Transaction.decode(one.encoded, chain_id=CHAIN)
    assert again == one
    assert hash(again) == hash(one)
    assert len({one, again, true}) == 2
    assert "operation='transfer'" in repr(one)


def test_a_transaction_s_fields_cannot_be_assigned() -> None:
    transaction = make()
    with pytest.raises(AttributeError):
        transaction.nonce = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        transaction.encoded = b""  # type: ignore[misc]


@pytest.mark.parametrize("nonce", [0, 2**62 - 1, 2**62, 2**63 - 1])
def test_every_nonce_up_to_the_largest_is_accepted(nonce: int) -> None:
    """Both sides of 2**62, where compiled code stops holding a number unboxed (the range
    check tests below it first), and the bound itself; 2**63 and -1 are refused above."""
    assert Transaction.decode(make(nonce=nonce).encoded, chain_id=CHAIN).nonce == nonce
