"""A lone validator's chain, run for real, whose certified blocks tests hand to another node
(block sync without the network), blocks of its making certified by its key, and a node
home's block intervals set for a test."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import trio

from consensus.crypto import PrivateKey
from consensus.messages import encode_block_response
from consensus.replica import PeerMessage
from consensus.types import Block, CommitCertificate, Phase, Vote
from node import runtime
from node.home import Home
from node.testnet.loadgen import register_identity_transaction

__all__ = [
    "NEVER_MS",
    "answer_block_request",
    "certified_by_lone_validator",
    "forged_registration",
    "next_block",
    "registrations_chain",
    "synced",
    "with_consensus",
    "with_intervals",
]

# Long enough that a node never proposes a block of its own unless told to.
NEVER_MS = 3_600_000

_T = TypeVar("_T")


def certified_by_lone_validator(key: PrivateKey, block: Block) -> tuple[Block, CommitCertificate]:
    """``block`` with the lone validator's commit certificate (``key`` signs as validator 0)."""
    vote = Vote.create(
        key,
        block.header.chain_id,
        phase=Phase.COMMIT,
        height=block.height,
        view=block.header.view,
        block_hash=block.hash,
        validator=0,
    )
    return block, CommitCertificate.from_votes([vote])


def next_block(previous: Block, app_hash: bytes, transactions: tuple[bytes, ...] = ()) -> Block:
    """A block of ``transactions`` after ``previous`` that claims ``app_hash`` for the state
    before it."""
    return Block.build(
        chain_id=previous.header.chain_id,
        height=previous.height + 1,
        view=previous.header.view,
        parent_hash=previous.hash,
        app_hash=app_hash,
        next_validators_hash=previous.header.next_validators_hash,
        proposer=0,
        timestamp_ms=previous.header.timestamp_ms + 1000,
        transactions=transactions,
    )


def forged_registration(key: PrivateKey, chain_id: str, nonce: int) -> bytes:
    """An identity registration by ``key`` whose signature (its last field) is broken."""
    signed = register_identity_transaction(key, chain_id, "bank0", nonce)
    return signed[:-1] + bytes((signed[-1] ^ 0x01,))


def with_consensus(home: Home, *, block_ms: int, **changes: object) -> Home:
    """``home`` proposing at most every ``block_ms`` while transactions wait, never an empty
    block, and with ``changes`` to other ``[consensus]`` keys."""
    config = home.config.with_changes(
        "consensus", block_interval_ms=block_ms, empty_block_interval_ms=NEVER_MS, **changes
    )
    return replace(home, config=config)


async def answer_block_request(
    node: runtime.Node, entries: list[tuple[Block, CommitCertificate]]
) -> None:
    """Hand ``node`` ``entries`` as the answer to its request for all of them (block sync
    without the network): their signatures are verified ahead, as for the replica's own
    requests."""
    data = encode_block_response(entries, bytes_max=node.network.limits.message_bytes_max)
    node._blocks_asked_to = entries[-1][0].height  # as after the replica's request for them
    node._prefetch_signatures(data)
    await node._inputs_send.send(PeerMessage(data, 0))


def with_intervals(home: Home, *, block_ms: int, empty_ms: int) -> Home:
    """``home`` with its primary proposing at most every ``block_ms`` while transactions wait
    and an empty block every ``empty_ms``."""
    consensus = replace(
        home.config.consensus, block_interval_ms=block_ms, empty_block_interval_ms=empty_ms
    )
    return replace(home, config=replace(home.config, consensus=consensus))


async def synced(
    home: Home,
    entries: list[tuple[Block, CommitCertificate]],
    then: Callable[[runtime.Node], Awaitable[_T]],
    *,
    deadline_s: float,
) -> _T:
    """Run the node of ``home``, hand it ``entries`` as one answer to its request for blocks
    and, once it applied them all, return what ``then`` makes of it (the node is stopped
    after)."""
    top = entries[-1][0].height
    with trio.fail_after(deadline_s):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            await answer_block_request(node, entries)
            await node.wait_for_height(top, timeout_s=deadline_s)
            result = await then(node)
            nursery.cancel_scope.cancel()
    return result


async def registrations_chain(
    home: Home,
    key: PrivateKey,
    count: int,
    *,
    deadline_s: float,
    block_every: int | None = None,
) -> tuple[list[tuple[Block, CommitCertificate]], bytes]:
    """Run the lone validator of ``home`` until ``count`` identity registrations signed by
    ``key`` (nonces 0..count-1, for ``bank0``) are committed; with ``block_every``, wait for a
    new block after every that many, so they spread over several blocks. Returns every
    committed block with its certificate, and the app hash after the last."""
    async with trio.open_nursery() as nursery:
        source = await nursery.start(runtime.Node(home).run)
        chain_id = home.genesis.chain_id
        for nonce in range(count):
            outcome = await source.submit(
                register_identity_transaction(key, chain_id, "bank0", nonce)
            )
            assert outcome.accepted, outcome
            if block_every is not None and nonce % block_every == block_every - 1:
                await source.wait_for_height(source.height() + 1, timeout_s=deadline_s)
        while source.mempool.known():
            await source.wait_for_height(source.height() + 1, timeout_s=deadline_s)
        top = source.height()
        entries = [stored for h in range(1, top + 1) if (stored := source._load_block(h))]
        app_hash = source.host.app_hash
        nursery.cancel_scope.cancel()
    return entries, app_hash
