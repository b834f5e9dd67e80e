"""The adversary: one byzantine strategy for all byzantine validators, searching the message space.

Theory of operation
-------------------
The adversary holds the keys of every byzantine validator and sees every message sent on the
simulated network (``observe``: the simulation hands it each send before the network decides
its fate). From that traffic it keeps a bounded picture of the run: the blocks seen at each
height with their parent and state hashes, every vote, view change, prepared certificate and
commit certificate, every signature by signer, where each honest validator is (the highest
(height, view) it signed a message for), and a ring of recent messages for replays.

Each byzantine validator still runs the real ``Replica`` (so the adversary is never behind the
protocol), but what that replica sends passes through the adversary (``agent(v)``), which may
deliver it to a subset of its destinations (``withhold``) or show part of them a conflicting,
validly signed version (``equivocate``). Independently, every ``step_ms`` of simulated time the
adversary makes one *move*: it draws a move kind by the seed's weights and builds its messages
from what it has seen, with the real constructors of ``consensus.messages`` (the protocol is
never reimplemented), signed by byzantine keys or carrying signatures taken from other messages.
The kinds (``Move``):

* ``proposal-split``: conflicting proposals of one (height, view 0) to different replicas, by the
  primary when it is byzantine, by a byzantine non-primary otherwise;
* ``new-view``: a ``NewView`` for a view a byzantine validator leads, built from any subset of
  the genuine view changes seen and forged ones (an honest validator's claim of "nothing
  prepared" under a signature transplanted from a byzantine view change, from the same
  validator's other messages, or random), proposing a fresh block, a seen block or the highest
  certified one; different versions to different replicas; the byzantine view change whose
  signature it borrows goes out first;
* ``vote``: prepares and commits for arbitrary heights, views and blocks (seen or invented);
* ``vote-follow``: byzantine prepares and commits for a block honest replicas are voting on, to a
  subset of them only, so that some reach a quorum and others do not;
* ``view-change-real`` / ``view-change-stale`` / ``view-change-forged``: a byzantine view change
  carrying the highest real prepared certificate seen, an older one or none, or a forged one
  (a signature garbled, the view or block relabelled, one signature short, commit signatures in
  place of prepares, signatures from another height), most often to the next primary;
* ``transplant``: a vote or view change claiming an honest signer, under a signature taken from
  another message of that signer;
* ``replay``: a message seen earlier (an old view or an old height), resent verbatim;
* ``future``: messages for far-future heights and views, and bursts of distinct valid messages
  for the next heights (to fill buffers), some of them carrying large blocks;
* ``block-response``: unsolicited forged, short, empty, foreign-chain, far-ahead or true block
  responses, and runs of true certified blocks from an honest replica's own height or from the
  one after it (an answer it would follow like its own, or one with a gap);
  ``block-request``: requests for many blocks (serving cost);
* ``garbage``: random bytes, truncated and bit-flipped copies of seen messages, signers that are
  no validator.

Beyond single moves, the adversary seizes openings (``opportunism_percent`` and
``split_percent`` of the seed; always, in a planted bug's focused attack):

* ``split-quorum``: in a view a byzantine validator leads, its proposal and the byzantine
  prepares reach just enough honest replicas for a quorum and the byzantine commits only some
  of those (``_Split``); or, seeing honest commit votes for a block, it holds its replicas' own
  commits and hands the quorum to one of those replicas, at once or only once the others vote
  for another block in a later view (a decision in an old view still counts). The others lag;
* strikes: at the laggards of a split, or of any height where honest commits appear, a
  ``new-view`` shown to all of them and backed by byzantine prepares and commits; byzantine
  view changes at a split height that lie about what was prepared; byzantine votes for any
  other block the laggards prepare; no block served for a split height; and, when a byzantine
  validator leads the view honest replicas ask for, a new view of its choosing from their view
  changes.

Byzantine nodes answer block requests the same way (true, forged, short or nothing). Every draw
comes from the adversary's own seeded ``random.Random`` and the picture is built in the order
messages are sent, so the run stays a function of its seed. ``stop`` ends the attack (the
liveness phase): the byzantine validators fall silent, the worst they can do to liveness.
Moves are counted by kind (``moves``) for the coverage report.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final

from consensus.crypto import SIGNATURE_BYTES, PrivateKey, hash_bytes
from consensus.messages import (
    BlockRequest,
    BlockResponse,
    Message,
    NewView,
    PreparedCertificate,
    Proposal,
    ViewChange,
    decode_message,
    encode_block_response,
    encode_message,
)
from consensus.replica import ChainTip, primary_index
from consensus.types import Block, CommitCertificate, DecodeError, Phase, ValidatorSet, Vote

__all__ = ["MOVES", "Adversary", "AdversaryParameters", "Move"]


class Move(StrEnum):
    """The kinds of action the adversary takes (see the module docstring)."""

    PROPOSAL_SPLIT = "proposal-split"
    NEW_VIEW = "new-view"
    VOTE = "vote"
    VOTE_FOLLOW = "vote-follow"
    VIEW_CHANGE_REAL = "view-change-real"
    VIEW_CHANGE_STALE = "view-change-stale"
    VIEW_CHANGE_FORGED = "view-change-forged"
    TRANSPLANT = "transplant"
    REPLAY = "replay"
    FUTURE = "future"
    BLOCK_RESPONSE = "block-response"
    BLOCK_REQUEST = "block-request"
    GARBAGE = "garbage"
    WITHHOLD = "withhold"
    EQUIVOCATE = "equivocate"
    SPLIT_QUORUM = "split-quorum"
    SERVE_FORGED = "serve-forged"


MOVES: Final = tuple(Move)
# Moves made on a timer; the others rewrite the byzantine replicas' own traffic.
STEP_MOVES: Final = tuple(
    m
    for m in Move
    if m not in (Move.WITHHOLD, Move.EQUIVOCATE, Move.SPLIT_QUORUM, Move.SERVE_FORGED)
)

# Bounds on what the adversary remembers: enough for the heights and views in play.
HEIGHTS_KEPT: Final = 6
BLOCKS_PER_HEIGHT_MAX: Final = 32
VOTES_PER_HEIGHT_MAX: Final = 2_000
HISTORY_MAX: Final = 512
SIGNATURES_PER_VALIDATOR_MAX: Final = 64
# How far ahead the replicas look (ReplicaConfig defaults): moves aim inside and beyond.
FUTURE_HEIGHTS: Final = 4
FUTURE_VIEWS: Final = 16
# A burst aimed at the future-height buffer: more distinct messages than it holds per sender;
# a few per run fill it (each costs every target a signature check per message).
BURST_MESSAGES: Final = 72
BURSTS_MAX: Final = 3
# A large transaction for "fat" future messages (the decoder's per-bytes-value limit).
FAT_TRANSACTION_BYTES: Final = 60 * 1024
# Delay between a move's preparation (a view change whose signature it will borrow) and the
# message that relies on it.
FOLLOW_UP_MS_MAX: Final = 40
# How long an opportunist holds its replicas' commit votes, waiting to see honest ones: it
# looks again every HOLD_MS_MIN while some but not enough honest commits are in, and gives up
# well within a view timeout (the replica's base timeout is 500 ms in the simulator).
HOLD_MS_MIN: Final = 20
HOLD_MS_MAX: Final = 300


@dataclass(frozen=True, slots=True)
class AdversaryParameters:
    """One seed's attack mix (swarm-style): which moves are on and how often, how fast the
    adversary acts, and how it treats its own replicas' traffic."""

    step_ms: int
    weights: tuple[tuple[Move, int], ...]
    withhold_percent: int
    equivocate_percent: int
    serve_forged_percent: int
    # Chance that an honest commit vote seen triggers a new-view strike at that height.
    opportunism_percent: int
    # Chance that a view a byzantine validator leads is split (``_Split``).
    split_percent: int

    @classmethod
    def draw(
        cls, rng: random.Random, *, focus: Sequence[Move] | None = None
    ) -> AdversaryParameters:
        """Each move on with probability 3/4 at weight 1-4 (at least one on). A focused
        attack (``focus``: a planted bug's) makes only the moves listed, and always seizes
        its openings (splits and strikes)."""
        weights = [
            (move, rng.randint(1, 4))
            for move in STEP_MOVES
            if (rng.randrange(4) != 0 if focus is None else move in focus)
        ]
        if not weights and focus is None:
            weights = [(rng.choice(STEP_MOVES), 1)]
        return cls(
            step_ms=rng.choice((5, 10, 20, 50)),
            weights=tuple(weights),
            withhold_percent=rng.choice((0, 10, 30, 60)),
            equivocate_percent=rng.choice((0, 10, 30)),
            serve_forged_percent=rng.choice((0, 50, 100)),
            # A focused attack (a planted bug's) always seizes its openings.
            opportunism_percent=max(rng.choice((0, 30, 90)), 0 if focus is None else 90),
            split_percent=max(rng.choice((0, 50, 100)), 0 if focus is None else 100),
        )

    def describe(self) -> dict[str, object]:
        """A JSON-friendly view."""
        return {
            "step_ms": self.step_ms,
            "moves": {str(move): weight for move, weight in self.weights},
            "withhold_percent": self.withhold_percent,
            "equivocate_percent": self.equivocate_percent,
            "serve_forged_percent": self.serve_forged_percent,
            "opportunism_percent": self.opportunism_percent,
            "split_percent": self.split_percent,
        }


Transport = Callable[[int, int, bytes], None]  # (byzantine validator, destination, bytes)
Schedule = Callable[[int, Callable[[], None]], None]  # (delay ms, callback)


@dataclass(slots=True)
class _Height:
    """What was seen at one height."""

    blocks: dict[bytes, Block] = field(default_factory=dict)
    # (parent hash, app hash) -> how many blocks carried it: the likely right parent.
    parents: dict[tuple[bytes, bytes], int] = field(default_factory=dict)
    votes: list[Vote] = field(default_factory=list)
    # Signatures per (phase, view, block hash), by validator: certificates assemble from them.
    tallies: dict[tuple[Phase, int, bytes], dict[int, bytes]] = field(default_factory=dict)
    view_changes: dict[tuple[int, int], ViewChange] = field(default_factory=dict)
    certificates: dict[tuple[int, bytes], PreparedCertificate] = field(default_factory=dict)
    transactions: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class _Split:
    """A view a byzantine validator leads, split on purpose: its proposal and the byzantine
    prepares reach only ``prepared`` (just enough honest replicas for a quorum with the
    byzantine votes), the byzantine commits only ``deciding`` (some of those), so they decide
    while the rest of the honest replicas lag, prepared or not. Then the adversary strikes at
    the laggards (a new view, lying view changes, votes for whatever they prepare next)."""

    block_hash: bytes
    prepared: frozenset[int]
    deciding: frozenset[int]
    # Byzantine prepares to these replicas are signed for another view (a replica that counts
    # votes whatever their view then builds a certificate nobody else accepts).
    wrong_view: frozenset[int]
    # The view and, for a late split, whether the byzantine commits were handed over yet: a
    # late split withholds them until the laggards vote for another block in a later view,
    # then hands the deciders their quorum (a decision in an old view still counts).
    view: int = 0
    late: bool = False
    released: bool = False
    struck: bool = False
    followed: set[bytes] = field(default_factory=set)
    lied: set[int] = field(default_factory=set)


class _Agent:
    """The ``ByzantineDriver`` of one byzantine node: its traffic goes through the adversary."""

    def __init__(self, adversary: Adversary, validator: int) -> None:
        self._adversary = adversary
        self._validator = validator

    @property
    def injected(self) -> int:
        return self._adversary.injected_by.get(self._validator, 0)

    def outgoing(self, data: bytes, destinations: Sequence[int]) -> list[tuple[int, bytes]]:
        return self._adversary.outgoing(self._validator, data, destinations)

    def serve(
        self, entries: Sequence[tuple[Block, CommitCertificate]], to: int, now_ms: int
    ) -> bytes | None:
        return self._adversary.serve(self._validator, entries, to)


class Adversary:
    """The byzantine validators' common strategy (see the module docstring)."""

    def __init__(
        self,
        *,
        rng: random.Random,
        parameters: AdversaryParameters,
        keys: Mapping[int, PrivateKey],
        validators: ValidatorSet,
        chain_id: str,
        transport: Transport,
        schedule: Schedule,
        clock_ms: Callable[[], int],
        tip_of: Callable[[int], ChainTip | None],
    ) -> None:
        assert keys, "an adversary needs at least one byzantine validator"
        self.rng = rng
        self.parameters = parameters
        self.keys = dict(keys)
        self.byzantine = sorted(keys)
        self.validators = validators
        self.n = validators.size
        self.quorum = validators.quorum
        self.honest = [v for v in range(self.n) if v not in self.keys]
        self.chain_id = chain_id
        self._transport = transport
        self._schedule = schedule
        self._clock_ms = clock_ms
        self._tip_of = tip_of
        self._moves = [move for move, _ in parameters.weights]
        self._weights = [weight for _, weight in parameters.weights]
        self.active = True
        self.moves: dict[str, int] = {}
        self.injected_by: dict[int, int] = {}
        self._heights: dict[int, _Height] = {}
        self._history: deque[tuple[int, int, bytes]] = deque(maxlen=HISTORY_MAX)
        self._seen_data: set[bytes] = set()  # hashes of history entries (dedup)
        self._signatures: dict[int, deque[tuple[str, bytes]]] = {}
        self._position: dict[int, tuple[int, int]] = {}
        self._commit_certificates: dict[int, tuple[Block, CommitCertificate]] = {}
        self._bursts = 0
        self._struck: set[object] = set()
        self._splits: dict[tuple[int, int], _Split] = {}
        self._split_heights: dict[int, _Split] = {}

    # -----------------------------------------------------------------------------------------
    # Interface for the simulation

    def reconfigure(self, validators: ValidatorSet) -> None:
        """The chain reached a height whose validator set is ``validators``: judge quorums,
        primaries and honest signatures by it from now on. Byzantine validators keep their
        indices and keys (validator-set changes never touch them, ``sims.reconfiguration``)."""
        if validators == self.validators:
            return
        assert all(
            index < validators.size and validators.public_key(index) == key.public_key
            for index, key in self.keys.items()
        ), "byzantine validators keep their index and key"
        self.validators = validators
        self.n = validators.size
        self.quorum = validators.quorum
        self.honest = [v for v in range(self.n) if v not in self.keys]

    def agent(self, validator: int) -> _Agent:
        """The driver hook of byzantine validator ``validator``'s node."""
        assert validator in self.keys
        return _Agent(self, validator)

    def stop(self) -> None:
        """End the attack: from now on byzantine validators send nothing."""
        self.active = False

    @property
    def injected(self) -> int:
        """Messages crafted so far, all byzantine validators together."""
        return sum(self.injected_by.values())

    def observe(self, sender: int, data: bytes) -> None:
        """One message put on the network by validator ``sender`` (before any fault applies)."""
        try:
            message = decode_message(data)
        except DecodeError:
            return
        self._learn(sender, message, data)

    def step(self) -> None:
        """Make one move (the simulation calls this every ``parameters.step_ms``)."""
        if not self.active or not self._position or not self._moves:
            return
        move = self.rng.choices(self._moves, self._weights)[0]
        handler = self._handlers()[move]
        if handler():
            self._count(move)

    def outgoing(
        self, validator: int, data: bytes, destinations: Sequence[int]
    ) -> list[tuple[int, bytes]]:
        """What leaves byzantine node ``validator`` for ``data`` meant for ``destinations``."""
        if not self.active:
            return []
        rng = self.rng
        split = self._split_outgoing(validator, data, destinations)
        if split is not None:
            return split
        if self.parameters.opportunism_percent and self._hold_commit(validator, data, destinations):
            return []
        chosen = list(destinations)
        if len(chosen) > 1 and rng.randrange(100) < self.parameters.withhold_percent:
            chosen = [d for d in chosen if rng.randrange(2)]
            self._count(Move.WITHHOLD)
        if chosen and rng.randrange(100) < self.parameters.equivocate_percent:
            rewritten = self._conflicting_version(validator, data)
            if rewritten is not None:
                self._count(Move.EQUIVOCATE)
                self._injected(validator)
                return [(d, rewritten if rng.randrange(2) else data) for d in chosen]
        return [(d, data) for d in chosen]

    def serve(
        self, validator: int, entries: Sequence[tuple[Block, CommitCertificate]], to: int
    ) -> bytes | None:
        """A byzantine node's answer to a block request: the truth, a forgery, or nothing
        (never the block of a height it split: the laggards must not learn it)."""
        if not self.active or any(block.height in self._split_heights for block, _ in entries):
            return None
        if self.rng.randrange(100) >= self.parameters.serve_forged_percent:
            return encode_block_response(entries)
        self._count(Move.SERVE_FORGED)
        self._injected(validator)
        return self._forged_response(list(entries))

    # -----------------------------------------------------------------------------------------
    # Learning from traffic

    def _height(self, height: int) -> _Height:
        seen = self._heights.get(height)
        if seen is None:
            seen = _Height()
            self._heights[height] = seen
            if len(self._heights) > HEIGHTS_KEPT:
                del self._heights[min(self._heights)]
        return seen

    def _learn_block(self, block: Block) -> None:
        if block.header.chain_id != self.chain_id:
            return
        seen = self._height(block.height)
        if block.hash in seen.blocks or len(seen.blocks) >= BLOCKS_PER_HEIGHT_MAX:
            return
        seen.blocks[block.hash] = block
        key = (block.header.parent_hash, block.header.app_hash)
        seen.parents[key] = seen.parents.get(key, 0) + 1
        for transaction in block.transactions[:8]:
            if len(seen.transactions) < 64 and len(transaction) < 4_096:
                seen.transactions.append(transaction)

    def _note_signature(self, validator: int, kind: str, signature: bytes) -> None:
        if validator >= self.n:
            return
        ring = self._signatures.setdefault(validator, deque(maxlen=SIGNATURES_PER_VALIDATOR_MAX))
        ring.append((kind, signature))

    def _note_position(self, validator: int, height: int, view: int) -> None:
        if validator < self.n and (height, view) > self._position.get(validator, (0, -1)):
            self._position[validator] = (height, view)

    def _learn(self, sender: int, message: Message, data: bytes) -> None:
        height = 0
        view = 0
        if isinstance(message, Vote):
            height, view = message.height, message.view
            seen = self._height(message.height)
            if len(seen.votes) < VOTES_PER_HEIGHT_MAX:
                seen.votes.append(message)
            if message.validator == sender:
                self._tally(seen, message)
            self._note_signature(message.validator, f"vote{int(message.phase)}", message.signature)
            if message.validator == sender:
                self._note_position(sender, height, view)
                if sender not in self.keys and self.active:
                    if message.phase is Phase.COMMIT:
                        self._on_honest_commit(message)
                    else:
                        self._follow_at_split_height(message)
        elif isinstance(message, Proposal):
            height, view = message.height, message.view
            self._learn_block(message.block)
            self._note_signature(message.validator, "proposal", message.signature)
            if message.validator == sender:
                self._note_position(sender, height, view)
        elif isinstance(message, ViewChange):
            height, view = message.height, message.view
            self._learn_view_change(message)
            if message.validator == sender:
                self._note_position(sender, height, view)
                if sender not in self.keys and self.active:
                    self._lie_at_split_height(message)
                    self._on_honest_view_change(message)
        elif isinstance(message, NewView):
            height, view = message.height, message.view
            self._learn_block(message.proposal.block)
            self._note_signature(message.validator, "new-view", message.signature)
            for change in message.view_changes:
                self._learn_view_change(change)
            if message.validator == sender:
                self._note_position(sender, height, view)
        elif isinstance(message, BlockResponse):
            for block, certificate in message.entries:
                self._learn_block(block)
                if certificate.block_hash == block.hash:
                    self._commit_certificates.setdefault(block.height, (block, certificate))
            return
        else:
            return
        digest = hash_bytes(data)
        if digest not in self._seen_data:
            if len(self._history) == self._history.maxlen:
                _, _, oldest = self._history[0]
                self._seen_data.discard(hash_bytes(oldest))
            self._history.append((height, view, data))
            self._seen_data.add(digest)

    def _tally(self, seen: _Height, vote: Vote) -> None:
        """Assemble real certificates from the votes seen: a quorum of prepares is a prepared
        certificate, a quorum of commits (with the block) a commit certificate."""
        key = (vote.phase, vote.view, vote.block_hash)
        signers = seen.tallies.setdefault(key, {})
        if vote.validator in signers:
            return
        if vote.validator >= self.n or not vote.signature_valid(self.validators, self.chain_id):
            return
        signers[vote.validator] = vote.signature
        if len(signers) != self.quorum:
            return
        signatures = tuple(sorted(signers.items()))
        if vote.phase is Phase.PREPARE:
            certificate = PreparedCertificate(vote.height, vote.view, vote.block_hash, signatures)
            seen.certificates.setdefault((vote.view, vote.block_hash), certificate)
            return
        block = seen.blocks.get(vote.block_hash)
        if block is not None:
            commit = CommitCertificate(vote.height, vote.view, vote.block_hash, signatures)
            self._commit_certificates.setdefault(vote.height, (block, commit))

    def _learn_view_change(self, change: ViewChange) -> None:
        seen = self._height(change.height)
        seen.view_changes.setdefault((change.view, change.validator), change.without_block())
        self._note_signature(change.validator, "view-change", change.signature)
        if change.prepared is not None and change.prepared.height == change.height:
            key = (change.prepared.view, change.prepared.block_hash)
            seen.certificates.setdefault(key, change.prepared)
        if change.prepared_block is not None:
            self._learn_block(change.prepared_block)

    # -----------------------------------------------------------------------------------------
    # Small helpers

    def _count(self, move: Move) -> None:
        self.moves[str(move)] = self.moves.get(str(move), 0) + 1

    def _injected(self, validator: int, count: int = 1) -> None:
        self.injected_by[validator] = self.injected_by.get(validator, 0) + count

    def _send(self, source: int, destinations: Sequence[int], data: bytes) -> None:
        """Send ``data`` from byzantine ``source`` to each of ``destinations`` (the adversary
        sees its own messages like any other, once)."""
        if not self.active:
            return
        self._injected(source)
        self.observe(source, data)
        for destination in destinations:
            if destination != source:
                self._transport(source, destination, data)

    def _later(self, callback: Callable[[], None]) -> None:
        self._schedule(self.rng.randint(0, FOLLOW_UP_MS_MAX), callback)

    def _targets(self, *, proper: bool = False) -> list[int]:
        """A random non-empty subset of the honest validators (a proper one if asked and
        possible)."""
        honest = self.honest
        if not honest:
            return []
        while True:
            chosen = [v for v in honest if self.rng.randrange(2)]
            if chosen and not (proper and len(honest) > 1 and len(chosen) == len(honest)):
                return chosen

    def _split(self, targets: Sequence[int], parts: int) -> list[list[int]]:
        groups: list[list[int]] = [[] for _ in range(parts)]
        order = list(targets)
        self.rng.shuffle(order)
        for index, target in enumerate(order):
            groups[index % parts if index < parts else self.rng.randrange(parts)].append(target)
        return [group for group in groups if group]

    def _honest_positions(self) -> list[tuple[int, int]]:
        return [self._position[v] for v in self.honest if v in self._position]

    def _focus(self) -> tuple[int, int] | None:
        """A (height, view) worth attacking: where a laggard honest replica is while another is
        ahead (the fork window), else where some honest replica is."""
        positions = self._honest_positions()
        if not positions:
            positions = list(self._position.values())
        if not positions:
            return None
        highest = max(height for height, _ in positions)
        laggards = [p for p in positions if p[0] < highest]
        if laggards and self.rng.randrange(3):
            return self.rng.choice(laggards)
        return self.rng.choice(positions)

    def _views_at(self, height: int) -> list[int]:
        return [view for h, view in self._honest_positions() if h == height]

    def _primary(self, height: int, view: int) -> int:
        return primary_index(self.validators, height, view)

    def _byzantine_primary_view(self, height: int, low: int) -> tuple[int, int] | None:
        """A view in [low, low + FUTURE_VIEWS] whose primary is byzantine, and that primary."""
        views = [
            w for w in range(low, low + FUTURE_VIEWS + 1) if self._primary(height, w) in self.keys
        ]
        if not views:
            return None
        # Mostly the nearest such views: the ones honest replicas will accept soonest.
        view = views[min(len(views) - 1, int(self.rng.expovariate(1.0)))]
        return view, self._primary(height, view)

    def _parent(self, height: int) -> tuple[bytes, bytes, int] | None:
        """(parent hash, app hash, parent timestamp bound) for a block at ``height``."""
        for validator in self.byzantine:
            tip = self._tip_of(validator)
            if tip is not None and tip.height + 1 == height:
                return tip.block_hash, tip.app_hash, tip.timestamp_ms
        seen = self._heights.get(height)
        if seen is None or not seen.parents:
            return None
        parent_hash, app_hash = max(seen.parents.items(), key=lambda item: item[1])[0]
        floor = min((b.header.timestamp_ms for b in seen.blocks.values()), default=self._clock_ms())
        return parent_hash, app_hash, floor - 1_000

    def _fresh_block(
        self, height: int, view: int, proposer: int, *, fat: bool = False
    ) -> Block | None:
        parent = self._parent(height)
        if parent is None:
            return None
        parent_hash, app_hash, parent_time = parent
        rng = self.rng
        seen = self._heights.get(height)
        transactions: list[bytes] = []
        if seen is not None and seen.transactions and rng.randrange(2):
            transactions = rng.sample(seen.transactions, rng.randint(1, len(seen.transactions)))
            transactions = list(dict.fromkeys(transactions))
        if fat:
            transactions.append(rng.randbytes(FAT_TRANSACTION_BYTES))
        timestamp = max(parent_time + 1, self._clock_ms() + rng.randint(-300, 300))
        # The next set honest replicas expect: what the honest blocks seen here name.
        named = [
            block.header.next_validators_hash for block in (seen.blocks if seen else {}).values()
        ]
        return Block.build(
            chain_id=self.chain_id,
            height=height,
            view=view,
            parent_hash=parent_hash,
            app_hash=app_hash,
            next_validators_hash=max(sorted(set(named)), key=named.count)
            if named
            else self.validators.hash(),
            proposer=proposer,
            timestamp_ms=timestamp,
            transactions=transactions,
        )

    def _seen_block(self, height: int) -> Block | None:
        seen = self._heights.get(height)
        if seen is None or not seen.blocks:
            return None
        return self.rng.choice(list(seen.blocks.values()))

    def _vote(self, signer: int, phase: Phase, height: int, view: int, block_hash: bytes) -> Vote:
        return Vote.create(
            self.keys[signer],
            self.chain_id,
            phase=phase,
            height=height,
            view=view,
            block_hash=block_hash,
            validator=signer,
        )

    def _view_change(
        self,
        signer: int,
        height: int,
        view: int,
        prepared: PreparedCertificate | None,
        block: Block | None,
    ) -> ViewChange:
        return ViewChange.create(
            self.keys[signer],
            self.chain_id,
            height=height,
            view=view,
            validator=signer,
            prepared=prepared,
            prepared_block=block,
        )

    def _certificates(self, height: int) -> list[PreparedCertificate]:
        seen = self._heights.get(height)
        if seen is None:
            return []
        return sorted(seen.certificates.values(), key=lambda c: (c.view, c.block_hash))

    def _block(self, height: int, block_hash: bytes) -> Block | None:
        seen = self._heights.get(height)
        return None if seen is None else seen.blocks.get(block_hash)

    def _stolen_signature(self, validator: int, *, other_than: bytes | None = None) -> bytes:
        """A signature seen from ``validator`` (any kind), or random bytes if none was seen."""
        ring = self._signatures.get(validator)
        if ring:
            options = [sig for _, sig in ring if sig != other_than]
            if options:
                return self.rng.choice(options)
        return self.rng.randbytes(SIGNATURE_BYTES)

    # -----------------------------------------------------------------------------------------
    # Moves

    def _handlers(self) -> dict[Move, Callable[[], bool]]:
        return {
            Move.PROPOSAL_SPLIT: self._move_proposal_split,
            Move.NEW_VIEW: lambda: self._move_new_view(),
            Move.VOTE: self._move_vote,
            Move.VOTE_FOLLOW: self._move_vote_follow,
            Move.VIEW_CHANGE_REAL: lambda: self._move_view_change("real"),
            Move.VIEW_CHANGE_STALE: lambda: self._move_view_change("stale"),
            Move.VIEW_CHANGE_FORGED: lambda: self._move_view_change("forged"),
            Move.TRANSPLANT: self._move_transplant,
            Move.REPLAY: self._move_replay,
            Move.FUTURE: self._move_future,
            Move.BLOCK_RESPONSE: self._move_block_response,
            Move.BLOCK_REQUEST: self._move_block_request,
            Move.GARBAGE: self._move_garbage,
        }

    def _follow_votes(
        self, height: int, view: int, block_hash: bytes, targets: Sequence[int]
    ) -> None:
        """Byzantine prepares and commits for ``block_hash`` at (height, view), to ``targets``."""
        for signer in self.byzantine:
            for phase in (Phase.PREPARE, Phase.COMMIT):
                data = encode_message(self._vote(signer, phase, height, view, block_hash))
                self._send(signer, targets, data)

    def _move_proposal_split(self) -> bool:
        focus = self._focus()
        if focus is None:
            return False
        height = focus[0]
        primary = self._primary(height, 0)
        signer = primary if primary in self.keys else self.rng.choice(self.byzantine)
        targets = self._targets()
        groups = self._split(targets, self.rng.randint(1, 3))
        follow = self.rng.randrange(2) == 0
        for group in groups:
            block = self._fresh_block(height, 0, primary, fat=self.rng.randrange(50) == 0)
            if block is None:
                return False
            proposal = Proposal.create(
                self.keys[signer], self.chain_id, view=0, validator=signer, block=block
            )
            self._send(signer, group, encode_message(proposal))
            if follow:
                self._later(self._follow_later(height, 0, block.hash, group))
        return True

    def _follow_later(
        self, height: int, view: int, block_hash: bytes, targets: Sequence[int]
    ) -> Callable[[], None]:
        return lambda: self._follow_votes(height, view, block_hash, targets)

    def _forged_change(
        self,
        claimed: int,
        height: int,
        view: int,
        prepared: PreparedCertificate | None,
        signature_source: int,
        borrowed: bytes,
    ) -> ViewChange:
        """A view change claiming to be ``claimed``'s, under a signature it never made for it:
        ``signature_source`` 0 borrows a byzantine view change's signature (one the targets
        verified before), 1 takes one of ``claimed``'s other signatures, 2 is random."""
        if signature_source == 0:
            signature = borrowed
        elif signature_source == 1:
            signature = self._stolen_signature(claimed)
        else:
            signature = self.rng.randbytes(SIGNATURE_BYTES)
        return ViewChange(height, view, claimed, prepared, None, signature)

    def _laggards(self, height: int) -> list[int]:
        """Honest validators not seen beyond ``height`` (they may not have decided it)."""
        return [v for v in self.honest if self._position.get(v, (0, 0))[0] <= height]

    def _on_honest_commit(self, vote: Vote) -> None:
        """Opportunism: honest replicas commit-vote a block. Once the byzantine commits would
        make a quorum with theirs, complete it for one of them only (it decides) and strike at
        the others soon, with a new view; before that, strike at the height anyway (some
        replica may be about to decide while others lag)."""
        seen = self._heights.get(vote.height)
        if seen is None or not self.parameters.opportunism_percent:
            return
        voters = [
            v
            for v in seen.tallies.get((Phase.COMMIT, vote.view, vote.block_hash), {})
            if v not in self.keys
        ]
        key = (vote.height, vote.view)
        rng = self.rng
        if len(voters) + len(self.keys) >= self.quorum and (key, "decide") not in self._struck:
            if rng.randrange(100) >= self.parameters.opportunism_percent:
                return
            self._struck.add((key, "decide"))
            decider = rng.choice(voters)
            late = rng.randrange(2) == 0
            if not late:
                for signer in self.byzantine:
                    commit = self._vote(
                        signer, Phase.COMMIT, vote.height, vote.view, vote.block_hash
                    )
                    self._send(signer, [decider], encode_message(commit))
            self._count(Move.SPLIT_QUORUM)
            split = _Split(
                vote.block_hash,
                frozenset(voters),
                frozenset({decider}),
                frozenset(),
                view=vote.view,
                late=late,
                struck=True,
            )
            self._splits.setdefault(key, split)
            self._split_heights.setdefault(vote.height, split)
            self._lie_ahead(vote.height, vote.view + 1)
            if late:
                return  # the laggards' next view does the rest (``_follow_at_split_height``)
            laggards = [v for v in self.honest if v != decider]
            self._schedule(rng.randint(1, FOLLOW_UP_MS_MAX), self._strike_at(vote.height, laggards))
            return
        if key in self._struck or rng.randrange(400) >= self.parameters.opportunism_percent:
            return
        self._struck.add(key)
        delay = rng.randint(0, 4 * self.parameters.step_ms)
        self._schedule(delay, self._strike_at(vote.height, None))

    def _strike_at(self, height: int, targets: list[int] | None) -> Callable[[], None]:
        def strike() -> None:
            if self.active and self._move_new_view(height, targets=targets):
                self._count(Move.NEW_VIEW)

        return strike

    def _on_honest_view_change(self, change: ViewChange) -> None:
        """A byzantine validator leads the view an honest replica asks for: once a quorum of
        view changes could be there, announce that view (as any primary would), with whatever
        subset of them and whatever proposal the draw says."""
        key = (change.height, change.view)
        if key in self._struck or self._primary(change.height, change.view) not in self.keys:
            return
        seen = self._heights.get(change.height)
        honest_changes = (
            0
            if seen is None
            else sum(
                1
                for (view, validator) in seen.view_changes
                if view == change.view and validator not in self.keys
            )
        )
        if honest_changes + len(self.keys) < self.quorum:
            return
        if self.rng.randrange(100) >= self.parameters.opportunism_percent:
            return
        self._struck.add(key)

        def strike() -> None:
            if self.active and self._move_new_view(change.height, change.view):
                self._count(Move.NEW_VIEW)

        self._schedule(self.rng.randint(0, 2 * self.parameters.step_ms), strike)

    def _move_new_view(
        self,
        at_height: int | None = None,
        at_view: int | None = None,
        *,
        targets: list[int] | None = None,
    ) -> bool:
        rng = self.rng
        if at_height is None:
            focus = self._focus()
            if focus is None:
                return False
            height = focus[0]
            targets = targets or self._targets()
        else:
            height = at_height
            laggards = self._laggards(height)
            targets = (
                targets or [v for v in laggards if rng.randrange(4)] or laggards or self._targets()
            )
        if at_view is not None:
            view, primary = at_view, self._primary(height, at_view)
        else:
            views = self._views_at(height) or [0]
            low = max(views) + (0 if rng.randrange(4) else 1)
            slot = self._byzantine_primary_view(height, max(1, low))
            if slot is None:
                return False
            view, primary = slot
        seen = self._heights.get(height)
        genuine = (
            []
            if seen is None
            else [change for (v, _), change in seen.view_changes.items() if v == view]
        )
        # A genuine byzantine view change for this view: its signature is what a careless
        # replica may have cached, and it goes out first so the targets verify it.
        lender = rng.choice(self.byzantine)
        lender_change = self._view_change(lender, height, view, None, None)
        self._send(lender, targets, encode_message(lender_change))
        # A strike (aimed targets) shows them all one new view and backs it with votes; a
        # random move may show different groups different ones, votes or not.
        strike = at_height is not None
        versions: list[tuple[list[int], NewView]] = []
        for group in [targets] if strike else self._split(targets, rng.randint(1, 2)):
            new_view = self._build_new_view(
                height, view, primary, genuine, lender_change.signature, strike=strike
            )
            if new_view is None:
                return False
            versions.append((group, new_view))
        follow = strike or rng.randrange(3) != 0

        def deliver() -> None:
            for group, new_view in versions:
                self._send(primary, group, encode_message(new_view))
                if follow:
                    self._follow_votes(height, view, new_view.proposal.block.hash, group)

        self._later(deliver)
        return True

    def _build_new_view(
        self,
        height: int,
        view: int,
        primary: int,
        genuine: Sequence[ViewChange],
        borrowed: bytes,
        *,
        strike: bool = False,
    ) -> NewView | None:
        rng = self.rng
        changes: dict[int, ViewChange] = {}
        # 0: genuine view changes only, 1: forged claims only, 2: mixed. A strike before the
        # targets time out has too few genuine ones; one after mostly keeps to them.
        enough = len(genuine) + len(self.keys) >= self.quorum
        if strike:
            mode = rng.choice((0, 0, 0, 2)) if enough else rng.randrange(1, 3)
        else:
            mode = rng.randrange(3)
        # At a height we split, a strike mostly lies outright: every genuine view change, ours
        # carrying the certificate of another height most likely to outrank this height's, and
        # a fresh block (a replica that lets such a certificate count then takes it).
        lie = strike and enough and height in self._split_heights and rng.randrange(4) != 0
        if lie:
            mode = 0
        signature_source = rng.randrange(3)
        if mode != 1:
            for change in genuine:
                if lie or rng.randrange(4):
                    changes[change.validator] = change
        certificates = self._certificates(height)
        elsewhere = [c for h in sorted(self._heights) if h != height for c in self._certificates(h)]
        for signer in self.byzantine:
            prepared: PreparedCertificate | None = None
            draw = 1 if lie else rng.randrange(4)
            if draw == 0 and certificates:
                prepared = rng.choice(certificates)
            elif draw == 1 and elsewhere:
                # A real certificate of another height, as if it were for this one: the one
                # most likely to outrank this height's, or any.
                best = self._best_foreign_certificate(height, view)
                if best is not None and (lie or rng.randrange(2)):
                    prepared = best
                else:
                    prepared = rng.choice(elsewhere)
            if prepared is not None and prepared.view >= view:
                prepared = None
            try:
                changes[signer] = self._view_change(signer, height, view, prepared, None)
            except DecodeError:
                changes[signer] = self._view_change(signer, height, view, None, None)
        if mode != 0:
            claims = [v for v in self.honest if v not in changes or rng.randrange(2)]
            rng.shuffle(claims)
            for claimed in claims[: max(0, self.quorum - len(changes)) + rng.randint(0, 1)]:
                changes[claimed] = self._forged_change(
                    claimed, height, view, None, signature_source, borrowed
                )
        chosen = sorted(changes.values(), key=lambda c: c.validator)
        if len(chosen) > self.quorum and rng.randrange(2):
            chosen = sorted(rng.sample(chosen, self.quorum), key=lambda c: c.validator)
        block: Block | None
        pick = 7 if lie else rng.randrange(8) if strike else rng.randrange(4)
        best = max(
            (c.prepared for c in chosen if c.prepared is not None),
            key=lambda p: (p.view, p.block_hash),
            default=None,
        )
        if pick == 0 and best is not None:
            block = self._block(height, best.block_hash)
        elif pick == 1:
            block = self._seen_block(height)
        else:
            block = self._fresh_block(height, view, primary)
        if block is None:
            block = self._fresh_block(height, view, primary)
        if block is None:
            return None
        proposal = Proposal.create(
            self.keys[primary], self.chain_id, view=view, validator=primary, block=block
        )
        try:
            return NewView.create(
                self.keys[primary], self.chain_id, view_changes=chosen, proposal=proposal
            )
        except DecodeError:
            return None

    def _move_vote(self) -> bool:
        focus = self._focus()
        if focus is None:
            return False
        rng = self.rng
        height, view = focus
        height = max(1, height + rng.choice((0, 0, 0, -1, 1, 2, rng.randint(3, 50))))
        view = max(0, view + rng.choice((0, 0, -1, 1, 2, rng.randint(3, 20))))
        block = self._seen_block(height) if rng.randrange(3) else None
        block_hash = block.hash if block is not None else hash_bytes(rng.randbytes(32))
        signer = rng.choice(self.byzantine)
        phase = rng.choice((Phase.PREPARE, Phase.COMMIT))
        data = encode_message(self._vote(signer, phase, height, view, block_hash))
        self._send(signer, self._targets(), data)
        return True

    def _move_vote_follow(self) -> bool:
        focus = self._focus()
        if focus is None:
            return False
        height, _ = focus
        seen = self._heights.get(height)
        if seen is None:
            return False
        honest_prepares = [
            vote
            for vote in seen.votes[-200:]
            if vote.phase is Phase.PREPARE and vote.validator not in self.keys
        ]
        if not honest_prepares:
            return False
        vote = self.rng.choice(honest_prepares)
        self._follow_votes(height, vote.view, vote.block_hash, self._targets(proper=True))
        return True

    def _forged_certificate(
        self, height: int, view: int
    ) -> tuple[PreparedCertificate, Block | None] | None:
        """A prepared certificate for ``height`` below ``view`` that does not prove what it says."""
        rng = self.rng
        real = [c for c in self._certificates(height) if c.view < view]
        kind = rng.randrange(6)
        if real and kind <= 3:
            base = rng.choice(real)
            block = self._block(height, base.block_hash)
            signatures = list(base.signatures)
            if kind == 0:  # one signature garbled
                index = rng.randrange(len(signatures))
                signer, signature = signatures[index]
                signatures[index] = (signer, bytes((signature[0] ^ 0x01,)) + signature[1:])
                return replace(base, signatures=tuple(signatures)), block
            if kind == 1:  # one signature short
                return replace(base, signatures=tuple(signatures[:-1])), block
            if kind == 2 and base.view + 1 < view:  # relabelled to a higher view
                return replace(base, view=rng.randint(base.view + 1, view - 1)), block
            other = self._seen_block(height)
            if other is not None and other.hash != base.block_hash:  # relabelled to a block
                return replace(base, block_hash=other.hash), other
            return replace(base, signatures=tuple(signatures[:-1])), block
        if kind == 4:
            # Commit signatures (another domain tag) collected into a "prepared" certificate.
            seen = self._heights.get(height)
            if seen is None:
                return None
            commits: dict[tuple[int, bytes], dict[int, bytes]] = {}
            for vote in seen.votes:
                if vote.phase is Phase.COMMIT and vote.view < view:
                    commits.setdefault((vote.view, vote.block_hash), {})[vote.validator] = (
                        vote.signature
                    )
            if not commits:
                return None
            (cert_view, block_hash), signers = rng.choice(list(commits.items()))
            certificate = PreparedCertificate(
                height, cert_view, block_hash, tuple(sorted(signers.items()))
            )
            return certificate, self._block(height, block_hash)
        # Signatures from another height, relabelled to this one.
        others = [h for h in self._heights if h != height]
        rng.shuffle(others)
        for other_height in others:
            candidates = [c for c in self._certificates(other_height) if c.view < view]
            if candidates:
                base = rng.choice(candidates)
                target = self._seen_block(height) if rng.randrange(2) else None
                block_hash = target.hash if target is not None else base.block_hash
                relabelled = PreparedCertificate(height, base.view, block_hash, base.signatures)
                return relabelled, target
        return None

    def _move_view_change(self, kind: str) -> bool:
        focus = self._focus()
        if focus is None:
            return False
        rng = self.rng
        height, honest_view = focus
        view = max(1, honest_view + rng.choice((0, 1, 1, 2, rng.randint(3, 8))))
        signer = rng.choice(self.byzantine)
        prepared: PreparedCertificate | None = None
        block: Block | None = None
        certificates = [c for c in self._certificates(height) if c.view < view]
        if kind == "real":
            if certificates:
                prepared = certificates[-1] if rng.randrange(3) else rng.choice(certificates)
                block = self._block(height, prepared.block_hash)
        elif kind == "stale":
            if len(certificates) > 1 and rng.randrange(2):
                prepared = rng.choice(certificates[:-1])
                block = self._block(height, prepared.block_hash)
        else:
            forged = self._forged_certificate(height, view)
            if forged is None:
                return False
            prepared, block = forged
        if prepared is not None and block is None and rng.randrange(4) == 0:
            block = self._seen_block(height)
        try:
            change = self._view_change(
                signer,
                height,
                view,
                prepared,
                block
                if block is None or prepared is None or block.hash == prepared.block_hash
                else None,
            )
        except DecodeError:
            return False
        targets = self._targets()
        primary = self._primary(height, view)
        if primary not in self.keys and primary not in targets and rng.randrange(3):
            targets.append(primary)  # the next primary embeds what it accepts in its new view
        self._send(signer, targets, encode_message(change))
        return True

    def _move_transplant(self) -> bool:
        focus = self._focus()
        if focus is None or not self.honest:
            return False
        rng = self.rng
        height, view = focus
        victim = rng.choice(self.honest)
        signature = self._stolen_signature(victim)
        if rng.randrange(2):
            block = self._seen_block(height)
            block_hash = block.hash if block is not None else hash_bytes(rng.randbytes(32))
            message: Message = Vote(
                rng.choice((Phase.PREPARE, Phase.COMMIT)),
                height,
                max(0, view + rng.randint(-1, 2)),
                block_hash,
                victim,
                signature,
            )
        else:
            prepared = None
            certificates = self._certificates(height)
            if certificates and rng.randrange(2):
                prepared = rng.choice(certificates)
            change_view = max(view + 1, 0 if prepared is None else prepared.view + 1)
            message = ViewChange(height, change_view, victim, prepared, None, signature)
        self._send(rng.choice(self.byzantine), self._targets(), encode_message(message))
        return True

    def _move_replay(self) -> bool:
        if not self._history:
            return False
        focus = self._focus()
        rng = self.rng
        old = list(self._history)
        if focus is not None and rng.randrange(3):
            height, view = focus
            older = [entry for entry in old if (entry[0], entry[1]) < (height, view)]
            if older:
                old = older
        _, _, data = rng.choice(old)
        self._send(rng.choice(self.byzantine), self._targets(), data)
        return True

    def _move_future(self) -> bool:
        focus = self._focus()
        if focus is None:
            return False
        rng = self.rng
        height, view = focus
        signer = rng.choice(self.byzantine)
        targets = self._targets()
        kind = rng.randrange(4)
        if kind == 0:  # far-future height
            far = height + FUTURE_HEIGHTS + rng.randint(1, 1_000)
            vote = self._vote(signer, Phase.PREPARE, far, 0, hash_bytes(rng.randbytes(32)))
            self._send(signer, targets, encode_message(vote))
        elif kind == 1:  # far-future view
            far_view = view + FUTURE_VIEWS + rng.randint(1, 100)
            change = self._view_change(signer, height, far_view, None, None)
            self._send(signer, targets, encode_message(change))
        elif kind == 2 and self._bursts < BURSTS_MAX:
            # A burst of distinct messages for the buffered next heights.
            self._bursts += 1
            ahead = height + rng.randint(1, FUTURE_HEIGHTS)
            for index in range(BURST_MESSAGES):
                vote = self._vote(signer, Phase.COMMIT, ahead, index, hash_bytes(rng.randbytes(32)))
                self._send(signer, targets, encode_message(vote))
        else:  # a large proposal for a buffered next height (or a burst too many)
            ahead = height + rng.randint(1, FUTURE_HEIGHTS)
            block = Block.build(
                chain_id=self.chain_id,
                height=ahead,
                view=0,
                parent_hash=hash_bytes(rng.randbytes(32)),
                app_hash=hash_bytes(rng.randbytes(32)),
                next_validators_hash=self.validators.hash(),
                proposer=signer,
                timestamp_ms=self._clock_ms(),
                transactions=[rng.randbytes(FAT_TRANSACTION_BYTES)],
            )
            proposal = Proposal.create(
                self.keys[signer], self.chain_id, view=0, validator=signer, block=block
            )
            self._send(signer, targets, encode_message(proposal))
        return True

    def _forged_response(self, entries: list[tuple[Block, CommitCertificate]]) -> bytes:
        rng = self.rng
        if not entries:
            known = sorted(self._commit_certificates.items())
            entries = [entry for _, entry in known[-2:]]
        kind = rng.randrange(7)
        if kind == 0 or not entries:
            return encode_block_response([])
        block, certificate = entries[0]
        header = block.header
        if kind == 1:  # another block under the real certificate
            forged = block.rival(timestamp_ms=header.timestamp_ms + rng.randint(1, 100))
            return encode_block_response([(forged, certificate)])
        if kind == 2:  # one signature short
            short = replace(certificate, signatures=certificate.signatures[:-1])
            return encode_block_response([(block, short)])
        if kind == 3:  # prepare signatures where commits belong
            seen = self._heights.get(block.height)
            prepares = {
                vote.validator: vote.signature
                for vote in ([] if seen is None else seen.votes)
                if vote.phase is Phase.PREPARE and vote.block_hash == block.hash
            }
            if prepares:
                wrong = replace(certificate, signatures=tuple(sorted(prepares.items())))
                return encode_block_response([(block, wrong)])
            return encode_block_response([(block, replace(certificate, view=certificate.view + 1))])
        if kind == 4:  # a block of another chain
            foreign = block.rival(chain_id=self.chain_id + "-other")
            return encode_block_response([(foreign, certificate)])
        if kind == 5:  # far ahead
            far = block.rival(chain_id=self.chain_id, height=header.height + 1_000, view=0)
            return encode_block_response([(far, replace(certificate, height=far.height))])
        return encode_block_response(entries)  # the truth, for contrast

    def _move_block_response(self) -> bool:
        rng = self.rng
        signer = rng.choice(self.byzantine)
        if self.honest and rng.randrange(3) == 0:
            # True certified blocks, unasked, from a replica's own height or from the one after
            # it (a gap): one it would follow like an answer to its own request, or not.
            target = rng.choice(self.honest)
            first = self._position.get(target, (1, 0))[0] + rng.randrange(2)
            run: list[tuple[Block, CommitCertificate]] = []
            for height in range(first, first + rng.randint(1, 6)):
                entry = self._commit_certificates.get(height)
                if entry is None:
                    break
                run.append(entry)
            if run:
                self._send(signer, [target], encode_block_response(run))
                return True
        self._send(signer, self._targets(), self._forged_response([]))
        return True

    def _move_block_request(self) -> bool:
        rng = self.rng
        low = rng.randint(1, 3)
        request = BlockRequest(low, low + rng.choice((0, 10, 1_000, 2**40)))
        self._send(rng.choice(self.byzantine), self._targets(), encode_message(request))
        return True

    def _move_garbage(self) -> bool:
        rng = self.rng
        signer = rng.choice(self.byzantine)
        kind = rng.randrange(5)
        if kind == 0 or not self._history:
            data = rng.randbytes(rng.randint(0, 200))
        elif kind == 1:
            _, _, seen = rng.choice(self._history)
            data = seen[: rng.randrange(max(1, len(seen)))]
        elif kind == 2:
            _, _, seen = rng.choice(self._history)
            position = rng.randrange(len(seen))
            data = seen[:position] + bytes((seen[position] ^ 0xFF,)) + seen[position + 1 :]
        elif kind == 3:
            data = bytes((0x93, 0x01)) + rng.randbytes(40)
        else:  # a signer that is no validator
            vote = Vote(
                Phase.PREPARE,
                max(1, max((h for h, _ in self._position.values()), default=1)),
                0,
                hash_bytes(rng.randbytes(32)),
                self.n + rng.randint(0, 100),
                rng.randbytes(SIGNATURE_BYTES),
            )
            data = encode_message(vote)
        self._send(signer, self._targets(), data)
        return True

    # -----------------------------------------------------------------------------------------
    # Rewriting the byzantine replicas' own messages

    def _split_outgoing(
        self, validator: int, data: bytes, destinations: Sequence[int]
    ) -> list[tuple[int, bytes]] | None:
        """Route a byzantine replica's message by the split of its (height, view), starting
        one when it proposes in a view it leads; None when no split applies."""
        try:
            message = decode_message(data)
        except DecodeError:
            return None
        rng = self.rng
        if isinstance(message, Proposal | NewView) and message.validator == validator:
            key = (message.height, message.view)
            if key not in self._splits and rng.randrange(100) < self.parameters.split_percent:
                self._start_split(
                    key,
                    message.proposal.block.hash
                    if isinstance(message, NewView)
                    else message.block.hash,
                )
            split = self._splits.get(key)
            if split is None:
                return None
            return [(d, data) for d in destinations if d in split.prepared or d in self.keys]
        if isinstance(message, ViewChange) and message.validator == validator:
            if message.height not in self._split_heights:
                return None
            # After a split, our view changes at that height lie about what we prepared.
            lie = self._lying_view_change(message)
            self._injected(validator)
            return [(d, lie) for d in destinations]
        if not isinstance(message, Vote) or message.validator != validator:
            return None
        split = self._splits.get((message.height, message.view))
        if split is None or message.block_hash != split.block_hash:
            return None
        if message.phase is Phase.COMMIT:
            if split.late and not split.released:
                return [(d, data) for d in destinations if d in self.keys]
            if not split.struck:
                split.struck = True
                self._schedule(
                    rng.randint(1, FOLLOW_UP_MS_MAX), self._strike_after_split(message.height)
                )
            return [(d, data) for d in destinations if d in split.deciding or d in self.keys]
        routed: list[tuple[int, bytes]] = []
        for destination in destinations:
            if destination in split.wrong_view:
                other_view = message.view + rng.randint(1, FUTURE_VIEWS)
                vote = self._vote(
                    validator, Phase.PREPARE, message.height, other_view, message.block_hash
                )
                routed.append((destination, encode_message(vote)))
            elif destination in split.prepared or destination in self.keys:
                routed.append((destination, data))
        return routed

    def _hold_commit(self, validator: int, data: bytes, destinations: Sequence[int]) -> bool:
        """An opportunist holds its replicas' commit votes a moment: if honest commit votes
        for the same block arrive meanwhile, the held commit goes to one of them only (it
        decides, the rest lag); otherwise it goes out as meant."""
        try:
            message = decode_message(data)
        except DecodeError:
            return False
        if not (
            isinstance(message, Vote)
            and message.phase is Phase.COMMIT
            and message.validator == validator
        ):
            return False
        key = (message.height, message.view)
        targets = list(destinations)
        held_since = self._clock_ms()

        def release() -> None:
            if not self.active:
                return
            split = self._splits.get(key)
            if split is None and self._clock_ms() - held_since < HOLD_MS_MAX:
                seen = self._heights.get(message.height)
                voters = (
                    0
                    if seen is None
                    else sum(
                        1
                        for v in seen.tallies.get(
                            (Phase.COMMIT, message.view, message.block_hash), {}
                        )
                        if v not in self.keys
                    )
                )
                if voters < self.quorum - len(self.keys):
                    # Not enough honest commit votes yet to hand one replica a quorum: wait.
                    self._schedule(HOLD_MS_MIN, release)
                    return
            chosen = targets
            if split is not None and split.block_hash == message.block_hash:
                chosen = [d for d in targets if d in split.deciding or d in self.keys]
            for destination in chosen:
                self._transport(validator, destination, data)

        self._schedule(self.rng.randint(HOLD_MS_MIN, 2 * HOLD_MS_MIN), release)
        return True

    def _start_split(self, key: tuple[int, int], block_hash: bytes) -> None:
        rng = self.rng
        needed = max(1, min(len(self.honest), self.quorum - len(self.keys)))
        prepared = rng.sample(self.honest, needed)
        most = max(1, min(len(prepared), self.n - self.quorum))
        deciding = rng.sample(prepared, rng.randint(1, most))
        late = rng.randrange(2) == 0
        # Rarely, and never in a late split (it needs every prepared replica's commit),
        # some byzantine prepares are signed for another view.
        wrong_view = [
            v for v in prepared if v not in deciding and not late and rng.randrange(6) == 0
        ]
        split = _Split(
            block_hash,
            frozenset(prepared),
            frozenset(deciding),
            frozenset(wrong_view),
            view=key[1],
            late=late,
        )
        self._splits[key] = split
        self._split_heights[key[0]] = split
        self._count(Move.SPLIT_QUORUM)
        self._lie_ahead(key[0], key[1] + 1)

    def _strike_after_split(self, height: int) -> Callable[[], None]:
        split = self._split_heights[height]
        laggards = [v for v in self.honest if v not in split.deciding]
        return self._strike_at(height, laggards)

    def _best_foreign_certificate(self, height: int, view: int) -> PreparedCertificate | None:
        """The real certificate of another height most likely to outrank this height's."""
        foreign = [
            c
            for h in sorted(self._heights)
            if h != height
            for c in self._certificates(h)
            if c.view < view
        ]
        if not foreign:
            return None
        return min(foreign, key=lambda c: (-c.view, c.block_hash))

    def _lying_view_change(self, change: ViewChange) -> bytes:
        """Our view change with another certificate: one of another height, or none."""
        prepared = None
        if self.rng.randrange(4):
            prepared = self._best_foreign_certificate(change.height, change.view)
        try:
            lie = self._view_change(change.validator, change.height, change.view, prepared, None)
        except DecodeError:
            lie = self._view_change(change.validator, change.height, change.view, None, None)
        self._count(Move.EQUIVOCATE)
        return encode_message(lie)

    def _follow_at_split_height(self, vote: Vote) -> None:
        """An honest replica prepares another block at a height we split: back it, at once,
        with byzantine prepares and commits to every honest replica that has not decided, and
        (a late split) hand the deciders the quorum for the split block now."""
        split = self._split_heights.get(vote.height)
        if split is None or vote.block_hash == split.block_hash:
            return
        if vote.block_hash in split.followed:
            return
        split.followed.add(vote.block_hash)
        laggards = [v for v in self.honest if v not in split.deciding]
        self._follow_votes(vote.height, vote.view, vote.block_hash, laggards)
        self._count(Move.VOTE_FOLLOW)
        if split.late and not split.released:
            split.released = True
            for signer in self.byzantine:
                commit = self._vote(signer, Phase.COMMIT, vote.height, split.view, split.block_hash)
                self._send(signer, sorted(split.deciding), encode_message(commit))

    def _lie_at_split_height(self, change: ViewChange) -> None:
        """Honest replicas leave a view at a height we split: lie in it too."""
        if change.height in self._split_heights:
            self._lie_ahead(change.height, change.view)

    def _lie_ahead(self, height: int, view: int) -> None:
        """Every byzantine validator sends every honest replica a view change to ``view`` at a
        height we split that lies about what it prepared (another height's certificate, or
        nothing), once per view, early enough to be among the first a new primary counts."""
        split = self._split_heights.get(height)
        if split is None or view in split.lied:
            return
        split.lied.add(view)
        for signer in self.byzantine:
            genuine = self._view_change(signer, height, view, None, None)
            self._send(signer, self.honest, self._lying_view_change(genuine))

    def _conflicting_version(self, validator: int, data: bytes) -> bytes | None:
        """A validly signed message conflicting with ``data`` (a vote or proposal of ours)."""
        try:
            message = decode_message(data)
        except DecodeError:
            return None
        rng = self.rng
        if isinstance(message, ViewChange) and message.validator == validator:
            return self._lying_view_change(message)
        if isinstance(message, Vote) and message.validator == validator:
            if rng.randrange(2):  # the same block, signed for another view
                vote = self._vote(
                    validator,
                    message.phase,
                    message.height,
                    message.view + rng.randint(1, FUTURE_VIEWS),
                    message.block_hash,
                )
                return encode_message(vote)
            other = self._seen_block(message.height)
            block_hash = (
                other.hash
                if other is not None and other.hash != message.block_hash
                else hash_bytes(rng.randbytes(32))
            )
            vote = self._vote(validator, message.phase, message.height, message.view, block_hash)
            return encode_message(vote)
        if isinstance(message, Proposal) and message.validator == validator:
            header = message.block.header
            block = message.block.rival(
                timestamp_ms=header.timestamp_ms + rng.randint(1, 50),
                transactions=message.block.transactions,
            )
            self._learn_block(block)
            proposal = Proposal.create(
                self.keys[validator],
                self.chain_id,
                view=message.view,
                validator=validator,
                block=block,
            )
            return encode_message(proposal)
        return None
