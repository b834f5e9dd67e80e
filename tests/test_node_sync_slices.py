"""Block sync applies a batch of synced blocks one block at a time: the event loop (API,
gossip, admission) gets control between every two executed blocks, and the store's writes
run off the loop. No timing: an observer task records every height it sees while it keeps
yielding; a driver that applied the whole batch in one go would let it see only the first and
last heights."""

from __future__ import annotations

import itertools
import shutil
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from apps.host import BlockResult
from consensus.crypto import hash_bytes
from consensus.messages import (
    MESSAGE_BYTES_MAX,
    BlockRequest,
    Message,
    decode_message,
    encode_block_response,
    encode_message,
)
from consensus.replica import PeerMessage, Tick
from consensus.types import Block, CommitCertificate
from node import runtime
from node.home import Home, load_home
from node.testnet.testnet import create_testnet
from tests.consensus_harness import count_certificate_signature_checks
from tests.node_fixtures import registrations_chain, with_intervals

DEADLINE_S = 120.0
# Blocks in the synced batch (below the replica's ``sync_blocks_max`` of 64).
BLOCKS = 12
# Long enough that the syncing node never proposes a block of its own during the test.
NEVER_MS = 3_600_000


async def test_synced_batch_yields_to_the_loop_between_blocks(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="sync-slices")
    source_dir = Path(info.homes[0])
    # The same validator before any block: it will receive the chain as one sync batch.
    fresh_dir = tmp_path / "fresh"
    shutil.copytree(source_dir, fresh_dir)

    entries: list[tuple[Block, CommitCertificate]] = []
    with trio.fail_after(DEADLINE_S):
        # A lone validator commits empty blocks quickly (every block interval).
        source_home = with_intervals(load_home(source_dir), block_ms=50, empty_ms=50)
        async with trio.open_nursery() as nursery:
            source = await nursery.start(runtime.Node(source_home).run)
            await source.wait_for_height(BLOCKS, timeout_s=DEADLINE_S)
            for height in range(1, BLOCKS + 1):
                stored = source._load_block(height)
                assert stored is not None
                entries.append(stored)
            nursery.cancel_scope.cancel()

        fresh_home = with_intervals(load_home(fresh_dir), block_ms=NEVER_MS, empty_ms=NEVER_MS)
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(fresh_home).run)
            assert node.host.height == 0
            data = encode_block_response(entries, bytes_max=node.network.limits.message_bytes_max)
            seen: set[int] = {node.host.height}
            await node._inputs_send.send(PeerMessage(data, 0))
            waiting = 0
            while node.host.height < BLOCKS:
                seen.add(node.host.height)
                waiting = max(waiting, node.replica.synced_blocks_waiting)
                await trio.lowlevel.checkpoint()
            seen.add(node.host.height)
            # The replica held the batch's later blocks while it applied the earlier ones.
            assert waiting > 1
            assert node.replica.synced_blocks_waiting == 0
            # Another task on the loop ran between every two blocks of the batch. (The driver
            # checkpoints once per block; trio may order a batch of runnable tasks either way,
            # so it can run twice between two turns of this task: two blocks at most.)
            heights = sorted(seen)
            assert heights[0] == 0
            assert heights[-1] == BLOCKS
            assert max(b - a for a, b in itertools.pairwise(heights)) <= 2
            # The store's writes follow on a worker thread (several blocks per transaction
            # when they queue up); the API reports a height only once the store holds it.
            await node.wait_for_height(BLOCKS, timeout_s=DEADLINE_S)
            assert node.written_height == BLOCKS == node.store.height
            for block, _ in entries:
                stored = node._load_block(block.height)
                assert stored is not None
                assert stored[0].hash == block.hash
            nursery.cancel_scope.cancel()


async def test_synced_transactions_are_verified_ahead_and_applied_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks arriving by sync have their signatures verified on worker threads ahead of their
    commit (a response is recognised from its first bytes); the synced node reaches the
    source's state, and the lookahead leaves nothing behind. A response the node did not ask
    for, or a block whose certificate does not certify it, gets no work from the lookahead
    (a peer cannot make the node verify transactions it would not apply)."""
    info = create_testnet(tmp_path / "net", 1, chain_id="sync-verify", observers=1)
    source_dir = Path(info.homes[0])
    # An observer: a copy of the lone validator would make a block of its own at start while
    # the lookahead's first checks run on worker threads.
    fresh_dir = Path(info.homes[1])
    key = info.client_key(0)
    entries: list[tuple[Block, CommitCertificate]] = []
    with trio.fail_after(DEADLINE_S):
        source_home = with_intervals(load_home(source_dir), block_ms=20, empty_ms=NEVER_MS)
        entries, app_hash = await registrations_chain(
            source_home, key, 20, deadline_s=DEADLINE_S, block_every=5
        )
        top = entries[-1][0].height
        assert sum(len(block.transactions) for block, _ in entries) == 20

        fresh_home = with_intervals(load_home(fresh_dir), block_ms=NEVER_MS, empty_ms=NEVER_MS)
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(fresh_home).run)
            data = encode_block_response(entries, bytes_max=node.network.limits.message_bytes_max)
            assert runtime._is_block_response(data)
            # Not asked for: nothing is verified ahead.
            node._prefetch_signatures(data)
            assert not node._verifying
            # Asked for up to height 2 only: nothing above it is verified ahead.
            node._blocks_asked_to = 2  # as after the replica's request for blocks 1-2
            node._prefetch_signatures(data)
            assert set(node._verifying) == {block.hash for block, _ in entries[:2]}
            while node._verifying:
                await trio.lowlevel.checkpoint()
            for block, _ in entries[:2]:
                for data_tx in block.transactions:
                    node._verified.discard(data_tx)
            node.transactions_verified_ahead = 0
            node._blocks_asked_to = 0
            # Nor once the answer to the start-up request is overdue.
            node._probe_answer_by = trio.current_time() - 1.0
            node._prefetch_signatures(data)
            assert not node._verifying
            assert node._probe_answer_by is None
            # A certificate that does not certify its block stops the lookahead there.
            first, first_certificate = entries[0]
            forged = [(first, replace(first_certificate, view=first_certificate.view + 1))]
            node._blocks_asked_to = top  # as after the replica's request for every block
            node._prefetch_signatures(encode_block_response(forged))
            while node._verifying:
                await trio.lowlevel.checkpoint()
            assert len(node._verified) == 0
            # Blocks are checked in groups (1, 2, 4, ...): a certificate that fails inside a
            # group stops the lookahead there, after the blocks before it were verified. (Above
            # executed + 2 the failed block first waits for its own set: not for long here.)
            monkeypatch.setattr(runtime, "_PREFETCH_WAIT_S", 0.2)
            assert len(entries) >= 3
            third, third_certificate = entries[2]
            broken = [
                *entries[:2],
                (third, replace(third_certificate, view=third_certificate.view + 1)),
                *entries[3:],
            ]
            node._prefetch_signatures(encode_block_response(broken))
            while node._verifying:
                await trio.lowlevel.checkpoint()
            ahead = sum(len(block.transactions) for block, _ in entries[:2])
            assert ahead > 0
            assert node.transactions_verified_ahead == ahead
            assert len(node._verified) == ahead
            node._prefetch_signatures(data)
            assert len(node._verifying) == len(entries)
            await node._inputs_send.send(PeerMessage(data, 0))
            await node.wait_for_height(top, timeout_s=DEADLINE_S)
            assert node.host.app_hash == app_hash
            for block, _ in entries:
                for data_tx in block.transactions:
                    document = node.transaction(hash_bytes(data_tx))
                    assert document is not None
                    receipt = document["receipt"]
                    assert isinstance(receipt, dict)
                    assert receipt["status"] == "ok"
            assert not node._verifying
            assert len(node._verified) == 0  # committed transactions leave the cache
            nursery.cancel_scope.cancel()


async def test_the_driver_counts_its_waits_for_signatures_ahead_and_a_full_write_queue(
    tmp_path: Path,
) -> None:
    """Before it executes a synced block, the driver waits for the signatures still being
    checked ahead, and before it queues an executed block for writing, for room in the queue:
    both waits are counted (``waits`` in ``/status``, which ``suanpan bench catchup``
    reports). Each is held here by a gate until the test has seen the driver stop at it."""
    with trio.fail_after(DEADLINE_S):
        entries, app_hash, fresh_home = await _chain_and_observer(tmp_path, "sync-waits", 6)
        top = entries[-1][0].height
        assert top >= 2

        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(fresh_home).run)
            signatures_gate = trio.Event()
            verify_ahead = node._verify_ahead

            async def held_verify(blocks: list[Block]) -> None:
                await signatures_gate.wait()
                await verify_ahead(blocks)

            write_gate = threading.Event()
            commit_blocks = node.store.commit_blocks

            def held_write(
                entries: Sequence[tuple[Block, CommitCertificate, BlockResult]],
                *,
                defer_tree: bool = False,
            ) -> None:
                assert write_gate.wait(DEADLINE_S)
                commit_blocks(entries, defer_tree=defer_tree)

            node._verify_ahead = held_verify
            node.store.commit_blocks = held_write
            node._unwritten_max = 1
            data = encode_block_response(entries, bytes_max=node.network.limits.message_bytes_max)
            node._blocks_asked_to = top  # as after the replica's request for every block
            node._prefetch_signatures(data)
            await node._inputs_send.send(PeerMessage(data, 0))
            await trio.sleep(0.2)
            assert node.host.height == 0, "the first block waits for its signatures"
            assert node.waits.counts["signatures_ahead"] == 0
            signatures_gate.set()
            while node.host.height < 1:
                await trio.lowlevel.checkpoint()
            await trio.sleep(0.2)
            assert node.host.height == 1, "the second block waits for the first one's write"
            assert node.waits.counts["write_queue_full"] == 0
            write_gate.set()
            await node.wait_for_height(top, timeout_s=DEADLINE_S)
            assert node.host.app_hash == app_hash
            for wait in ("signatures_ahead", "write_queue_full"):
                assert node.waits.counts[wait] >= 1, wait
                assert node.waits.totals_ns[wait] > 0, wait
            nursery.cancel_scope.cancel()


async def test_the_lookahead_verifies_two_groups_at_once_and_no_more(tmp_path: Path) -> None:
    """The lookahead checks the next group's certificates and starts its signatures while the
    verifying threads still check the group before (``_PREFETCH_GROUPS_AT_ONCE``), and never
    has more groups under way: with every verification held at a gate, the groups of 1 and 2
    blocks start and the group of 4 waits for a slot; opened, every block is verified ahead
    and applies to the source's state."""
    with trio.fail_after(DEADLINE_S):
        entries, app_hash, fresh_home = await _chain_and_observer(tmp_path, "sync-groups", 14)
        top = entries[-1][0].height
        assert top >= 7  # groups of 1, 2 and 4 blocks at least
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(fresh_home).run)
            gate = trio.Event()
            started: list[list[int]] = []
            verify_ahead = node._verify_ahead

            async def held_verify(blocks: list[Block]) -> None:
                started.append([block.height for block in blocks])
                await gate.wait()
                await verify_ahead(blocks)

            node._verify_ahead = held_verify
            data = encode_block_response(entries, bytes_max=node.network.limits.message_bytes_max)
            node._blocks_asked_to = top  # as after the replica's request for every block
            node._prefetch_signatures(data)
            await trio.testing.wait_all_tasks_blocked()
            assert runtime._PREFETCH_GROUPS_AT_ONCE == 2
            assert started == [[1], [2, 3]]
            gate.set()
            while node._verifying:
                await trio.lowlevel.checkpoint()
            assert sorted(height for group in started for height in group) == list(
                range(1, top + 1)
            )
            assert node.transactions_verified_ahead == 14
            await node._inputs_send.send(PeerMessage(data, 0))
            await node.wait_for_height(top, timeout_s=DEADLINE_S)
            assert node.host.app_hash == app_hash
            nursery.cancel_scope.cancel()


async def test_a_synced_answer_is_decoded_once_and_each_certificate_checked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookahead's decoding of a block response is what the replica gets with the bytes,
    and the replica's check of each block's certificate finds the lookahead's pass: the
    blocks apply to the source's state, each certificate's signatures verified once."""
    with trio.fail_after(DEADLINE_S):
        entries, app_hash, fresh_home = await _chain_and_observer(tmp_path, "sync-once", 8)
        top = entries[-1][0].height
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(fresh_home).run)
            data = encode_block_response(entries, bytes_max=node.network.limits.message_bytes_max)
            node._blocks_asked_to = top  # as after the replica's request for every block
            decoded = node._prefetch_signatures(data)
            assert decoded == decode_message(data)
            while node._verifying:
                await trio.lowlevel.checkpoint()
            checks = node._certificate_checks
            assert checks.hits == 0
            signature_checks = count_certificate_signature_checks(monkeypatch)
            replica_decodes = [0]
            decode = decode_message

            def counted_decode(data: bytes, *, bytes_max: int = MESSAGE_BYTES_MAX) -> Message:
                replica_decodes[0] += 1
                return decode(data, bytes_max=bytes_max)

            monkeypatch.setattr("consensus.replica.decode_message", counted_decode)
            # As the message pump hands it over: from a peer, its validator index for the
            # driver to fill in.
            peer = entries[0][1].signatures[0][1][:32]
            await node._inputs_send.send(PeerMessage(data, None, peer, decoded))
            await node.wait_for_height(top, timeout_s=DEADLINE_S)
            assert node.host.app_hash == app_hash
            assert checks.hits == len(entries)
            assert signature_checks[0] == 0
            assert replica_decodes[0] == 0
            nursery.cancel_scope.cancel()


async def _chain_and_observer(
    tmp_path: Path, chain_id: str, registrations: int
) -> tuple[list[tuple[Block, CommitCertificate]], bytes, Home]:
    """A lone validator's chain of ``registrations`` identity registrations, two per block
    (its blocks with their certificates, and the app hash after them), and the home of an
    observer of that chain that has none of it yet and never proposes."""
    info = create_testnet(tmp_path / "net", 1, chain_id=chain_id, observers=1)
    source_home = with_intervals(load_home(Path(info.homes[0])), block_ms=20, empty_ms=NEVER_MS)
    entries, app_hash = await registrations_chain(
        source_home, info.client_key(0), registrations, deadline_s=DEADLINE_S, block_every=2
    )
    fresh_home = with_intervals(
        load_home(Path(info.homes[1])), block_ms=NEVER_MS, empty_ms=NEVER_MS
    )
    return entries, app_hash, fresh_home


def test_only_block_responses_are_recognised_from_their_first_bytes() -> None:
    empty = encode_block_response([])
    assert runtime._is_block_response(empty)
    request = encode_message(BlockRequest(1, 5))
    assert not runtime._is_block_response(request)
    assert not runtime._is_block_response(b"")
    assert not runtime._is_block_response(b"\x91")
    assert not runtime._is_block_response(b"\xc1\x07")


async def test_a_busy_driver_gets_one_fresh_tick_not_a_backlog_of_stale_ones(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """While the driver executes a long synced batch it takes no input: the ticker queues one
    tick, not one per ``tick_ms`` (replayed afterwards, each stale reading would look like
    seconds passing: the replica asked the peers for the same blocks again and again), and
    the tick is stamped when the driver takes it."""
    info = create_testnet(tmp_path / "net", 1, chain_id="sync-ticks")
    node = runtime.Node(load_home(Path(info.homes[0])))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node._ticker)
            await trio.sleep(50 * node.config.consensus.tick_ms / 1000)
            assert node._inputs.statistics().current_buffer_used == 1
            before_ms = runtime._now_ms()
            tick = await node._next_input()
            assert isinstance(tick, Tick)
            assert tick.now_ms >= before_ms
            await trio.sleep(50 * node.config.consensus.tick_ms / 1000)
            assert node._inputs.statistics().current_buffer_used == 1
            nursery.cancel_scope.cancel()
    finally:
        node.store.close()
