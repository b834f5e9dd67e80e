"""``DemoBatcher``: the demo load generator's per-node batching, ordering and nonce handling,
against an in-process node double that admits a batch in order with the mempool's nonce rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest

from apps.transaction import Transaction, sign_transaction
from consensus.codec import Value
from consensus.crypto import PrivateKey
from node.client.client import ApiError
from node.jsonvalue import JsonType
from node.testnet.loadgen import BATCH_TRANSACTIONS_MAX, DemoBatcher, DemoLoadStatistics

CHAIN = "test-chain"
ALICE = PrivateKey(bytes([1]) * 32)
BOB = PrivateKey(bytes([2]) * 32)


@dataclass
class FakeNode:
    """Admits each batch in order: nonces strictly sequential per sender, a rule refusing
    chosen transactions, a pool that can be full for the first ``full_batches`` requests, and
    responses that can be lost after admission."""

    next_nonce_of: dict[bytes, int]
    refuse: Callable[[Transaction], str | None] = lambda _: None
    full_batches: int = 0
    full_code: str = "full"
    lose_responses: set[int] = field(default_factory=set)
    admitted: list[Transaction] = field(default_factory=list)
    requests: int = 0

    def submit_many(self, transactions: list[bytes]) -> dict[str, JsonType]:
        self.requests += 1
        known = {tx.hash for tx in self.admitted}
        rejected: list[JsonType] = []
        for index, data in enumerate(transactions):
            tx = Transaction.decode(data, chain_id=CHAIN)
            expected = self.next_nonce_of.get(tx.sender, 0)
            code = None
            if tx.hash in known:
                code = "duplicate"
            elif tx.nonce < expected:
                code = "stale_nonce"
            elif tx.nonce > expected:
                code = "nonce_gap"
            elif self.requests <= self.full_batches:
                code = self.full_code
            else:
                code = self.refuse(tx)
            if code is None:
                self.admitted.append(tx)
                self.next_nonce_of[tx.sender] = expected + 1
            else:
                rejected.append(
                    {"index": index, "code": code, "error": code, "retry": code == "full"}
                )
        if self.requests in self.lose_responses:
            raise ApiError(0, "connection reset")
        return {"accepted": len(transactions) - len(rejected), "rejected": rejected}

    def next_nonce(self, public_key: bytes) -> int:
        return self.next_nonce_of.get(public_key, 0)

    def transaction(self, tx_hash: bytes | str) -> dict[str, JsonType]:
        if any(tx.hash == tx_hash for tx in self.admitted):
            return {"status": "pending"}
        raise ApiError(404, "unknown transaction")


def stream(senders: list[PrivateKey], count: int, first_nonce: int = 0) -> list[Transaction]:
    """``count`` transactions alternating between ``senders``, each with its own nonces;
    ``arguments["step"]`` numbers them in stream order."""
    nonces = {key.public_key: first_nonce for key in senders}
    out = []
    for step in range(count):
        key = senders[step % len(senders)]
        nonce = nonces[key.public_key]
        nonces[key.public_key] += 1
        out.append(
            sign_transaction(
                key,
                chain_id=CHAIN,
                app="payments",
                operation="transfer",
                arguments={"step": step},
                nonce=nonce,
            )
        )
    return out


def make_batcher(node: FakeNode) -> tuple[DemoBatcher, DemoLoadStatistics, list[Transaction]]:
    statistics = DemoLoadStatistics()
    seen: list[Transaction] = []
    keys = {key.public_key: key for key in (ALICE, BOB)}
    batcher = DemoBatcher(node, keys, statistics, lambda _original, admitted: seen.append(admitted))
    return batcher, statistics, seen


def drain(batcher: DemoBatcher, rounds_max: int = 20) -> list[float]:
    pauses: list[float] = []
    for _ in range(rounds_max):
        if not batcher.pending:
            return pauses
        pauses.append(batcher.submit())
    raise AssertionError("the batcher did not drain")


def step(tx: Transaction) -> Value:
    """The transaction's position in the stream (``arguments["step"]``)."""
    assert isinstance(tx.arguments, Mapping)
    return tx.arguments["step"]


def steps_of(transactions: list[Transaction], key: PrivateKey) -> list[tuple[int, Value]]:
    return [(tx.nonce, step(tx)) for tx in transactions if tx.sender == key.public_key]


def test_one_request_per_batch_in_order() -> None:
    node = FakeNode({})
    batcher, statistics, seen = make_batcher(node)
    for tx in stream([ALICE, BOB], 40):
        batcher.add(tx)
    assert drain(batcher) == [0.0]
    assert node.requests == 1
    assert [tx.hash for tx in node.admitted] == [tx.hash for tx in seen]
    assert statistics.accepted == statistics.submitted == 40
    assert statistics.accepted_by_app == {"payments": 40}
    assert statistics.batches == 1
    assert not statistics.refused


def test_batches_are_bounded() -> None:
    node = FakeNode({})
    batcher, statistics, _ = make_batcher(node)
    for tx in stream([ALICE], BATCH_TRANSACTIONS_MAX + 3):
        batcher.add(tx)
    drain(batcher)
    assert node.requests == 2
    assert statistics.accepted == BATCH_TRANSACTIONS_MAX + 3


def test_refusal_shifts_the_senders_later_nonces() -> None:
    # Alice's step 4 (her nonce 2) is refused by a rule: her later ones move one nonce down
    # and still follow in stream order; Bob is not affected.
    node = FakeNode({}, refuse=lambda tx: "frozen_account" if step(tx) == 4 else None)
    batcher, statistics, _ = make_batcher(node)
    for tx in stream([ALICE, BOB], 12):
        batcher.add(tx)
    assert drain(batcher) == [0.0, 0.0]
    assert steps_of(node.admitted, ALICE) == [(0, 0), (1, 2), (2, 6), (3, 8), (4, 10)]
    assert steps_of(node.admitted, BOB) == [(n, 2 * n + 1) for n in range(6)]
    assert statistics.refused == {"frozen_account": 1}
    assert statistics.accepted == 11
    assert statistics.submitted == 12


@pytest.mark.parametrize("code", ["full", "sender_full"])
def test_full_mempool_is_retried_in_order(code: str) -> None:
    node = FakeNode({}, full_batches=1, full_code=code)
    batcher, statistics, _ = make_batcher(node)
    for tx in stream([ALICE, BOB], 10):
        batcher.add(tx)
    pauses = drain(batcher)
    assert pauses[0] > 0
    assert pauses[1:] == [0.0]
    assert steps_of(node.admitted, ALICE) == [(n, 2 * n) for n in range(5)]
    assert steps_of(node.admitted, BOB) == [(n, 2 * n + 1) for n in range(5)]
    assert statistics.backoffs == 2  # the first of each sender; the rest were held back
    assert not statistics.refused
    assert statistics.accepted == 10


def test_lost_response_resends_and_counts_duplicates_once() -> None:
    node = FakeNode({}, lose_responses={1})
    batcher, statistics, seen = make_batcher(node)
    for tx in stream([ALICE, BOB], 8):
        batcher.add(tx)
    pauses = drain(batcher)
    assert pauses[0] > 0
    assert node.requests == 2
    assert len(node.admitted) == 8
    assert statistics.accepted == 8
    assert statistics.errors == 1
    assert not statistics.refused
    assert sorted(tx.hash for tx in seen) == sorted(tx.hash for tx in node.admitted)


def test_nonce_refusal_resynchronises_from_the_node() -> None:
    # The node's chain is two nonces behind the stream for Alice (two of her transactions
    # were refused through another path): she resynchronises and continues from there.
    node = FakeNode({ALICE.public_key: 3, BOB.public_key: 5})
    batcher, statistics, _ = make_batcher(node)
    for tx in stream([ALICE, BOB], 6, first_nonce=5):
        batcher.add(tx)
    drain(batcher)
    assert steps_of(node.admitted, ALICE) == [(3, 0), (4, 2), (5, 4)]
    assert steps_of(node.admitted, BOB) == [(5, 1), (6, 3), (7, 5)]
    assert statistics.accepted == 6
    assert not statistics.refused


def test_malformed_response_resends_the_batch() -> None:
    class Broken(FakeNode):
        def submit_many(self, transactions: list[bytes]) -> dict[str, JsonType]:
            document = super().submit_many(transactions)
            return {"accepted": document["accepted"]} if self.requests == 1 else document

    node = Broken({})
    batcher, statistics, _ = make_batcher(node)
    for tx in stream([ALICE], 3):
        batcher.add(tx)
    drain(batcher)
    assert statistics.errors == 1
    assert statistics.accepted == 3
    assert len(node.admitted) == 3
