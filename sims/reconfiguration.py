"""Validator-set changes in a simulation run, decided on chain by the banks' votes.

Theory of operation
-------------------
With ``SimConfig.reconfigure`` the genesis starts the on-chain validator registry
(``apps.validators``; every validator record carries its node's key, so the simulated network
routes by node whatever index a set gives it), every bank gets a governance key, and
``SPARE_NODES`` more honest nodes follow the chain from the start without a vote.
``Reconfiguration`` then plays the consortium's operators during the fault phase: every
``interval_ms`` (drawn per seed) it may start a change, one at a time, and see it through: a
proposal from the first bank and a vote from each other bank, every transaction submitted to
every live honest node and again until the chain shows its nonce consumed, so loss, crashes and
partitions only delay it, and a vote refused because another change is still pending is cast
again. It reads the chain as a client does, from the most advanced live honest node's state.

The changes (``Change``), drawn per seed:

* ``join``: the next spare node is added with its genesis key and node key;
* ``leave``: an honest validator ranked after every byzantine one leaves, if the byzantine
  validators stay at most f of the smaller set. The honest validators ranked after it move
  down one index (the replicas follow their own index from set to set); no byzantine
  validator's index moves, since byzantine drivers sign with a fixed index;
* ``rotate``: an honest validator's consensus key is replaced by its next key
  (``validator_key(slot, generation)``), which its node is handed as a standby key when the
  change is proposed.

Byzantine validators never leave or rotate, so each keeps its index and its key; the keys an
honest validator retires are recorded (``retired``). The simulation follows the chain
(``Simulation._follow_schedule``): a set scheduled by block c is in force from c + 2, and the
checker and the adversary learn each set when the chain reaches it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from apps.host import AppHost
from apps.transaction import Transaction, sign_transaction
from consensus.codec import Value
from consensus.crypto import PrivateKey, hash_bytes
from consensus.types import Block, CommitCertificate, Phase, ValidatorSchedule, ValidatorSet, Vote

__all__ = [
    "SPARE_NODES",
    "Change",
    "Reconfiguration",
    "forge_with_retired_keys",
    "governor_key",
    "node_key",
    "validator_key",
    "with_governors",
]

# Honest nodes that follow the chain from the start and may join as validators.
SPARE_NODES: Final = 2
# A client resubmits a transaction whose nonce the chain has not consumed after this long (a
# node that restarted lost its pool): long enough for a block under faults.
RESUBMIT_MS: Final = 1_000
# Simulated time between changes, drawn per seed: frequent enough that a run of a few seconds
# sees several, sparse enough that most heights are decided by a settled set.
INTERVALS_MS: Final = (100, 300, 800)


class Change(StrEnum):
    """What a governance decision does to the validator set."""

    JOIN = "join"
    LEAVE = "leave"
    ROTATE = "rotate"


def validator_key(slot: int, generation: int = 0) -> PrivateKey:
    """The consensus key of node slot ``slot`` after ``generation`` rotations."""
    label = f"suanpan/sim/validator/{slot}" + (f"/{generation}" if generation else "")
    return PrivateKey(hash_bytes(label.encode()))


def node_key(slot: int) -> bytes:
    """The node (link identity) key of node slot ``slot``."""
    return hash_bytes(f"suanpan/sim/node/{slot}".encode())


def governor_key(bank: str) -> PrivateKey:
    """The governance key of bank ``bank``."""
    return PrivateKey(hash_bytes(f"suanpan/sim/governor/{bank}".encode()))


def with_governors(app_genesis: Mapping[str, Value], banks: Sequence[str]) -> dict[str, Value]:
    """``app_genesis`` with a governance identity (role bank) for each of ``banks``."""
    genesis = dict(app_genesis)
    membership = genesis.get("membership")
    assert isinstance(membership, dict), "the chain's genesis seeds membership"
    identities = list(membership.get("identities", ()))
    identities += [
        {"public_key": governor_key(bank).public_key, "institution": bank, "roles": ["bank"]}
        for bank in banks
    ]
    genesis["membership"] = {**membership, "identities": identities}
    return genesis


@dataclass(slots=True)
class _Client:
    """One bank's governance key and its transaction in flight."""

    bank: str
    key: PrivateKey
    outstanding: Transaction | None = None
    submitted_at_ms: int = 0
    attempts: int = 0


@dataclass(slots=True)
class _Decision:
    """A change being decided: its proposal transaction (the id is its hash)."""

    change: Change
    slot: int
    arguments: dict[str, Value]
    proposal: Transaction | None = None
    # A leave of a validator ranked before others: their indices move down one.
    shifts: bool = False


@dataclass(slots=True)
class _Counts:
    proposed: dict[str, int] = field(default_factory=dict)
    executed: dict[str, int] = field(default_factory=dict)
    # Executed leaves that moved the validators ranked after the leaver down one index.
    shifting_leaves: int = 0


class Reconfiguration:
    """The consortium's operators, changing the validator set by governance (module doc)."""

    def __init__(
        self,
        *,
        rng: random.Random,
        chain_id: str,
        banks: Sequence[str],
        genesis: ValidatorSet,
        slots: int,
        byzantine: Sequence[int],
        give_key: Callable[[int, PrivateKey], None],
        kinds: Sequence[Change] = tuple(Change),
    ) -> None:
        """``kinds``: the changes it may draw (all by default)."""
        self._kinds = frozenset(kinds)
        self._rng = rng
        self._chain_id = chain_id
        self._clients = [_Client(bank, governor_key(bank)) for bank in banks]
        self._genesis_size = genesis.size
        self._slots = slots
        self._byzantine = frozenset(byzantine)
        self._give_key = give_key
        self._slot_of = {node_key(slot): slot for slot in range(slots)}
        self._generation = dict.fromkeys(range(slots), 0)
        self._joined: set[int] = set()  # spare slots ever added (a slot joins once)
        self.interval_ms = rng.choice(INTERVALS_MS)
        self._next_change_ms = self.interval_ms
        self._decision: _Decision | None = None
        self.active = True
        self.counts = _Counts()
        # Consensus keys honest validators rotated away from: (slot, key).
        self.retired: list[tuple[int, PrivateKey]] = []

    @property
    def executed(self) -> int:
        """How many changes the chain has decided so far."""
        return sum(self.counts.executed.values())

    # -- the loop ----------------------------------------------------------------------------

    def step(
        self,
        now_ms: int,
        host: AppHost | None,
        up: Sequence[int],
        submit: Callable[[int, bytes], bool],
    ) -> None:
        """One chance to act: read the chain from ``host``, send what is missing to live
        nodes ``up`` (node ids) through ``submit``."""
        if host is None or not up:
            return
        decision = self._decision
        if decision is None:
            if self.active and now_ms >= self._next_change_ms:
                self._decision = self._draw(host)
                self._next_change_ms = now_ms + self.interval_ms
            return
        if decision.proposal is None:
            decision.proposal = self._sign(host, self._clients[0], "propose", decision.arguments)
            self._clients[0].outstanding = decision.proposal
            self._send(self._clients[0], now_ms, up, submit)
            return
        record = host.query("membership", "proposal", {"id": decision.proposal.hash.hex()})
        if isinstance(record, dict) and record.get("status") == "executed":
            self._executed(decision)
            return
        voted = record.get("votes", ()) if isinstance(record, dict) else ()
        for position, client in enumerate(self._clients):
            if client.outstanding is not None and host.next_nonce(client.key.public_key) > (
                client.outstanding.nonce
            ):
                client.outstanding = None  # committed (accepted or refused: look again)
            if client.outstanding is not None:
                if now_ms - client.submitted_at_ms >= RESUBMIT_MS:
                    self._send(client, now_ms, up, submit)
                continue
            if position == 0 and record is None:
                # The proposal was consumed without opening (refused): give up on it.
                self._decision = None
                return
            if record is None or client.bank in voted:
                continue
            client.outstanding = self._sign(
                host, client, "vote", {"proposal": decision.proposal.hash.hex()}
            )
            self._send(client, now_ms, up, submit)

    def _sign(
        self, host: AppHost, client: _Client, operation: str, arguments: Mapping[str, Value]
    ) -> Transaction:
        return sign_transaction(
            client.key,
            chain_id=self._chain_id,
            app="membership",
            operation=operation,
            arguments=dict(arguments),
            nonce=host.next_nonce(client.key.public_key),
        )

    def _send(
        self, client: _Client, now_ms: int, up: Sequence[int], submit: Callable[[int, bytes], bool]
    ) -> None:
        """Submit the client's transaction to every live honest node (the simulated nodes do
        not gossip transactions; whichever proposes next includes it)."""
        transaction = client.outstanding
        assert transaction is not None
        client.submitted_at_ms = now_ms
        client.attempts += 1
        for node in up:
            submit(node, transaction.encoded)

    def _executed(self, decision: _Decision) -> None:
        change = decision.change
        self.counts.executed[change] = self.counts.executed.get(change, 0) + 1
        if decision.shifts:
            self.counts.shifting_leaves += 1
        if change is Change.ROTATE:
            retired = validator_key(decision.slot, self._generation[decision.slot])
            self._generation[decision.slot] += 1
            self.retired.append((decision.slot, retired))
        for client in self._clients:
            client.outstanding = None
        self._decision = None

    # -- drawing a change ---------------------------------------------------------------------

    def _draw(self, host: AppHost) -> _Decision | None:
        answer = host.query("membership", "validators", {})
        if not isinstance(answer, dict):
            return None
        records = answer.get("validators")
        assert isinstance(records, tuple)
        members: list[int] = []
        for record in records:
            assert isinstance(record, dict)
            key = record.get("node_key")
            assert isinstance(key, bytes)
            members.append(self._slot_of[key])
        rng = self._rng
        honest = [slot for slot in members if slot not in self._byzantine]
        options: list[Change] = [Change.ROTATE] if honest else []
        fresh = [
            slot for slot in range(self._genesis_size, self._slots) if slot not in self._joined
        ]
        if fresh:
            options.append(Change.JOIN)
        smaller = len(members) - 1
        last_byzantine = max(
            (index for index, slot in enumerate(members) if slot in self._byzantine), default=-1
        )
        leavers = members[last_byzantine + 1 :]
        if smaller >= 1 and leavers and len(self._byzantine) <= (smaller - 1) // 3:
            options.append(Change.LEAVE)
        options = [option for option in options if option in self._kinds]
        if not options:
            return None
        change = rng.choice(options)
        if change is Change.JOIN:
            slot = fresh[0]
            self._joined.add(slot)
            arguments: dict[str, Value] = {
                "action": "add_validator",
                "validator_name": f"validator-{slot}",
                "validator_key": validator_key(slot).public_key,
                "node_key": node_key(slot),
                "institution_id": self._clients[0].bank,
            }
        elif change is Change.LEAVE:
            slot = rng.choice(leavers)
            arguments = {"action": "remove_validator", "validator_name": f"validator-{slot}"}
        else:
            slot = rng.choice(honest)
            next_key = validator_key(slot, self._generation[slot] + 1)
            self._give_key(slot, next_key)
            arguments = {
                "action": "rotate_validator_key",
                "validator_name": f"validator-{slot}",
                "validator_key": next_key.public_key,
            }
        self.counts.proposed[change] = self.counts.proposed.get(change, 0) + 1
        shifts = change is Change.LEAVE and slot != members[-1]
        return _Decision(change, slot, arguments, shifts=shifts)


def forge_with_retired_keys(
    entries: Sequence[tuple[Block, CommitCertificate]],
    schedule: ValidatorSchedule,
    keys: Mapping[bytes, PrivateKey],
    chain_id: str,
) -> list[tuple[Block, CommitCertificate]] | None:
    """A block response that forks a node asking for ``entries`` (from its height on): the
    true blocks up to a height whose set differs from the one the node knows now, then a
    conflicting block there, certified by the *old* set's keys, of which ``keys`` (byzantine
    and retired ones) hold a quorum. None when no such height or not enough keys.

    A correct replica checks that certificate again at its own height and refuses it; one
    that trusts the check against the set it knew on arrival commits the fork."""
    if not entries:
        return None
    first = entries[0][0].height
    known = schedule.at(first + 1)  # the latest set a node at height ``first`` knows
    held = [
        (index, keys[v.public_key])
        for index, v in enumerate(known.validators)
        if v.public_key in keys
    ]
    if len(held) < known.quorum:
        return None
    for position, (block, _) in enumerate(entries):
        if block.height < first + 2 or schedule.at(block.height) == known:
            continue
        forged = block.rival(timestamp_ms=block.header.timestamp_ms + 1)
        votes = [
            Vote.create(
                key,
                chain_id,
                phase=Phase.COMMIT,
                height=forged.height,
                view=forged.header.view,
                block_hash=forged.hash,
                validator=index,
            )
            for index, key in held[: known.quorum]
        ]
        return [*entries[:position], (forged, CommitCertificate.from_votes(votes))]
    return None
