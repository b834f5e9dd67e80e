"""A transaction admitted while its node had no peer reaches the validators when they connect:
the node sends its clients' long-pending transactions to its peers again. Without that, a
transaction submitted to an observer before its link came up would stay pending forever."""

from __future__ import annotations

from pathlib import Path

import trio

from node import runtime
from node.api import SubmitOutcome
from node.home import load_home
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import create_testnet

DEADLINE_S = 120.0


async def test_transaction_admitted_without_peers_commits_once_the_validator_connects(
    tmp_path: Path,
) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="resend-net", observers=1)
    key = info.client_key(0)
    data = register_identity_transaction(key, info.chain_id, "bank0", 0)
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            observer: runtime.Node = await nursery.start(runtime.Node(load_home(info.homes[1])).run)
            outcome = await observer.submit(data)
            assert outcome.accepted, outcome
            assert outcome.hash is not None
            # Gossiped to nobody: the validator is not running yet.
            assert observer.network.statistics().peers_connected == 0
            validator: runtime.Node = await nursery.start(
                runtime.Node(load_home(info.homes[0])).run
            )
            await observer.wait_transaction(outcome.hash, DEADLINE_S)
            document = observer.transaction(outcome.hash)
            assert document is not None
            assert document["status"] == "committed", document
            assert validator.store.transaction_location(outcome.hash) is not None
            assert observer.network.statistics().transactions_resent >= 1
            nursery.cancel_scope.cancel()


def test_gossip_refused_for_a_passing_reason_is_forgotten_judged_gossip_is_not() -> None:
    raw = [bytes([index]) * 8 for index in range(8)]
    outcomes = [
        SubmitOutcome(b"0", True),
        SubmitOutcome(b"1", False, "full", "mempool holds 20000 transactions", True, 400),
        SubmitOutcome(b"2", False, "nonce_gap", "nonce 5 skips ahead; the next nonce is 4"),
        SubmitOutcome(b"3", False, "sender_full", "sender has 1000 pending"),
        SubmitOutcome(None, False, "state_sync", "installing a snapshot", True, 1000),
        SubmitOutcome(b"5", False, "stale_nonce", "nonce 1 already used; next is 2"),
        SubmitOutcome(b"6", False, "bad_signature", "signature does not verify"),
        SubmitOutcome(b"7", False, "duplicate", "transaction is pending"),
    ]
    assert runtime.passing_refusals(raw, outcomes) == raw[1:5]
