"""A tiny deterministic driver for consensus scenario tests (the full simulator is sims/).

It plays every replica's driver by the contract in ``consensus.replica.Replica``: it performs
actions in order, keeps each replica's last persisted state and its committed chain, answers
proposal and validation requests at once, executes committed blocks with a toy state machine
(the app hash is a hash chain over block hashes), and delivers messages through one queue.
Tests shape the network with ``deliver_filter`` (drop or hold messages) and a seeded ``shuffle``.

Validator-set changes: ``schedule`` says which set is in force at each height (the toy state
machine "decides" it), every node holds its own key plus any ``standby`` keys, and nodes whose
keys are in no set yet follow the chain as observers. Nodes are reached by their node keys
(``NODE_KEYS``), which every validator record carries, so routing survives index changes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

import consensus.crypto
from consensus.crypto import PrivateKey, hash_bytes
from consensus.evidence import Evidence
from consensus.messages import (
    Message,
    PreparedCertificate,
    Proposal,
    ViewChange,
    decode_message,
    encode_block_response,
    encode_message,
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
from consensus.types import (
    Block,
    CommitCertificate,
    Phase,
    Validator,
    ValidatorSchedule,
    ValidatorSet,
    Vote,
)

CHAIN_ID = "test-chain"
GENESIS_HASH = hash_bytes(b"genesis")
GENESIS_APP_HASH = hash_bytes(b"genesis-app")
GENESIS_TIME_MS = 1_000_000
TICK_MS = 50


def make_keys(count: int) -> list[PrivateKey]:
    """Deterministic validator keys."""
    return [PrivateKey(hash_bytes(f"validator-{i}".encode())) for i in range(count)]


def node_key(node: int) -> bytes:
    """The (link identity) node key of harness node ``node``."""
    return hash_bytes(f"node-{node}".encode())


def make_validators(keys: list[PrivateKey], nodes: list[int] | None = None) -> ValidatorSet:
    """The validator set of ``keys`` in order, run by harness nodes ``nodes`` (default: the
    i-th key by node i)."""
    owners = list(range(len(keys))) if nodes is None else nodes
    return ValidatorSet(
        tuple(
            Validator(f"v{owner}", key.public_key, node_key(owner))
            for owner, key in zip(owners, keys, strict=True)
        )
    )


def next_app_hash(app_hash: bytes, block: Block) -> bytes:
    """The toy application: state is a hash chain over committed blocks."""
    return hash_bytes(app_hash + block.hash)


@dataclass
class Node:
    """One replica plus what its driver owns: disk (persisted state, chain) and logs."""

    index: int
    replica: Replica
    persisted: bytes | None = None
    chain: list[tuple[Block, CommitCertificate]] = field(default_factory=list)
    app_hash: bytes = GENESIS_APP_HASH
    evidence: list[Evidence] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)
    up: bool = True
    # Commits that came with the replica's hint of the state after the block (each checked
    # against the toy application's state when it arrives).
    hints: int = 0

    def tip(self) -> ChainTip:
        if not self.chain:
            return ChainTip(0, GENESIS_HASH, GENESIS_APP_HASH, GENESIS_TIME_MS)
        block = self.chain[-1][0]
        return ChainTip(block.height, block.hash, self.app_hash, block.header.timestamp_ms)


# A filter sees (sender, receiver, decoded message) and says whether to deliver now.
DeliverFilter = Callable[[int, int, Message], bool]


class Cluster:
    """n replicas wired through an in-memory queue, driven deterministically."""

    def __init__(
        self,
        n: int,
        *,
        config: ReplicaConfig | None = None,
        seed: int | None = None,
        invalid_blocks: Callable[[Block], bool] | None = None,
        observers: int = 0,
        schedule: Callable[[ValidatorSchedule], ValidatorSchedule] | None = None,
        standby: dict[int, list[PrivateKey]] | None = None,
    ) -> None:
        """``n`` validators from genesis plus ``observers`` nodes holding keys in no genesis
        set; ``schedule`` builds the validator schedule from the genesis one; ``standby`` gives
        nodes extra keys (rotations)."""
        self.config = config or ReplicaConfig()
        self.keys = make_keys(n + observers)
        self.validators = make_validators(self.keys[:n])
        genesis_schedule = ValidatorSchedule(self.validators)
        self.schedule = genesis_schedule if schedule is None else schedule(genesis_schedule)
        self.standby = standby or {}
        self.now_ms = GENESIS_TIME_MS
        self.rng = random.Random(seed) if seed is not None else None
        self.queue: list[tuple[int, int, bytes]] = []
        self.held: list[tuple[int, int, bytes]] = []
        self.deliver_filter: DeliverFilter | None = None
        # Lose every k-th delivered message for good (0: lose nothing).
        self.drop_every = 0
        self.delivered = 0
        self.invalid_blocks = invalid_blocks
        self.payload_counter = 0
        self.nodes = [Node(i, self._new_replica(i, None)) for i in range(n + observers)]
        self._node_of_key = {node_key(i): i for i in range(n + observers)}
        self.work: list[tuple[int, Input]] = []
        self.pending_payloads: list[tuple[int, int, int, tuple[bytes, ...]]] = []

    def _new_replica(self, index: int, node: Node | None) -> Replica:
        tip = node.tip() if node else ChainTip(0, GENESIS_HASH, GENESIS_APP_HASH, GENESIS_TIME_MS)
        kwargs = {
            "chain_id": CHAIN_ID,
            "validators": self.schedule.at(tip.height + 1),
            "next_validators": self.schedule.at(tip.height + 2),
            "key": self.keys[index],
            "standby_keys": tuple(self.standby.get(index, ())),
            "tip": tip,
        }
        if node is not None and node.persisted is not None:
            return Replica.restore(self.config, state=node.persisted, **kwargs)  # type: ignore[arg-type]
        return Replica(self.config, **kwargs)  # type: ignore[arg-type]

    # -- driving -----------------------------------------------------------------------------

    def start(self) -> None:
        for node in self.nodes:
            self.feed(node.index, Start(self.now_ms))

    def feed(self, index: int, event: Input) -> None:
        """Hand one input to a replica and perform its actions (and the follow-ups)."""
        self.work.append((index, event))
        while self.work:
            target, item = self.work.pop(0)
            node = self.nodes[target]
            if not node.up:
                continue
            for action in node.replica.handle(item):
                self._perform(node, action)

    def _perform(self, node: Node, action: Action) -> None:
        if isinstance(action, Persist):
            node.persisted = action.state
        elif isinstance(action, Broadcast):
            node.sent.append(decode_message(action.message))
            for other in self.nodes:
                if other.index != node.index:
                    self.queue.append((node.index, other.index, action.message))
        elif isinstance(action, Send):
            self.queue.append((node.index, self._node_of(node, action.to), action.message))
        elif isinstance(action, RequestProposal):
            self.payload_counter += 1
            txs = tuple(
                f"tx-{action.height}-{action.view}-{node.index}-{k}-{self.payload_counter}".encode()
                for k in range(3)
            )
            # Answered at the next tick: the driver's block interval.
            self.pending_payloads.append((node.index, action.height, action.view, txs))
        elif isinstance(action, ValidateBlock):
            ok = not (self.invalid_blocks and self.invalid_blocks(action.block))
            self.work.append((node.index, ValidityVerdict(action.block.hash, ok)))
        elif isinstance(action, Commit):
            assert action.block.height == len(node.chain) + 1, "commits must arrive in order"
            node.chain.append((action.block, action.certificate))
            node.app_hash = next_app_hash(node.app_hash, action.block)
            if action.next_app_hash is not None:
                node.hints += 1
                assert action.next_app_hash == node.app_hash, "hint is not the state after"
            height = action.block.height
            executed = BlockExecuted(height, node.app_hash, self.schedule.at(height + 2))
            self.work.append((node.index, executed))
        elif isinstance(action, ReportEvidence):
            node.evidence.append(action.evidence)
        elif isinstance(action, RequestBlocks):
            target = (
                self._node_of_key[action.peer_keys[0]]
                if action.peer_keys
                else self._node_of(node, action.peers[0])
            )
            self.queue.append((node.index, target, action.message))
        elif isinstance(action, ServeBlocks):
            entries = node.chain[action.from_height - 1 : action.to_height]
            if action.peer is not None:
                target = self._node_of_key[action.peer]
            else:
                assert action.to is not None
                target = self._node_of(node, action.to)
            self.queue.append((node.index, target, encode_block_response(entries)))
        elif isinstance(action, Dropped):
            node.dropped.append(action)
        else:  # pragma: no cover - every action kind is handled above
            raise AssertionError(f"unhandled action {action}")

    def _node_of(self, node: Node, index: int) -> int:
        """The node running validator ``index`` of ``node``'s current set."""
        validator_key = node.replica.validators.validators[index].node_key
        assert validator_key is not None
        return self._node_of_key[validator_key]

    def _sender_index(self, sender: int, receiver: int) -> int | None:
        """``sender``'s validator index in ``receiver``'s current set (None: not a member)."""
        validators = self.nodes[receiver].replica.validators.validators
        for index, validator in enumerate(validators):
            if validator.node_key == node_key(sender):
                return index
        return None

    def deliver_one(self) -> bool:
        """Deliver the next queued message (random one with a seed). False when none left."""
        if not self.queue:
            return False
        position = self.rng.randrange(len(self.queue)) if self.rng else 0
        sender, receiver, data = self.queue.pop(position)
        if not (self.nodes[sender].up and self.nodes[receiver].up):
            return True
        self.delivered += 1
        if self.drop_every and self.delivered % self.drop_every == 0:
            return True
        if self.deliver_filter is not None and not self.deliver_filter(
            sender, receiver, decode_message(data)
        ):
            self.held.append((sender, receiver, data))
            return True
        self.feed(
            receiver, PeerMessage(data, self._sender_index(sender, receiver), node_key(sender))
        )
        return True

    def tick(self, step_ms: int = TICK_MS) -> None:
        self.now_ms += step_ms
        payloads, self.pending_payloads = self.pending_payloads, []
        for index, height, view, txs in payloads:
            self.feed(index, ProposalPayload(height, view, txs, self.now_ms))
        for node in self.nodes:
            if node.up:
                self.feed(node.index, Tick(self.now_ms))

    def run_until(
        self, condition: Callable[[], bool], *, max_ms: int = 120_000, step_ms: int = TICK_MS
    ) -> None:
        """Deliver messages, ticking when the queue is empty, until ``condition`` holds."""
        deadline = self.now_ms + max_ms
        while not condition():
            assert self.now_ms <= deadline, f"condition not reached by {self.now_ms}"
            delivered = 0
            while self.queue and delivered < 200:
                self.deliver_one()
                delivered += 1
                if condition():
                    return
            self.tick(step_ms)

    def run_for(self, duration_ms: int, *, step_ms: int = TICK_MS) -> None:
        """Deliver messages and tick for ``duration_ms`` of driver time, whatever happens."""
        deadline = self.now_ms + duration_ms
        while self.now_ms < deadline:
            delivered = 0
            while self.queue and delivered < 200:
                self.deliver_one()
                delivered += 1
            self.tick(step_ms)

    def inject(self, sender: int, receivers: list[int], *messages: Message) -> None:
        """Hand-made messages from (byzantine) ``sender`` straight to ``receivers``."""
        for message in messages:
            data = encode_message(message)
            for receiver in receivers:
                self.feed(receiver, PeerMessage(data, sender))

    def release_held(self) -> None:
        """Put held messages back in the queue (the partition heals)."""
        self.queue.extend(self.held)
        self.held = []

    # -- faults ------------------------------------------------------------------------------

    def crash(self, index: int) -> None:
        self.nodes[index].up = False

    def restart(self, index: int) -> None:
        """Rebuild the replica from its node's disk (persisted state + chain) and start it."""
        node = self.nodes[index]
        node.replica = self._new_replica(index, node)
        node.up = True
        self.feed(index, Start(self.now_ms))

    # -- observations ------------------------------------------------------------------------

    def heights(self) -> list[int]:
        return [len(node.chain) for node in self.nodes]

    def all_reached(self, height: int, *, nodes: list[int] | None = None) -> bool:
        chosen = nodes if nodes is not None else [n.index for n in self.nodes if n.up]
        return all(len(self.nodes[i].chain) >= height for i in chosen)

    def assert_agreement(self) -> None:
        """No two replicas committed different blocks at one height; certificates verify."""
        from consensus.types import verify_certificate

        by_height: dict[int, bytes] = {}
        for node in self.nodes:
            for block, certificate in node.chain:
                seen = by_height.setdefault(block.height, block.hash)
                assert seen == block.hash, f"fork at height {block.height}"
                verify_certificate(
                    certificate,
                    self.schedule.at(block.height),
                    CHAIN_ID,
                    block_hash=block.hash,
                    height=block.height,
                )


# -- building signed messages as a byzantine validator would (it holds its own key; the tests
# also use honest keys to stand for signatures honest replicas really made and a byzantine saw).


def vote(
    cluster: Cluster, phase: Phase, *, height: int, view: int, block_hash: bytes, validator: int
) -> Vote:
    """Validator ``validator``'s signed vote."""
    return Vote.create(
        cluster.keys[validator],
        CHAIN_ID,
        phase=phase,
        height=height,
        view=view,
        block_hash=block_hash,
        validator=validator,
    )


def prepared_certificate(
    cluster: Cluster, block: Block, *, view: int, signers: list[int], height: int | None = None
) -> PreparedCertificate:
    """A prepared certificate for ``block`` in ``view`` with genuine prepare signatures."""
    at = block.height if height is None else height
    signatures = tuple(
        (
            i,
            vote(
                cluster, Phase.PREPARE, height=at, view=view, block_hash=block.hash, validator=i
            ).signature,
        )
        for i in sorted(signers)
    )
    return PreparedCertificate(at, view, block.hash, signatures)


def view_change(
    cluster: Cluster,
    validator: int,
    *,
    height: int,
    view: int,
    prepared: PreparedCertificate | None = None,
    block: Block | None = None,
) -> ViewChange:
    """Validator ``validator``'s genuinely signed view change."""
    return ViewChange.create(
        cluster.keys[validator],
        CHAIN_ID,
        height=height,
        view=view,
        validator=validator,
        prepared=prepared,
        prepared_block=block,
    )


def proposal(cluster: Cluster, block: Block, *, view: int, validator: int) -> Proposal:
    """Validator ``validator``'s signed proposal of ``block`` in ``view``."""
    return Proposal.create(
        cluster.keys[validator], CHAIN_ID, view=view, validator=validator, block=block
    )


def build_block(
    cluster: Cluster, *, height: int, view: int, proposer: int, tag: bytes, on: int = 0
) -> Block:
    """A block for ``height`` on top of replica ``on``'s chain (as a byzantine would build)."""
    node = cluster.nodes[on]
    parent = node.chain[height - 2][0].hash if height > 1 else GENESIS_HASH
    app_hash = GENESIS_APP_HASH
    for block, _ in node.chain[: height - 1]:
        app_hash = next_app_hash(app_hash, block)
    parent_time = node.chain[height - 2][0].header.timestamp_ms if height > 1 else GENESIS_TIME_MS
    return Block.build(
        chain_id=CHAIN_ID,
        height=height,
        view=view,
        parent_hash=parent,
        app_hash=app_hash,
        next_validators_hash=cluster.schedule.at(height + 1).hash(),
        proposer=proposer,
        timestamp_ms=max(cluster.now_ms, parent_time + 1),
        transactions=(tag,),
    )


def measure_throughput(*, heights: int = 20, transactions: int = 2000) -> float:
    """Transactions per second through 4 replicas in one process (all their work summed)."""
    import time

    class BigBlocks(Cluster):
        def _perform(self, node: Node, action: Action) -> None:
            if isinstance(action, RequestProposal):
                self.payload_counter += 1
                prefix = self.payload_counter.to_bytes(8, "big")
                txs = tuple(prefix + i.to_bytes(4, "big") + bytes(188) for i in range(transactions))
                self.pending_payloads.append((node.index, action.height, action.view, txs))
                return
            super()._perform(node, action)

    cluster = BigBlocks(4)
    cluster.start()
    started = time.perf_counter()
    cluster.run_until(lambda: cluster.all_reached(heights))
    return heights * transactions / (time.perf_counter() - started)


def count_certificate_signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From here on, ``[n]``: the signatures ``verify_certificate`` has verified (it calls
    the ``verify`` it imported into ``consensus.types``)."""
    calls = [0]
    real: Callable[..., bool] = consensus.crypto.verify

    def counted(*args: object) -> bool:
        calls[0] += 1
        return real(*args)

    monkeypatch.setattr("consensus.types.verify", counted)
    return calls


if __name__ == "__main__":
    rate = measure_throughput()
    print(f"4 replicas, one process, 2000 x 200-byte transactions per block: {rate:,.0f} tx/s")
