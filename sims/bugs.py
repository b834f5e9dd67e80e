"""Planted bugs: deliberate protocol mistakes that the checkers must catch.

A checker that never fails proves nothing. Each planted bug below breaks one safety argument
of the protocol; switching it on and sweeping seeds must produce an agreement or durability
violation (a real fork, or a committed block lost) within a bounded number of seeds
(``tests/test_sim_bugs.py``), not only a certificate that does not verify; one breaks what
a node relies on to update its Merkle tree once per group of synced blocks, and is caught by
the check of that (``sync_hint``). Nine live in the replica itself
(``ReplicaConfig.planted_bugs``); ``vote-before-persist`` and ``commit-without-fsync`` live in
the simulated driver (``sims/node.py``), which then leaves a write-ahead record, or a
committed block, to the operating system's writeback instead of syncing it.

Each bug carries the fault mix that exercises it (a bug in view change needs view changes;
one in checking crafted messages needs the adversary to craft them): ``suanpan sim --bug NAME``
uses it for every fault parameter not pinned by a flag, and an adversary bug names the moves
the adversary is sure to make (``moves``; the rest of its mix is still drawn from the seed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from sims.adversary import Move
from sims.faults import Behaviour
from sims.network import PartitionKind

__all__ = ["BUGS", "PlantedBug"]

# What a planted bug must be caught by: the chain forked or lost a committed block.
CAUGHT_BY: Final = ("agreement", "durability")


@dataclass(frozen=True, slots=True)
class PlantedBug:
    """A named bug, the replica flag that switches it on (None: a driver bug), the fault mix,
    cluster shape and adversary moves that exercise it, and the checks expected to catch it."""

    name: str
    description: str
    replica_flag: str | None
    scenario: Mapping[str, object] = field(default_factory=dict)
    byzantine: int | None = None
    # The byzantine validators are driven by the adversary (the bug needs crafted messages).
    adversary: bool = False
    # The adversary's timed moves for this bug (beside its splits and strikes, always on).
    moves: tuple[Move, ...] = ()
    # Heights per seed in the bug's positive-control sweep (some bugs need more chances).
    blocks: int = 6
    caught_by: tuple[str, ...] = CAUGHT_BY
    # The validator set changes during the run (``sims.reconfiguration``), every
    # ``reconfiguration_interval_ms``; with ``leak_retired_keys`` the byzantine validators get
    # every key an honest validator rotates away from (the bug's trigger: a safe chain assumes
    # retired keys are destroyed, and only stays safe here because it refuses what they sign).
    reconfigure: bool = False
    reconfiguration_interval_ms: int | None = None
    reconfiguration_changes: tuple[str, ...] = ("join", "leave", "rotate")
    leak_retired_keys: bool = False


# Background moves for a focused attack: noise that neither scatters the honest replicas
# across views nor hands out byzantine votes (the splits and strikes do the real work).
_SPLIT_MOVES: Final = (Move.REPLAY, Move.GARBAGE)

# Nodes fall behind (crashes, a node cut off) and catch up several blocks at once by block
# sync.
_FALLING_BEHIND: Final[Mapping[str, object]] = {
    "partition_percent": 40,
    "partition_kinds": (PartitionKind.ISOLATE_ONE,),
    "partition_duration_ms_max": 3_000,
    "crash_percent": 20,
    "restart_delay_ms_max": 2_000,
}

BUGS: Final[Mapping[str, PlantedBug]] = {
    bug.name: bug
    for bug in (
        PlantedBug(
            "wrong-quorum",
            "prepare, commit and view-change quorums one vote too small",
            "WRONG_QUORUM",
            # An equivocating primary gets each half of the honest replicas to a (too small)
            # quorum for its own block.
            scenario={"partition_percent": 10},
            byzantine=1,
            adversary=True,
            moves=(Move.PROPOSAL_SPLIT, Move.VOTE_FOLLOW),
        ),
        PlantedBug(
            "new-view-ignores-prepared",
            "the new primary proposes afresh instead of re-proposing a prepared block",
            "NEW_VIEW_IGNORES_PREPARED",
            # A fork needs one replica to commit while the rest miss its commit and then
            # view-change without hearing from it (it would otherwise serve them the block):
            # one-way links that last a few view timeouts, over enough heights.
            scenario={
                "loss_percent": 20,
                "partition_percent": 50,
                "partition_kinds": (PartitionKind.ASYMMETRIC,),
                "partition_duration_ms_max": 2_000,
            },
            blocks=20,
        ),
        PlantedBug(
            "no-view-check-on-votes",
            "votes are counted without checking their view matches the block's",
            "NO_VIEW_CHECK_ON_VOTES",
            # Votes of old views (replayed, or signed for any view by the adversary) count in
            # the current one.
            scenario={"loss_percent": 20, "partition_percent": 30, "duplicate_percent": 30},
            byzantine=1,
            adversary=True,
            moves=(*_SPLIT_MOVES, Move.VOTE, Move.REPLAY),
            blocks=10,
        ),
        PlantedBug(
            "sync-without-certificate",
            "blocks fetched from peers are accepted without verifying their certificate",
            "SYNC_WITHOUT_CERTIFICATE",
            scenario={
                "behaviours": (Behaviour.FORGE_SYNC,),
                "partition_percent": 40,
                "partition_kinds": (PartitionKind.ISOLATE_ONE,),
                "crash_percent": 20,
            },
            byzantine=1,
        ),
        PlantedBug(
            "vote-before-persist",
            "the driver sends votes before their write-ahead record is durable; crashes lose it",
            None,
            scenario={"crash_percent": 60, "restart_delay_ms_max": 100},
            # A restarted replica signs a second vote in one slot: the fork it enables needs
            # the byzantine help this scenario does not give, so the honest-signature check
            # is what catches it.
            caught_by=("honest_signatures", "agreement"),
        ),
        PlantedBug(
            "commit-without-fsync",
            "the driver commits a block without syncing it; a crash loses the committed block",
            None,
            scenario={"crash_percent": 60, "restart_delay_ms_max": 100},
        ),
        PlantedBug(
            "signature-cache",
            "view-change signatures cached by their bytes alone: one genuine signature vouches "
            "for view changes claiming any signer",
            "SIGNATURE_CACHE_IGNORES_SIGNER",
            scenario={"loss_percent": 10},
            byzantine=1,
            adversary=True,
            moves=_SPLIT_MOVES,
            blocks=10,
        ),
        PlantedBug(
            "new-view-unchecked",
            "a new view is accepted without checking the signatures of its view changes",
            "NEW_VIEW_UNCHECKED_SIGNATURES",
            scenario={"loss_percent": 10},
            byzantine=1,
            adversary=True,
            moves=_SPLIT_MOVES,
            blocks=10,
        ),
        PlantedBug(
            "prepared-other-height",
            "a prepared certificate signed for another height counts in a view change",
            "PREPARED_FROM_OTHER_HEIGHT",
            # Some loss, so a replica misses a proposal and a quorum needs the byzantine vote;
            # no partitions or crashes, which would spoil the timing of the next view.
            scenario={"loss_percent": 10, "partition_percent": 0, "crash_percent": 0},
            byzantine=1,
            adversary=True,
            moves=(*_SPLIT_MOVES, Move.VIEW_CHANGE_REAL),
            blocks=10,
        ),
        PlantedBug(
            "sync-against-current-set",
            "a block from block sync is checked only against the validator set the replica knew "
            "when it arrived, not the set of its own height",
            "SYNC_CERTIFICATE_AGAINST_CURRENT_SET",
            # Keys rotate often and leak to a forger; nodes fall behind (crashes, a node cut
            # off) and catch up by block sync, some of it from the forger.
            scenario={"behaviours": (Behaviour.FORGE_SYNC,), **_FALLING_BEHIND},
            byzantine=1,
            blocks=40,
            reconfigure=True,
            reconfiguration_interval_ms=100,
            # Only rotations: each retires a key of the set a lagging node still knows.
            reconfiguration_changes=("rotate",),
            leak_retired_keys=True,
        ),
        PlantedBug(
            "sync-hint-next-but-one",
            "the app hash handed with a synced block's commit is read from the block two "
            "heights on",
            "SYNC_HINT_NEXT_BUT_ONE",
            scenario=_FALLING_BEHIND,
            blocks=20,
            caught_by=("sync_hint",),
        ),
    )
}
