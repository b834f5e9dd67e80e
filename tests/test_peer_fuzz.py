"""A byzantine validator's hostile frames over an authenticated link never stop a node.

Four validators share a chain; validators 0, 1 and 2 run in-process (a quorum of three, so
the chain commits without the fourth), and the fuzzer holds validator 3's node and consensus
keys: it completes the handshake with node 0 as a registered validator peer would, then sends
well-framed plaintexts of every network frame type (``network.messages``) with hostile bodies:
consensus messages built with the real constructors and validator 3's key but hostile fields
(wrong chain id, heights far away, huge views, hashes of blocks that do not exist), block-sync
answers whose blocks do not link or whose certificates do not verify, block requests inverted
or enormous, state sync requests of every kind with hostile heights and prefixes, responses to
requests never made, gossip that is msgpack of the wrong shape, announcements and fetches of
hashes nobody has, and raw junk. On its turns as primary it proposes blocks on the right parent
(to all three validators, as a primary broadcasts) that are wrong in one way or another, or
right: junk, forged, foreign, out-of-order or doubled transactions, timestamps out of bounds,
wrong hashes, two different proposals at once.

After the barrage node 0 must still be running (no task raised into its nursery), keep
committing, answer its client API over HTTP, and hold a store whose chain links, whose every
block is certified by the validator set, and which agrees block for block with node 1's. The
node may close the hostile connection (a frame the network layer cannot decode ends it); the
fuzzer then reconnects.

Hypothesis runs on a worker thread and hands each example's frames to the event loop, so one
chain serves every example (``tests/test_api_fuzz.py`` does the same for the client API).

The second scenario turns the link around: a node joining by state sync whose only peer is the
fuzzer, which answers its requests with lies of every kind (see ``Server``); the node must
refuse each one, never raise, and install a certified snapshot once the answers are true.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.transaction import TransactionError, sign_transaction
from consensus.codec import CodecError, Limits, Value, decode, encode
from consensus.crypto import PrivateKey
from consensus.messages import (
    BlockRequest,
    BlockResponse,
    NewView,
    PreparedCertificate,
    Proposal,
    ViewChange,
    encode_message,
)
from consensus.replica import primary_index
from consensus.types import Block, CommitCertificate, Phase, Vote, verify_certificate
from network.channel import SecureStream
from network.errors import NetworkError
from network.handshake import perform_handshake
from network.limits import DEFAULT_LIMITS
from network.messages import (
    KIND_MAX,
    Request,
    ResponseStatus,
    encode_announce,
    encode_fetch,
    encode_gossip,
    encode_ping,
    encode_request,
    encode_response,
)
from network.messages import decode_message as decode_frame
from network.messages import encode_message as encode_frame
from node import runtime
from node.config import NodeConfig
from node.home import Home, load_home
from node.snapshots import (
    OFFERS_MAX,
    ChunkInfo,
    Manifest,
    SnapshotDirectory,
    SnapshotError,
    SnapshotServer,
    StateSyncRequest,
    decode_block_answer,
    decode_offers,
)
from node.store import Store
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import create_testnet
from tests.node_fixtures import forged_registration

DEADLINE_S: Final = 120.0
# Blocks node 0 must commit after the barrage: several rounds of every primary, the fuzzer's
# turns (view changes) included.
HEIGHTS_AFTER: Final = 6
# How long those blocks may take (a few per second on an idle machine).
COMMIT_WAIT_S: Final = 60.0
# How long the state sync fuzz waits for the joining node to ask for an example's answers.
MUTATIONS_WAIT_S: Final = 10.0
# Node 0 is under test; 1 and 2 complete the quorum; the fuzzer holds validator 3's keys.
FUZZER: Final = 3
RUNNING: Final = 3
CHAIN_ID: Final = "peer-fuzz"
SNAPSHOT_INTERVAL: Final = 4
FUZZ_SETTINGS: Final = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ----------------------------------------------------------------------------- the chain


@dataclass(frozen=True, slots=True)
class Context:
    """What a hostile message is built from: the fuzzer's keys, node 0's tip right now."""

    chain_id: str
    key: PrivateKey
    index: int
    height: int
    tip: Block
    certificate: CommitCertificate
    snapshots: tuple[int, ...]
    # The round node 0 is deciding, as every validator knows it: what an honest primary
    # builds its proposal on.
    round: Round
    client: PrivateKey
    next_nonce: int


@dataclass(frozen=True, slots=True)
class Round:
    """The height and view being decided, the parent, the app hash and next validators a
    block at that height must name, and who is primary of each view."""

    height: int
    view: int
    parent_hash: bytes
    app_hash: bytes | None
    next_validators_hash: bytes | None
    primaries: tuple[int, ...]
    tip_timestamp_ms: int


Recipe = Callable[[Context], list[bytes]]
"""Builds the plaintexts of one example against the chain as it is when they are sent."""


class ToAll(bytes):
    """A frame the fuzzer sends to every running validator, as a primary broadcasts its
    proposal (every other frame goes to node 0 only)."""

    __slots__ = ()


class OnNewConnection(bytes):
    """A frame the fuzzer sends on a second connection it opens while the first one is still
    open (the node keeps one connection per peer: the newer)."""

    __slots__ = ()


@dataclass(slots=True)
class Link:
    """The fuzzer's authenticated connection to node 0, reopened whenever the node closed it.

    A reader task drains what the node sends (its broadcasts and its answers), so the node's
    queues for this peer never back up because of us."""

    node: runtime.Node
    home: Home
    nursery: trio.Nursery
    stream: SecureStream | None = None
    closed: trio.Event = field(default_factory=trio.Event)
    connections: int = 0
    # Connections opened because the node had closed the one before.
    reconnects: int = 0
    frames_sent: int = 0
    responses: list[tuple[int, int]] = field(default_factory=list)
    # The links to the other running validators, for the frames sent to all.
    others: list[Link] = field(default_factory=list)
    # Connections left open when a newer one was opened, closed with the link.
    retired: list[SecureStream] = field(default_factory=list)

    async def open(self, *, another: bool = False) -> SecureStream:
        """The live connection, dialled again if the node closed the last one; with
        ``another``, a new one while the last one stays open."""
        if self.stream is not None and not self.closed.is_set() and not another:
            return self.stream
        if self.stream is not None and not self.closed.is_set():
            self.retired.append(self.stream)
        elif self.stream is not None:
            self.reconnects += 1
            await trio.aclose_forcefully(self.stream.stream)
        tcp = await trio.open_tcp_stream("127.0.0.1", self.node.ports["p2p"])
        node_key = self.node.home.node_key.public_key
        try:
            result = await perform_handshake(
                tcp,
                initiator=True,
                identity=self.home.node_key,
                chain_id=self.home.genesis.chain_id,
                genesis_hash=self.home.genesis.hash,
                allowlist={node_key},
                limits=DEFAULT_LIMITS,
                expected_peer=node_key,
            )
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        self.stream = result.stream
        self.closed = trio.Event()
        self.connections += 1
        self.nursery.start_soon(self._drain, result.stream, self.closed)
        return result.stream

    async def _drain(self, stream: SecureStream, closed: trio.Event) -> None:
        try:
            while (frame := await stream.receive_frame()) is not None:
                if frame[:1] == b"\x05" and len(frame) >= 10:
                    self.responses.append((int.from_bytes(frame[1:9], "big"), frame[9]))
        except (NetworkError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        closed.set()

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send ``frames`` in one write (the node reads them as one burst), but a frame marked
        ``OnNewConnection`` on a new connection; a connection the node closed is reopened for
        the next example."""
        batch: list[bytes] = []
        for frame in frames:
            if isinstance(frame, OnNewConnection):
                await self._write(batch)
                batch = []
                await self._write([bytes(frame)], another=True)
                continue
            batch.append(bytes(frame))
            if isinstance(frame, ToAll):
                for other in self.others:
                    await other.send([bytes(frame)])
        await self._write(batch)

    async def _write(self, frames: list[bytes], *, another: bool = False) -> None:
        if not frames:
            return
        stream = await self.open(another=another)
        try:
            await stream.send_frames(frames)
            self.frames_sent += len(frames)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed.set()

    async def aclose(self) -> None:
        """Close the connection (the drain task ends with it)."""
        for other in self.others:
            await other.aclose()
        for stream in self.retired:
            await trio.aclose_forcefully(stream.stream)
        if self.stream is not None:
            await trio.aclose_forcefully(self.stream.stream)


@dataclass(slots=True)
class Chain:
    """The running validators and what went wrong with them."""

    nodes: list[runtime.Node]
    homes: list[Home]
    errors: list[BaseException]
    link: Link
    client: PrivateKey

    def context(self) -> Context:
        """The chain as node 0 holds it now (a node that stopped fails the example here)."""
        self.check_running()
        node = self.nodes[0]
        height = node.store.height
        tip = node.store.block(height)
        certificate = node.store.certificate(height)
        assert tip is not None
        assert certificate is not None
        home = self.homes[FUZZER]
        snapshots = tuple(node.snapshots.heights())
        replica = node.replica
        status = replica.status()
        # What the replica holds for the round; a validator learns all of it from the chain.
        app_hash = replica._app_hash
        next_validators = replica._next_validators
        round_ = Round(
            height=status.height,
            view=status.view,
            parent_hash=replica._tip_hash,
            app_hash=app_hash,
            next_validators_hash=None if next_validators is None else next_validators.hash(),
            primaries=tuple(
                primary_index(replica.validators, status.height, status.view + ahead)
                for ahead in range(4)
            ),
            tip_timestamp_ms=replica._tip_timestamp_ms,
        )
        client = self.client
        return Context(
            CHAIN_ID,
            home.validator_key,
            FUZZER,
            height,
            tip,
            certificate,
            snapshots,
            round_,
            client,
            node.next_nonce(client.public_key),
        )

    def check_running(self) -> None:
        """No node task raised."""
        assert not self.errors, f"a node stopped: {self.errors!r}"

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send one example's frames to node 0; a node that stopped fails the example (also
        when that is why the fuzzer could not connect)."""
        self.check_running()
        refused: OSError | None = None
        try:
            await self.link.send(frames)
        except OSError as error:
            refused = error
        if refused is not None:
            # A node that stopped may still be unwinding its nursery; its failure is the one
            # to report (checked outside the handler, so it does not carry the refusal).
            with trio.move_on_after(1.0):
                while not self.errors:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            self.check_running()
            raise refused
        self.check_running()


async def _run_recording(
    node: runtime.Node,
    errors: list[BaseException],
    *,
    task_status: trio.TaskStatus[runtime.Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``node``; an exception out of its nursery is recorded for the test to report."""
    try:
        await node.run(task_status=task_status)
    except Exception as error:
        errors.append(error)


def fast_chain() -> NodeConfig:
    """A block at least every 200 ms, a quick view change past the fuzzer's turns as primary,
    and a snapshot every few heights, so state sync requests find snapshots to serve."""
    return (
        NodeConfig()
        .with_changes("consensus", empty_block_interval_ms=200, view_timeout_ms=500)
        .with_changes("statesync", snapshot_interval=SNAPSHOT_INTERVAL)
    )


@asynccontextmanager
async def running_chain(directory: Path) -> AsyncIterator[Chain]:
    """Validators 0-2 of a four-validator chain, committing, and the fuzzer's link to node 0."""
    info = create_testnet(directory / "net", 4, chain_id=CHAIN_ID, config=fast_chain())
    homes = [load_home(path) for path in info.homes]
    errors: list[BaseException] = []
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            nodes: list[runtime.Node] = []
            for index in range(RUNNING):
                node = runtime.Node(homes[index])
                # Redial jitter from a generator of its own: hypothesis draws on a worker
                # thread while the nodes run, and refuses draws during which the global
                # generator moved.
                node.network._random = random.Random(index).random
                nodes.append(await nursery.start(_run_recording, node, errors))
            await nodes[0].wait_for_height(2, timeout_s=DEADLINE_S)
            link = Link(nodes[0], homes[FUZZER], nursery)
            link.others = [Link(node, homes[FUZZER], nursery) for node in nodes[1:]]
            chain = Chain(nodes, homes, errors, link, info.client_key(0))
            try:
                yield chain
            finally:
                await link.aclose()
                nursery.cancel_scope.cancel()


def fuzz_on_thread(chain: Chain, test: Callable[[Callable[[Recipe], None]], None]) -> None:
    """Run ``test`` (hypothesis, on this worker thread) with a function that sends one
    example's frames to node 0 on the event loop and checks the nodes still run."""

    def send(recipe: Recipe) -> None:
        context = trio.from_thread.run_sync(chain.context)
        trio.from_thread.run(chain.send, recipe(context))

    test(send)


# ----------------------------------------------------------------------------- checks


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """A plain HTTP/1.1 GET on loopback: the status code and the body."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            await stream.send_all(request.encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def check_store(node: runtime.Node, other: runtime.Node) -> None:
    """Node's store links block to block, every block is certified by the validator set of its
    height, the hash index points back, each block names the state the store holds after its
    parent, and every height ``other`` also holds has the same block."""
    store = node.store
    height = store.height
    assert height >= 1
    parent_hash: bytes | None = None
    for at in range(1, height + 1):
        block = store.block(at)
        certificate = store.certificate(at)
        assert block is not None, at
        assert certificate is not None, at
        assert block.height == at
        if parent_hash is not None:
            assert block.header.parent_hash == parent_hash, at
        parent_hash = block.hash
        assert certificate.block_hash == block.hash, at
        assert certificate.height == at, at
        # Raises CertificateError unless a quorum of the height's set signed this block.
        verify_certificate(
            certificate, node.validators_at(at), CHAIN_ID, block_hash=block.hash, height=at
        )
        assert store.height_of(block.hash) == at, at
        # The state after each block is the one the next block's header commits to.
        assert store.app_hash_at(at - 1) == block.header.app_hash, at
        theirs = other.store.block(at)
        if theirs is not None:
            assert theirs.hash == block.hash, at
    assert store.last_block_hash == parent_hash


async def check_alive(chain: Chain) -> None:
    """Node 0 still runs, commits, answers its API, and its store is whole."""
    node = chain.nodes[0]
    chain.check_running()
    target = node.store.height + HEIGHTS_AFTER
    await node.wait_for_height(target, timeout_s=COMMIT_WAIT_S)
    chain.check_running()
    assert node.store.height >= target, (
        f"node 0 stopped committing at height {node.store.height} (waited for {target})"
    )
    status, body = await http_get(node.ports["rpc"], "/status")
    assert status == 200, body[:200]
    assert json.loads(body)["height"] >= target
    check_store(node, chain.nodes[1])


# ----------------------------------------------------------------------------- strategies

# Integers as the decoders' fields take them (non-negative, under 2**63), hostile values first.
_UINTS: Final = st.sampled_from((0, 1, 2, 2**31, 2**32, 2**62, 2**63 - 1)) | st.integers(
    0, 2**63 - 1
)
# Integers msgpack carries that no field takes.
_RAW_INTS: Final = st.sampled_from((-1, -(2**63), 2**63, 2**64 - 1)) | st.integers(
    -(2**63), 2**64 - 1
)
_HASHES: Final = st.binary(min_size=32, max_size=32)
# Hashes of the wrong length (only raw encodings carry them; the constructors refuse them).
_BAD_HASHES: Final = st.binary(max_size=31) | st.binary(min_size=33, max_size=64)
_JUNK: Final = st.binary(max_size=200)
_MSGPACK: Final = st.recursive(
    st.none()
    | st.booleans()
    | _RAW_INTS
    | st.binary(max_size=40)
    | st.text(max_size=10)
    | st.floats(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=10,
)
_PACKED: Final = _MSGPACK.map(lambda value: msgpack.packb(value, use_bin_type=True))


@dataclass(frozen=True, slots=True)
class HeightChoice:
    """A height relative to node 0's tip (``offset``) or absolute (``at``), as it is sent."""

    offset: int | None
    at: int

    def resolve(self, context: Context) -> int:
        """The height, never negative."""
        if self.offset is None:
            return self.at
        return max(0, context.height + self.offset)


_HEIGHT_CHOICES: Final = st.one_of(
    st.integers(-3, 3).map(lambda offset: HeightChoice(offset, 0)),
    st.sampled_from((-1000, 100, 10_000, 2**40)).map(lambda offset: HeightChoice(offset, 0)),
    _UINTS.map(lambda at: HeightChoice(None, at)),
)
_VIEWS: Final = st.sampled_from((0, 1, 2, 3)) | _UINTS
# The validator index a message claims: the fuzzer's own, another validator's (a forgery),
# one past the set, or far past it.
_INDICES: Final = st.sampled_from((FUZZER, FUZZER, 0, 1, 4, 511, 512)) | _UINTS
_CHAINS: Final = st.sampled_from((CHAIN_ID, CHAIN_ID, "other-chain", "c" * 255))
_SIGNERS: Final = st.sampled_from(("fuzzer", "fuzzer", "stranger"))
_STRANGER: Final = PrivateKey(b"\x07" * 32)


def _signer(context: Context, who: str) -> PrivateKey:
    return context.key if who == "fuzzer" else _STRANGER


def _consensus(payload: bytes) -> bytes:
    return encode_frame(runtime.CONSENSUS_KIND, payload)


@st.composite
def hostile_blocks(draw: st.DrawFn) -> Callable[[Context, int], Block]:
    """A block (given the context and its height): built like a proposal's, hostile inside."""
    chain_id = draw(st.sampled_from((CHAIN_ID, CHAIN_ID, "other-chain")))
    linked = draw(st.booleans())
    parent = draw(_HASHES)
    app_hash = draw(_HASHES)
    keep_validators = draw(st.booleans())
    validators_hash = draw(_HASHES)
    proposer = draw(_INDICES)
    timestamp_delta = draw(st.sampled_from((1, 0, -(10**9), 10**12)) | st.integers(-1000, 1000))
    transactions = tuple(draw(st.lists(st.binary(min_size=1, max_size=60), max_size=3)))
    view = draw(_VIEWS)

    def build(context: Context, height: int) -> Block:
        tip = context.tip
        return Block.build(
            chain_id=chain_id,
            height=max(1, height),
            view=view,
            parent_hash=tip.hash if linked else parent,
            app_hash=app_hash,
            next_validators_hash=(
                tip.header.next_validators_hash if keep_validators else validators_hash
            ),
            proposer=proposer,
            timestamp_ms=max(0, tip.header.timestamp_ms + timestamp_delta),
            transactions=transactions,
        )

    return build


@st.composite
def votes(draw: st.DrawFn) -> Recipe:
    """A prepare or commit, signed, with hostile height, view, hash, index or chain."""
    phase = draw(st.sampled_from(tuple(Phase)))
    height = draw(_HEIGHT_CHOICES)
    view = draw(_VIEWS)
    block_hash = draw(st.just(b"") | _HASHES)  # empty: the tip's (a real block)
    index = draw(_INDICES)
    chain_id = draw(_CHAINS)
    who = draw(_SIGNERS)

    def recipe(context: Context) -> list[bytes]:
        vote = Vote.create(
            _signer(context, who),
            chain_id,
            phase=phase,
            height=height.resolve(context),
            view=view,
            block_hash=block_hash or context.tip.hash,
            validator=index,
        )
        return [_consensus(encode_message(vote))]

    return recipe


@st.composite
def proposals(draw: st.DrawFn) -> Recipe:
    """A signed proposal of a hostile block, at a hostile view."""
    build = draw(hostile_blocks())
    height = draw(_HEIGHT_CHOICES)
    view = draw(_VIEWS)
    index = draw(_INDICES)
    chain_id = draw(_CHAINS)
    who = draw(_SIGNERS)

    def recipe(context: Context) -> list[bytes]:
        block = build(context, height.resolve(context))
        proposal = Proposal.create(
            _signer(context, who), chain_id, view=view, validator=index, block=block
        )
        return [_consensus(encode_message(proposal))]

    return recipe


_TRANSACTION_KINDS: Final = st.sampled_from(
    ("valid", "valid", "forged", "other_chain", "junk", "gap", "duplicate", "stale", "calls")
)
# Arguments of any shape the transaction codec carries.
_VALUES: Final = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
_ARGUMENT_NAMES: Final = (
    "institution",
    "public_key",
    "roles",
    "id",
    "name",
    "jurisdiction",
    "action",
    "proposal",
    "validator",
    "amount",
)


@st.composite
def signed_calls(draw: st.DrawFn) -> Callable[[Context, int], bytes]:
    """A transaction the client key really signs, calling an app operation (real or not)
    with arguments of any shape: decodes and verifies, then meets the app."""
    app = draw(st.sampled_from(("membership", "membership", "payments", "nope")))
    operation = draw(
        st.sampled_from(
            ("register_identity", "onboard_enterprise", "propose", "vote", "suspend_identity")
        )
        | st.text(min_size=1, max_size=10)
    )
    names = st.sampled_from(_ARGUMENT_NAMES) | st.text(min_size=1, max_size=8)
    arguments = draw(st.dictionaries(names, _VALUES, max_size=4))

    def build(context: Context, nonce: int) -> bytes:
        try:
            return sign_transaction(
                context.client,
                chain_id=CHAIN_ID,
                app=app,
                operation=operation,
                arguments=arguments,
                nonce=nonce,
            ).encoded
        except (ValueError, TransactionError, CodecError):
            return register_identity_transaction(context.client, CHAIN_ID, "bank0", nonce)

    return build


def _transaction(
    context: Context, kind: str, offset: int, junk: bytes, call: Callable[[Context, int], bytes]
) -> list[bytes]:
    nonce = context.next_nonce + offset
    if kind == "calls":
        return [call(context, nonce)]
    if kind == "valid":
        return [register_identity_transaction(context.client, CHAIN_ID, "bank0", nonce)]
    if kind == "forged":
        return [forged_registration(context.client, CHAIN_ID, nonce)]
    if kind == "other_chain":
        return [register_identity_transaction(context.client, "other-chain", "bank0", nonce)]
    if kind == "gap":
        return [register_identity_transaction(context.client, CHAIN_ID, "bank0", nonce + 5)]
    if kind == "duplicate":
        return [register_identity_transaction(context.client, CHAIN_ID, "bank0", nonce)] * 2
    if kind == "stale" and context.next_nonce:
        return [register_identity_transaction(context.client, CHAIN_ID, "bank0", 0)]
    return [junk or b"\x00"]


@st.composite
def primary_proposals(draw: st.DrawFn) -> Recipe:
    """What the fuzzer proposes on its turns as primary: a block on the right parent in the
    right view, wrong in one or more ways (transactions that are junk, forged, of another
    chain, out of nonce order or doubled; a timestamp out of bounds; a wrong app hash, parent
    or validator hash; another proposer) or right; sometimes two different ones (an
    equivocation the node reports as evidence)."""
    kinds = draw(st.lists(_TRANSACTION_KINDS, max_size=4))
    junk = draw(_JUNK)
    call = draw(signed_calls())
    timestamp = draw(st.sampled_from(("next", "next", "now", "far_future", "same", "zero")))
    wrong = draw(st.sets(st.sampled_from(("app_hash", "parent", "validators", "proposer"))))
    if draw(st.booleans()):
        wrong = set()
    fake = draw(_HASHES)
    twice = draw(st.booleans())

    def recipe(context: Context) -> list[bytes]:
        round_ = context.round
        ahead = next(
            (index for index, primary in enumerate(round_.primaries) if primary == FUZZER), 0
        )
        transactions: list[bytes] = []
        for offset, kind in enumerate(kinds):
            transactions.extend(_transaction(context, kind, offset, junk, call))
        now_ms = int(time.time() * 1000)
        timestamp_ms = {
            "next": max(now_ms, round_.tip_timestamp_ms + 1),
            "now": now_ms,
            "far_future": now_ms + 3_600_000,
            "same": round_.tip_timestamp_ms,
            "zero": 0,
        }[timestamp]
        app_hash = round_.app_hash if round_.app_hash is not None else fake
        validators_hash = round_.next_validators_hash or fake
        frames: list[bytes] = []
        for copy in range(2 if twice else 1):
            block = Block.build(
                chain_id=CHAIN_ID,
                height=round_.height,
                view=round_.view + ahead,
                parent_hash=fake if "parent" in wrong else round_.parent_hash,
                app_hash=fake if "app_hash" in wrong else app_hash,
                next_validators_hash=fake if "validators" in wrong else validators_hash,
                proposer=0 if "proposer" in wrong else FUZZER,
                timestamp_ms=timestamp_ms + copy,
                transactions=transactions,
            )
            proposal = Proposal.create(
                context.key, CHAIN_ID, view=round_.view + ahead, validator=FUZZER, block=block
            )
            frames.append(ToAll(_consensus(encode_message(proposal))))
        return frames

    return recipe


@st.composite
def view_changes(draw: st.DrawFn) -> Recipe:
    """A signed view change, perhaps carrying a prepared certificate of forged signatures."""
    height = draw(_HEIGHT_CHOICES)
    view = draw(st.integers(1, 5) | _UINTS.filter(lambda value: value > 0))
    index = draw(_INDICES)
    chain_id = draw(_CHAINS)
    who = draw(_SIGNERS)
    prepared = draw(st.booleans())
    build = draw(hostile_blocks())
    signers = draw(st.lists(st.integers(0, 600), max_size=5, unique=True).map(sorted))
    signatures = [draw(st.binary(min_size=64, max_size=64)) for _ in signers]

    def recipe(context: Context) -> list[bytes]:
        at = max(1, height.resolve(context))
        certificate = block = None
        if prepared:
            block = build(context, at)
            certificate = PreparedCertificate(
                at, view - 1, block.hash, tuple(zip(signers, signatures, strict=True))
            )
        change = ViewChange.create(
            _signer(context, who),
            chain_id,
            height=at,
            view=view,
            validator=index,
            prepared=certificate,
            prepared_block=block,
        )
        return [_consensus(encode_message(change))]

    return recipe


@st.composite
def new_views(draw: st.DrawFn) -> Recipe:
    """A new view whose view changes all carry the fuzzer's signature under other indices."""
    height = draw(_HEIGHT_CHOICES)
    view = draw(st.integers(1, 8) | _UINTS.filter(lambda value: value > 0))
    senders = draw(st.lists(st.integers(0, 6), min_size=0, max_size=5, unique=True).map(sorted))
    index = draw(_INDICES)
    build = draw(hostile_blocks())
    chain_id = draw(_CHAINS)

    def recipe(context: Context) -> list[bytes]:
        at = max(1, height.resolve(context))
        changes = [
            ViewChange.create(
                context.key,
                chain_id,
                height=at,
                view=view,
                validator=sender,
                prepared=None,
                prepared_block=None,
            )
            for sender in senders
        ]
        proposal = Proposal.create(
            context.key, chain_id, view=view, validator=index, block=build(context, at)
        )
        message = NewView.create(context.key, chain_id, view_changes=changes, proposal=proposal)
        return [_consensus(encode_message(message))]

    return recipe


@st.composite
def block_requests(draw: st.DrawFn) -> Recipe:
    """Requests for blocks: far ahead, enormous, or (raw) inverted, zero or negative."""
    low = draw(_HEIGHT_CHOICES)
    span = draw(st.sampled_from((0, 1, 255, 256, 10**6, 2**62)))
    raw = draw(st.none() | st.tuples(_RAW_INTS, _RAW_INTS))

    def recipe(context: Context) -> list[bytes]:
        if raw is not None:
            return [_consensus(msgpack.packb((6, *raw)))]
        start = max(1, low.resolve(context))
        end = min(start + span, 2**63 - 1)
        return [_consensus(encode_message(BlockRequest(start, end)))]

    return recipe


@st.composite
def block_responses(draw: st.DrawFn) -> Recipe:
    """Block-sync answers nobody asked for: blocks after the tip (or far off) that link or
    not, under certificates of one signature, of forged signatures, of the tip's, or of a
    stranger."""
    first = draw(
        st.sampled_from((1, 2)).map(lambda offset: HeightChoice(offset, 0))
        | st.just(HeightChoice(None, 1))
        | _HEIGHT_CHOICES
    )
    count = draw(st.integers(1, 4))
    build = draw(hostile_blocks())
    linked = draw(st.booleans())
    certify = draw(st.sampled_from(("fuzzer", "forged", "tip", "stranger", "quorum_of_one")))
    forged = draw(st.binary(min_size=64, max_size=64))

    def recipe(context: Context) -> list[bytes]:
        start = max(1, first.resolve(context))
        if start + count > 2**63 - 1:
            start = 2**63 - 1 - count
        entries: list[tuple[Block, CommitCertificate]] = []
        previous: Block | None = None
        for height in range(start, start + count):
            block = build(context, height)
            if linked and previous is not None:
                header = block.header
                block = Block.build(
                    chain_id=header.chain_id,
                    height=height,
                    view=header.view,
                    parent_hash=previous.hash,
                    app_hash=header.app_hash,
                    next_validators_hash=header.next_validators_hash,
                    proposer=header.proposer,
                    timestamp_ms=header.timestamp_ms,
                    transactions=block.transactions,
                )
            previous = block
            entries.append((block, _certificate(context, block, certify, forged)))
        return [_consensus(encode_message(BlockResponse(tuple(entries))))]

    return recipe


def _certificate(context: Context, block: Block, how: str, forged: bytes) -> CommitCertificate:
    if how == "tip":
        return context.certificate
    if how == "forged":
        signatures = tuple((index, forged) for index in range(4))
        return CommitCertificate(block.height, 0, block.hash, signatures)
    key = context.key if how in ("fuzzer", "quorum_of_one") else _STRANGER
    indices = (FUZZER,) if how != "quorum_of_one" else (0, 1, 2, 3)
    votes_of = [
        Vote.create(
            key,
            context.chain_id,
            phase=Phase.COMMIT,
            height=block.height,
            view=block.header.view,
            block_hash=block.hash,
            validator=index,
        )
        for index in indices
    ]
    return CommitCertificate.from_votes(votes_of)


@st.composite
def raw_consensus(draw: st.DrawFn) -> Recipe:
    """Consensus payloads that are msgpack of the wrong shape, or of a kind with junk fields,
    or fields of the wrong size."""
    kind = draw(st.integers(0, 9) | _RAW_INTS)
    fields = draw(st.lists(_MSGPACK, max_size=7))
    bad_hash = draw(_BAD_HASHES)
    choice = draw(st.integers(0, 3))

    def recipe(context: Context) -> list[bytes]:
        if choice == 0:
            return [_consensus(msgpack.packb([kind, *fields], use_bin_type=True))]
        if choice == 1:
            # A vote whose hash is the wrong length.
            vote = (2, context.height + 1, 0, bad_hash, FUZZER, b"\x00" * 64)
            return [_consensus(msgpack.packb(vote, use_bin_type=True))]
        if choice == 2:
            value: Value = (7, ((context.tip.header.fields(), ()), context.certificate.fields()))
            return [_consensus(encode(value))]
        return [_consensus(msgpack.packb(fields, use_bin_type=True))]

    return recipe


@st.composite
def gossiped_calls(draw: st.DrawFn) -> Recipe:
    """Gossip of transactions that decode and verify but call apps with hostile arguments
    (or nonces out of order): admission judges each."""
    calls = draw(st.lists(st.tuples(signed_calls(), st.integers(-1, 3)), min_size=1, max_size=4))

    def recipe(context: Context) -> list[bytes]:
        transactions = [build(context, max(0, context.next_nonce + skew)) for build, skew in calls]
        return [encode_gossip(transactions)]

    return recipe


_CONSENSUS: Final = st.one_of(
    primary_proposals(),
    gossiped_calls(),
    votes(),
    proposals(),
    view_changes(),
    new_views(),
    block_requests(),
    block_responses(),
    raw_consensus(),
)


def _fixed(frames: list[bytes]) -> Recipe:
    return lambda context: frames


@st.composite
def state_sync_requests(draw: st.DrawFn) -> Recipe:
    """Requests on the request/response channel: state sync requests of every kind with
    hostile heights and prefixes, raw ones of the wrong shape, and junk; ids reused, more at
    once than a peer may have in flight, and one on a new connection."""
    request_id = draw(st.sampled_from((0, 1, 2**64 - 1)) | st.integers(0, 2**64 - 1))
    kind = draw(st.integers(0, 6))
    height = draw(_HEIGHT_CHOICES)
    on_snapshot = draw(st.booleans())
    prefix = draw(st.sampled_from((0, 1, 15, 16, 255, 256, 2**63 - 1)) | _UINTS)
    raw = draw(st.none() | st.tuples(_MSGPACK, _MSGPACK, _MSGPACK) | _JUNK)
    # Past the requests one peer may have in flight (8), the rest are answered busy.
    repeat = draw(st.sampled_from((1, 1, 2, 3, 12)))
    parallel = draw(st.booleans())

    def recipe(context: Context) -> list[bytes]:
        if isinstance(raw, bytes):
            payload = raw
        elif raw is not None:
            payload = msgpack.packb((b"statesync", *raw), use_bin_type=True)
        elif 1 <= kind <= 5:
            at = height.resolve(context)
            if on_snapshot and context.snapshots:
                at = context.snapshots[-1]
            payload = StateSyncRequest(kind, at, prefix).encode()
        else:
            payload = msgpack.packb((b"statesync", kind, 0, 0))
        frames = [encode_request(request_id, payload)] * repeat
        if parallel:
            # The last one on a second connection, while the first one's may be in flight.
            frames[-1] = OnNewConnection(frames[-1])
        return frames

    return recipe


_NETWORK_FRAMES: Final = st.one_of(
    # Ping, and a ping with a body.
    st.just(encode_ping()),
    _JUNK.filter(bool).map(lambda body: encode_ping() + body),
    # Gossip: junk transactions, msgpack of the wrong shape, an empty batch.
    st.lists(st.binary(min_size=1, max_size=300), max_size=8).map(encode_gossip),
    _PACKED.map(lambda body: b"\x02" + body),
    # A message of every kind byte, with junk payloads.
    st.tuples(st.integers(0, KIND_MAX), _JUNK | _PACKED).map(lambda item: encode_frame(*item)),
    # Responses to requests never made, of every status and junk payloads.
    st.tuples(
        st.sampled_from((0, 1, 2**64 - 1)) | st.integers(0, 2**64 - 1),
        st.sampled_from(tuple(ResponseStatus)),
        _JUNK | _PACKED,
    ).map(lambda item: encode_response(*item)),
    # Announcements and fetches of hashes nobody has (and bodies not whole hashes).
    st.lists(_HASHES, min_size=1, max_size=40).map(encode_announce),
    st.lists(_HASHES, min_size=1, max_size=40).map(encode_fetch),
    st.tuples(st.sampled_from((b"\x06", b"\x07")), st.binary(max_size=100)).map(b"".join),
    # Truncated headers, unknown frame types, unknown statuses, nothing at all.
    st.sampled_from(
        (b"", b"\x03", b"\x04\x00", b"\x05" + b"\x00" * 8, b"\x05" + b"\x00" * 8 + b"\x09")
    ),
    st.tuples(st.integers(0x08, 0xFF) | st.just(0), _JUNK).map(
        lambda item: bytes((item[0],)) + item[1]
    ),
)
_FRAMES: Final = st.lists(
    _NETWORK_FRAMES | _NETWORK_FRAMES.map(OnNewConnection), min_size=1, max_size=4
).map(_fixed)


# ----------------------------------------------------------------------------- the fuzz


async def test_a_byzantine_validators_hostile_frames_never_stop_a_node(tmp_path: Path) -> None:
    def consensus(send: Callable[[Recipe], None]) -> None:
        @FUZZ_SETTINGS
        @given(recipe=_CONSENSUS)
        def run(recipe: Recipe) -> None:
            send(recipe)

        run()

    def requests(send: Callable[[Recipe], None]) -> None:
        @FUZZ_SETTINGS
        @given(recipe=state_sync_requests())
        def run(recipe: Recipe) -> None:
            send(recipe)

        run()

    def frames(send: Callable[[Recipe], None]) -> None:
        @FUZZ_SETTINGS
        @given(recipe=_FRAMES)
        def run(recipe: Recipe) -> None:
            send(recipe)

        run()

    async with running_chain(tmp_path) as chain:
        node = chain.nodes[0]
        for test in (consensus, requests, frames):
            await trio.to_thread.run_sync(fuzz_on_thread, chain, test)
        await check_alive(chain)
        # The barrage reached the node and each layer judged it: the network closed the link
        # over frames it cannot decode (and the fuzzer came back), answered requests (busy
        # past the peer's in-flight limit), and the replica dropped consensus messages, each
        # with its reason.
        link, statistics = chain.link, node.network.statistics()
        assert link.frames_sent > 0
        assert link.reconnects > 0
        assert sum(statistics.connection_errors.values()) >= link.reconnects
        assert statistics.requests_served > 0
        assert statistics.requests_busy > 0
        assert link.responses
        assert statistics.responses_unmatched > 0
        assert dropped_consensus_messages(node) > 0


def dropped_consensus_messages(node: runtime.Node) -> float:
    """Consensus messages the node's replica dropped, all reasons together (its metrics)."""
    prefix = "suanpan_dropped_consensus_messages_total{"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in node.metrics_bytes().decode().splitlines()
        if line.startswith(prefix)
    )


# ----------------------------------------------------------------------------- state sync
#
# The other direction: a node joining by state sync asks its peers for offers, validator
# changes, blocks, a manifest and chunks over the request/response channel, and the only peer
# it has is the fuzzer (validator 3), which answers each request as the example says: truly
# (from a stopped validator's snapshots), with an error or busy status, junk, a damaged or
# crafted answer (offers far away, manifests whose chunks are out of range or duplicated,
# another chunk's bytes), twice, after an answer to an earlier request, or by hanging up.

# The requests of one sync attempt, in the order it makes them.
_STEPS: Final = (
    StateSyncRequest.OFFERS,
    StateSyncRequest.VALIDATORS,
    StateSyncRequest.BLOCK,
    StateSyncRequest.MANIFEST,
    StateSyncRequest.CHUNK,
)
# Answers that carry the true one (once, twice, or after another response).
_TRUTHFUL: Final = frozenset(("honest", "duplicate", "stale_first", "unsolicited_first"))
_OFFERS_LIMITS: Final = Limits(total_bytes_max=1 << 16, depth_max=4)
_MUTATIONS: Final = (
    "honest",
    "error",
    "busy",
    "junk",
    "packed",
    "flip",
    "truncate",
    "extend",
    "duplicate",
    "stale_first",
    "unsolicited_first",
    "crafted",
    "crafted",
    "hang_up",
)


@dataclass(frozen=True, slots=True)
class Mutation:
    """How the fuzzer answers one request of the sync's step ``step`` (an index into
    ``_STEPS``) or a later one: ``how`` (one of ``_MUTATIONS``) and the drawn material it
    uses."""

    step: int
    how: str
    junk: bytes
    packed: bytes
    position: int
    number: int
    choice: int


_MUTATION: Final = st.builds(
    Mutation,
    # The later steps weigh more: a sync only gets to them past the earlier ones.
    step=st.sampled_from((0, 1, 2, 2, 3, 3, 4, 4, 4)),
    how=st.sampled_from(_MUTATIONS),
    junk=_JUNK,
    packed=_PACKED,
    position=st.integers(0, 2**16),
    number=st.sampled_from((0, 1, 15, 16, 17, 255, 256, 65535, 65536, 2**63 - 1)) | _UINTS,
    choice=st.integers(0, 7),
)


def _offers_none(body: bytes) -> bool:
    try:
        return not decode_offers(body)
    except SnapshotError:
        return False


def crafted_answer(request: StateSyncRequest, honest: bytes, mutation: Mutation) -> bytes:
    """A well-formed answer to ``request`` with hostile content."""
    number, choice = mutation.number, mutation.choice
    if request.kind == StateSyncRequest.OFFERS:
        # Offers far off or of made-up app hashes, before the true ones.
        true = decode(honest, _OFFERS_LIMITS)
        assert isinstance(true, tuple)
        offers = [(number, mutation.junk[:32].ljust(32, b"\x00"), number, number)]
        if choice % 2:
            offers *= OFFERS_MAX - len(true)  # as many as an answer may hold, all alike
        return encode((*offers, *true))
    if request.kind == StateSyncRequest.VALIDATORS:
        changes: tuple[Value, ...] = ((number, ()),) if choice % 2 else ((2, ()), (1, ()))
        return encode(changes)
    if request.kind == StateSyncRequest.BLOCK:
        try:
            block, certificate = decode_block_answer(honest)
        except SnapshotError:
            return honest
        # Swapped parts, or the block with a certificate cut to its first signature.
        if choice % 2:
            return encode((certificate, block))
        fields = CommitCertificate.decode(certificate).fields()
        cut: Value = (*fields[:3], fields[3][:1])  # type: ignore[index]
        return encode((block, encode(cut)))
    if request.kind == StateSyncRequest.MANIFEST:
        try:
            manifest = Manifest.decode(honest)
        except SnapshotError:
            return honest
        chunks = list(manifest.chunks)
        first = chunks[0] if chunks else ChunkInfo(0, b"\x00" * 32, 1, 1)
        if choice == 0:
            chunks.append(replace(first, prefix=number))  # out of range, or a duplicate
        elif choice == 1:
            chunks = chunks + chunks
        elif choice == 2:
            chunks = []
        elif choice == 3:
            chunks = [replace(chunk, entries=number, size_bytes=number) for chunk in chunks]
        elif choice == 4:
            manifest = replace(manifest, depth=min(number, 4))
        elif choice == 5:
            manifest = replace(manifest, height=number)
        else:
            chunks = [replace(chunk, slot=mutation.junk) for chunk in chunks]
        return replace(manifest, chunks=tuple(chunks)).encode()
    # A chunk: another kind of array, entries cut or doubled, or an empty array.
    try:
        entries = msgpack.unpackb(honest, use_list=True, raw=True)
    except Exception:  # the honest answer was an error text
        return honest
    if not isinstance(entries, list):
        return honest
    if choice == 0:
        entries = entries + entries
    elif choice == 1:
        entries = entries[1:]
    elif choice == 2:
        entries = []
    elif choice == 3:
        entries = [[b"", b""]] * min(number, 1000)
    elif choice == 4:
        entries = list(reversed(entries))
    else:
        entries = [[key, value + b"\x00"] for key, value in entries]
    packed: bytes = msgpack.packb(entries, use_bin_type=True)
    return packed


@dataclass(slots=True)
class Server:
    """The fuzzer's side of the state sync: answers the syncing node's requests, each with the
    next queued mutation (waiting for one when none is queued), truly once ``honest`` is set."""

    node: runtime.Node
    home: Home
    snapshots: SnapshotServer
    errors: list[BaseException]
    queue: list[Mutation] = field(default_factory=list)
    queued: trio.Event = field(default_factory=trio.Event)
    honest: bool = False
    answered: int = 0
    hung_up: int = 0
    last_id: int = 0

    async def run(self) -> None:
        """Connect to the node (again after every hang-up) and serve it."""
        while not self.errors:
            try:
                tcp = await trio.open_tcp_stream("127.0.0.1", self.node.ports["p2p"])
            except OSError:
                await trio.sleep(0.05)  # the node is gone (the test reports why) or busy
                continue
            node_key = self.node.home.node_key.public_key
            try:
                result = await perform_handshake(
                    tcp,
                    initiator=True,
                    identity=self.home.node_key,
                    chain_id=self.home.genesis.chain_id,
                    genesis_hash=self.home.genesis.hash,
                    allowlist={node_key},
                    limits=DEFAULT_LIMITS,
                    expected_peer=node_key,
                )
                await self._serve(result.stream)
            except (NetworkError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await trio.aclose_forcefully(tcp)
            await trio.sleep(0.05)

    async def _next(self, kind: int) -> Mutation | None:
        """The mutation for a request of ``kind``: the queue's first once the sync has come
        to the step it aims at (a request of an earlier step is answered truly); None once
        ``honest`` is set."""
        while not self.honest and not self.queue:
            self.queued = trio.Event()
            await self.queued.wait()
        if self.honest or _STEPS.index(kind) < self.queue[0].step:
            return None
        mutation = self.queue.pop(0)
        if kind == StateSyncRequest.CHUNK and mutation.how in _TRUTHFUL:
            # The state fits one chunk: a true chunk ends the sync, and the examples after
            # it would find nobody asking. Duplicate and stray responses are tried on the
            # steps before.
            return replace(mutation, how="flip")
        return mutation

    async def _serve(self, stream: SecureStream) -> None:
        while (frame := await stream.receive_frame()) is not None:
            message = decode_frame(frame, DEFAULT_LIMITS)
            if not isinstance(message, Request):
                continue
            try:
                honest = await self.snapshots.handle(self.home.node_key.public_key, message.payload)
                status = ResponseStatus.OK
            except SnapshotError as error:
                honest, status = str(error).encode(), ResponseStatus.ERROR
            request = StateSyncRequest.decode(message.payload)
            mutation = await self._next(request.kind)
            frames = self._answer(message, honest, status, mutation)
            self.last_id = message.request_id
            self.answered += 1
            if frames is None:
                self.hung_up += 1
                return
            await stream.send_frames(frames)

    def _answer(
        self, message: Request, honest: bytes, status: ResponseStatus, mutation: Mutation | None
    ) -> list[bytes] | None:
        request_id = message.request_id
        true = encode_response(request_id, status, honest)
        if mutation is None or mutation.how == "honest":
            return [true]
        how = mutation.how
        if how == "hang_up":
            return None
        if how in ("error", "busy"):
            failed = ResponseStatus.ERROR if how == "error" else ResponseStatus.BUSY
            return [encode_response(request_id, failed, mutation.junk)]
        if how == "duplicate":
            return [true, true]
        if how == "stale_first":
            return [encode_response(self.last_id, ResponseStatus.OK, mutation.junk), true]
        if how == "unsolicited_first":
            return [encode_response(mutation.number % 2**64, ResponseStatus.OK, honest), true]
        if how == "junk":
            body = mutation.junk
        elif how == "packed":
            body = mutation.packed
        elif how == "flip" and honest:
            at = mutation.position % len(honest)
            body = honest[:at] + bytes((honest[at] ^ 0x5A,)) + honest[at + 1 :]
        elif how == "truncate":
            body = honest[: mutation.position % (len(honest) + 1)]
        elif how == "extend":
            body = honest + mutation.junk
        elif status is ResponseStatus.OK:
            body = crafted_answer(StateSyncRequest.decode(message.payload), honest, mutation)
        else:
            body = honest
        request = StateSyncRequest.decode(message.payload)
        if request.kind == StateSyncRequest.OFFERS and _offers_none(body):
            # An empty list is a peer's word that it holds no snapshot, which a node with that
            # peer alone rightly takes for a young chain (it joins from genesis).
            body = b""
        return [encode_response(request_id, ResponseStatus.OK, body)]


@dataclass(slots=True)
class Joining:
    """A node joining by state sync, the fuzzer serving it, and the stopped chain's store."""

    node: runtime.Node
    server: Server
    store: Store
    offered: list[int]
    errors: list[BaseException]

    def check_running(self) -> None:
        """No node task raised."""
        check(self.errors)

    async def installed(self) -> int:
        """Answer truly until the node has installed a snapshot; check it is one on offer
        with the chain's state at its height; return its height."""
        self.server.honest = True
        self.server.queued.set()
        while self.node.state_syncing:
            self.check_running()
            await trio.sleep(0.05)
        self.check_running()
        height = self.node.state_synced_from
        assert height in self.offered, (height, self.offered)
        assert self.node.store.height == height
        assert self.node.store.app_hash == self.store.app_hash_at(height)
        block = self.store.block(height)
        assert block is not None
        assert self.node.store.last_block_hash == block.hash
        return height


@asynccontextmanager
async def joining_node(directory: Path, *, halt_height: int = 0) -> AsyncIterator[Joining]:
    """A four-validator chain run until it holds two snapshots, then stopped; a fifth node
    joining it by state sync whose only peer is the fuzzer (validator 3), which serves node
    0's snapshots and blocks as its ``Server`` says. ``halt_height``: the joining node's
    ``[consensus] halt_height``."""
    info = create_testnet(directory / "net", 4, chain_id=CHAIN_ID, config=fast_chain(), observers=1)
    homes = [load_home(path) for path in info.homes]
    errors: list[BaseException] = []
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            nodes: list[runtime.Node] = []
            for index in range(RUNNING):
                node = runtime.Node(homes[index])
                node.network._random = random.Random(index).random
                nodes.append(await nursery.start(_run_recording, node, errors))
            await nodes[0].wait_for_height(3 * SNAPSHOT_INTERVAL, timeout_s=DEADLINE_S)
            # The snapshot of a height is exported on a worker thread after its commit.
            while len(nodes[0].snapshots.heights()) < 2:  # noqa: ASYNC110
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        check(errors)
        source = homes[0]
        store = Store(source.data_dir, chain_id=CHAIN_ID, genesis_hash=source.genesis.hash)
        try:
            snapshots = SnapshotServer(
                SnapshotDirectory(source.snapshots_dir, CHAIN_ID),
                store,
                serve_bytes_per_second=1 << 30,
            )
            home = replace(
                homes[4],
                config=homes[4]
                .config.with_changes(
                    "statesync", enabled=True, peers_min=1, request_timeout_ms=2000
                )
                .with_changes("consensus", halt_height=halt_height),
            )
            async with trio.open_nursery() as nursery:
                node = runtime.Node(home)
                node.network._random = random.Random(4).random
                await nursery.start(_run_recording, node, errors)
                server = Server(node, homes[FUZZER], snapshots, errors)
                nursery.start_soon(server.run)
                offered = SnapshotDirectory(source.snapshots_dir, CHAIN_ID).heights()
                yield Joining(node, server, store, offered, errors)
                nursery.cancel_scope.cancel()
        finally:
            store.close()
    check(errors)


async def test_a_byzantine_peer_answering_state_sync_never_stops_the_joining_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The joining node refuses every lie with a log line and starts over (at once here),
    never raises, and installs a certified snapshot once the answers are true (one on offer,
    with the chain's state at its height: an attempt whose newest snapshot met a lie goes on
    to the next one)."""
    monkeypatch.setattr(runtime, "_STATE_SYNC_RETRY_SECONDS", 0.05)
    async with joining_node(tmp_path) as joining:
        server = joining.server

        def mutate(mutations: list[Mutation]) -> None:
            def enqueue() -> None:
                server.queue.extend(mutations)
                server.queued.set()

            trio.from_thread.run_sync(enqueue)
            trio.from_thread.run(wait_taken, server, joining.node)
            trio.from_thread.run_sync(joining.check_running)

        def fuzz() -> None:
            @STATE_SYNC_SETTINGS
            @given(mutations=st.lists(_MUTATION, min_size=1, max_size=6))
            def run(mutations: list[Mutation]) -> None:
                mutate(mutations)

            run()

        await trio.to_thread.run_sync(fuzz)
        assert server.answered > 0
        await joining.installed()


async def test_a_peer_that_fails_to_list_its_snapshots_does_not_make_a_node_skip_state_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A joining node whose only peer answers the request for offers with an error, busy,
    junk, or by hanging up has not heard that nobody holds a snapshot: it tries again (and
    installs one once the peer answers) instead of giving state sync up to join from genesis,
    where peers that joined by state sync themselves hold no blocks to give."""
    monkeypatch.setattr(runtime, "_STATE_SYNC_RETRY_SECONDS", 0.05)
    async with joining_node(tmp_path) as joining:
        for how in ("error", "busy", "junk", "hang_up"):
            lie = Mutation(
                step=0, how=how, junk=b"\xc1", packed=b"", position=0, number=0, choice=0
            )
            joining.server.queue.append(lie)
        joining.server.queued.set()
        await wait_taken(joining.server, joining.node)
        assert not joining.server.queue, "the node stopped asking for offers"
        assert joining.node.state_syncing, "the node gave state sync up"
        await joining.installed()


STATE_SYNC_SETTINGS: Final = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


async def wait_taken(server: Server, node: runtime.Node) -> None:
    """Until the node has asked for every queued mutation (or has finished its sync)."""
    with trio.move_on_after(MUTATIONS_WAIT_S):
        # The queue is the server's to empty and the flag the node's to clear; looking at
        # them 200 times a second costs nothing next to the sync.
        while server.queue and node.state_syncing and not server.errors:  # noqa: ASYNC110
            await trio.sleep(0.005)
    server.queue.clear()


def check(errors: list[BaseException]) -> None:
    """No node task raised."""
    assert not errors, f"a node stopped: {errors!r}"
