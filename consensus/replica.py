"""The sans-I/O PBFT replica (public API; see the theory of operation below)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Final, TypeAlias

from consensus.crypto import PrivateKey
from consensus.evidence import Evidence
from consensus.types import Block, CommitCertificate, ValidatorSet

__all__ = [
    "Action",
    "BlockExecuted",
    "Broadcast",
    "ChainTip",
    "Commit",
    "DropReason",
    "Dropped",
    "Input",
    "PeerMessage",
    "Persist",
    "PlantedBug",
    "ProposalPayload",
    "Replica",
    "ReplicaConfig",
    "ReplicaStatus",
    "ReportEvidence",
    "RequestBlocks",
    "RequestProposal",
    "RestoreError",
    "Send",
    "ServeBlocks",
    "Start",
    "SyncedBlock",
    "Tick",
    "ValidateBlock",
    "ValidityVerdict",
    "primary_index",
]


# ---------------------------------------------------------------------------------------------
# Configuration


class PlantedBug(Enum):
    """Deliberate protocol bugs, for the simulator's positive controls. Never enable in a node.

    Each is one minimal switch that a plausible coding mistake would produce.
    """

    WRONG_QUORUM = "wrong_quorum"
    """Prepare, commit and view-change quorums are one vote too small."""
    NEW_VIEW_IGNORES_PREPARED = "new_view_ignores_prepared"
    """A new primary proposes a fresh block even when a view change carries a prepared
    certificate, and replicas accept such a new view."""
    NO_VIEW_CHECK_ON_VOTES = "no_view_check_on_votes"
    """Prepare and commit votes at the current height count toward the current view whatever
    view they were signed in."""
    SYNC_WITHOUT_CERTIFICATE = "sync_without_certificate"
    """Synced blocks are committed without verifying their commit certificate."""


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """Every limit and timeout of a replica, as data. Times are milliseconds of the driver's
    clock (wall clock in a node, simulated time in the simulator)."""

    # How long a view may run without committing before a view change: long enough for a
    # proposal (including the driver's block interval), two voting rounds and execution.
    view_timeout_base_ms: int = 2_000
    # Timeouts double with each failed view at a height (so some view eventually outlasts any
    # bounded delay) but stop growing here, so recovery after a long outage stays prompt.
    view_timeout_max_ms: int = 60_000
    # A proposed block's timestamp must be within this of the replica's own time: clocks of
    # bank servers are NTP-synchronised to well under a second; 10 s tolerates a bad one.
    timestamp_drift_max_ms: int = 10_000
    # Encoded transaction bytes in one block: bounds proposal size, validation and execution.
    block_bytes_max: int = 4 * 1024 * 1024
    # Transactions in one block: bounds per-block work whatever their size.
    block_transactions_max: int = 10_000
    # Heights ahead of ours whose messages we buffer: replicas a few heights apart catch up
    # from the buffer; further behind, block sync is cheaper than replaying votes.
    future_heights_max: int = 4
    # Views ahead of ours (at our height) whose messages we keep.
    future_views_max: int = 16
    # Buffered messages (future heights, or our height before its parent block is executed)
    # per sending validator, so no single validator can crowd out the others.
    future_messages_per_validator_max: int = 64
    # How long f+1 validators must be seen at a higher height before we ask for blocks (they
    # may simply have committed a moment before us).
    sync_delay_ms: int = 1_000
    # How long to wait for a block-sync answer before asking again (another peer).
    sync_retry_ms: int = 2_000
    # Blocks asked for in one request.
    sync_blocks_max: int = 64
    # Deliberate protocol bugs for the simulator's positive controls; empty in any real node.
    planted_bugs: frozenset[PlantedBug] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for name in (
            "view_timeout_base_ms",
            "view_timeout_max_ms",
            "block_bytes_max",
            "block_transactions_max",
            "future_messages_per_validator_max",
            "sync_retry_ms",
            "sync_blocks_max",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ReplicaConfig.{name} must be a positive integer")
        for name in (
            "timestamp_drift_max_ms",
            "future_heights_max",
            "future_views_max",
            "sync_delay_ms",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"ReplicaConfig.{name} must be a non-negative integer")
        if self.view_timeout_max_ms < self.view_timeout_base_ms:
            raise ValueError("view_timeout_max_ms must be at least view_timeout_base_ms")
        if not all(isinstance(bug, PlantedBug) for bug in self.planted_bugs):
            raise ValueError("planted_bugs must hold PlantedBug members")

    def view_timeout_ms(self, view: int) -> int:
        """The timeout of ``view`` at any height: base * 2**view, capped."""
        if view >= 32:
            return self.view_timeout_max_ms
        return min(self.view_timeout_base_ms << view, self.view_timeout_max_ms)


@dataclass(frozen=True, slots=True)
class ChainTip:
    """The last committed and executed block as the driver's store knows it.

    ``app_hash`` is the application state *after* executing block ``height``, which block
    ``height + 1`` must carry. For a fresh chain: height 0, the genesis hash, the genesis app
    hash and the genesis time.
    """

    height: int
    block_hash: bytes
    app_hash: bytes
    timestamp_ms: int


def primary_index(validators: ValidatorSet, height: int, view: int) -> int:
    """The primary (proposer) of (height, view): ``validators.primary(height + view)``.

    Views restart at 0 at every height and the primary rotates with the height, so proposing
    is shared and a crashed validator costs one view change every n heights, not every height.
    """
    return validators.primary(height + view)


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class Start:
    """First input after construction or restore: the current time."""

    now_ms: int


@dataclass(frozen=True, slots=True)
class Tick:
    """The driver's clock moved to ``now_ms``. Feed it often (e.g. every 10-100 ms)."""

    now_ms: int


@dataclass(frozen=True, slots=True)
class PeerMessage:
    """Wire bytes from a peer; ``sender`` is the link-authenticated validator index if known."""

    data: bytes
    sender: int | None = None


@dataclass(frozen=True, slots=True)
class ProposalPayload:
    """The driver's answer to ``RequestProposal``: transactions and the proposer's time."""

    height: int
    view: int
    transactions: tuple[bytes, ...]
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class ValidityVerdict:
    """The driver's answer to ``ValidateBlock``."""

    block_hash: bytes
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BlockExecuted:
    """The driver applied committed block ``height``; ``app_hash`` is the resulting state."""

    height: int
    app_hash: bytes


@dataclass(frozen=True, slots=True)
class SyncedBlock:
    """A committed block and its certificate obtained outside consensus messages."""

    block: Block
    certificate: CommitCertificate


Input: TypeAlias = (
    Start | Tick | PeerMessage | ProposalPayload | ValidityVerdict | BlockExecuted | SyncedBlock
)


# ---------------------------------------------------------------------------------------------
# Actions


@dataclass(frozen=True, slots=True)
class Persist:
    """Durably store ``state`` (replacing the previous one) before performing later actions."""

    state: bytes


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` (wire bytes) to validator ``to``."""

    to: int
    message: bytes


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send ``message`` (wire bytes) to every other validator (the replica has already
    processed its own copy)."""

    message: bytes


@dataclass(frozen=True, slots=True)
class RequestProposal:
    """We are primary of (height, view): answer with ``ProposalPayload`` (within these limits).

    The driver may wait (block interval, for transactions) but should answer well within the
    view timeout. It must only propose transactions it would itself judge valid.
    """

    height: int
    view: int
    transactions_max: int
    transaction_bytes_max: int


@dataclass(frozen=True, slots=True)
class ValidateBlock:
    """Check ``block``'s transactions against the state after its parent and answer with a
    ``ValidityVerdict``. Header fields, sizes and timestamps are already checked."""

    block: Block


@dataclass(frozen=True, slots=True)
class Commit:
    """``block`` is final, proven by ``certificate``. Store and execute it, in order, then
    feed ``BlockExecuted``."""

    block: Block
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class ReportEvidence:
    """A validator equivocated; store and expose ``evidence`` (reported once per offence)."""

    evidence: Evidence


@dataclass(frozen=True, slots=True)
class RequestBlocks:
    """We are behind: send ``message`` (an encoded ``BlockRequest`` for heights
    ``from_height..to_height``) to one of ``peers`` (validators seen ahead, best first)."""

    from_height: int
    to_height: int
    peers: tuple[int, ...]
    message: bytes


@dataclass(frozen=True, slots=True)
class ServeBlocks:
    """Validator ``to`` asked for committed blocks ``from_height..to_height``: answer from the
    store with ``encode_block_response(...)`` (the blocks you have, in order)."""

    to: int
    from_height: int
    to_height: int


class DropReason(StrEnum):
    """Why an input was ignored (for logs and counters); state is unchanged when dropped."""

    MALFORMED = "malformed"
    WRONG_CHAIN = "wrong_chain"
    NOT_VALIDATOR = "not_validator"
    BAD_SIGNATURE = "bad_signature"
    STALE = "stale"
    TOO_FAR_AHEAD = "too_far_ahead"
    BUFFER_FULL = "buffer_full"
    DUPLICATE = "duplicate"
    NOT_PRIMARY = "not_primary"
    INVALID_PROPOSAL = "invalid_proposal"
    INVALID_VIEW_CHANGE = "invalid_view_change"
    INVALID_NEW_VIEW = "invalid_new_view"
    INVALID_CERTIFICATE = "invalid_certificate"
    INVALID_BLOCK = "invalid_block"
    STATE_DIVERGED = "state_diverged"
    UNEXPECTED = "unexpected"


@dataclass(frozen=True, slots=True)
class Dropped:
    """An input was invalid or useless and was ignored."""

    reason: DropReason
    detail: str


Action: TypeAlias = (
    Persist
    | Send
    | Broadcast
    | RequestProposal
    | ValidateBlock
    | Commit
    | ReportEvidence
    | RequestBlocks
    | ServeBlocks
    | Dropped
)


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """A snapshot for metrics and tests."""

    height: int
    view: int
    view_active: bool
    is_primary: bool
    committed_height: int
    executed: bool


class RestoreError(ValueError):
    """Persisted replica state that cannot be restored (corrupt, or from another chain)."""


_STATE_VERSION: Final = 1


class Replica:
    """One validator's PBFT state machine. Feed inputs with ``handle``; perform the returned
    actions in order.

    Driver contract:

    1. Construct with ``Replica(...)`` (fresh) or ``Replica.restore(...)`` (after a restart,
       with the last ``Persist.state``), then ``handle(Start(now_ms))``.
    2. Feed every peer message, a ``Tick`` regularly, and the answers to requests
       (``ProposalPayload``, ``ValidityVerdict``, ``BlockExecuted``). Inputs are handled one at
       a time; ``handle`` never raises for anything a peer can send.
    3. Perform actions **in the order returned**. Above all, **persist before send**: a
       ``Persist`` must be durable before any later ``Send``/``Broadcast`` leaves the process,
       so a signed vote is on disk before anyone can see it. Only the latest state matters.
    4. Execute ``Commit`` actions in order (store block + certificate, apply it through the
       app host), then feed ``BlockExecuted(height, app_hash)``. The replica does not validate
       or propose the next height until then.
    5. Answer ``RequestProposal`` with ``ProposalPayload`` and ``ValidateBlock`` with
       ``ValidityVerdict``, possibly later; stale answers are dropped harmlessly.
    6. ``Dropped`` actions are for logs/metrics only.
    """

    def __init__(
        self,
        config: ReplicaConfig,
        *,
        chain_id: str,
        validators: ValidatorSet,
        key: PrivateKey,
        tip: ChainTip,
    ) -> None:
        raise NotImplementedError("replica logic lands in the next commit")

    @classmethod
    def restore(
        cls,
        config: ReplicaConfig,
        *,
        chain_id: str,
        validators: ValidatorSet,
        key: PrivateKey,
        tip: ChainTip,
        state: bytes,
    ) -> Replica:
        """A replica resuming from ``state`` (the last ``Persist.state``) on top of ``tip``.

        Raises ``RestoreError`` when ``state`` is corrupt or belongs to another chain or key.
        """
        raise NotImplementedError("replica logic lands in the next commit")

    def handle(self, event: Input) -> list[Action]:
        """Process one input and return the actions to perform, in order."""
        raise NotImplementedError("replica logic lands in the next commit")

    def status(self) -> ReplicaStatus:
        """Current height/view for metrics and tests."""
        raise NotImplementedError("replica logic lands in the next commit")
