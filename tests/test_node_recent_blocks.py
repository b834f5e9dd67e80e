"""The node keeps its last few committed blocks decoded for readers (``/blocks`` followers and
peers a few blocks behind): those are answered without the store, are the blocks the store
holds, and older ones still come from the store."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from consensus.crypto import hash_bytes
from consensus.types import Block
from node import runtime
from node.home import load_home
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import create_testnet
from tests.node_fixtures import with_intervals

DEADLINE_S = 120.0


async def test_recent_blocks_are_served_without_the_store_and_match_it(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="recent-blocks")
    # A block every 20 ms while transactions wait, and none without them.
    home = with_intervals(load_home(Path(info.homes[0])), block_ms=20, empty_ms=3_600_000)
    key = info.client_key(0)
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            # One transaction per block, a few more blocks than are kept: then the chain rests.
            for nonce in range(runtime._RECENT_BLOCKS_MAX + 4):
                outcome = await node.submit(
                    register_identity_transaction(key, home.genesis.chain_id, "bank0", nonce)
                )
                assert outcome.accepted, outcome
                await node.wait_for_height(node.height() + 1, timeout_s=DEADLINE_S)
            while node.mempool.known() or node.height() < node.host.height:
                await node.wait_for_height(node.height() + 1, timeout_s=DEADLINE_S)
            top = node.height()
            recent = range(top - runtime._RECENT_BLOCKS_MAX + 1, top + 1)
            from_store = {height: node.store.block(height) for height in range(1, top + 1)}

            # The store's reads now fail: the recent blocks are answered all the same...
            def no_store_read(height: int) -> Block | None:
                raise AssertionError(f"block {height} read from the store")

            node.store.block = no_store_read
            with_transactions = 0
            for height in recent:
                stored = node._load_block(height)
                assert stored is not None
                block, certificate = stored
                expected = from_store[height]
                assert expected is not None
                assert block.encode() == expected.encode()
                assert certificate == node.store.certificate(height)
                document = node.block(height, transactions=True)
                assert document is not None
                assert document["transaction_hashes"] == [
                    hash_bytes(tx).hex() for tx in expected.transactions
                ]
                with_transactions += bool(expected.transactions)
            # ...and an older one is not kept: it comes from the store.
            older = top - runtime._RECENT_BLOCKS_MAX
            with pytest.raises(AssertionError, match=f"block {older} read from the store"):
                node._load_block(older)
            assert with_transactions == len(recent), "every block carries a transaction"
            nursery.cancel_scope.cancel()
