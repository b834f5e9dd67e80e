"""The mempool: admission, limits, deterministic proposals, recheck after commit."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.host import TransactionRejected
from apps.transaction import Transaction, sign_transaction
from consensus.crypto import PrivateKey, hash_bytes
from node.mempool import Mempool, MempoolLimits, MempoolRejected
from tests.host_fixtures import CHAIN, Chain, key
from tests.test_host import KvApp, VaultApp

BANK_A, BANK_B, BANK_C, BANK_D = (key(f"bank_{x}") for x in "abcd")


def tx(signer: PrivateKey, nonce: int, **arguments: object) -> Transaction:
    return sign_transaction(
        signer,
        chain_id=CHAIN,
        app="kv",
        operation="write",
        arguments=arguments,  # type: ignore[arg-type]
        nonce=nonce,
    )


def setup(limits: MempoolLimits | None = None) -> tuple[Chain, Mempool]:
    chain = Chain.start([KvApp(), VaultApp()])
    return chain, Mempool(chain.host, limits)


def code(pool: Mempool, transaction: Transaction) -> str:
    with pytest.raises(MempoolRejected) as info:
        pool.add(transaction)
    return info.value.code


def test_admission_rules() -> None:
    chain, pool = setup()
    first = tx(BANK_A, 0)
    pool.add(first)
    assert code(pool, first) == "duplicate"
    assert code(pool, tx(BANK_A, 0, other=1)) == "nonce_in_use"
    assert code(pool, tx(BANK_A, 2)) == "nonce_gap"
    pool.add(tx(BANK_A, 1))
    assert pool.pending_nonce(BANK_A.public_key) == 2
    assert code(pool, tx(key("stranger"), 0)) == "unknown_sender"
    assert code(pool, tx(BANK_B, 0, refuse=True)) == "refused"
    with pytest.raises(MempoolRejected) as info:
        pool.add_encoded(b"\x01\x02")
    assert info.value.code == "invalid_transaction"
    chain.run([first])
    pool.update([first.hash])
    assert code(pool, tx(BANK_A, 0, again=True)) == "stale_nonce"
    assert len(pool) == 1


def test_full_is_an_explicit_rejection() -> None:
    _, pool = setup(MempoolLimits(transactions_max=2, bytes_max=10_000, per_sender_max=10))
    pool.add(tx(BANK_A, 0))
    pool.add(tx(BANK_A, 1))
    rejected = tx(BANK_B, 0)
    assert code(pool, rejected) == "full"
    _, pool = setup(MempoolLimits(transactions_max=10, bytes_max=400, per_sender_max=10))
    pool.add(tx(BANK_A, 0, blob=bytes(100)))
    assert code(pool, tx(BANK_B, 0, blob=bytes(200))) == "full"
    assert pool.size_bytes < 400
    _, pool = setup(MempoolLimits(transactions_max=10, bytes_max=100_000, per_sender_max=1))
    pool.add(tx(BANK_A, 0))
    assert code(pool, tx(BANK_A, 1)) == "sender_full"
    pool.add(tx(BANK_B, 0))


def test_reap_is_deterministic_ordered_and_respects_block_limits() -> None:
    _, pool = setup()
    order = [
        tx(BANK_A, 0),
        tx(BANK_B, 0),
        tx(BANK_A, 1, blob=bytes(2000)),
        tx(BANK_A, 2),
        tx(BANK_C, 0),
    ]
    for transaction in order:
        pool.add_encoded(transaction.encoded)
    encoded = [t.encoded for t in order]
    assert pool.reap(transactions_max=100, bytes_max=1_000_000) == encoded
    assert pool.reap(transactions_max=2, bytes_max=1_000_000) == encoded[:2]
    # bank_a's big transaction does not fit: its later one is skipped too (no nonce gap).
    assert pool.reap(transactions_max=100, bytes_max=1500) == [encoded[0], encoded[1], encoded[4]]
    # Another pool fed the same calls proposes the same payload.
    _, twin = setup()
    for transaction in order:
        twin.add(transaction)
    assert twin.reap(transactions_max=3, bytes_max=1_000_000) == encoded[:3]


def test_update_removes_committed_and_evicts_what_can_no_longer_succeed() -> None:
    chain, pool = setup()
    a0, a1, a2 = tx(BANK_A, 0), tx(BANK_A, 1), tx(BANK_A, 2)
    b0, b1 = tx(BANK_B, 0), tx(BANK_B, 1)
    c0 = tx(BANK_C, 0)
    d0 = tx(BANK_D, 0)
    for transaction in (a0, a1, a2, b0, b1, c0, d0):
        pool.add(transaction)
    # bank_b's nonce 0 was used by a different transaction that reached another node's block.
    other_b0 = tx(BANK_B, 0, elsewhere=True)
    block = [a0.encoded, other_b0.encoded]
    chain.run(block)
    # Then bank_a uses nonce 1 for something else, and the SG regulator suspends bank_d's
    # operator key, so its pending transaction can no longer pass.
    chain.run(
        [
            chain.sign(
                BANK_A,
                "membership",
                "register_identity",
                {"public_key": key("x").public_key, "institution": "bank_a", "roles": ["bank"]},
                nonce=1,
            ),
            chain.sign(
                key("regulator_sg"),
                "membership",
                "suspend_identity",
                {"public_key": BANK_D.public_key},
            ),
        ]
    )
    update = pool.update([hash_bytes(raw) for raw in block])
    assert update.committed == 1
    evicted = dict(update.evicted)
    assert evicted[b0.hash] == "stale_nonce"
    assert evicted[b1.hash] == "nonce_gap"
    # a1 now also has a stale nonce (the membership transaction used nonce 1).
    assert evicted[a1.hash] == "stale_nonce"
    assert evicted[a2.hash] == "nonce_gap"
    assert evicted[d0.hash] == "sender_suspended"
    assert c0.hash not in evicted
    assert list(pool.known()) == [c0.hash]
    assert pool.statistics() == {"transactions": 1, "bytes": len(c0.encoded), "senders": 1}


def test_known_transactions_feed_the_host_without_reverification() -> None:
    chain, pool = setup()
    for nonce in range(3):
        pool.add(tx(BANK_A, nonce, puts=[(bytes([nonce]), b"v")]))
    payload = pool.reap(transactions_max=10, bytes_max=1 << 20)
    result = chain.host.execute_block(chain.context(), payload, known=pool.known())
    assert all(receipt.ok for receipt in result.receipts)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 2]), st.integers(0, 4)), max_size=25))
def test_proposals_never_fail_on_nonces(submissions: list[tuple[int, int]]) -> None:
    """Whatever clients submit, every reaped proposal executes without nonce failures, and
    after update the pool only holds transactions that still pass admission."""
    chain, pool = setup(MempoolLimits(transactions_max=8, bytes_max=100_000, per_sender_max=3))
    signers = (BANK_A, BANK_B, BANK_C)
    for round_number, (who, nonce) in enumerate(submissions):
        signer = signers[who]
        with contextlib.suppress(MempoolRejected):
            pool.add(tx(signer, nonce, round=round_number))
        if round_number % 4 == 3:
            payload = pool.reap(transactions_max=3, bytes_max=100_000)
            result = chain.run(payload)
            assert all(r.ok for r in result.receipts), [r.code for r in result.receipts]
            pool.update([hash_bytes(raw) for raw in payload])
            for pending in pool.known().values():
                assert pending.nonce >= chain.host.next_nonce(pending.sender)


def test_committed_checker_answers_exactly_as_the_host() -> None:
    """The recheck's memoising checker gives every transaction the same verdict (code and
    message) as ``check_transaction``, including for senders that are suspended, unknown or
    behind on their nonce, however often the same sender comes up."""
    chain, _ = setup()
    chain.run([tx(BANK_A, 0).encoded, tx(BANK_B, 0).encoded])
    chain.run(
        [
            chain.sign(
                key("regulator_sg"),
                "membership",
                "suspend_identity",
                {"public_key": BANK_D.public_key},
            )
        ]
    )
    candidates = [
        (tx(BANK_A, 0), None),  # stale
        (tx(BANK_A, 1), None),
        (tx(BANK_A, 2), 2),  # a later pending nonce
        (tx(BANK_A, 3), None),  # nonce gap
        (tx(BANK_B, 1), None),
        (tx(BANK_C, 0), None),
        (tx(BANK_C, 0), None),  # the same sender again, answered from the memo
        (tx(BANK_D, 0), None),  # suspended
        (tx(key("stranger"), 0), None),  # not a registered identity
    ]

    def verdict(check: object, transaction: Transaction, expected: int | None) -> object:
        try:
            check(transaction, expected_nonce=expected)  # type: ignore[operator]
        except TransactionRejected as rejection:
            return (rejection.code, rejection.message)
        return None

    checker = chain.host.committed_checker()
    expected_verdicts = [verdict(chain.host.check_transaction, t, n) for t, n in candidates]
    assert [verdict(checker.check_transaction, t, n) for t, n in candidates] == expected_verdicts
    assert {v[0] for v in expected_verdicts if isinstance(v, tuple)} >= {
        "stale_nonce",
        "sender_suspended",
        "unknown_sender",
    }
    for sender in (BANK_A, BANK_B, BANK_C, BANK_D):
        assert checker.next_nonce(sender.public_key) == chain.host.next_nonce(sender.public_key)
