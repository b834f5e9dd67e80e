"""One simulated node: the real ``Replica`` and ``AppHost`` behind a simulated clock and disk.

Theory of operation
-------------------
``SimNode`` is the simulator's driver for one replica, following the replica's contract:
inputs are fed one at a time, actions are performed in the order returned, and the answers to
requests (``ProposalPayload``, ``ValidityVerdict``, ``BlockExecuted``) are fed back as *later*
events, never from inside the action loop, so the order of ``Persist`` actions is never
disturbed.

The driver syncs the disk where the real node fsyncs (``sims/disk.py``): the write-ahead log
after each ``Persist``, before any send that follows it, and the chain right after a block,
its certificate and its state changes are written (one LMDB transaction in the node). Two
planted driver bugs leave one of those syncs to the operating system's writeback
``LAZY_SYNC_MS`` later: ``vote-before-persist`` (the log: a crash loses a vote that was already
sent) and ``commit-without-fsync`` (the chain: a crash loses a committed block).

A crash discards the replica, the host, the pending-transaction pool, every scheduled callback
of that incarnation and whatever was not yet synced; the application state is rebuilt from the
genesis writes and the durable chain's writes. A restart rebuilds the rest from the disk alone
(``Replica.restore`` with the last durable ``Persist.state`` on top of the durable chain tip).

Every input from the network is handed to the replica with the link-authenticated sender; when
that sender is an honest node, each ``Dropped`` action it causes goes to ``on_rejected`` (the
honest-rejected oracle decides which reasons are violations). A message buffered for a later
height and dropped only when that height comes is not attributed (``Dropped`` names no
sender), so the oracle may miss such a rejection but never blames the wrong sender.

The node's clock is the simulated clock plus its skew.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from apps.base import App, BlockContext
from apps.host import AppHost, TransactionRejected
from apps.state import MemoryBackend, WriteSet
from apps.transaction import Transaction, TransactionError
from consensus.crypto import PrivateKey
from consensus.messages import (
    MessageError,
    NewView,
    Proposal,
    decode_message,
    encode_block_response,
)
from consensus.replica import (
    Action,
    BlockExecuted,
    Broadcast,
    ChainTip,
    Commit,
    Dropped,
    Input,
    PeerMessage,
    Persist,
    ProposalPayload,
    Replica,
    ReplicaConfig,
    ReportEvidence,
    RequestBlocks,
    RequestProposal,
    Send,
    ServeBlocks,
    Start,
    Tick,
    ValidateBlock,
    ValidityVerdict,
)
from consensus.types import Block, CommitCertificate, ValidatorSet, Vote
from sims.byzantine import ByzantineDriver
from sims.disk import SimDisk
from sims.loop import EventLoop, _Scheduled

__all__ = ["DRIVER_BUGS", "CommittedEntry", "NodeEnvironment", "SimNode"]

# How often a node's replica is fed a Tick: well under the view timeout.
TICK_MS: Final = 20
# Simulated cost of executing or validating a block, and the proposer's batching wait.
EXECUTE_MS: Final = 1
VALIDATE_MS: Final = 1
PROPOSE_MS: Final = 5
# With a planted driver bug, how long a write stays in the page cache before the operating
# system's writeback makes it durable (Linux writes dirty pages back within seconds).
LAZY_SYNC_MS: Final = 500
# The planted bugs that live in this driver rather than in the replica.
DRIVER_BUGS: Final = ("vote-before-persist", "commit-without-fsync")
# Pending transactions per node: the workload has a handful of clients, so this is ample.
POOL_TRANSACTIONS_MAX: Final = 1_000


@dataclass(frozen=True, slots=True)
class CommittedEntry:
    """One durably committed height."""

    block: Block
    certificate: CommitCertificate
    app_hash: bytes
    transaction_hashes: frozenset[bytes]
    receipts_ok: int = 0
    rejection_codes: tuple[str, ...] = ()  # one code per receipt the apps rejected
    # The application state changes of this height (replayed to rebuild state after a crash).
    writes: WriteSet = ()


@dataclass(slots=True)
class NodeEnvironment:
    """What a node needs from the simulation (shared by every node)."""

    loop: EventLoop
    chain_id: str
    apps: Callable[[], list[App]]  # a fresh set of the chain's app instances
    validators: ValidatorSet
    replica_config: ReplicaConfig
    genesis_tip: ChainTip
    genesis_writes: tuple[tuple[bytes, bytes | None], ...]
    genesis_time_ms: int
    send: Callable[[int, int, bytes], None]  # (source node, destination validator, bytes)
    broadcast: Callable[[int, bytes], None]  # (source node, bytes)
    # A node committed an entry; with the app hash its replica vouched for the state after it
    # (``Commit.next_app_hash``; None: none).
    on_commit: Callable[[SimNode, CommittedEntry, bytes | None], None]
    on_signed: Callable[[SimNode, bytes], None]  # honest outgoing message, for the checker
    on_evidence: Callable[[SimNode, int], None]
    # (receiving node, sending node id, the drop) for drops of an honest node's message
    on_rejected: Callable[[SimNode, int, Dropped], None]
    driver_bug: str | None = None  # one of DRIVER_BUGS, or None for a correct driver
    # With validator-set changes: the node key of every node slot (the validator records
    # carry them), so messages are routed by node whatever index a set gives it. Empty: slots
    # are the genesis indices, which never change.
    node_keys: tuple[bytes, ...] = ()
    slot_of_node_key: dict[bytes, int] = field(default_factory=dict)

    @property
    def slots(self) -> int:
        """How many node slots take part (validators, and the spares that may join)."""
        return len(self.node_keys) or self.validators.size


@dataclass(slots=True)
class NodeStatistics:
    """Per-node counters."""

    dropped: dict[str, int] = field(default_factory=dict)
    evidence: int = 0
    proposals: int = 0
    sync_requests: int = 0
    restarts: int = 0


class SimNode:
    """The driver of one (honest or byzantine) validator copy.

    ``validator`` is the node's *slot*: its genesis index, and its identity on the simulated
    network. With validator-set changes (``NodeEnvironment.node_keys``) a slot keeps its number
    while the indices of the sets change: the node turns the indices its replica names into
    slots through the validators' node keys, and signs with whichever of its ``keys`` the set
    of a height holds (a rotation hands it its next key, ``add_key``)."""

    def __init__(
        self,
        env: NodeEnvironment,
        *,
        node_id: int,
        validator: int,
        key: PrivateKey,
        rng: random.Random,
        skew_ms: int,
        adversary: ByzantineDriver | None,
    ) -> None:
        self.env = env
        self.node_id = node_id
        self.validator = validator
        self.key = key
        # Every consensus key the node holds: its genesis key, then the keys rotations gave it.
        self.keys: list[PrivateKey] = [key]
        self.rng = rng
        self.skew_ms = skew_ms
        self.adversary = adversary
        self.disk: SimDisk[bytes, CommittedEntry] = SimDisk()
        self.backend = self._durable_state()
        self.statistics = NodeStatistics()
        self.replica: Replica | None = None
        self.host: AppHost | None = None
        self._pool: dict[bytes, Transaction] = {}
        self._incarnation = 0
        self._tick_entry: _Scheduled | None = None

    @property
    def honest(self) -> bool:
        """True for a node that runs the protocol unmodified (twins are not honest)."""
        return self.adversary is None

    @property
    def up(self) -> bool:
        """True while the node is running."""
        return self.replica is not None

    @property
    def height(self) -> int:
        """The height of the node's chain (as the running node reads it)."""
        return len(self.disk.chain)

    def now_ms(self) -> int:
        """The node's local clock: genesis time + simulated time + skew."""
        return self.env.genesis_time_ms + self.env.loop.now_ms + self.skew_ms

    def view(self) -> int:
        """The replica's current view (0 when down)."""
        return 0 if self.replica is None else self.replica.status().view

    def is_primary(self) -> bool:
        """True when the replica is primary of its current (height, view)."""
        return self.replica is not None and self.replica.status().is_primary

    # -- lifecycle ---------------------------------------------------------------------------

    def _durable_state(self) -> MemoryBackend:
        """The application state the durable chain leaves: genesis, then each height's writes."""
        backend = MemoryBackend()
        backend.apply(self.env.genesis_writes)
        for entry in self.disk.committed:
            backend.apply(entry.writes)
        return backend

    def tip(self) -> ChainTip:
        """The last block of the chain as the running node reads it (genesis when empty)."""
        chain = self.disk.chain
        if not chain:
            return self.env.genesis_tip
        last = chain[-1]
        return ChainTip(
            last.block.height, last.block.hash, last.app_hash, last.block.header.timestamp_ms
        )

    def start(self) -> None:
        """Boot (or reboot) from the disk."""
        assert self.replica is None
        self._incarnation += 1
        tip = self.tip()
        env = self.env
        self.host = AppHost(
            env.apps(),
            self.backend,
            chain_id=env.chain_id,
            height=tip.height,
            app_hash=tip.app_hash,
        )
        state = self.disk.latest_record
        validators = self._validators_at(tip.height + 1)
        following = self._validators_at(tip.height + 2)
        if state is not None:
            self.replica = Replica.restore(
                env.replica_config,
                chain_id=env.chain_id,
                validators=validators,
                next_validators=following,
                key=self.keys[0],
                standby_keys=self.keys[1:],
                tip=tip,
                state=state,
            )
        else:
            self.replica = Replica(
                env.replica_config,
                chain_id=env.chain_id,
                validators=validators,
                next_validators=following,
                key=self.keys[0],
                standby_keys=self.keys[1:],
                tip=tip,
            )
        self._pool.clear()
        self.feed(Start(self.now_ms()))
        self._schedule_tick(self.rng.randint(1, TICK_MS))

    def _validators_at(self, height: int) -> ValidatorSet:
        """The set of ``height`` as this node's state decides it (final for heights up to its
        executed height + 2); the genesis set on a chain without a registry."""
        assert self.host is not None
        return self.host.validator_set(height) or self.env.validators

    def add_key(self, key: PrivateKey) -> None:
        """An operator hands the node its next consensus key (a rotation being decided)."""
        if all(held.public_key != key.public_key for held in self.keys):
            self.keys.append(key)
            if self.replica is not None:
                self.replica.add_standby_key(key)

    def _slot(self, index: int) -> int:
        """The node slot of validator ``index`` of the replica's current set."""
        if not self.env.node_keys or self.replica is None:
            return index
        members = self.replica.validators.validators
        node_key = members[index].node_key if 0 <= index < len(members) else None
        return self.env.slot_of_node_key.get(node_key or b"", index)

    def crash(self) -> None:
        """Power cut: lose the replica, the host, the pool and anything not yet durable."""
        self.replica = None
        self.host = None
        self._pool.clear()
        self._incarnation += 1
        if self._tick_entry is not None:
            self.env.loop.cancel(self._tick_entry)
            self._tick_entry = None
        lost_commits = len(self.disk.unsynced_commits)
        self.disk.crash()
        if lost_commits:
            self.backend = self._durable_state()

    def _later(self, delay_ms: int, callback: Callable[[], None]) -> None:
        incarnation = self._incarnation

        def guarded() -> None:
            if self._incarnation == incarnation and self.replica is not None:
                callback()

        self.env.loop.call_later(delay_ms, guarded)

    def _schedule_tick(self, delay_ms: int) -> None:
        incarnation = self._incarnation

        def tick() -> None:
            if self._incarnation != incarnation or self.replica is None:
                return
            self.feed(Tick(self.now_ms()))
            self._schedule_tick(TICK_MS)

        self._tick_entry = self.env.loop.call_later(delay_ms, tick)

    # -- inputs ------------------------------------------------------------------------------

    def deliver(self, source_validator: int, data: bytes, *, honest_source: int | None) -> bool:
        """A message arrived from the network; False when the node is down. ``honest_source``
        is the sending node's id when that node is honest (its drops are then reported)."""
        replica = self.replica
        if replica is None:
            return False
        if self.env.node_keys:
            peer = self.env.node_keys[source_validator]
            members = replica.validators.validators
            sender = next((i for i, v in enumerate(members) if v.node_key == peer), None)
            actions = replica.handle(PeerMessage(data, sender, peer))
        else:
            actions = replica.handle(PeerMessage(data, source_validator))
        if honest_source is not None:
            for action in actions:
                if isinstance(action, Dropped):
                    self.env.on_rejected(self, honest_source, action)
        self.perform(actions)
        return True

    def submit(self, data: bytes) -> bool:
        """A client submits a transaction; True when admitted to the pool."""
        if self.replica is None or self.host is None:
            return False
        try:
            transaction = Transaction.decode(data, chain_id=self.env.chain_id)
            if transaction.hash in self._pool or len(self._pool) >= POOL_TRANSACTIONS_MAX:
                return False
            self.host.check_transaction(transaction)
        except (TransactionError, TransactionRejected):
            return False
        self._pool[transaction.hash] = transaction
        return True

    def feed(self, event: Input) -> None:
        """Hand one input to the replica and perform the actions it returns, in order."""
        replica = self.replica
        assert replica is not None
        self.perform(replica.handle(event))

    # -- actions -----------------------------------------------------------------------------

    def perform(self, actions: Sequence[Action]) -> None:
        """Perform ``actions`` in order (persist before send, unless the planted bug is on)."""
        for action in actions:
            if self.replica is None:
                return  # crashed mid-way (cannot happen in one event, but stay safe)
            if isinstance(action, Persist):
                self.disk.write_record(action.state)
                if self.env.driver_bug == "vote-before-persist":
                    self._sync_later(self.disk.sync_records)
                else:
                    self.disk.sync_records()
            elif isinstance(action, Send):
                self._send(self._slot(action.to), action.message)
            elif isinstance(action, Broadcast):
                self._broadcast(action.message)
            elif isinstance(action, RequestProposal):
                self.statistics.proposals += 1
                self._later(PROPOSE_MS, functools.partial(self._propose, action))
            elif isinstance(action, ValidateBlock):
                self._later(VALIDATE_MS, functools.partial(self._validate, action.block))
            elif isinstance(action, Commit):
                self._commit(action.block, action.certificate, action.next_app_hash)
            elif isinstance(action, ReportEvidence):
                self.statistics.evidence += 1
                self.env.on_evidence(self, action.evidence.validator)
            elif isinstance(action, RequestBlocks):
                self.statistics.sync_requests += 1
                if self.env.node_keys and action.peer_keys:
                    chosen = action.peer_keys[self.rng.randrange(len(action.peer_keys))]
                    self._send(self.env.slot_of_node_key[chosen], action.message)
                elif action.peers:
                    peer = action.peers[self.rng.randrange(len(action.peers))]
                    self._send(self._slot(peer), action.message)
            elif isinstance(action, ServeBlocks):
                self._serve(action)
            elif isinstance(action, Dropped):
                reason = str(action.reason)
                self.statistics.dropped[reason] = self.statistics.dropped.get(reason, 0) + 1

    def _sync_later(self, sync: Callable[[], None]) -> None:
        """The operating system's writeback, ``LAZY_SYNC_MS`` from now (unless we crash)."""
        incarnation = self._incarnation

        def writeback() -> None:
            if self._incarnation == incarnation:
                sync()

        self.env.loop.call_later(LAZY_SYNC_MS, writeback)

    def _observe(self, data: bytes) -> None:
        if self.adversary is None:
            self.env.on_signed(self, data)

    def _send(self, to_validator: int, data: bytes) -> None:
        self._observe(data)
        if self.adversary is None:
            self.env.send(self.node_id, to_validator, data)
            return
        for destination, payload in self.adversary.outgoing(data, [to_validator]):
            self.env.send(self.node_id, destination, payload)

    def _broadcast(self, data: bytes) -> None:
        self._observe(data)
        if self.adversary is None:
            self.env.broadcast(self.node_id, data)
            return
        others = [v for v in range(self.env.slots) if v != self.validator]
        for destination, payload in self.adversary.outgoing(data, others):
            self.env.send(self.node_id, destination, payload)

    def _propose(self, request: RequestProposal) -> None:
        chosen: list[bytes] = []
        size = 0
        for transaction in self._pool.values():
            if len(chosen) >= request.transactions_max:
                break
            if size + len(transaction.encoded) > request.transaction_bytes_max:
                continue
            chosen.append(transaction.encoded)
            size += len(transaction.encoded)
        self.feed(ProposalPayload(request.height, request.view, tuple(chosen), self.now_ms()))

    def _validate(self, block: Block) -> None:
        seen: set[bytes] = set()
        reason = ""
        for index, data in enumerate(block.transactions):
            try:
                transaction = Transaction.decode(data, chain_id=self.env.chain_id)
            except TransactionError as error:
                reason = f"transaction {index}: {error}"
                break
            if transaction.hash in seen:
                reason = f"transaction {index} repeated in the block"
                break
            seen.add(transaction.hash)
        self.feed(ValidityVerdict(block.hash, not reason, reason))

    def _commit(
        self, block: Block, certificate: CommitCertificate, next_app_hash: bytes | None = None
    ) -> None:
        host = self.host
        assert host is not None
        if block.height != host.height + 1:
            # The replica must commit in order; report it through the chain checker.
            entry = CommittedEntry(block, certificate, host.app_hash, frozenset())
            self.env.on_commit(self, entry, None)
            return
        validators = self._validators_at(block.height)
        context = BlockContext(
            height=block.height,
            time_ms=block.header.timestamp_ms,
            proposer=validators.public_key(block.header.proposer)
            if block.header.proposer < validators.size
            else bytes(32),
            chain_id=self.env.chain_id,
        )
        result = host.execute_block(context, block.transactions)
        hashes = frozenset(receipt.transaction_hash for receipt in result.receipts)
        entry = CommittedEntry(
            block,
            certificate,
            result.app_hash,
            hashes,
            receipts_ok=sum(1 for receipt in result.receipts if receipt.ok),
            rejection_codes=tuple(r.code for r in result.receipts if not r.ok),
            writes=result.writes,
        )
        # One write transaction: chain entry and state changes together, then its fsync.
        self.backend.apply(result.writes, result.tree)
        self.disk.write_commit(entry)
        if self.env.driver_bug == "commit-without-fsync":
            self._sync_later(self.disk.sync_chain)
        else:
            self.disk.sync_chain()
        host.committed(block.height, result.app_hash, result.writes)
        for transaction_hash in hashes:
            self._pool.pop(transaction_hash, None)
        self._recheck_pool()
        self.env.on_commit(self, entry, next_app_hash)
        height, app_hash = block.height, result.app_hash
        following = host.validator_set(height + 2)  # None: no registry, the set never changes
        self._later(EXECUTE_MS, lambda: self.feed(BlockExecuted(height, app_hash, following)))

    def _recheck_pool(self) -> None:
        host = self.host
        assert host is not None
        stale: list[bytes] = []
        for transaction_hash, transaction in self._pool.items():
            try:
                host.check_transaction(transaction)
            except TransactionRejected:
                stale.append(transaction_hash)
        for transaction_hash in stale:
            del self._pool[transaction_hash]

    def _serve(self, action: ServeBlocks) -> None:
        if action.peer is not None:
            to = self.env.slot_of_node_key[action.peer]
        else:
            assert action.to is not None, "a request names its sender"
            to = self._slot(action.to)
        entries = [
            (entry.block, entry.certificate)
            for entry in self.disk.chain[action.from_height - 1 : action.to_height]
        ]
        if self.adversary is not None:
            answer = self.adversary.serve(entries, to, self.now_ms())
            if answer is not None:
                self.env.send(self.node_id, to, answer)
            return
        self.env.send(self.node_id, to, encode_block_response(entries))


def signed_statements(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """(validator, kind, height, view, block hash) for every statement signed in ``data``
    (kind 0 proposal, 1 prepare, 2 commit)."""
    try:
        message = decode_message(data)
    except MessageError:
        return []
    if isinstance(message, Vote):
        return [
            (
                message.validator,
                int(message.phase),
                message.height,
                message.view,
                message.block_hash,
            )
        ]
    proposal = message.proposal if isinstance(message, NewView) else message
    if isinstance(proposal, Proposal):
        return [(proposal.validator, 0, proposal.height, proposal.view, proposal.block.hash)]
    return []
