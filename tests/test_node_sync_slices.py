"""Block sync applies a batch of synced blocks one block at a time: the event loop (API,
gossip, admission) gets control between every two committed blocks, and the store's commit
runs off the loop. No timing: an observer task records every height it sees while it keeps
yielding; a driver that applied the whole batch in one go would let it see only the first and
last heights."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import trio

from consensus.messages import encode_block_response
from consensus.replica import PeerMessage
from consensus.types import Block, CommitCertificate
from node import runtime
from node.home import Home, load_home
from node.testnet.testnet import create_testnet

DEADLINE_S = 120.0
# Blocks in the synced batch (below the replica's ``sync_blocks_max`` of 64).
BLOCKS = 12
# Long enough that the syncing node never proposes a block of its own during the test.
NEVER_MS = 3_600_000


def _with_intervals(home: Home, *, block_ms: int, empty_ms: int) -> Home:
    consensus = replace(
        home.config.consensus, block_interval_ms=block_ms, empty_block_interval_ms=empty_ms
    )
    return replace(home, config=replace(home.config, consensus=consensus))


async def test_synced_batch_yields_to_the_loop_between_blocks(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="sync-slices")
    source_dir = Path(info.homes[0])
    # The same validator before any block: it will receive the chain as one sync batch.
    fresh_dir = tmp_path / "fresh"
    shutil.copytree(source_dir, fresh_dir)

    entries: list[tuple[Block, CommitCertificate]] = []
    with trio.fail_after(DEADLINE_S):
        # A lone validator commits empty blocks quickly (every block interval).
        source_home = _with_intervals(load_home(source_dir), block_ms=50, empty_ms=50)
        async with trio.open_nursery() as nursery:
            source = await nursery.start(runtime.Node(source_home).run)
            await source.wait_for_height(BLOCKS, timeout_s=DEADLINE_S)
            for height in range(1, BLOCKS + 1):
                stored = source._load_block(height)
                assert stored is not None
                entries.append(stored)
            nursery.cancel_scope.cancel()

        fresh_home = _with_intervals(load_home(fresh_dir), block_ms=NEVER_MS, empty_ms=NEVER_MS)
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(fresh_home).run)
            assert node.host.height == 0
            data = encode_block_response(entries, bytes_max=node.network.limits.message_bytes_max)
            await node._inputs_send.send(PeerMessage(data, 0))
            seen: set[int] = set()
            while node.host.height < BLOCKS:
                seen.add(node.host.height)
                await trio.lowlevel.checkpoint()
            seen.add(node.host.height)
            # Every height of the batch was visible to another task on the loop.
            assert seen == set(range(BLOCKS + 1))
            for block, _ in entries:
                stored = node._load_block(block.height)
                assert stored is not None
                assert stored[0].hash == block.hash
            nursery.cancel_scope.cancel()
