"""Signature checks in batches (``node.signatures``): the native batch gives the verdicts of
``Transaction.signature_valid()`` for any transaction, whether its randomised equation holds
or has to be settled one signature at a time, refuses what it cannot read, and the node falls
back to one check per call when the batch is not there or fails its self-test."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import node.signatures as signatures
from apps.transaction import TX_TAG, Transaction, sign_transaction
from consensus.crypto import PrivateKey, signing_bytes
from consensus.ed25519 import verify_portable
from node.native import PURE_PYTHON_ENV
from tests import ed25519_reference as reference

CHAIN = "suanpan-test"
KEYS = [PrivateKey(bytes([index]) * 32) for index in range(1, 4)]


def _signed(key: PrivateKey, nonce: int, chain_id: str = CHAIN) -> Transaction:
    return sign_transaction(
        key,
        chain_id=chain_id,
        app="payments",
        operation="transfer",
        arguments={"to": "bob", "amount": nonce},
        nonce=nonce,
    )


def _with(
    transaction: Transaction, *, signature: bytes | None = None, sender: bytes | None = None
) -> Transaction:
    """``transaction`` with another signature or sender (not checked on the way in)."""
    return Transaction.build(
        transaction.chain_id,
        transaction.app,
        transaction.operation,
        transaction.arguments,
        transaction.sender if sender is None else sender,
        transaction.nonce,
        transaction.signature if signature is None else signature,
    )


def _native_wanted() -> bool:
    return os.environ.get(PURE_PYTHON_ENV) != "1"


@pytest.mark.skipif(not _native_wanted(), reason=f"{PURE_PYTHON_ENV}=1 checks one at a time")
def test_the_install_built_the_native_batch() -> None:
    assert signatures.batch_status() == signatures.BATCH_STATUS_NATIVE


# Each case: which key signs, and how the transaction is changed after signing.
_CHANGES = st.sampled_from(["none", "signature_bit", "other_sender", "other_chain", "zero"])


@settings(max_examples=60, deadline=None)
@given(
    cases=st.lists(
        st.tuples(st.integers(0, len(KEYS) - 1), _CHANGES, st.integers(0, 63)), max_size=12
    )
)
def test_the_batch_gives_the_verdicts_of_one_check_per_call(
    cases: list[tuple[int, str, int]],
) -> None:
    transactions = []
    for nonce, (signer, change, position) in enumerate(cases):
        transaction = _signed(KEYS[signer], nonce)
        signature = bytearray(transaction.signature)
        if change == "signature_bit":
            signature[position] ^= 1 << (position % 8)
            transaction = _with(transaction, signature=bytes(signature))
        elif change == "other_sender":
            other = KEYS[(signer + 1) % len(KEYS)].public_key
            transaction = _with(transaction, sender=other)
        elif change == "other_chain":
            # Signed for another chain, presented on this one: the signed bytes differ.
            elsewhere = _signed(KEYS[signer], nonce, chain_id="another-chain")
            transaction = _with(transaction, signature=elsewhere.signature)
        elif change == "zero":
            transaction = _with(transaction, signature=bytes(64))
        transactions.append(transaction)
    expected = signatures.verify_per_signature(transactions)
    assert expected == [change == "none" for _, change, _ in cases]
    assert signatures.verify_transactions(transactions) == expected


@pytest.mark.skipif(not _native_wanted(), reason=f"{PURE_PYTHON_ENV}=1 checks one at a time")
def test_the_native_batch_refuses_what_it_cannot_read() -> None:
    import consensus._ed25519 as native  # built with the compiled modules

    run = signatures._batch().run
    assert run is not None
    transaction = _signed(KEYS[0], 1)
    good = signatures._check(transaction)
    assert good is not None
    signature, message, key = good
    # A signature or key of the wrong length never verifies and is never read past its end.
    # Cut before a last byte 0, whose place the bytes object's terminating NUL takes, the
    # rest would verify if it were read as 64 (32) bytes.
    nonce = next(n for n in range(10_000) if _signed(KEYS[0], n).signature[-1] == 0)
    cut = signatures._check(_signed(KEYS[0], nonce))
    assert cut is not None
    seed = next(
        bytes([n % 256, n // 256]) * 16
        for n in range(65_536)
        if PrivateKey(bytes([n % 256, n // 256]) * 16).public_key[-1] == 0
    )
    short_key = signatures._check(_signed(PrivateKey(seed), 1))
    assert short_key is not None
    assert run((cut, short_key)) == [True, True]
    assert run(
        (
            (cut[0][:63], cut[1], cut[2]),
            (short_key[0], short_key[1], short_key[2][:31]),
            (signature[:63], message, key),
            good,
        )
    ) == [False, False, False, True]
    assert run(()) == []
    with pytest.raises(TypeError, match="item 1 is not a"):
        native.verify_batch((good, (signature, message)), bytes(32))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="item 0 holds something not bytes"):
        native.verify_batch(((signature, message, bytearray(key)),), bytes(16))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native.verify_batch([good], bytes(16))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="randomness is 15 bytes; 1 items need 16"):
        native.verify_batch((good,), bytes(15))


def test_pure_python_mode_checks_one_signature_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    loaded = signatures._load()
    assert loaded.run is None
    assert loaded.status == f"per signature ({PURE_PYTHON_ENV}=1)"


def test_a_batch_that_fails_its_self_test_is_not_used() -> None:
    def accepts_everything(checks: tuple[signatures.Check, ...]) -> list[bool]:
        return [True] * len(checks)

    def refuses_everything(checks: tuple[signatures.Check, ...]) -> list[bool]:
        return [False] * len(checks)

    assert not signatures._self_test(accepts_everything)
    assert not signatures._self_test(refuses_everything)

    def per_call(checks: tuple[signatures.Check, ...]) -> list[bool]:
        return [verify_portable(*check) for check in checks]

    def misses_one(checks: tuple[signatures.Check, ...]) -> list[bool]:
        # Accepts a batch of good signatures, but lets the last bad one of a mixed batch through.
        verdicts = per_call(checks)
        return [*verdicts[:-1], True]

    assert signatures._self_test(per_call)
    assert not signatures._self_test(misses_one)


def test_without_the_batch_every_transaction_is_checked_one_call_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        signatures, "_batch", lambda: signatures._Batch(None, "per signature (not built)")
    )
    good = _signed(KEYS[0], 1)
    bad = _with(_signed(KEYS[1], 2), signature=bytes(64))
    assert signatures.batch_status() == "per signature (not built)"
    assert signatures.verify_transactions([good, bad, good]) == [True, False, True]


def test_signatures_with_a_small_order_component_get_one_verdict_alone_and_in_batches() -> None:
    """A sender who builds R or the key with a small-order component makes a signature that
    the cofactored rule accepts (libsodium's own check would refuse it): the batch, with any
    coefficients and any neighbours, and the check one at a time must both accept it, or
    nodes grouping transactions differently would disagree about a block."""
    crafted = []
    for index, (nonce_torsion, key_torsion) in enumerate(
        [(reference.TORSION[1], reference.IDENTITY), (reference.IDENTITY, reference.TORSION[3])]
    ):
        secret = 987_654_321 + index
        sender = reference.public_key(secret, key_torsion)
        unsigned = _with(_signed(KEYS[0], 100 + index), sender=sender)
        message = signing_bytes(TX_TAG, CHAIN, unsigned.body())
        signature, _ = reference.sign_crafted(
            message, secret, 123_456 + index, nonce_torsion=nonce_torsion, key_torsion=key_torsion
        )
        crafted.append(_with(unsigned, signature=signature))
    honest = [_signed(KEYS[index % len(KEYS)], index) for index in range(14)]
    mixed = [*honest[:6], crafted[0], *honest[6:], crafted[1]]
    assert signatures.verify_per_signature(crafted) == [True, True]
    for _ in range(5):
        assert signatures.verify_transactions(mixed) == [True] * len(mixed)
        assert signatures.verify_transactions(crafted) == [True, True]
