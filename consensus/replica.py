"""The sans-I/O PBFT replica: one validator's consensus state machine.

Theory of operation
===================

Shape
-----
``Replica`` never performs I/O, never reads a clock and never draws randomness. The driver (the
trio node runtime, or the deterministic simulator) feeds it one input at a time through
``Replica.handle`` and performs the returned actions in order (see the ``Replica`` docstring for
the driver contract; above all *persist before send*). Time arrives as ``Tick(now_ms)``; every
timeout is computed from the latest tick. (Models: etcd-io/raft's ``Ready``, h11.)

Protocol (simplified PBFT, one block per height)
------------------------------------------------
Each height h has its validator set (see *Reconfiguration*): n validators, f = (n-1)//3, quorum
q = the smallest q with 2q - n > f (``quorum_size``), all of h's set. Views restart at 0 at
each height; the primary of (height, view) is ``(height + view) mod n``.

1. *Proposal.* The primary asks its driver for a payload, builds block h (parent hash, app hash
   after h-1, timestamp, transactions), signs a ``Proposal`` and broadcasts it.
2. *Prepare.* A replica accepts the first validly signed proposal of the current view from the
   view's primary whose header is right (chain, height, parent, app hash, proposer, view, sizes,
   timestamp later than the parent's and within ``timestamp_drift_max_ms`` of its own time,
   ``next_validators_hash`` the hash of the set our state puts in force at h+1),
   asks its driver to validate the transactions (``ValidateBlock``) and, if valid, broadcasts a
   signed prepare for the block hash.
3. *Commit.* With q prepares for (h, v, d) and the block in hand, the replica is *prepared*: it
   keeps the prepares as its ``PreparedCertificate`` and broadcasts a signed commit.
4. *Decide.* With q commits for (h, w, d) in any view w and the block in hand, block d is final:
   ``Commit(block, certificate)``. The certificate is the q commit signatures.
5. *View change.* If a view does not commit within its timeout (base * 2**view, capped), the
   replica stops voting in it and broadcasts a signed ``ViewChange`` to view v+1 carrying its
   highest prepared certificate (of this height) and that block. *View synchronisation:* a
   replica leaves a view it only asked for (no new view accepted there) only once q
   validators, itself included, have announced that view or a later one in signed view
   changes; until then it waits and re-broadcasts its view change. A replica that sees f+1
   validators announce views above its own joins the (f+1)-th highest of them (announcements
   too far ahead to keep still count). The primary of v+1, holding q view changes, decides:
   the block of the highest prepared certificate among them if there is one, otherwise a
   fresh block (for which it asks its driver for a payload), and broadcasts ``NewView`` with
   exactly the view changes it decided on and that proposal. Replicas check the rule from the
   signed view changes themselves, enter the view and go on from step 2.
6. *Catch-up.* Messages for the next ``future_heights_max`` heights (or for our height while
   its parent block is still being executed) are buffered per signing validator, at most
   ``future_messages_per_validator_max`` messages and ``buffer_bytes_per_validator_max``
   encoded bytes each. When f+1 validators are seen at higher heights for ``sync_delay_ms``
   (or a commit quorum is seen for a block we lack), the replica emits ``RequestBlocks``;
   answers are committed only with a valid ``CommitCertificate`` whose block extends our
   chain. Once an answer is all here and less than half of ``sync_blocks_max`` of it is left
   to apply, it asks for the blocks after it (no further than ``sync_blocks_max`` above its
   height), so the next answer arrives while this one is applied; an answer that came with no
   request of ours outstanding (the driver's start-up request) is followed so too when its
   blocks run on from our height. Such an answer of as many blocks as a request may ask for,
   and an open-ended request's answer that reaches its end, are followed even when no
   validator is seen beyond them, with an open-ended request for the blocks after them: on a
   quiet chain the next signed message can be a second away. An open-ended request's answer
   that stops short of its end shows where the peer's chain ends, and the sync goes on from
   there only as far as validators are seen; an open-ended request never holds back the next
   request. Synced blocks are held only above the committed height: one held for a height that
   consensus decided first goes with that height, and a request whose heights are all decided,
   however, counts as answered (a replica still behind asks again at once). A view change at
   the height we last decided comes from a replica that missed that decision: it is sent that
   one block (``ServeBlocks``), at most once per ``sync_retry_ms``; a view change from an older
   height gets nothing.

Why it is safe (no two honest replicas commit different blocks at one height)
--------------------------------------------------------------------------------
*Quorum intersection.* Two quorums share at least 2q - n >= f+1 validators, so at least one
honest validator.

*Within a view.* An honest validator signs at most one prepare and one commit per (h, v) and
persists each vote before sending it, and restore reloads it, so not even a crash makes it sign
twice. Two different blocks prepared in one view would need an honest validator in both prepare
quorums to have prepared both: impossible. Hence at most one block is prepared per (h, v), and
so at most one can gather q commits in v (an honest commit requires being prepared).

*Across views.* Suppose d is committed in view v: q validators sent commit(h, v, d), so at least
f+1 honest validators were prepared on d in v. Claim: for every view w > v, any prepared
certificate of a view in [v, w) is for d, and honest replicas prepare only d in w. By induction
on w: a NewView for w needs q view changes; one comes from an honest validator H that sent
commit(h, v, d). H sent its view change after leaving v (views only grow, and a replica stops
voting in a view once it asks to leave it), so its highest certificate has view >= v and, by
the induction hypothesis, is for d. Any certificate of a higher view in the new view is in
[v, w) and is also for d, and certificates are self-verifying (q prepare signatures), so a
byzantine member cannot forge a higher one. The primary must therefore re-propose d, every
honest replica checks exactly that before preparing, and no other block can gather q prepares
(hence q commits) in w. So every decision at height h is d, and block sync only accepts blocks
with q commit signatures, which by the same argument are for d.

*Chain integrity.* A block is accepted only if its parent hash is our last committed block and
its app hash is our state after that block, so honest replicas agree on the whole chain and
detect diverging application state at the next height.

*What the shortcuts rely on.* Every cache of a verification result keeps one sentence above
true, because its key is everything the signature covers (or the whole message):

* verified view-change signatures (``_view_change_signed``) are keyed by signer, signed bytes
  and signature, so "one comes from an honest validator H" holds of every view change a new
  view carries: a hit means this validator signed these bytes. (Keyed by signature alone, a
  byzantine validator's one genuine signature vouched for view changes in anyone's name, and
  one faulty validator forked the chain; ``PlantedBug.SIGNATURE_CACHE_IGNORES_SIGNER``.)
* proven prepared certificates are kept whole, every signature included, so "certificates
  are self-verifying (q prepare signatures)" holds of each one a primary passes on; a garbled
  copy of a proven certificate is checked afresh and refused.
* a prepared certificate counts only for the height of its view change, so "its highest
  certificate has view >= v and is for d" speaks of this height's certificates; one from
  another height is refused, never ranked (``PlantedBug.PREPARED_FROM_OTHER_HEIGHT``).
* a vote or proposal equal to a recorded one in kind, view, signer and block hash is ignored
  unverified: it agrees with the first on everything its signature covers, and tallies and
  evidence keep the first, verified signature ("signs at most one prepare and one commit").
* buffered messages are verified on the way in and replayed as the very objects verified.

A new primary announces its view with exactly the view changes its decision was made on, so
the proposal in a ``NewView`` always obeys the rule every replica checks, even when a view
change with a certificate arrives while the driver is building a fresh block.

Reconfiguration (validator sets decided on chain)
-------------------------------------------------
The set of height h is decided by the chain: the genesis validators certify height 1, and a
change executed in block c (``apps.validators``: governance, one validator at a time) is in
force from height c + 2. The driver tells the replica the set of h + 2 when it has executed h
(``BlockExecuted.next_validators``), so at height h the replica knows the sets of h and h + 1,
and block h's header names the hash of the set of h + 1, which every replica checks as it
checks the app hash.

*Why a certificate of height h is checked against the set of h, and only that set.* The safety
argument above is about one height: "two quorums intersect in an honest validator" holds for
two quorums *of the same set*, under that set's fault assumption (at most f of it byzantine).
A quorum of another set proves nothing about h: after a key rotation, the retired key of a
validator may be held by anyone; after a removal, the leaver owes the chain nothing; a quorum
of yesterday's set can sign today's fork. So every vote, proposal, view change, new view,
prepared certificate and commit certificate of height h is verified against the set of h;
a message or synced block of a height whose set we do not know yet is checked against the
latest set we know and checked *again* at its own height when it differs
(``_Buffered.verified_by``, ``_Synced.verified_by``). Skipping that second check is
``PlantedBug.SYNC_CERTIFICATE_AGAINST_CURRENT_SET``: old keys then fork a syncing node.

*Why switching at c + 2 is safe.* Block c + 1 is proposed only after c is executed (the
replica is not ready before ``BlockExecuted``), so the set of c + 2 is a deterministic function
of the agreed chain up to c, computed identically by every honest replica; block c + 1's
header commits to its hash and every honest replica refuses a proposal naming another. Hence
all honest replicas decide height c + 2 with the same set, switch at the same block, and the
per-height argument applies at every height: agreement at h needs only that at most f of the
set of h are byzantine (for ever: retired keys must be destroyed). Chain integrity carries the
switch along: block h+1 extends the block h decided by h's set, and names h+2's set.

*What a syncing node trusts.* Genesis (the set of height 1) and its own execution: it verifies
block h's certificate against the set its own replay of blocks 1..h-2 decided, and block h's
header against the set of h + 1 the same replay decides; a snapshot-installed node must check
the sets the snapshot state holds against the ``next_validators_hash`` of certified headers
walked from a height it trusts. A node that was away across many changes may no longer know
any key that signs now; messages it cannot verify (from heights whose sets it does not know,
not signed by the latest set it knows) still count, by claimed signer, as hints that it is
behind: they only make it ask for blocks, whose certificates it verifies height by height.

*Who votes.* At each height the replica signs with the first of its keys that is in that
height's set (a standby key takes over when a rotation reaches its height); with none it only
follows: it tallies the validators' votes, decides, syncs and serves blocks, and never signs,
persists or times out a view. Observers, validators before they join and after they leave run
exactly this code. Persisted safety state records the key that signed it, never an index
(indices move when the set changes).

*Liveness across a switch.* Membership changes one validator at a time, so consecutive sets
differ in one validator; with three or more validators the untouched ones form a quorum of the
new set, and the chain stays live even if the joining, leaving or rotating validator is not
ready (a joining node syncs as an observer and votes once it has caught up; a rotating node
should hold its next key as a standby key before the change takes effect).

Why it is live (after the network stabilises)
---------------------------------------------
Assume that eventually (after the network heals) messages between honest replicas arrive
within some bound, at most f replicas are faulty, and a view (proposal, two voting rounds,
execution) fits in ``view_timeout_max_ms``. Every honest replica re-broadcasts its current
view's messages every ``resend_interval_ms``, so each eventually holds every other honest
replica's current view change or new view.

*Heights.* If an honest replica decided height h while others did not, then either f+1
validators are past h (their messages start the others' block sync) or the others are at h
itself, where their re-broadcast view changes reach a replica that decided h and is sent that
block. So all honest replicas reach the same height.

*Views: the synchronisation mechanism.* Within a height, views cannot drift apart for good,
because a replica never runs ahead of a quorum: it leaves a view by timeout only if it was
active there (a new view, carrying q view changes, or view 0) or q validators announced that
view or a later one. So the first honest replica to reach any view M >= 1 left M-1 with q
validators, hence at least f+1 honest ones, at M-1 or above. A replica cut off from the rest
waits in the first view it asks for (the story in
``test_views_resynchronise_after_a_partition_with_one_validator_crashed``: with the old rule
it ran ten views ahead during a partition and, timeouts being capped, the gap never closed).
After the network heals, with M the highest honest view: every honest replica below M-1 sees
those f+1 honest announcements and joins (the f+1 rule, which byzantine replicas alone cannot
trigger), so all honest replicas are at M-1 or M; all of them have then announced M-1 or
above (n - f >= q), so those at M-1 may time out to M; so all are at M. There the primary, if
honest, holds q view changes and its new view moves everyone to M; otherwise all honest
replicas have announced M and time out together to M+1. Primaries rotate with the view, so
within f+1 views an honest primary re-proposes the highest prepared block (which honest
replicas accept, since a quorum already did) or a fresh one, and the honest quorum prepares
and commits it within the timeout. Timeouts double per failed view up to the cap and reset
after each commit; the cap no longer matters for synchronisation, only the liveness
assumption above.

Evidence
--------
Every validly signed proposal, prepare and commit is recorded per (kind, view, validator) at the
current height; a second one for a different block becomes ``Evidence`` (both signed statements),
reported once. Only the first vote of an equivocator per (kind, view) is counted, which bounds
memory and loses nothing an honest quorum needs.

Cost
----
Each vote signature is verified once (duplicates are recognised before verifying, and once an
equivocation is reported, the equivocator's further statements of that kind and view are
dropped unverified: they would be dropped whatever their signature); a view
change's signature once per (signer, signed bytes, signature), and a prepared certificate once
per exact certificate, in caches of at most ``_VERIFIED_ENTRIES_MAX`` entries per height;
blocks are hashed once on decode; transactions are never re-verified here (that is the
driver's ``ValidateBlock`` job). Memory per height is bounded: buffered messages per validator
in count and bytes, votes and view changes per (kind, view, validator) within
``future_views_max`` views ahead, synced blocks within ``sync_blocks_max`` heights (each with a
valid commit certificate, so only the real chain's blocks). View changes are not checked for
equivocation (a second, different view change from one validator for one view is dropped as a
duplicate, which needs no evidence to stay safe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Final, TypeAlias

from consensus.codec import CodecError, Limits, Value, decode, encode
from consensus.crypto import PrivateKey
from consensus.evidence import Evidence, SignedStatement, StatementKind
from consensus.messages import (
    MESSAGE_BYTES_MAX,
    BlockRequest,
    BlockResponse,
    Message,
    MessageError,
    NewView,
    PreparedCertificate,
    Proposal,
    ViewChange,
    block_from_fields,
    decode_message,
    encode_message,
)
from consensus.types import (
    VALIDATORS_MAX,
    Block,
    CertificateChecks,
    CertificateError,
    CommitCertificate,
    DecodeError,
    Phase,
    ValidatorSet,
    Vote,
)

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
    SIGNATURE_CACHE_IGNORES_SIGNER = "signature_cache_ignores_signer"
    """The view-change verification cache is keyed by signature bytes alone, so a signature
    once verified for one validator's view change is accepted on any other view change."""
    NEW_VIEW_UNCHECKED_SIGNATURES = "new_view_unchecked_signatures"
    """A new view is accepted without checking the signatures of the view changes it carries."""
    PREPARED_FROM_OTHER_HEIGHT = "prepared_from_other_height"
    """A prepared certificate's height is not compared with the view change's: one from another
    height is accepted (its signatures checked at the height it names) and may outrank this
    height's certificates; as its block cannot be re-proposed here, the new view then counts
    as having nothing prepared and may propose a fresh block."""
    SYNC_CERTIFICATE_AGAINST_CURRENT_SET = "sync_certificate_against_current_set"
    """A block fetched by block sync is checked only against the validator set the replica
    knew when it arrived (the set of the replica's own height or the next), never against the
    set of the block's own height: after a validator-set change, a certificate signed by a
    quorum of the old set (retired or rotated keys) commits a block the new set never
    certified."""
    SYNC_HINT_NEXT_BUT_ONE = "sync_hint_next_but_one"
    """``Commit.next_app_hash`` is read from the held synced block two heights on (an
    off-by-one), whether or not it links: the driver is handed the state after the block
    after, not the state after the block."""


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
    # Encoded bytes of those buffered messages per sending validator: room for two messages
    # carrying a full block (a proposal or new view, and a view change) plus votes, so a
    # byzantine validator holds at most this much memory on an honest replica (not 64 x 16 MiB).
    buffer_bytes_per_validator_max: int = 2 * 4 * 1024 * 1024 + 1024 * 1024
    # How long f+1 validators must be seen at a higher height before we ask for blocks (they
    # may simply have committed a moment before us).
    sync_delay_ms: int = 1_000
    # How long to wait for a block-sync answer before asking again (another peer).
    sync_retry_ms: int = 2_000
    # Blocks asked for in one request.
    sync_blocks_max: int = 64
    # While a height is undecided, our own current-view messages (proposal or new view, votes,
    # view change) are re-broadcast this often, so a lost message (a dropped connection, a
    # restarting peer) cannot stall a view; duplicates cost receivers no signature check.
    resend_interval_ms: int = 1_000
    # Deliberate protocol bugs for the simulator's positive controls; empty in any real node.
    planted_bugs: frozenset[PlantedBug] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for name in (
            "view_timeout_base_ms",
            "view_timeout_max_ms",
            "block_bytes_max",
            "block_transactions_max",
            "future_messages_per_validator_max",
            "buffer_bytes_per_validator_max",
            "sync_retry_ms",
            "sync_blocks_max",
            "resend_interval_ms",
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
        # A proposal of a full block: its transaction bytes, up to 5 bytes of framing per
        # transaction, and 64 KiB for the header, signatures and a new view's view changes.
        full_proposal_bytes = self.block_bytes_max + 5 * self.block_transactions_max + 65_536
        if self.buffer_bytes_per_validator_max < full_proposal_bytes:
            raise ValueError(
                f"buffer_bytes_per_validator_max must be at least {full_proposal_bytes}, so a"
                " proposal of a full block can wait for its parent to be executed"
            )
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
    """Wire bytes from a peer. ``sender`` is the link-authenticated validator index in
    ``Replica.validators`` if the peer is one; ``peer`` is the peer's link identity (its node
    key), opaque to the replica and echoed in ``ServeBlocks`` so observers can be answered.

    ``decoded`` is ``decode_message(data)`` when the driver has already decoded these bytes
    with it (at any size bound: what decodes under a tighter one decodes the same under the
    replica's); the replica then uses it instead of decoding them again. A driver passes
    nothing else there."""

    data: bytes
    sender: int | None = None
    peer: bytes | None = None
    decoded: Message | None = None


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
    """The driver applied committed block ``height``; ``app_hash`` is the resulting state.

    ``next_validators`` is the validator set in force at ``height + 2`` as that state decides
    it (``RECONFIGURATION_DELAY_HEIGHTS``), or None when it is the set of ``height + 1``."""

    height: int
    app_hash: bytes
    next_validators: ValidatorSet | None = None


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
    """Send ``message`` (wire bytes) to every other node that follows the chain: the
    validators of this height and the next, and observers (the replica has already processed
    its own copy)."""

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
    feed ``BlockExecuted``.

    ``next_app_hash`` (block sync only; else None) is the app hash that block h+1, already
    held and certified by the validator set of its height, commits to: the state after
    ``block`` as a quorum of that set executed it. The replica compares h+1's header with the
    app hash the driver reports either way; a driver may report this one before it has
    computed its own, provided it computes the state's hash soon after and stops if the two
    differ (the node updates its Merkle tree once per few synced blocks this way)."""

    block: Block
    certificate: CommitCertificate
    next_app_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class ReportEvidence:
    """A validator equivocated; store and expose ``evidence`` (reported once per offence)."""

    evidence: Evidence


@dataclass(frozen=True, slots=True)
class RequestBlocks:
    """We are behind: send ``message`` (an encoded ``BlockRequest`` for heights
    ``from_height..to_height``) to one of ``peers`` (indices in ``Replica.validators`` of
    validators seen ahead, best first) or, for a driver that routes by node key, of
    ``peer_keys`` (the node keys of the validators seen ahead, best first; it may name
    validators of the next height that ``peers`` cannot)."""

    from_height: int
    to_height: int
    peers: tuple[int, ...]
    message: bytes
    peer_keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class ServeBlocks:
    """A peer needs committed blocks ``from_height..to_height``: answer from the store with
    ``encode_block_response(...)`` (the blocks you have, in order). The peer is ``peer`` (a
    link identity from ``PeerMessage.peer``, or a validator's node key) when given, otherwise
    validator ``to`` of ``Replica.validators``."""

    to: int | None
    from_height: int
    to_height: int
    peer: bytes | None = None


class DropReason(StrEnum):
    """Why an input was ignored (for logs and counters); state is unchanged when dropped."""

    MALFORMED = "malformed"
    WRONG_CHAIN = "wrong_chain"
    NOT_VALIDATOR = "not_validator"
    BAD_SIGNATURE = "bad_signature"
    STALE = "stale"
    TOO_FAR_AHEAD = "too_far_ahead"
    # From a height whose validator set we do not know yet, and not signed (or certified) by
    # the latest set we know: early rather than wrong (the signer may be a validator added or
    # re-keyed there); it counts as a hint that we are behind.
    VALIDATORS_UNKNOWN = "validators_unknown"
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
    # Messages buffered for later heights (or for ours before its parent is executed).
    buffered_messages: int = 0
    buffered_bytes: int = 0
    # Whether one of our keys is in the validator set of ``height`` (False: we only follow).
    voting: bool = True


class RestoreError(ValueError):
    """Persisted replica state that cannot be restored (corrupt, or from another chain)."""


# Version 2 records the signing key (not an index: indices move when the validator set changes).
_STATE_VERSION: Final = 2
# Validator indices a hint from a height whose validator set we do not know yet may claim: one
# more than any set can hold would be meaningless, so such claims are not remembered.
_UNVERIFIED_SIGNERS_MAX: Final = VALIDATORS_MAX
# Entries in each per-height cache of verified signatures or certificates. Honest traffic needs
# a few per validator and view; a byzantine primary re-sending new views made of ever new
# (genuinely signed) view changes would otherwise grow them without end. Past the bound,
# verification simply is not remembered.
_VERIFIED_ENTRIES_MAX: Final = 4096
# Persisted safety state: tiny apart from the prepared block, which is at most a block.
_STATE_LIMITS: Final = Limits(
    total_bytes_max=MESSAGE_BYTES_MAX,
    depth_max=10,
    str_bytes_max=256,
    bytes_max=64 * 1024,
    array_len_max=100_000,
    map_len_max=1,
)


# A verified signature: (signer, signed payload, signature), or (with the planted bug
# SIGNATURE_CACHE_IGNORES_SIGNER) the signature bytes alone.
_SignatureKey: TypeAlias = tuple[int, bytes, bytes] | bytes


@dataclass(slots=True)
class _Height:
    """Volatile bookkeeping for the height being decided; discarded when it commits."""

    # First validly signed statement per (kind, view, validator): equivocation detection, and
    # the "verified once" shortcut of ``_check_statement``. A later statement with the same
    # key and block hash agrees with this one on everything the signature covers (kind = tag,
    # our height, view, block hash, signer) and is ignored unverified: it changes nothing,
    # since tallies and evidence keep this first, verified signature.
    statements: dict[tuple[StatementKind, int, int], SignedStatement] = field(default_factory=dict)
    reported: set[tuple[StatementKind, int, int]] = field(default_factory=set)
    # Signatures per (phase, view, block hash), by validator.
    tallies: dict[tuple[Phase, int, bytes], dict[int, bytes]] = field(default_factory=dict)
    # The accepted proposal per view, and every structurally checked block by hash.
    proposals: dict[int, Proposal] = field(default_factory=dict)
    blocks: dict[bytes, Block] = field(default_factory=dict)
    verdicts: dict[bytes, bool] = field(default_factory=dict)
    validating: set[bytes] = field(default_factory=set)
    # View changes per target view, by validator.
    view_changes: dict[int, dict[int, ViewChange]] = field(default_factory=dict)
    # View-change signatures already verified, keyed by everything the signature covers: the
    # signer, the signed bytes (height, view, prepared view and hash; the domain tag and chain
    # id are the same for every entry) and the signature itself. See ``_view_change_signed``.
    verified_view_changes: set[_SignatureKey] = field(default_factory=set)
    # Prepared certificates already verified, keyed by the whole certificate (height, view,
    # block hash and every signature), so a garbled copy of a proven one is checked afresh.
    proven_prepared: set[PreparedCertificate] = field(default_factory=set)
    new_view_sent: set[int] = field(default_factory=set)
    # The highest view each validator (us included) announced in a validly signed view change
    # at this height, even one too far ahead to keep: the join and view-timeout rules use it.
    announced: dict[int, int] = field(default_factory=dict)
    # Our own signed messages of the current view, kept for re-broadcasting.
    own_messages: dict[str, bytes] = field(default_factory=dict)
    # Commit quorums reached, as (view, block hash), waiting for the block if we lack it.
    decisions: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class _Safety:
    """What must survive a crash: enough never to sign two different things in one slot.

    ``signer`` is the public key that signed at this height (None until something is signed)."""

    height: int
    view: int = 0
    view_active: bool = True
    proposed: bytes | None = None
    prepared_vote: bytes | None = None
    committed_vote: bytes | None = None
    prepared: PreparedCertificate | None = None
    prepared_block: Block | None = None
    signer: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Buffered:
    """A message kept for a later height: its encoded size, and the hash of the validator set
    its signature was verified against (the set of its height, or, for a height whose set we
    did not know yet, the latest set we knew; it is verified again if that was not its set)."""

    message: Message
    size_bytes: int
    verified_by: bytes


@dataclass(frozen=True, slots=True)
class _Synced:
    """A certified block from block sync, kept until its height: its certificate was verified
    against the validator set whose hash is ``verified_by`` (as for ``_Buffered``)."""

    block: Block
    certificate: CommitCertificate
    verified_by: bytes


def _slot_of(message: Message) -> str:
    """Which of our own messages of the current view ``message`` is (for re-broadcasting)."""
    if isinstance(message, Vote):
        return message.phase.name
    return type(message).__name__


class Replica:
    """One validator's PBFT state machine. Feed inputs with ``handle``; perform the returned
    actions in order.

    Driver contract:

    1. Construct with ``Replica(...)`` (fresh, or a restart whose persisted state is lost, which
       is only safe if this validator never voted above ``tip``), or ``Replica.restore(...)``
       with the last ``Persist.state``; then ``handle(Start(now_ms))``.
    2. Feed every peer message (``PeerMessage``), a ``Tick`` regularly, and the answers to
       requests (``ProposalPayload``, ``ValidityVerdict``, ``BlockExecuted``). Inputs are
       handled one at a time; ``handle`` never raises for anything a peer can send, and invalid
       input leaves the state unchanged (it yields a ``Dropped`` action).
    3. Perform actions **in the order returned**. Above all, **persist before send**: a
       ``Persist`` must be durable (fsync) before any later ``Send``/``Broadcast`` leaves the
       process, so a signed vote is on disk before anyone can see it. Only the latest persisted
       state is needed.
    4. Execute ``Commit`` actions in order (store block + certificate, apply it through the app
       host), then feed ``BlockExecuted(height, app_hash, next_validators)`` with the validator
       set that state puts in force at ``height + 2``. The replica does not validate or
       propose the next height until then; messages meanwhile are buffered.
    5. Answer ``RequestProposal`` with ``ProposalPayload`` and ``ValidateBlock`` with
       ``ValidityVerdict``, possibly later; stale answers are dropped harmlessly.
    6. ``Broadcast`` goes to every other node following the chain; ``Send``/``RequestBlocks``/
       ``ServeBlocks`` name their peer by node key when they carry one, otherwise by index in
       ``Replica.validators`` as it is when the actions are returned. ``Dropped`` actions are
       for logs and metrics only.

    ``validators`` is the set in force at ``tip.height + 1`` and ``next_validators`` the set at
    ``tip.height + 2`` (None: the same). ``key`` and ``standby_keys`` are this node's consensus
    keys: at each height it signs with the first of them that is in that height's set, and
    with none of them it only follows the chain (an observer, or a validator before it joins or
    after it leaves). A standby key is how a key rotation decided on chain takes over at its
    height without a restart.
    """

    def __init__(
        self,
        config: ReplicaConfig,
        *,
        chain_id: str,
        validators: ValidatorSet,
        key: PrivateKey | None,
        tip: ChainTip,
        next_validators: ValidatorSet | None = None,
        standby_keys: Sequence[PrivateKey] = (),
        certificate_checks: CertificateChecks | None = None,
    ) -> None:
        keys = tuple(k for k in (key, *standby_keys) if k is not None)
        if len({k.public_key for k in keys}) != len(keys):
            raise ValueError("the replica's keys must be distinct")
        self._config = config
        self._chain_id = chain_id
        self._keys = keys
        # Synced blocks' certificates are checked through this (a driver that checks them
        # too before the replica sees them shares its own, and the second check is a lookup).
        self._certificate_checks = (
            CertificateChecks() if certificate_checks is None else certificate_checks
        )
        self._last_served_ms: dict[bytes, int] = {}
        self._key: PrivateKey | None = None
        self._index: int | None = None
        self._validators = validators
        self._quorum = 1
        self._join_threshold = 1
        self._use_validators(validators)
        # The set of our tip height (only to help a validator that missed our last decision;
        # after a restart it is unknown and the set of our height stands in), and the set of
        # the next height (None while the block before it is not executed yet).
        self._previous_validators = validators
        self._next_validators: ValidatorSet | None = (
            validators if next_validators is None else next_validators
        )
        # The chain as executed by the driver.
        self._tip_height = tip.height
        self._tip_hash = tip.block_hash
        self._tip_timestamp_ms = tip.timestamp_ms
        self._app_hash: bytes | None = tip.app_hash
        # Durable safety state for height tip + 1, and a restored one for a later height.
        self._safety = _Safety(height=tip.height + 1)
        self._deferred_safety: _Safety | None = None
        self._round = _Height()
        self._now_ms = 0
        self._started = False
        self._deadline_ms: int | None = None
        self._next_resend_ms: int | None = None
        self._awaiting_payload: tuple[int, int] | None = None
        # As a new primary waiting for a payload: the view changes our "fresh block" decision
        # was made on. The new view carries exactly these, so it matches the decision even if
        # a view change with a prepared certificate arrives during the wait.
        self._new_view_basis: tuple[ViewChange, ...] = ()
        # Messages for later heights (or ours before it is ready), per signing validator.
        # Each entry keeps the message's encoded size; bytes per validator are also summed.
        # Signatures are verified on the way in, and the message object itself is kept, so
        # replaying it later as verified relies on nothing but the message it was checked on.
        self._buffer: dict[int, list[_Buffered]] = {}
        self._buffer_bytes: dict[int, int] = {}
        self._synced: dict[int, _Synced] = {}
        # Block sync: the highest height each validator (by consensus key) was seen at with a
        # signature we verified, with its node key; and claimed heights (by signer index) from
        # heights whose validator set we do not know yet and whose signature did not verify
        # against the latest set we know: hints only, for a node that was away across changes.
        self._seen_height: dict[bytes, tuple[int, bytes | None]] = {}
        self._unverified_ahead: dict[int, int] = {}
        self._behind_since_ms: int | None = None
        self._last_sync_request_ms: int | None = None
        # Last height of the outstanding block request: once it is applied, a replica that is
        # still far behind asks for the next batch at once instead of after ``sync_retry_ms``.
        # Once the answer is in and less than half a batch of it is left to apply, it asks for
        # the next one (``_extend_sync``), unless the end was cut to a height whose validator
        # set is not known yet (``_sync_window_cut``): those blocks are asked for again after.
        self._sync_requested_to: int | None = None
        self._sync_window_cut = False
        # First height of the outstanding request, and whether it is open-ended: the blocks
        # after an answer that filled its whole range, asked for although no validator was
        # seen beyond it (a full answer suggests the peer's chain goes on; at the start of a
        # sync on a quiet chain the next signed message can be a second away). An open-ended
        # request answered to its end is followed open-ended again; its answer stopping
        # short ends that there (``_end_open_ended``).
        self._sync_requested_from: int | None = None
        self._sync_open_ended = False
        self._sync_requests = 0
        # Output of the input being handled.
        self._out: list[Action] = []
        self._unsent: list[Action] = []
        self._dirty = False

    # -----------------------------------------------------------------------------------------
    # Public API

    @classmethod
    def restore(
        cls,
        config: ReplicaConfig,
        *,
        chain_id: str,
        validators: ValidatorSet,
        key: PrivateKey | None,
        tip: ChainTip,
        state: bytes,
        next_validators: ValidatorSet | None = None,
        standby_keys: Sequence[PrivateKey] = (),
        certificate_checks: CertificateChecks | None = None,
    ) -> Replica:
        """A replica resuming from ``state`` (the last ``Persist.state``) on top of ``tip``.

        State for a height at or below ``tip`` is obsolete and ignored; state for a later height
        is kept and applied when the replica reaches it. Raises ``RestoreError`` when ``state``
        is corrupt or belongs to another chain or to a key this replica does not hold.
        """
        replica = cls(
            config,
            chain_id=chain_id,
            validators=validators,
            key=key,
            tip=tip,
            next_validators=next_validators,
            standby_keys=standby_keys,
            certificate_checks=certificate_checks,
        )
        safety = replica._decode_safety(state)
        if safety.height == replica._safety.height:
            replica._adopt_safety(safety)
        elif safety.height > replica._safety.height:
            replica._deferred_safety = safety
        return replica

    def handle(self, event: Input) -> list[Action]:
        """Process one input and return the actions to perform, in order."""
        self._out = []
        if isinstance(event, PeerMessage):
            self._on_peer_message(event)
        elif isinstance(event, Tick):
            self._on_tick(event.now_ms)
        elif isinstance(event, ValidityVerdict):
            self._on_verdict(event)
        elif isinstance(event, ProposalPayload):
            self._on_payload(event)
        elif isinstance(event, BlockExecuted):
            self._on_executed(event)
        elif isinstance(event, SyncedBlock):
            self._on_synced(event.block, event.certificate)
        elif isinstance(event, Start):
            self._on_start(event.now_ms)
        self._flush()
        out, self._out = self._out, []
        return out

    @property
    def synced_blocks_waiting(self) -> int:
        """Blocks received by block sync (certified) for heights not applied yet: while there
        are any, the replica commits them one after the other as each is executed."""
        return len(self._synced)

    def status(self) -> ReplicaStatus:
        """Current height/view for metrics and tests."""
        return ReplicaStatus(
            height=self._safety.height,
            view=self._safety.view,
            view_active=self._safety.view_active,
            is_primary=self._primary(self._safety.view) == self._index,
            committed_height=self._tip_height,
            executed=self._app_hash is not None,
            buffered_messages=sum(len(queue) for queue in self._buffer.values()),
            buffered_bytes=sum(self._buffer_bytes.values()),
            voting=self._index is not None,
        )

    def add_standby_key(self, key: PrivateKey) -> bool:
        """Hold one more consensus key from now on (a rotation's next key, loaded while the
        node runs); False if it is held already. It signs at the first height whose set holds
        it, the current one included. A fresh key never signed anything, so using it in the
        middle of a height cannot make a second vote; a height where restored state says
        another key signed stays one we abstain from (``_adopt_safety``)."""
        if any(held.public_key == key.public_key for held in self._keys):
            return False
        self._keys = (*self._keys, key)
        if self._index is None and self._safety.signer is None:
            self._use_validators(self._validators)
        return True

    @property
    def index(self) -> int | None:
        """This replica's index in the validator set of its height (None: it only follows)."""
        return self._index

    @property
    def validators(self) -> ValidatorSet:
        """The validator set in force at the height being decided."""
        return self._validators

    @property
    def next_validators(self) -> ValidatorSet | None:
        """The validator set of the next height (None until the parent block is executed)."""
        return self._next_validators

    # -----------------------------------------------------------------------------------------
    # Output helpers: signed messages wait for the state that records them to be persisted.

    def _emit(self, action: Action) -> None:
        self._flush()
        self._out.append(action)

    def _emit_signed(self, message: Message) -> None:
        """Broadcast a message we signed, after persisting the state that records it, and
        keep it for re-broadcasting while it belongs to the current view."""
        data = encode_message(message)
        self._dirty = True
        self._unsent.append(Broadcast(data))
        self._round.own_messages[_slot_of(message)] = data

    def _flush(self) -> None:
        if self._dirty:
            self._out.append(Persist(self._encode_safety()))
            self._dirty = False
        if self._unsent:
            self._out.extend(self._unsent)
            self._unsent = []

    def _drop(self, reason: DropReason, detail: str) -> None:
        self._emit(Dropped(reason, detail))

    # -----------------------------------------------------------------------------------------
    # Small queries

    @property
    def _height(self) -> int:
        return self._tip_height + 1

    def _primary(self, view: int) -> int:
        return primary_index(self._validators, self._height, view)

    @property
    def _ready(self) -> bool:
        return self._started and self._app_hash is not None

    @property
    def _latest_validators(self) -> ValidatorSet:
        """The set of the highest height whose set we know."""
        return self._validators if self._next_validators is None else self._next_validators

    def _set_at(self, height: int) -> ValidatorSet | None:
        """The validator set in force at ``height``, if this replica knows it."""
        if height == self._height:
            return self._validators
        if height == self._height + 1:
            return self._next_validators
        if height == self._tip_height:
            return self._previous_validators
        return None

    def _use_validators(self, validators: ValidatorSet) -> None:
        """Switch to ``validators`` as the set of our height: quorum, thresholds, and which of
        our keys (if any) signs here."""
        previous = self._validators
        self._validators = validators
        bug = 1 if self._bug(PlantedBug.WRONG_QUORUM) else 0
        self._quorum = max(1, validators.quorum - bug)
        self._join_threshold = validators.faulty_max + 1
        self._key = None
        self._index = None
        for key in self._keys:
            index = validators.index_of(key.public_key)
            if index is not None:
                self._key = key
                self._index = index
                break
        if validators != previous:
            self._last_served_ms.clear()

    def _adopt_safety(self, safety: _Safety) -> None:
        """Take restored safety state for our height. Its votes were signed with
        ``safety.signer``; if that is not the key we would sign with here (key files changed
        between runs), we do not sign at this height at all rather than risk a second vote."""
        if safety.signer is not None and (
            self._key is None or self._key.public_key != safety.signer
        ):
            self._key = None
            self._index = None
        self._safety = safety

    def _address(self, validators: ValidatorSet, index: int) -> tuple[int | None, bytes | None]:
        """Where validator ``index`` of ``validators`` is reached: its index in our current
        set (None if it is not in it) and its node key (None if the set records none)."""
        validator = validators.validators[index]
        return self._validators.index_of(validator.public_key), validator.node_key

    def _bug(self, bug: PlantedBug) -> bool:
        return bug in self._config.planted_bugs

    # -----------------------------------------------------------------------------------------
    # Time

    def _on_start(self, now_ms: int) -> None:
        if self._started:
            self._drop(DropReason.UNEXPECTED, "replica already started")
            return
        self._started = True
        self._now_ms = max(self._now_ms, now_ms)
        if self._app_hash is not None:
            self._enter_ready_height(resume=True)

    def _on_tick(self, now_ms: int) -> None:
        if now_ms > self._now_ms:
            self._now_ms = now_ms
        if not self._ready:
            return
        expired = self._deadline_ms is not None and self._now_ms >= self._deadline_ms
        # A replica that does not vote at this height only follows views (new views, and the
        # f+1 join rule); it never asks to leave one.
        if expired and self._index is not None and self._may_leave_view():
            self._start_view_change(self._safety.view + 1)
        elif self._next_resend_ms is not None and self._now_ms >= self._next_resend_ms:
            self._next_resend_ms = self._now_ms + self._config.resend_interval_ms
            for message in self._round.own_messages.values():
                self._emit(Broadcast(message))
        self._check_behind()

    def _arm_timer(self) -> None:
        self._deadline_ms = self._now_ms + self._config.view_timeout_ms(self._safety.view)

    # -----------------------------------------------------------------------------------------
    # Heights

    def _enter_ready_height(self, *, resume: bool) -> None:
        """The parent block is executed: start working on the current height."""
        safety = self._safety
        self._arm_timer()
        self._next_resend_ms = self._now_ms + self._config.resend_interval_ms
        if resume:
            self._resend_own_messages()
        if (
            safety.view_active
            and safety.view == 0
            and safety.proposed is None
            and self._primary(0) == self._index
        ):
            self._request_payload(0)
        self._replay_buffer()
        self._extend_sync()
        pending = self._synced.get(self._height)
        if pending is not None and self._height == pending.block.height and self._ready:
            self._apply_synced(pending)
        self._progress()

    def _resend_own_messages(self) -> None:
        """After a restart, re-send what we signed in the current view (signatures are
        deterministic, so these are the same bytes as before the crash)."""
        safety = self._safety
        if self._index is None:
            return
        if not safety.view_active:
            self._broadcast_view_change()
            return
        for phase, block_hash in (
            (Phase.PREPARE, safety.prepared_vote),
            (Phase.COMMIT, safety.committed_vote),
        ):
            if block_hash is not None:
                vote = self._sign_vote(phase, block_hash)
                self._record_own_vote(vote)
                data = encode_message(vote)
                self._round.own_messages[_slot_of(vote)] = data
                self._emit(Broadcast(data))

    def _decide(
        self, block: Block, certificate: CommitCertificate, next_app_hash: bytes | None = None
    ) -> None:
        """``block`` is final: emit the commit and move to the next height (and to its
        validator set, which the block's header named and we already know)."""
        self._emit(Commit(block, certificate, next_app_hash))
        next_validators = self._next_validators
        assert next_validators is not None, "a block is decided only once its parent is executed"
        assert block.header.next_validators_hash == next_validators.hash(), (
            "decided blocks name the next validator set we computed"
        )
        self._tip_height = block.height
        self._tip_hash = block.hash
        self._tip_timestamp_ms = block.header.timestamp_ms
        self._app_hash = None
        self._previous_validators = self._validators
        self._use_validators(next_validators)
        self._next_validators = None
        self._forget_hints_below(self._height + 1)
        # A synced block held for this height (consensus decided it first) is obsolete, and a
        # request for blocks up to here is answered, whichever way they were decided.
        self._synced.pop(block.height, None)
        if self._sync_requested_to is not None and block.height >= self._sync_requested_to:
            self._follow_request(None, None)
            self._last_sync_request_ms = None
        self._safety = _Safety(height=self._height)
        if self._deferred_safety is not None and self._deferred_safety.height <= self._height:
            if self._deferred_safety.height == self._height:
                self._adopt_safety(self._deferred_safety)
            self._deferred_safety = None
        self._round = _Height()
        self._deadline_ms = None
        self._awaiting_payload = None
        self._new_view_basis = ()
        self._behind_since_ms = None

    def _on_executed(self, event: BlockExecuted) -> None:
        if event.height != self._tip_height or self._app_hash is not None:
            self._drop(DropReason.UNEXPECTED, f"no executed block expected at {event.height}")
            return
        if not (isinstance(event.app_hash, bytes) and len(event.app_hash) == 32):
            self._drop(DropReason.UNEXPECTED, "app hash must be 32 bytes")
            return
        self._app_hash = event.app_hash
        self._next_validators = (
            self._validators if event.next_validators is None else event.next_validators
        )
        if self._started:
            self._enter_ready_height(resume=False)

    # -----------------------------------------------------------------------------------------
    # Peer messages

    def _on_peer_message(self, event: PeerMessage) -> None:
        message = event.decoded
        if message is None:
            try:
                message = decode_message(event.data)
            except MessageError as error:
                self._drop(DropReason.MALFORMED, str(error))
                return
        if isinstance(message, BlockRequest):
            self._on_block_request(message, event.sender, event.peer)
        elif isinstance(message, BlockResponse):
            height = self._height
            for block, certificate in message.entries:
                self._on_synced(block, certificate)
            self._follow_unasked(message, height)
            self._end_open_ended(message)
        else:
            self._route(message, len(event.data))

    def _route(self, message: Message, size_bytes: int) -> None:
        """Consensus messages: check signer and height window, then buffer or process.

        A message is checked against the validator set of its own height. For a height
        beyond the next one, whose set depends on a block not executed yet, it is checked
        against the latest set we know and, if that was not its set, checked again when its
        height comes (``_replay_buffer``)."""
        assert isinstance(message, Proposal | Vote | ViewChange | NewView)
        signer = message.validator
        height = message.height
        if height <= self._tip_height:
            if (
                height == self._tip_height
                and isinstance(message, ViewChange)
                and signer < self._previous_validators.size
                and message.signature_valid(self._previous_validators, self._chain_id)
                and self._may_serve(self._previous_validators.public_key(signer))
            ):
                # It timed out at the height we last decided: it missed that decision, perhaps
                # alone with us (f+1 validators ahead would have started its block sync). Send
                # it that one block, at most once per ``sync_retry_ms``. A view change from an
                # older height (a replay, or a laggard f+1 others are ahead of) gets nothing.
                to, peer = self._address(self._previous_validators, signer)
                if to is not None or peer is not None:
                    self._emit(ServeBlocks(to, height, height, peer))
                    return
            self._drop(DropReason.STALE, f"height {height} is already committed")
            return
        exact = self._set_at(height)
        validators = self._latest_validators if exact is None else exact
        if signer >= validators.size:
            if exact is None:
                self._note_unverified(signer, height)
                self._drop(
                    DropReason.VALIDATORS_UNKNOWN,
                    f"signer {signer} at height {height}, beyond the sets we know",
                )
                return
            self._drop(DropReason.NOT_VALIDATOR, f"signer {signer} is not a validator")
            return
        if height > self._height + self._config.future_heights_max:
            if message.signature_valid(validators, self._chain_id):
                self._note_height(validators, signer, height)
            elif exact is None:
                self._note_unverified(signer, height)
            self._drop(DropReason.TOO_FAR_AHEAD, f"height {height}, we are at {self._height}")
            return
        if height > self._height or not self._ready:
            if not message.signature_valid(validators, self._chain_id):
                if exact is None:
                    self._note_unverified(signer, height)
                    self._drop(
                        DropReason.VALIDATORS_UNKNOWN,
                        f"{type(message).__name__} from {signer} at height {height} is not"
                        " signed by the latest validator set we know",
                    )
                    return
                self._drop(DropReason.BAD_SIGNATURE, f"{type(message).__name__} from {signer}")
                return
            self._note_height(validators, signer, height)
            queue = self._buffer.setdefault(signer, [])
            if any(queued.message == message for queued in queue):
                self._drop(DropReason.DUPLICATE, f"{type(message).__name__} already buffered")
                return
            used_bytes = self._buffer_bytes.get(signer, 0)
            if (
                len(queue) >= self._config.future_messages_per_validator_max
                or used_bytes + size_bytes > self._config.buffer_bytes_per_validator_max
            ):
                self._drop(DropReason.BUFFER_FULL, f"buffer for validator {signer} is full")
                return
            queue.append(_Buffered(message, size_bytes, validators.hash()))
            self._buffer_bytes[signer] = used_bytes + size_bytes
            return
        self._process(message, verified=False)

    def _process(self, message: Message, *, verified: bool) -> None:
        if isinstance(message, Vote):
            self._on_vote(message, verified=verified)
        elif isinstance(message, Proposal):
            self._on_proposal(message, verified=verified)
        elif isinstance(message, ViewChange):
            self._on_view_change(message, verified=verified)
        elif isinstance(message, NewView):
            self._on_new_view(message, verified=verified)
        self._progress()

    def _replay_buffer(self) -> None:
        height = self._height
        current = self._validators.hash()
        for signer in sorted(self._buffer):
            queue = self._buffer[signer]
            now = [entry for entry in queue if entry.message.height == height]  # type: ignore[union-attr]
            later = [entry for entry in queue if entry.message.height > height]  # type: ignore[union-attr]
            if later:
                self._buffer[signer] = later
                self._buffer_bytes[signer] = sum(entry.size_bytes for entry in later)
            else:
                del self._buffer[signer]
                del self._buffer_bytes[signer]
            for entry in now:
                if self._height != height or not self._ready:
                    return  # a replayed message decided the height; the rest waits
                # Replayed as the very object verified, and as verified only if it was checked
                # against this height's set (a message from a height whose set we did not know
                # yet was checked against an earlier one and is checked again now).
                self._process(entry.message, verified=entry.verified_by == current)

    # -----------------------------------------------------------------------------------------
    # Statements and equivocation

    def _check_statement(self, statement: SignedStatement, *, verified: bool) -> bool | None:
        """Record a signed statement. True: new and valid. False: duplicate (drop quietly).
        None: bad signature or conflicting (already handled: dropped / evidence reported)."""
        key = (statement.kind, statement.view, statement.validator)
        first = self._round.statements.get(key)
        if first is not None and first.block_hash == statement.block_hash:
            return False
        if first is not None and key in self._round.reported:
            # The validator's equivocation here is proven and reported: another conflicting
            # statement would be dropped whatever its signature, so it is not checked (a
            # byzantine validator cannot make the replica check signatures without end).
            return None
        if not verified and not statement.signature_valid(self._validators, self._chain_id):
            self._drop(DropReason.BAD_SIGNATURE, f"{statement.kind.name.lower()} signature")
            return None
        if first is None:
            self._round.statements[key] = statement
            return True
        if key not in self._round.reported:
            self._round.reported.add(key)
            self._emit(ReportEvidence(Evidence.of(first, statement)))
        return None

    # -----------------------------------------------------------------------------------------
    # Votes

    def _on_vote(self, vote: Vote, *, verified: bool) -> None:
        safety = self._safety
        ignore_view = self._bug(PlantedBug.NO_VIEW_CHECK_ON_VOTES)
        if vote.view > safety.view + self._config.future_views_max:
            self._drop(DropReason.TOO_FAR_AHEAD, f"vote for view {vote.view}")
            return
        if vote.phase is Phase.PREPARE and vote.view < safety.view and not ignore_view:
            self._drop(DropReason.STALE, f"prepare for past view {vote.view}")
            return
        fresh = self._check_statement(SignedStatement.of_vote(vote), verified=verified)
        if fresh is False:
            self._drop(DropReason.DUPLICATE, f"{vote.phase.name.lower()} from {vote.validator}")
        if not fresh:
            return
        view = safety.view if ignore_view else vote.view
        tally = self._round.tallies.setdefault((vote.phase, view, vote.block_hash), {})
        tally[vote.validator] = vote.signature
        if vote.phase is Phase.COMMIT and len(tally) == self._quorum:
            self._round.decisions.append((view, vote.block_hash))

    def _signing_key(self) -> tuple[PrivateKey, int]:
        """Our key and index at this height, recording the key in the safety state (only a
        voting replica signs)."""
        assert self._key is not None, "only validators sign"
        assert self._index is not None
        self._safety.signer = self._key.public_key
        return self._key, self._index

    def _sign_vote(self, phase: Phase, block_hash: bytes) -> Vote:
        key, index = self._signing_key()
        return Vote.create(
            key,
            self._chain_id,
            phase=phase,
            height=self._height,
            view=self._safety.view,
            block_hash=block_hash,
            validator=index,
        )

    def _record_own_vote(self, vote: Vote) -> None:
        key = (StatementKind(int(vote.phase)), vote.view, vote.validator)
        self._round.statements.setdefault(key, SignedStatement.of_vote(vote))
        tally = self._round.tallies.setdefault((vote.phase, vote.view, vote.block_hash), {})
        if vote.validator not in tally:
            tally[vote.validator] = vote.signature
            if vote.phase is Phase.COMMIT and len(tally) == self._quorum:
                self._round.decisions.append((vote.view, vote.block_hash))

    def _vote(self, phase: Phase, block_hash: bytes) -> None:
        vote = self._sign_vote(phase, block_hash)
        self._record_own_vote(vote)
        self._emit_signed(vote)

    def _progress(self) -> None:
        """Take every step the current state allows: prepare, commit, decide."""
        if not self._ready:
            return
        safety = self._safety
        view = safety.view
        round_ = self._round
        if safety.view_active and self._index is not None:
            proposal = round_.proposals.get(view)
            if proposal is not None and safety.prepared_vote is None:
                block_hash = proposal.block.hash
                if round_.verdicts.get(block_hash) is True:
                    safety.prepared_vote = block_hash
                    self._vote(Phase.PREPARE, block_hash)
            block_hash_voted = safety.prepared_vote
            if block_hash_voted is not None and safety.committed_vote is None:
                prepares = round_.tallies.get((Phase.PREPARE, view, block_hash_voted), {})
                block = round_.blocks.get(block_hash_voted)
                if len(prepares) >= self._quorum and block is not None:
                    safety.prepared = PreparedCertificate(
                        self._height, view, block_hash_voted, tuple(sorted(prepares.items()))
                    )
                    safety.prepared_block = block
                    safety.committed_vote = block_hash_voted
                    self._vote(Phase.COMMIT, block_hash_voted)
        for decided_view, block_hash in round_.decisions:
            block = round_.blocks.get(block_hash)
            if block is None:
                signers = round_.tallies[(Phase.COMMIT, decided_view, block_hash)]
                keys = tuple(self._validators.public_key(signer) for signer in sorted(signers))
                self._request_blocks(self._height, self._height, keys)
                continue
            commits = round_.tallies[(Phase.COMMIT, decided_view, block_hash)]
            certificate = CommitCertificate(
                self._height, decided_view, block_hash, tuple(sorted(commits.items()))
            )
            self._decide(block, certificate)
            return

    # -----------------------------------------------------------------------------------------
    # Proposals

    def _request_payload(self, view: int) -> None:
        self._awaiting_payload = (self._height, view)
        self._emit(
            RequestProposal(
                height=self._height,
                view=view,
                transactions_max=self._config.block_transactions_max,
                transaction_bytes_max=self._config.block_bytes_max,
            )
        )

    def _on_payload(self, payload: ProposalPayload) -> None:
        if self._awaiting_payload != (payload.height, payload.view) or not self._ready:
            self._drop(DropReason.UNEXPECTED, f"no proposal wanted for {payload.height}")
            return
        self._awaiting_payload = None
        transactions: list[bytes] = []
        size = 0
        for tx in payload.transactions:
            if len(transactions) >= self._config.block_transactions_max:
                break
            if not isinstance(tx, bytes) or size + len(tx) > self._config.block_bytes_max:
                break
            transactions.append(tx)
            size += len(tx)
        assert self._app_hash is not None
        assert self._next_validators is not None
        assert self._index is not None, "only a validator is asked for a payload"
        block = Block.build(
            chain_id=self._chain_id,
            height=self._height,
            view=payload.view,
            parent_hash=self._tip_hash,
            app_hash=self._app_hash,
            next_validators_hash=self._next_validators.hash(),
            proposer=self._index,
            timestamp_ms=max(payload.timestamp_ms, self._tip_timestamp_ms + 1),
            transactions=transactions,
        )
        self._round.verdicts[block.hash] = True
        if payload.view == 0:
            if not (self._safety.view == 0 and self._safety.view_active):
                self._drop(DropReason.UNEXPECTED, "view 0 is over")
                return
            proposal = self._propose(block)
            self._emit_signed(proposal)
        else:
            basis, self._new_view_basis = self._new_view_basis, ()
            self._send_new_view(block, basis)
        self._progress()

    def _propose(self, block: Block) -> Proposal:
        """Sign and record our proposal of ``block`` in the current view."""
        view = self._safety.view
        key, index = self._signing_key()
        proposal = Proposal.create(key, self._chain_id, view=view, validator=index, block=block)
        self._safety.proposed = block.hash
        self._round.statements.setdefault(
            (StatementKind.PROPOSAL, view, index), SignedStatement.of_proposal(proposal)
        )
        self._round.proposals[view] = proposal
        self._round.blocks[block.hash] = block
        return proposal

    def _on_proposal(self, proposal: Proposal, *, verified: bool) -> None:
        safety = self._safety
        if proposal.view != 0:
            self._drop(DropReason.INVALID_PROPOSAL, "proposals after view 0 come in a new view")
            return
        if proposal.validator != self._primary(0):
            self._drop(DropReason.NOT_PRIMARY, f"{proposal.validator} is not the primary")
            return
        fresh = self._check_statement(SignedStatement.of_proposal(proposal), verified=verified)
        if fresh is False:
            self._drop(DropReason.DUPLICATE, "proposal")
        if not fresh:
            return
        if safety.view != 0:
            self._drop(DropReason.STALE, "proposal for a past view")
            return
        problem = self._check_block(proposal.block, fresh_view=0)
        if problem is not None:
            self._drop(DropReason.INVALID_PROPOSAL, problem)
            return
        self._accept_proposal(proposal)

    def _accept_proposal(self, proposal: Proposal) -> None:
        block = proposal.block
        self._round.proposals[proposal.view] = proposal
        self._round.blocks[block.hash] = block
        self._request_validation(block)

    def _request_validation(self, block: Block) -> None:
        round_ = self._round
        if block.hash in round_.verdicts or block.hash in round_.validating:
            return
        round_.validating.add(block.hash)
        self._emit(ValidateBlock(block))

    def _on_verdict(self, verdict: ValidityVerdict) -> None:
        if verdict.block_hash not in self._round.validating:
            self._drop(DropReason.UNEXPECTED, "verdict for a block not being validated")
            return
        self._round.validating.discard(verdict.block_hash)
        self._round.verdicts[verdict.block_hash] = bool(verdict.ok)
        if not verdict.ok:
            # The block will never be voted for; say so for logs and metrics.
            self._drop(
                DropReason.INVALID_BLOCK,
                f"block {verdict.block_hash.hex()[:16]}: {verdict.reason or 'refused by driver'}",
            )
        self._progress()

    def _check_block(self, block: Block, *, fresh_view: int | None) -> str | None:
        """Why ``block`` cannot be the next block, or None. ``fresh_view``: the view a freshly
        built block must carry (None for a re-proposal from an earlier view)."""
        header = block.header
        if header.chain_id != self._chain_id:
            return "block is for another chain"
        if header.height != self._height:
            return f"block height {header.height}, expected {self._height}"
        if header.parent_hash != self._tip_hash:
            return "block does not extend our last committed block"
        if header.app_hash != self._app_hash:
            return "block app_hash differs from our state"
        assert self._next_validators is not None, "blocks are checked once the parent is executed"
        if header.next_validators_hash != self._next_validators.hash():
            return "block next_validators_hash differs from the validator set our state decides"
        if header.timestamp_ms <= self._tip_timestamp_ms:
            return "block timestamp is not after its parent's"
        if len(block.transactions) > self._config.block_transactions_max:
            return f"{len(block.transactions)} transactions, over the limit"
        if sum(len(tx) for tx in block.transactions) > self._config.block_bytes_max:
            return f"transactions exceed {self._config.block_bytes_max} bytes"
        if fresh_view is not None:
            if header.view != fresh_view:
                return f"block view {header.view}, expected {fresh_view}"
            if header.proposer != self._primary(fresh_view):
                return f"block proposer {header.proposer} is not the primary"
            if abs(header.timestamp_ms - self._now_ms) > self._config.timestamp_drift_max_ms:
                return "block timestamp too far from our time"
        return None

    def _reproposal_problem(self, block: Block, *, latest_view: int) -> str | None:
        """Why ``block`` cannot have been built in a view up to ``latest_view``, or None."""
        header = block.header
        if header.view > latest_view or header.proposer != self._primary(header.view):
            return "re-proposed block has an impossible view or proposer"
        return self._check_block(block, fresh_view=None)

    # -----------------------------------------------------------------------------------------
    # View changes

    def _start_view_change(self, view: int) -> None:
        safety = self._safety
        assert view > safety.view or (view == safety.view and safety.view_active)
        safety.view = view
        safety.view_active = False
        self._round.own_messages.clear()
        safety.proposed = None
        safety.prepared_vote = None
        safety.committed_vote = None
        self._awaiting_payload = None
        self._new_view_basis = ()
        self._arm_timer()
        if self._index is None:
            return  # a replica that does not vote here only follows views
        self._broadcast_view_change()
        self._try_new_view()

    def _broadcast_view_change(self) -> None:
        safety = self._safety
        key, index = self._signing_key()
        change = ViewChange.create(
            key,
            self._chain_id,
            height=self._height,
            view=safety.view,
            validator=index,
            prepared=safety.prepared,
            prepared_block=safety.prepared_block,
        )
        self._round.view_changes.setdefault(safety.view, {})[index] = change
        self._note_view(index, safety.view)
        self._round.verified_view_changes.add(self._view_change_key(change))
        if safety.prepared is not None:
            self._round.proven_prepared.add(safety.prepared)
            assert safety.prepared_block is not None
            self._round.blocks.setdefault(safety.prepared_block.hash, safety.prepared_block)
        self._emit_signed(change)

    def _view_change_key(self, change: ViewChange) -> _SignatureKey:
        if self._bug(PlantedBug.SIGNATURE_CACHE_IGNORES_SIGNER):
            return change.signature
        payload = ViewChange.signed_payload(change.height, change.view, change.prepared)
        return (change.validator, payload, change.signature)

    def _view_change_signed(self, change: ViewChange) -> bool:
        """True when ``change.validator`` signed ``change``; each verification is done once.

        The safety argument's "across views" step needs every view change in a new view to be
        the one its validator really sent ("one comes from an honest validator H"). The cache
        keeps that sentence true because its key is everything the signature covers (signer,
        signed bytes, signature): a hit means this very validator signed these very bytes.
        Keyed by the signature alone, a byzantine validator's one genuine signature would
        vouch for view changes claiming to come from anyone.
        """
        key = self._view_change_key(change)
        if key in self._round.verified_view_changes:
            return True
        if not change.signature_valid(self._validators, self._chain_id):
            return False
        if len(self._round.verified_view_changes) < _VERIFIED_ENTRIES_MAX:
            self._round.verified_view_changes.add(key)
        return True

    def _view_change_problem(self, change: ViewChange, *, verified: bool) -> str | None:
        """Why ``change`` is not a valid view change for our height, or None."""
        round_ = self._round
        if not verified and not self._view_change_signed(change):
            return "bad view-change signature"
        prepared = change.prepared
        if (
            prepared is not None
            and prepared.height != change.height
            and not self._bug(PlantedBug.PREPARED_FROM_OTHER_HEIGHT)
        ):
            return f"prepared certificate is for height {prepared.height}, not {change.height}"
        # The cache holds whole certificates: "certificates are self-verifying (q prepare
        # signatures)" stays true of every certificate we pass on in a new view, since a hit
        # means this exact certificate, every signature included, was verified. Keyed by
        # (view, block hash) alone, a garbled copy of a proven certificate would be passed on
        # and make every replica that has not proven it refuse our new view.
        if prepared is not None and prepared not in round_.proven_prepared:
            problem = prepared.verify(self._validators, self._chain_id, self._quorum)
            if problem is not None:
                return problem
            if len(round_.proven_prepared) < _VERIFIED_ENTRIES_MAX:
                round_.proven_prepared.add(prepared)
        return None

    def _on_view_change(self, change: ViewChange, *, verified: bool) -> None:
        safety = self._safety
        round_ = self._round
        if change.view < safety.view or (change.view == safety.view and safety.view_active):
            self._drop(DropReason.STALE, f"view change to past view {change.view}")
            return
        if change.view > safety.view + self._config.future_views_max:
            # Too far ahead to keep, but the view it announces still counts for the join rule
            # (as far-future heights count for block sync), so no gap is ever too wide to close.
            if change.view > round_.announced.get(change.validator, -1) and (
                verified or self._view_change_signed(change)
            ):
                self._note_view(change.validator, change.view)
                self._maybe_join_higher_view()
            self._drop(DropReason.TOO_FAR_AHEAD, f"view change to view {change.view}")
            return
        if change.validator in round_.view_changes.get(change.view, {}):
            self._drop(DropReason.DUPLICATE, f"view change from {change.validator}")
            return
        if change.prepared is not None and change.prepared_block is None:
            self._drop(DropReason.INVALID_VIEW_CHANGE, "prepared certificate without its block")
            return
        problem = self._view_change_problem(change, verified=verified)
        if problem is None and change.prepared is not None:
            assert change.prepared_block is not None
            problem = self._reproposal_problem(
                change.prepared_block, latest_view=change.prepared.view
            )
        if problem is not None:
            self._drop(DropReason.INVALID_VIEW_CHANGE, problem)
            return
        round_.view_changes.setdefault(change.view, {})[change.validator] = change
        if change.prepared_block is not None:
            round_.blocks.setdefault(change.prepared_block.hash, change.prepared_block)
        self._note_view(change.validator, change.view)
        self._maybe_join_higher_view()
        self._try_new_view()

    def _note_view(self, validator: int, view: int) -> None:
        """``validator`` signed a view change to ``view`` at this height."""
        announced = self._round.announced
        if view > announced.get(validator, -1):
            announced[validator] = view

    def _maybe_join_higher_view(self) -> None:
        """f+1 validators announced views above ours: at least one honest validator is at or
        above the (f+1)-th highest of those views, so join it (PBFT's liveness rule, jumping
        straight to the highest view f+1 validators vouch for)."""
        safety = self._safety
        ahead = sorted(
            (
                view
                for validator, view in self._round.announced.items()
                if view > safety.view and validator != self._index
            ),
            reverse=True,
        )
        if len(ahead) >= self._join_threshold:
            self._start_view_change(ahead[self._join_threshold - 1])

    def _may_leave_view(self) -> bool:
        """Whether our view's timeout may move us on to the next view (view synchronisation).

        From a view we are active in, always: the proposal or new view we accepted shows a
        quorum reached it. From a view we only asked for, only once q validators (ourselves
        included) announced it or a later one, i.e. once its primary had every chance to act.
        A replica cut off from the others therefore waits in the first view it asked for
        instead of running ahead alone, and honest views never drift apart for good.
        """
        safety = self._safety
        if safety.view_active:
            return True
        supporters = sum(1 for view in self._round.announced.values() if view >= safety.view)
        return supporters >= self._quorum

    @staticmethod
    def _highest_prepared(changes: Sequence[ViewChange]) -> PreparedCertificate | None:
        best: PreparedCertificate | None = None
        for change in changes:
            certificate = change.prepared
            if certificate is None:
                continue
            if (
                best is None
                or certificate.view > best.view
                or (certificate.view == best.view and certificate.block_hash < best.block_hash)
            ):
                best = certificate
        return best

    def _prepared_here(self, certificate: PreparedCertificate | None) -> PreparedCertificate | None:
        """The highest certificate of a set of view changes, which is always for our height:
        only the planted bug PREPARED_FROM_OTHER_HEIGHT lets another height's certificate in,
        and its block cannot be re-proposed here, so the mistaken code takes it as "nothing
        prepared" (and so allows a fresh block)."""
        if certificate is not None and certificate.height != self._height:
            assert self._bug(PlantedBug.PREPARED_FROM_OTHER_HEIGHT)
            return None
        return certificate

    def _try_new_view(self) -> None:
        """As the primary of the view we are moving to, announce it once we hold a quorum."""
        safety = self._safety
        view = safety.view
        if safety.view_active or self._primary(view) != self._index:
            return
        if view in self._round.new_view_sent or self._awaiting_payload is not None:
            return
        changes = self._round.view_changes.get(view, {})
        if len(changes) < self._quorum or not self._ready:
            return
        basis = tuple(changes.values())
        best = self._prepared_here(self._highest_prepared(basis))
        if best is not None and not self._bug(PlantedBug.NEW_VIEW_IGNORES_PREPARED):
            block = self._round.blocks.get(best.block_hash)
            assert block is not None, "a view change with a certificate carries its block"
            self._send_new_view(block, basis)
        else:
            # Nothing prepared among these view changes: a fresh block, built on a payload the
            # driver may take a while to give. The new view will carry these view changes and
            # no others (see ``_new_view_basis``).
            self._request_payload(view)
            self._new_view_basis = basis

    def _send_new_view(self, block: Block, basis: Sequence[ViewChange]) -> None:
        """Announce our view with the view changes ``basis`` our choice of ``block`` was
        made on (the highest prepared block among them, or a fresh one if there is none)."""
        safety = self._safety
        view = safety.view
        assert len(basis) >= self._quorum
        assert all(c.view == view for c in basis)
        self._round.new_view_sent.add(view)
        proposal = self._propose(block)
        key, _ = self._signing_key()
        new_view = NewView.create(key, self._chain_id, view_changes=basis, proposal=proposal)
        safety.view_active = True
        self._round.own_messages.clear()
        self._arm_timer()
        self._emit_signed(new_view)
        self._request_validation(block)

    def _on_new_view(self, new_view: NewView, *, verified: bool) -> None:
        safety = self._safety
        view = new_view.view
        if view < safety.view or (view == safety.view and safety.view_active):
            self._drop(DropReason.STALE, f"new view {view} is not ahead of ours")
            return
        if view > safety.view + self._config.future_views_max:
            self._drop(DropReason.TOO_FAR_AHEAD, f"new view {view}")
            return
        if new_view.validator != self._primary(view):
            self._drop(DropReason.NOT_PRIMARY, f"{new_view.validator} is not primary of {view}")
            return
        if not verified and not new_view.signature_valid(self._validators, self._chain_id):
            self._drop(DropReason.BAD_SIGNATURE, "new view signature")
            return
        proposal = new_view.proposal
        fresh = self._check_statement(SignedStatement.of_proposal(proposal), verified=False)
        if fresh is None:
            return
        problem = self._new_view_problem(new_view)
        if problem is not None:
            self._drop(DropReason.INVALID_NEW_VIEW, problem)
            return
        for change in new_view.view_changes:
            self._note_view(change.validator, view)
        safety.view = view
        safety.view_active = True
        self._round.own_messages.clear()
        safety.proposed = None
        safety.prepared_vote = None
        safety.committed_vote = None
        self._awaiting_payload = None
        self._new_view_basis = ()
        self._arm_timer()
        self._accept_proposal(proposal)

    def _new_view_problem(self, new_view: NewView) -> str | None:
        if len(new_view.view_changes) < self._quorum:
            return f"{len(new_view.view_changes)} view changes, quorum is {self._quorum}"
        # Signatures of the view changes inside are checked unless a planted bug skips it.
        unchecked = self._bug(PlantedBug.NEW_VIEW_UNCHECKED_SIGNATURES)
        for change in new_view.view_changes:
            problem = self._view_change_problem(change, verified=unchecked)
            if problem is not None:
                return f"view change of {change.validator}: {problem}"
        best = self._prepared_here(self._highest_prepared(new_view.view_changes))
        block = new_view.proposal.block
        if best is not None and not self._bug(PlantedBug.NEW_VIEW_IGNORES_PREPARED):
            if block.hash != best.block_hash:
                return "new view does not re-propose the highest prepared block"
            return self._reproposal_problem(block, latest_view=new_view.view - 1)
        return self._check_block(block, fresh_view=new_view.view)

    # -----------------------------------------------------------------------------------------
    # Block sync

    def _note_height(self, validators: ValidatorSet, index: int, height: int) -> None:
        """Validator ``index`` of ``validators`` signed something at ``height`` (verified)."""
        validator = validators.validators[index]
        seen = self._seen_height.get(validator.public_key)
        if seen is None or height > seen[0]:
            self._seen_height[validator.public_key] = (height, validator.node_key)

    def _note_unverified(self, signer: int, height: int) -> None:
        """A message claims validator ``signer`` is at ``height``, a height whose set we do not
        know and whose signature the latest set we know does not confirm: a hint that we may
        be behind a validator-set change, used only to ask for blocks (which are verified)."""
        if height <= self._height + 1 or signer >= _UNVERIFIED_SIGNERS_MAX:
            return
        if height > self._unverified_ahead.get(signer, 0):
            self._unverified_ahead[signer] = height

    def _forget_hints_below(self, height: int) -> None:
        """Drop unverified hints of heights below ``height`` (their sets are known now)."""
        self._unverified_ahead = {
            signer: seen for signer, seen in self._unverified_ahead.items() if seen >= height
        }

    def _ahead(self) -> tuple[int, tuple[bytes, ...]] | None:
        """The height the (f+1)-th highest validator was seen at above ours, with the consensus
        keys of those seen above us (highest first); None when fewer than f+1 are."""
        own = None if self._key is None else self._key.public_key
        ahead = sorted(
            (
                (height, key)
                for key, (height, _) in self._seen_height.items()
                if height > self._height and key != own
            ),
            reverse=True,
        )
        heights = [height for height, _ in ahead]
        if len(heights) < self._join_threshold:
            # Not enough validators we can verify are ahead. A node that was away across
            # validator-set changes cannot verify those who replaced the keys it knows; their
            # claims (and they only) let it ask for blocks, whose certificates it checks.
            claimed = sorted(
                (height for height in self._unverified_ahead.values() if height > self._height),
                reverse=True,
            )
            heights = sorted(heights + claimed, reverse=True)
        if len(heights) < self._join_threshold:
            return None
        return heights[self._join_threshold - 1], tuple(key for _, key in ahead)

    def _check_behind(self) -> None:
        ahead = self._ahead()
        if ahead is None:
            self._behind_since_ms = None
            return
        height, keys = ahead
        if self._behind_since_ms is None:
            self._behind_since_ms = self._now_ms
        far_behind = height >= self._height + 2
        if not far_behind and self._now_ms - self._behind_since_ms < self._config.sync_delay_ms:
            return
        # The (f+1)-th highest validator is honest or below one: its parent height is committed.
        self._request_blocks(self._height, max(self._height, height - 1), keys)

    def _extend_sync(self) -> None:
        """While a block-sync answer is applied: once it is all here and less than half a batch
        of it is left, ask for the blocks after it (up to ``sync_blocks_max`` above our height,
        all a replica keeps), so the next answer arrives before this one runs out: as far as
        validators are seen ahead, or open-ended when the answer filled an open-ended range
        (``_sync_open_ended``)."""
        requested_to = self._sync_requested_to
        if (
            requested_to is None
            or self._sync_window_cut
            or requested_to not in self._synced
            or requested_to - self._height >= self._config.sync_blocks_max // 2
        ):
            return
        ahead = self._ahead()
        if ahead is None or ahead[0] - 1 <= requested_to:
            if self._sync_open_ended:
                self._request_blocks(
                    requested_to + 1,
                    self._height + self._config.sync_blocks_max - 1,
                    () if ahead is None else ahead[1],
                    continuing=True,
                    open_ended=True,
                )
            return
        height, keys = ahead
        to_height = min(height - 1, self._height + self._config.sync_blocks_max - 1)
        self._request_blocks(requested_to + 1, to_height, keys, continuing=True)

    def _follow_unasked(self, response: BlockResponse, height: int) -> None:
        """An answer that came with no request of ours outstanding (the driver's start-up
        request for blocks) is followed like an answer to our own: once its last block is
        held, ``_extend_sync`` asks for the blocks after it while the rest is applied. Only
        an answer of consecutive blocks from ``height``, ours when it arrived: one that
        leaves a gap would have us ask past the gap, and the request for the gap would then
        wait ``sync_retry_ms``."""
        entries = response.entries
        if self._sync_requested_to is not None or not entries:
            return
        if any(block.height != height + index for index, (block, _) in enumerate(entries)):
            return
        last = entries[-1][0].height
        if last in self._synced:
            # As many blocks as a request may ask for: the peer's chain may go on.
            self._follow_request(
                height, last, open_ended=len(entries) >= self._config.sync_blocks_max
            )

    def _follow_request(
        self, from_height: int | None, to_height: int | None, *, open_ended: bool = False
    ) -> None:
        """The block request the sync now follows (None: none outstanding), its window not
        cut, and whether it is open-ended (``_sync_open_ended``)."""
        self._sync_requested_from = from_height
        self._sync_requested_to = to_height
        self._sync_window_cut = False
        self._sync_open_ended = open_ended

    def _end_open_ended(self, response: BlockResponse) -> None:
        """An answer to the open-ended request that stops short of its end, its blocks held,
        shows where the answering peer's chain ends (or what it could send): the request
        counts as answered to there, and the sync goes on only as far as validators are seen
        ahead. (No answer at all leaves the request outstanding; it never holds back a request
        for blocks validators are seen at, ``_request_blocks``.)"""
        entries = response.entries
        requested_to = self._sync_requested_to
        if not self._sync_open_ended or not entries or requested_to is None:
            return
        last = entries[-1][0].height
        # Only an answer whose blocks are held (certified) says where a chain ends: a forged
        # one must not end the follow-up.
        if (
            entries[0][0].height == self._sync_requested_from
            and last < requested_to
            and last in self._synced
        ):
            self._sync_requested_to = last
            self._sync_open_ended = False

    def _request_blocks(
        self,
        from_height: int,
        to_height: int,
        keys: tuple[bytes, ...],
        *,
        continuing: bool = False,
        open_ended: bool = False,
    ) -> None:
        """Ask for blocks from the validators with consensus keys ``keys`` (best first), then
        from every other validator of our height. A request ``continuing`` the answered one is
        not held back by ``sync_retry_ms``; an ``open_ended`` one (``_sync_open_ended``) does
        not hold back the next one either, since it may go unanswered."""
        last = self._last_sync_request_ms
        if not continuing and last is not None and self._now_ms - last < self._config.sync_retry_ms:
            return
        own = None if self._key is None else self._key.public_key
        ordered = [key for key in keys if key != own]
        ordered += [
            v.public_key
            for v in self._validators.validators
            if v.public_key != own and v.public_key not in ordered
        ]
        if not ordered:
            return
        if not open_ended:
            self._last_sync_request_ms = self._now_ms
        rotation = self._sync_requests % len(ordered)
        self._sync_requests += 1
        ordered = ordered[rotation:] + ordered[:rotation]
        peers: list[int] = []
        peer_keys: list[bytes] = []
        for key in ordered:
            index = self._validators.index_of(key)
            if index is not None:
                peers.append(index)
            seen = self._seen_height.get(key)
            node_key = (
                self._validators.validators[index].node_key
                if index is not None
                else (None if seen is None else seen[1])
            )
            if node_key is not None:
                peer_keys.append(node_key)
        to_height = min(to_height, from_height + self._config.sync_blocks_max - 1)
        self._follow_request(from_height, to_height, open_ended=open_ended)
        message = encode_message(BlockRequest(from_height, to_height))
        self._emit(RequestBlocks(from_height, to_height, tuple(peers), message, tuple(peer_keys)))

    def _may_serve(self, public_key: bytes) -> bool:
        """Rate limit for unsolicited help to a lagging validator (one batch per retry)."""
        last = self._last_served_ms.get(public_key)
        if (self._key is not None and public_key == self._key.public_key) or (
            last is not None and self._now_ms - last < self._config.sync_retry_ms
        ):
            return False
        self._last_served_ms[public_key] = self._now_ms
        return True

    def _on_block_request(
        self, request: BlockRequest, sender: int | None, peer: bytes | None
    ) -> None:
        # Any authenticated peer may ask (observers follow the chain this way): the driver's
        # link layer admits only allowlisted peers and budgets what each one is served.
        if peer is None and (sender is None or not 0 <= sender < self._validators.size):
            self._drop(DropReason.UNEXPECTED, "block request from a peer we cannot answer")
            return
        if request.from_height > self._tip_height:
            self._drop(DropReason.UNEXPECTED, f"no committed blocks from {request.from_height}")
            return
        to_height = min(
            request.to_height,
            self._tip_height,
            request.from_height + self._config.sync_blocks_max - 1,
        )
        self._emit(ServeBlocks(sender, request.from_height, to_height, peer))

    def _on_synced(self, block: Block, certificate: CommitCertificate) -> None:
        """A block from block sync: verify its certificate against the validator set of its
        height (or, for a height whose set we do not know yet, against the latest set we know,
        and again when its height comes), then commit it or keep it for its height."""
        height = block.height
        if height <= self._tip_height:
            self._drop(DropReason.STALE, f"synced block {height} is already committed")
            return
        if height >= self._height + self._config.sync_blocks_max:
            self._drop(DropReason.TOO_FAR_AHEAD, f"synced block {height}")
            return
        if height in self._synced and height != self._height:
            self._drop(DropReason.DUPLICATE, f"synced block {height}")
            return
        if block.header.chain_id != self._chain_id:
            self._drop(DropReason.WRONG_CHAIN, "synced block is for another chain")
            return
        exact = self._set_at(height)
        validators = self._latest_validators if exact is None else exact
        if not self._bug(PlantedBug.SYNC_WITHOUT_CERTIFICATE):
            problem = self._certificate_problem(block, certificate, validators)
            if problem is not None:
                if exact is None:
                    # Perhaps certified by a set we cannot know yet: once the blocks before it
                    # are applied, ask again at once rather than after ``sync_retry_ms``.
                    if self._sync_requested_to is not None:
                        self._sync_requested_to = min(self._sync_requested_to, height - 1)
                        self._sync_window_cut = True
                        self._sync_open_ended = False
                    self._drop(
                        DropReason.VALIDATORS_UNKNOWN,
                        f"synced block {height}, not certified by the latest set we know:"
                        f" {problem}",
                    )
                    return
                self._drop(DropReason.INVALID_CERTIFICATE, problem)
                return
        entry = _Synced(block, certificate, validators.hash())
        if height > self._height or not self._ready:
            self._synced[height] = entry
            for signer, _ in certificate.signatures:
                if signer < validators.size:
                    self._note_height(validators, signer, height + 1)
            return
        self._apply_synced(entry)

    def _certificate_problem(
        self, block: Block, certificate: CommitCertificate, validators: ValidatorSet
    ) -> str | None:
        try:
            self._certificate_checks.verify(
                certificate,
                validators,
                self._chain_id,
                block_hash=block.hash,
                height=block.height,
            )
        except CertificateError as error:
            return str(error)
        return None

    def _apply_synced(self, entry: _Synced) -> None:
        """Commit a verified synced block of our height if it extends our chain and state."""
        block = entry.block
        height = block.height
        assert height == self._height
        assert self._ready
        if (
            entry.verified_by != self._validators.hash()
            and not self._bug(PlantedBug.SYNC_CERTIFICATE_AGAINST_CURRENT_SET)
            and not self._bug(PlantedBug.SYNC_WITHOUT_CERTIFICATE)
        ):
            # Checked on arrival against a set that turned out not to be this height's.
            problem = self._certificate_problem(block, entry.certificate, self._validators)
            if problem is not None:
                self._synced.pop(height, None)
                self._drop(DropReason.INVALID_CERTIFICATE, f"at its own height: {problem}")
                return
        assert self._next_validators is not None
        if (
            block.header.parent_hash != self._tip_hash
            or block.header.app_hash != self._app_hash
            or block.header.next_validators_hash != self._next_validators.hash()
        ):
            self._synced.pop(height, None)
            self._drop(
                DropReason.STATE_DIVERGED,
                f"certified block {height} does not extend our chain, state or validator sets",
            )
            return
        self._decide(block, entry.certificate, self._certified_next_app_hash(block))

    def _certified_next_app_hash(self, block: Block) -> bytes | None:
        """The app hash the held synced block after ``block`` commits to, when that block
        links to ``block`` and its certificate was verified against the validator set of its
        own height (``_next_validators`` while ``block`` is applied); None otherwise."""
        if self._bug(PlantedBug.SYNC_HINT_NEXT_BUT_ONE):
            after = self._synced.get(block.height + 2)
            return None if after is None else after.block.header.app_hash
        following = self._synced.get(block.height + 1)
        if following is None or following.block.header.parent_hash != block.hash:
            return None
        assert self._next_validators is not None
        if following.verified_by != self._next_validators.hash():
            return None
        return following.block.header.app_hash

    # -----------------------------------------------------------------------------------------
    # Persistence

    def _encode_safety(self) -> bytes:
        safety = self._safety
        prepared: Value = None
        if safety.prepared is not None:
            assert safety.prepared_block is not None
            prepared = (
                safety.prepared.fields(),
                (safety.prepared_block.header.fields(), safety.prepared_block.transactions),
            )
        assert safety.signer is not None, "state is persisted only after something is signed"
        return encode(
            (
                _STATE_VERSION,
                self._chain_id,
                safety.signer,
                safety.height,
                safety.view,
                safety.view_active,
                safety.proposed,
                safety.prepared_vote,
                safety.committed_vote,
                prepared,
            ),
            _STATE_LIMITS,
        )

    def _decode_safety(self, data: bytes) -> _Safety:
        try:
            value = decode(data, _STATE_LIMITS)
        except CodecError as error:
            raise RestoreError(f"persisted state: {error}") from None
        if not (isinstance(value, tuple) and len(value) == 10):
            raise RestoreError("persisted state: expected 10 fields")
        version, chain_id, signer, height, view, active, proposed, prepare, commit, prepared = value
        if version != _STATE_VERSION:
            raise RestoreError(f"persisted state version {version!r} is not {_STATE_VERSION}")
        if chain_id != self._chain_id:
            raise RestoreError("persisted state belongs to another chain")
        if not isinstance(signer, bytes):
            raise RestoreError("persisted signer must be a public key")
        for name, number in (("height", height), ("view", view)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise RestoreError(f"persisted {name} must be a non-negative integer")
        assert isinstance(height, int)
        # State for a height at or below the tip is obsolete: a key retired by a rotation since
        # may have signed it. State the replica would still act on must be its own.
        if height >= self._safety.height and signer not in {key.public_key for key in self._keys}:
            raise RestoreError("persisted state was signed with a key this replica does not hold")
        if not isinstance(active, bool):
            raise RestoreError("persisted view_active must be a boolean")
        hashes: list[bytes | None] = []
        for name, item in (("proposed", proposed), ("prepare", prepare), ("commit", commit)):
            if item is not None and not (isinstance(item, bytes) and len(item) == 32):
                raise RestoreError(f"persisted {name} hash must be 32 bytes or null")
            hashes.append(item)
        assert isinstance(view, int)
        safety = _Safety(height, view, active, hashes[0], hashes[1], hashes[2], signer=signer)
        if prepared is not None:
            try:
                if not (isinstance(prepared, tuple) and len(prepared) == 2):
                    raise MessageError("field", "prepared must be (certificate, block)")
                safety.prepared = PreparedCertificate.from_fields(prepared[0])
                safety.prepared_block = block_from_fields(prepared[1])
            except DecodeError as error:
                raise RestoreError(f"persisted prepared certificate: {error}") from None
        return safety
