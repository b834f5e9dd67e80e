"""Planted bugs: deliberate protocol mistakes that the checkers must catch.

A checker that never fails proves nothing. Each planted bug below breaks one safety argument
of the protocol; switching it on and sweeping seeds must produce a violation within a bounded
number of seeds (``tests/test_sim_bugs.py``). Four live in the replica itself
(``ReplicaConfig.planted_bugs``); ``vote-before-persist`` lives in the simulated driver, which
then sends the replica's messages before the write-ahead record is durable.

Each bug carries the fault mix that exercises it (a bug in view change needs view changes):
``suanpan sim --bug NAME`` uses it for every fault parameter not pinned by a flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from sims.faults import Behaviour
from sims.network import PartitionKind

__all__ = ["BUGS", "PlantedBug"]


@dataclass(frozen=True, slots=True)
class PlantedBug:
    """A named bug, the replica flag that switches it on (None: a driver bug), the fault mix
    and cluster shape that exercise it, and the checks expected to catch it."""

    name: str
    description: str
    replica_flag: str | None
    scenario: Mapping[str, object] = field(default_factory=dict)
    byzantine: int | None = None
    # The byzantine validators are driven by the adversary (the bug needs crafted messages).
    adversary: bool = False
    # Heights per seed in the bug's positive-control sweep (some bugs need more chances).
    blocks: int = 6
    caught_by: tuple[str, ...] = ()


BUGS: Final[Mapping[str, PlantedBug]] = {
    bug.name: bug
    for bug in (
        PlantedBug(
            "wrong-quorum",
            "prepare, commit and view-change quorums one vote too small: certificates too small",
            "WRONG_QUORUM",
            scenario={"behaviours": (Behaviour.EQUIVOCATE,), "partition_percent": 10},
            byzantine=1,
            caught_by=("validity", "agreement"),
        ),
        PlantedBug(
            "new-view-ignores-prepared",
            "the new primary proposes afresh instead of re-proposing a prepared block",
            "NEW_VIEW_IGNORES_PREPARED",
            # A fork needs one replica to commit while the rest miss its commit and then view-change
            # without hearing from it (it would otherwise serve them the block): one-way links
            # that last a few view timeouts, over enough heights for the pattern to occur.
            scenario={
                "loss_percent": 20,
                "partition_percent": 50,
                "partition_kinds": (PartitionKind.ASYMMETRIC,),
                "partition_duration_ms_max": 2_000,
            },
            blocks=20,
            caught_by=("agreement",),
        ),
        PlantedBug(
            "no-view-check-on-votes",
            "votes are counted without checking their view matches the block's",
            "NO_VIEW_CHECK_ON_VOTES",
            scenario={"loss_percent": 20, "partition_percent": 30, "duplicate_percent": 30},
            caught_by=("validity", "agreement"),
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
            caught_by=("validity", "agreement"),
        ),
        PlantedBug(
            "vote-before-persist",
            "the driver sends votes before their write-ahead record is durable; crashes lose it",
            None,
            scenario={"crash_percent": 60, "restart_delay_ms_max": 100},
            caught_by=("honest_signatures", "agreement"),
        ),
    )
}
