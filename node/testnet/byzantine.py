"""A byzantine validator for local testnets: sign and send conflicting statements on purpose.

Theory of operation
-------------------
The replica in ``consensus/`` is always honest; misbehaviour lives here, in the driver, and
only when a testnet home's ``config.toml`` says so (``[testnet] byzantine``, which needs
``fault_hooks = true``). After the runtime broadcasts one of the replica's own messages it
hands the bytes to ``Byzantine.after_broadcast``, which, for heights in
``[byzantine_from_height, byzantine_to_height]``:

* ``double_vote``: for every prepare or commit vote, signs a second vote of the same phase,
  height and view for a different (fabricated) block hash and broadcasts it right after the
  real one. The real vote is sent first on every link, so peers count it and record the
  second as equivocation evidence; liveness is unaffected.
* ``equivocate``: for every view-0 proposal (we are the primary), signs a second proposal of
  a different block at the same height and view (same parent and app hash, one millisecond
  later, no transactions) and broadcasts it after the real one. Peers accept the first and
  report the pair as evidence.

Both use the consensus message constructors (``Vote.create``, ``Proposal.create``) with the
validator's real key, so the conflicting statements are exactly what a compromised validator
could produce. Every injection is recorded (height, view, kind, both block hashes) and served
by the fault-hook endpoint, so ``suanpan testnet chaos`` can check that every honest node
reported it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from consensus.crypto import PrivateKey, hash_bytes
from consensus.messages import MessageError, Proposal, decode_message, encode_message
from consensus.types import Vote
from node.config import TestnetConfig
from node.jsonvalue import JsonType

__all__ = ["Byzantine", "Injection"]

log = logging.getLogger("suanpan.byzantine")

# Injections remembered for the fault-hook endpoint (a chaos run makes a few hundred at most).
INJECTIONS_REMEMBERED_MAX: Final = 10_000
# Domain prefix of the fabricated block hashes a double voter signs.
_FAKE_HASH_PREFIX: Final = b"suanpan/byzantine/double-vote"


@dataclass(frozen=True, slots=True)
class Injection:
    """One conflicting statement this node signed and sent."""

    height: int
    view: int
    kind: str  # "proposal", "prepare" or "commit" (as in the evidence documents)
    honest_hash: bytes
    conflicting_hash: bytes

    def to_json(self) -> dict[str, JsonType]:
        """JSON form for the fault-hook endpoint."""
        return {
            "height": self.height,
            "view": self.view,
            "kind": self.kind,
            "block_hashes": [self.honest_hash.hex(), self.conflicting_hash.hex()],
        }


class Byzantine:
    """Signs conflicting votes or proposals after the honest ones, as configured."""

    def __init__(
        self,
        config: TestnetConfig,
        *,
        key: PrivateKey,
        chain_id: str,
        validator: int,
        broadcast: Callable[[bytes], None],
    ) -> None:
        """``broadcast`` sends consensus message bytes to every other validator."""
        assert config.byzantine, "an honest node has no Byzantine driver"
        self.mode = config.byzantine
        self.from_height = config.byzantine_from_height
        self.to_height = config.byzantine_to_height
        self._key = key
        self._chain_id = chain_id
        self._validator = validator
        self._broadcast = broadcast
        self.injections: deque[Injection] = deque(maxlen=INJECTIONS_REMEMBERED_MAX)

    def after_broadcast(self, payload: bytes) -> None:
        """Called with each consensus message the replica broadcast; may send a conflict."""
        try:
            message = decode_message(payload)
        except MessageError:  # our own replica's bytes: cannot happen, but never crash here
            return
        if isinstance(message, Vote):
            if self.mode == "double_vote" and self._active(message.height):
                self._double_vote(message)
        elif (
            isinstance(message, Proposal)
            and self.mode == "equivocate"
            and message.view == 0
            and self._active(message.height)
        ):
            self._equivocate(message)

    def _active(self, height: int) -> bool:
        return self.from_height <= height <= self.to_height

    def _double_vote(self, vote: Vote) -> None:
        fake_hash = hash_bytes(_FAKE_HASH_PREFIX + vote.block_hash)
        conflicting = Vote.create(
            self._key,
            self._chain_id,
            phase=vote.phase,
            height=vote.height,
            view=vote.view,
            block_hash=fake_hash,
            validator=self._validator,
        )
        self._send(
            conflicting.height,
            conflicting.view,
            vote.phase.name.lower(),
            vote.block_hash,
            encode_message(conflicting),
            fake_hash,
        )

    def _equivocate(self, proposal: Proposal) -> None:
        header = proposal.block.header
        other = proposal.block.rival(timestamp_ms=header.timestamp_ms + 1)
        conflicting = Proposal.create(
            self._key, self._chain_id, view=proposal.view, validator=self._validator, block=other
        )
        self._send(
            proposal.height,
            proposal.view,
            "proposal",
            proposal.block_hash,
            encode_message(conflicting),
            other.hash,
        )

    def _send(
        self,
        height: int,
        view: int,
        kind: str,
        honest_hash: bytes,
        payload: bytes,
        conflicting_hash: bytes,
    ) -> None:
        self._broadcast(payload)
        injection = Injection(height, view, kind, honest_hash, conflicting_hash)
        self.injections.append(injection)
        log.warning(
            "byzantine_injected",
            extra={
                "height": height,
                "view": view,
                "kind": kind,
                "mode": self.mode,
                "honest_hash": honest_hash.hex(),
                "conflicting_hash": conflicting_hash.hex(),
            },
        )

    def to_json(self) -> dict[str, JsonType]:
        """Mode, active heights and every injection so far."""
        return {
            "mode": self.mode,
            "from_height": self.from_height,
            "to_height": self.to_height,
            "injections": [injection.to_json() for injection in self.injections],
        }
