"""A transaction whose block is executed but not yet written is ``pending``: it has left the
mempool, the store does not hold it yet, and a client waiting for it keeps waiting until the
write instead of being told ``pending`` at once or that the transaction is unknown."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import trio

from apps.host import BlockResult
from consensus.replica import RequestProposal
from consensus.types import Block, CommitCertificate
from node import runtime
from node.home import load_home
from node.jsonvalue import JsonType
from node.store import Store
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import create_testnet

DEADLINE_S = 120.0


_Entries = Sequence[tuple[Block, CommitCertificate, BlockResult]]


def _around_commits(
    monkeypatch: pytest.MonkeyPatch,
    *,
    before: Callable[[Store, _Entries], None] | None = None,
    after: Callable[[Store, _Entries], None] | None = None,
) -> None:
    """Run ``before`` and ``after`` (on the block writer's worker thread) around each of the
    store's block commits."""
    original = Store.commit_blocks

    def wrapped(store: Store, entries: _Entries, *, defer_tree: bool = False) -> None:
        if before is not None:
            before(store, entries)
        original(store, entries, defer_tree=defer_tree)
        if after is not None:
            after(store, entries)

    monkeypatch.setattr(Store, "commit_blocks", wrapped)


def _hold_writes_with_transactions(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The block writer's LMDB commit of a block with transactions waits (on its worker
    thread) while the returned event is clear; empty blocks are written as usual. The event
    starts set."""
    released = threading.Event()
    released.set()

    def hold(_: Store, entries: _Entries) -> None:
        if any(result.receipts for _, _, result in entries):
            released.wait(DEADLINE_S)

    _around_commits(monkeypatch, before=hold)
    return released


async def test_executed_unwritten_transaction_stays_pending_until_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="unwritten-net")
    home = load_home(info.homes[0])
    key = info.client_key(0)
    data = register_identity_transaction(key, info.chain_id, "bank0", 0)

    released = _hold_writes_with_transactions(monkeypatch)

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node: runtime.Node = await nursery.start(runtime.Node(home).run)
            released.clear()
            try:
                outcome = await node.submit(data)
                assert outcome.accepted
                assert outcome.hash is not None
                tx_hash = outcome.hash
                finished: list[dict[str, JsonType] | None] = []
                done = trio.Event()

                async def waiter() -> None:
                    await node.wait_transaction(tx_hash, DEADLINE_S)
                    finished.append(node.transaction(tx_hash))
                    done.set()

                nursery.start_soon(waiter)
                # The block holding it executes: the transaction leaves the mempool...
                while tx_hash in node.mempool:  # noqa: ASYNC110 - the mempool has no event
                    await trio.sleep(0.01)
                # ...and, its write held, is neither unknown nor committed.
                for _ in range(20):
                    document = node.transaction(tx_hash)
                    assert document == {"hash": tx_hash.hex(), "status": "pending"}
                    await trio.sleep(0.01)
                assert finished == []
                # Submitting it again meanwhile is refused as a duplicate, not a stale nonce.
                again = await node.submit(data)
                assert (again.accepted, again.code) == (False, "duplicate")
                assert node.transaction(tx_hash) == {"hash": tx_hash.hex(), "status": "pending"}
                released.set()
                await done.wait()
                document = finished[0]
                assert document is not None
                assert document["status"] == "committed"
                assert node.store.transaction_location(tx_hash) is not None
                # Written, it is refused as committed, in a batch beside one that is admitted
                # (the batch asks the transaction index once for all of them).
                following = register_identity_transaction(key, info.chain_id, "bank0", 1)
                outcomes = await node.submit_many([data, following])
                assert [(o.accepted, o.code, o.message) for o in outcomes] == [
                    (False, "duplicate", "already committed"),
                    (True, "", ""),
                ]
            finally:
                released.set()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("syncing", [True, False])
async def test_next_proposal_is_built_during_the_write_but_leaves_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncing: bool
) -> None:
    """A syncing primary reaps its next proposal while the blocks before it are written (the
    write does not hold the sync up), but nothing (the proposal's broadcast, a vote) leaves
    the node until the store holds them. At the tip the proposal waits for the write."""
    info = create_testnet(tmp_path / "net", 1, chain_id="unwritten-propose")
    home = load_home(info.homes[0])
    key = info.client_key(0)
    data = register_identity_transaction(key, info.chain_id, "bank0", 0)

    released = _hold_writes_with_transactions(monkeypatch)
    proposed: list[int] = []
    original_propose = runtime.Node._propose

    async def recording_propose(node: runtime.Node, action: RequestProposal) -> None:
        proposed.append(action.height)
        await original_propose(node, action)

    monkeypatch.setattr(runtime.Node, "_propose", recording_propose)

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node: runtime.Node = await nursery.start(runtime.Node(home).run)
            broadcasts: list[bytes] = []
            original_broadcast = node.network.broadcast

            def recording_broadcast(kind: int, message: bytes) -> None:
                broadcasts.append(message)
                original_broadcast(kind, message)

            monkeypatch.setattr(node.network, "broadcast", recording_broadcast)
            if syncing:
                # As while synced blocks wait to be applied.
                monkeypatch.setattr(
                    type(node.replica), "synced_blocks_waiting", property(lambda _: 1)
                )
            released.clear()
            try:
                outcome = await node.submit(data)
                assert outcome.accepted
                while outcome.hash in node.mempool:  # noqa: ASYNC110 - the mempool has no event
                    await trio.sleep(0.01)
                # The block holding it is executed and its write held.
                executed = node.host.height
                assert node.store.height == executed - 1
                sent = len(broadcasts)
                # Syncing, the next height's proposal is started meanwhile...
                with trio.move_on_after(10.0 if syncing else 1.0):
                    while executed + 1 not in proposed:  # noqa: ASYNC110 - a recorded call
                        await trio.sleep(0.01)
                assert (executed + 1 in proposed) == syncing
                # ...reaped and handed to the replica (a block interval, then the empty-block
                # wait), but its broadcast waits for the write.
                await trio.sleep(1.0)
                assert len(broadcasts) == sent
                assert node.store.height == executed - 1
                released.set()
                await node.wait_for_height(executed + 1, timeout_s=DEADLINE_S)
                assert executed + 1 in proposed
                assert len(broadcasts) > sent
            finally:
                released.set()
            nursery.cancel_scope.cancel()


async def test_status_names_one_block_while_its_successors_write_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the block writer's commit and the node's bookkeeping of it, ``/status`` still
    reports the height, block hash and app hash of one and the same block (the last one the
    node counts as written), not the store's newer hash beside the older height."""
    info = create_testnet(tmp_path / "net", 1, chain_id="status-net")
    home = load_home(info.homes[0])
    landed = threading.Event()
    release = threading.Event()

    def hold(store: Store, _: _Entries) -> None:
        if store.height >= 2 and not release.is_set():
            landed.set()
            release.wait(DEADLINE_S)

    _around_commits(monkeypatch, after=hold)
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node: runtime.Node = await nursery.start(runtime.Node(home).run)
            try:
                await trio.to_thread.run_sync(landed.wait, DEADLINE_S)
                status = node.status()
                height = status["height"]
                assert isinstance(height, int)
                # The store is ahead of what the node counts as written: the window.
                assert node.store.height > height >= 1
                block = node.store.block(height)
                assert block is not None
                assert status["last_block_hash"] == block.hash.hex()
                app_hash = node.store.app_hash_at(height)
                assert app_hash is not None
                assert status["app_hash"] == app_hash.hex()
            finally:
                release.set()
            await node.wait_for_height(height + 1, timeout_s=DEADLINE_S)
            status = node.status()
            assert status["last_block_hash"] == node.store.last_block_hash.hex()
            nursery.cancel_scope.cancel()
