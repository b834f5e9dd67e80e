"""A transaction admitted while its node had no peer reaches the validators when they connect:
the node sends its clients' long-pending transactions to its peers again. Without that, a
transaction submitted to an observer before its link came up would stay pending forever."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from node import runtime
from node.api import SubmitOutcome
from node.config import NodeConfig
from node.home import load_home
from node.procstatus import run_delay_ns
from node.store import TREE_FLUSH_BLOCKS
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


@pytest.mark.parametrize("trust", [False, True], ids=["checked", "trusted"])
async def test_a_node_starting_behind_asks_its_first_peer_for_the_blocks_after_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, trust: bool
) -> None:
    """With an hour between empty blocks an idle chain says little (here the validator's view
    timer, every 2 s), so a node that starts behind would learn it is behind only from that:
    at start it asks the first peer that connects for the blocks after its own. It checks the
    synced transactions' signatures ahead of their blocks, or with ``[consensus]
    trust_certified_blocks`` applies the blocks on their certificates, to the same state."""
    config = NodeConfig().with_changes(
        "consensus", empty_block_interval_ms=3_600_000, trust_certified_blocks=trust
    )
    info = create_testnet(tmp_path / "net", 1, chain_id="probe-net", observers=1, config=config)
    key = info.client_key(0)
    caplog.set_level(logging.INFO, logger="suanpan.node")
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            validator: runtime.Node = await nursery.start(
                runtime.Node(load_home(info.homes[0])).run
            )
            for nonce in range(2):
                data = register_identity_transaction(key, info.chain_id, "bank0", nonce)
                outcome = await validator.submit(data)
                assert outcome.hash is not None
                await validator.wait_transaction(outcome.hash, DEADLINE_S)
            top = validator.written_height
            assert top >= 1
            observer: runtime.Node = await nursery.start(runtime.Node(load_home(info.homes[1])).run)
            await observer.wait_for_height(top, DEADLINE_S)
            assert observer.written_height >= top
            for height in range(1, top + 1):
                block = observer.store.block(height)
                assert block is not None
                assert block.hash == validator.store.block(height).hash  # type: ignore[union-attr]
            probes = [
                (record.__dict__["from"], record.__dict__["to"], record.__dict__["peer"])
                for record in caplog.records
                if record.getMessage() == "block_sync_probed"
            ]
            # The observer asked the validator for the heights after its own (0). The validator
            # also asked the observer, its first peer, for those after its own: nothing came.
            validator_key = validator.home.node_key.public_key.hex()[:16]
            assert (1, 64, validator_key) in probes
            assert observer.host.app_hash == validator.host.app_hash
            # The answer's transactions were verified on worker threads before their blocks
            # executed, as for a request the replica makes; or, trusted, not checked at all.
            status = observer.status()
            assert status["transactions_verified_ahead"] == (0 if trust else 2)
            assert status["transactions_trusted"] == (2 if trust else 0)
            # The tree records of the blocks since the tree was last written are held.
            held = status["tree_held"]
            assert isinstance(held, dict)
            assert set(held) == {"blocks", "records"}
            blocks, records = held["blocks"], held["records"]
            assert isinstance(blocks, int)
            assert isinstance(records, int)
            assert 0 <= blocks < TREE_FLUSH_BLOCKS
            assert (blocks == 0) == (records == 0)
            # The event loop thread's CPU is a part of the process's.
            loop_cpu, cpu = status["loop_cpu_ns"], status["cpu_ns"]
            assert isinstance(loop_cpu, int)
            assert isinstance(cpu, dict)
            total = cpu["total"]
            assert isinstance(total, int)
            assert 0 < loop_cpu <= total
            # Its wait for a CPU, where the kernel says: the loop's own thread's figure.
            loop_wait = status["loop_cpu_wait_ns"]
            expected = run_delay_ns()
            if expected is None:
                assert loop_wait is None
            else:
                assert isinstance(loop_wait, int)
                assert 0 <= loop_wait <= expected
            nursery.cancel_scope.cancel()
