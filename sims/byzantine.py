"""Byzantine validators with one fixed behaviour: the real replica, its outgoing traffic rewritten.

Theory of operation
-------------------
``ByzantineDriver`` is what a simulated node asks of whatever controls a byzantine validator:
what leaves the node for each message its replica sends, and how it answers block requests.
Two kinds implement it: ``Misbehaviour`` below (one behaviour per validator, chosen per seed),
and the adversary of ``sims/adversary.py`` (one strategy for all byzantine validators, which
sees all traffic and crafts any message).

A node with a ``Misbehaviour`` runs an unmodified ``Replica`` (so it keeps up with the protocol
and its attacks are well-timed) and the simulator rewrites what it sends, signing new messages
with the node's real key through the same constructors honest replicas use:

* ``silent``: nothing leaves the node;
* ``equivocate``: each proposal it makes is split: half of its peers get the real block, the
  other half a different block (same height and view, another timestamp), and its prepare and
  commit votes follow the block each peer was shown;
* ``double-vote``: beside every vote it also signs a vote for a different block at the same
  (phase, height, view) and sends it to a random half of its peers;
* ``unknown-block-votes``: also signs votes for hashes that name no block, at its height and
  at views ahead of it;
* ``bad-signatures``: votes and proposals go out with a corrupted signature;
* ``garbage``: random byte strings and truncated copies of its real messages go out beside
  them;
* ``forge-sync``: follows the protocol, but answers block requests with a forged block (right
  parent and app hash, another timestamp) carrying the *real* block's certificate, which does
  not verify for the forged hash;
* ``twin``: no rewriting at all; the simulator runs two copies with the same key.

Every choice draws from the node's own seeded ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from consensus.crypto import PrivateKey, hash_bytes
from consensus.messages import (
    MessageError,
    NewView,
    Proposal,
    decode_message,
    encode_block_response,
    encode_message,
)
from consensus.types import Block, CommitCertificate, Vote
from sims.faults import Behaviour

__all__ = ["ByzantineDriver", "Misbehaviour"]


class ByzantineDriver(Protocol):
    """What a simulated node asks of the controller of its byzantine validator."""

    @property
    def injected(self) -> int:
        """Messages crafted so far (beyond what the replica itself sent)."""
        ...

    def outgoing(self, data: bytes, destinations: Sequence[int]) -> list[tuple[int, bytes]]:
        """What actually leaves the node for ``data``, meant for validators ``destinations``:
        (validator, bytes) pairs, possibly none, rewritten or more."""
        ...

    def serve(
        self, entries: Sequence[tuple[Block, CommitCertificate]], to: int, now_ms: int
    ) -> bytes | None:
        """The answer to a block request from validator ``to`` for ``entries`` (the blocks the
        node has); None sends nothing."""
        ...


def _alternative(block: Block) -> Block:
    """A block that conflicts with ``block``: same height, parent and state, other timestamp."""
    header = block.header
    return block.rival(timestamp_ms=header.timestamp_ms + 1, transactions=block.transactions)


def _corrupt(signature: bytes) -> bytes:
    return bytes((signature[0] ^ 0x01,)) + signature[1:]


# entries -> the block response that forks the requester, or None
Forger: TypeAlias = Callable[
    [Sequence[tuple[Block, CommitCertificate]]], list[tuple[Block, CommitCertificate]] | None
]


@dataclass(slots=True)
class Misbehaviour:
    """Rewrites one byzantine node's outgoing messages according to its behaviour."""

    behaviour: Behaviour
    key: PrivateKey
    validator: int
    chain_id: str
    rng: random.Random
    # block hash we proposed -> the conflicting block shown to the other half
    _alternatives: dict[bytes, Block] = field(default_factory=dict)
    _other_half: dict[bytes, frozenset[int]] = field(default_factory=dict)
    injected: int = 0
    # forge-sync with retired keys (a planted bug's scenario): entries -> a forked response,
    # or None when the keys held certify no fork (``sims.reconfiguration``).
    forger: Forger | None = None

    def outgoing(self, data: bytes, destinations: Sequence[int]) -> list[tuple[int, bytes]]:
        """What actually leaves the node for a message meant for ``destinations``."""
        behaviour = self.behaviour
        if behaviour is Behaviour.SILENT:
            return []
        if behaviour in (Behaviour.TWIN, Behaviour.FORGE_SYNC):
            return [(d, data) for d in destinations]
        try:
            message = decode_message(data)
        except MessageError:  # pragma: no cover - the real replica only sends valid messages
            return [(d, data) for d in destinations]
        if behaviour is Behaviour.GARBAGE:
            return self._garbage(data, destinations)
        if behaviour is Behaviour.BAD_SIGNATURES:
            return [(d, self._bad_signature(message, data)) for d in destinations]
        if isinstance(message, Proposal | NewView):
            if behaviour is Behaviour.EQUIVOCATE:
                return self._equivocate(message, data, destinations)
            return [(d, data) for d in destinations]
        if isinstance(message, Vote):
            if behaviour is Behaviour.EQUIVOCATE:
                return self._follow_split(message, data, destinations)
            if behaviour is Behaviour.DOUBLE_VOTE:
                return self._double_vote(message, data, destinations)
            if behaviour is Behaviour.UNKNOWN_BLOCK_VOTES:
                return self._unknown_votes(message, data, destinations)
        return [(d, data) for d in destinations]

    def _sign_vote(self, vote: Vote, *, block_hash: bytes, view: int | None = None) -> bytes:
        self.injected += 1
        forged = Vote.create(
            self.key,
            self.chain_id,
            phase=vote.phase,
            height=vote.height,
            view=vote.view if view is None else view,
            block_hash=block_hash,
            validator=self.validator,
        )
        return encode_message(forged)

    def _half(self, destinations: Sequence[int]) -> frozenset[int]:
        chosen = [d for d in destinations if self.rng.randrange(2) == 1]
        return frozenset(chosen)

    def _equivocate(
        self, message: Proposal | NewView, data: bytes, destinations: Sequence[int]
    ) -> list[tuple[int, bytes]]:
        proposal = message.proposal if isinstance(message, NewView) else message
        if proposal.validator != self.validator:
            return [(d, data) for d in destinations]
        alternative = _alternative(proposal.block)
        forged = Proposal.create(
            self.key,
            self.chain_id,
            view=proposal.view,
            validator=self.validator,
            block=alternative,
        )
        if isinstance(message, NewView):
            forged_data = encode_message(
                NewView.create(
                    self.key, self.chain_id, view_changes=message.view_changes, proposal=forged
                )
            )
        else:
            forged_data = encode_message(forged)
        self.injected += 1
        other = self._half(destinations)
        self._alternatives[proposal.block.hash] = alternative
        self._other_half[proposal.block.hash] = other
        return [(d, forged_data if d in other else data) for d in destinations]

    def _follow_split(
        self, vote: Vote, data: bytes, destinations: Sequence[int]
    ) -> list[tuple[int, bytes]]:
        alternative = self._alternatives.get(vote.block_hash)
        if alternative is None:
            return [(d, data) for d in destinations]
        other = self._other_half[vote.block_hash]
        forged = self._sign_vote(vote, block_hash=alternative.hash)
        return [(d, forged if d in other else data) for d in destinations]

    def _double_vote(
        self, vote: Vote, data: bytes, destinations: Sequence[int]
    ) -> list[tuple[int, bytes]]:
        conflicting = self._sign_vote(vote, block_hash=hash_bytes(b"double" + vote.block_hash))
        other = self._half(destinations)
        sent = [(d, data) for d in destinations]
        sent.extend((d, conflicting) for d in destinations if d in other)
        return sent

    def _unknown_votes(
        self, vote: Vote, data: bytes, destinations: Sequence[int]
    ) -> list[tuple[int, bytes]]:
        sent = [(d, data) for d in destinations]
        for ahead in (0, 1, self.rng.randint(2, 8)):
            unknown = hash_bytes(self.rng.randbytes(32))
            forged = self._sign_vote(vote, block_hash=unknown, view=vote.view + ahead)
            sent.extend((d, forged) for d in destinations)
        return sent

    def _bad_signature(self, message: object, data: bytes) -> bytes:
        self.injected += 1
        if isinstance(message, Vote):
            return encode_message(
                Vote(
                    message.phase,
                    message.height,
                    message.view,
                    message.block_hash,
                    message.validator,
                    _corrupt(message.signature),
                )
            )
        if isinstance(message, Proposal):
            return encode_message(
                Proposal(
                    message.view, message.validator, message.block, _corrupt(message.signature)
                )
            )
        # Anything else: flip one byte somewhere in the body.
        position = self.rng.randrange(len(data))
        return data[:position] + bytes((data[position] ^ 0xFF,)) + data[position + 1 :]

    def _garbage(self, data: bytes, destinations: Sequence[int]) -> list[tuple[int, bytes]]:
        sent = [(d, data) for d in destinations]
        for destination in destinations:
            choice = self.rng.randrange(3)
            if choice == 0:
                junk = self.rng.randbytes(self.rng.randint(0, 200))
            elif choice == 1:
                junk = data[: self.rng.randrange(max(1, len(data)))]
            else:
                junk = bytes((0x93, 0x01)) + self.rng.randbytes(40)  # array header, bad body
            self.injected += 1
            sent.append((destination, junk))
        return sent

    def serve(
        self, entries: Sequence[tuple[Block, CommitCertificate]], to: int, now_ms: int
    ) -> bytes | None:
        """Silent nodes answer nothing, forge-sync nodes a forged block, others the truth."""
        if self.behaviour is Behaviour.SILENT:
            return None
        if self.behaviour is Behaviour.FORGE_SYNC:
            if self.forger is not None:
                forked = self.forger(entries)
                if forked is not None:
                    self.injected += 1
                    return encode_block_response(forked)
            return self.forged_response(entries, now_ms)
        return encode_block_response(entries)

    def forged_response(
        self,
        entries: Sequence[tuple[Block, CommitCertificate]],
        now_ms: int,
    ) -> bytes:
        """A block response whose first block is forged under the real block's certificate."""
        if not entries:
            return encode_block_response(())
        block, certificate = entries[0]
        header = block.header
        forged = block.rival(timestamp_ms=max(now_ms, header.timestamp_ms + 1))
        self.injected += 1
        return encode_block_response([(forged, certificate)])
