"""Per-seed fault parameters (swarm testing) and the byzantine behaviours a node can adopt.

Swarm testing (Groce et al., 2012): instead of every run suffering every fault a little, each
seed switches each fault family on or off and draws its intensity, so some seeds hammer one
mechanism hard while others run almost clean and make progress. ``FaultParameters.draw``
does that from the seed; every field can be pinned by a command-line flag (``overrides``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Final

from sims.network import (
    DUPLICATE_PERCENT_MAX,
    LOSS_PERCENT_MAX,
    DelayDistribution,
    LinkFaults,
    PartitionKind,
)

__all__ = [
    "CLOCK_SKEW_MS_MAX",
    "Behaviour",
    "FaultParameters",
]

# Skew beyond a few seconds is a misconfigured node, not a fault worth simulating per seed.
CLOCK_SKEW_MS_MAX: Final = 2_000
# Partitions and crashes are drawn at most once per fault tick.
FAULT_TICK_MS: Final = 250


class Behaviour(Enum):
    """What a byzantine validator does. Honest nodes run the replica unmodified."""

    SILENT = "silent"  # sends nothing at all
    EQUIVOCATE = "equivocate"  # as primary, proposes different blocks to different peers
    DOUBLE_VOTE = "double-vote"  # signs a second vote for another block beside each vote
    UNKNOWN_BLOCK_VOTES = "unknown-block-votes"  # signs votes for blocks that do not exist
    BAD_SIGNATURES = "bad-signatures"  # corrupts signatures on its votes and proposals
    GARBAGE = "garbage"  # sends random bytes and truncated messages beside real ones
    FORGE_SYNC = "forge-sync"  # answers block requests with blocks that have no certificate
    TWIN = "twin"  # two honest-looking copies sharing one key, in different partitions


# The behaviours a seed draws from; twins need a dedicated partition layout and are opt-in.
DRAWN_BEHAVIOURS: Final = tuple(b for b in Behaviour if b is not Behaviour.TWIN)


@dataclass(frozen=True, slots=True)
class FaultParameters:
    """Everything that goes wrong in one run. Percentages are integers."""

    loss_percent: int
    duplicate_percent: int
    delay_min_ms: int
    delay_max_ms: int
    delay_distribution: DelayDistribution
    reorder_percent: int
    partition_percent: int  # chance per fault tick that a partition starts (when none is on)
    partition_kinds: tuple[PartitionKind, ...]
    partition_duration_ms_max: int
    crash_percent: int  # chance per fault tick that an honest node crashes
    restart_delay_ms_max: int
    clock_skew_ms_max: int
    behaviours: tuple[Behaviour, ...]  # one per byzantine validator, in validator order

    def __post_init__(self) -> None:
        if not 0 <= self.partition_percent <= 100 or not 0 <= self.crash_percent <= 100:
            raise ValueError("partition and crash rates are 0..100%")
        if not 0 <= self.clock_skew_ms_max <= CLOCK_SKEW_MS_MAX:
            raise ValueError(f"clock skew is 0..{CLOCK_SKEW_MS_MAX} ms")
        if self.partition_percent and not self.partition_kinds:
            raise ValueError("partitions need at least one partition kind")
        self.link_faults()  # validates loss, duplication and delays

    def link_faults(self) -> LinkFaults:
        """The network part of these parameters."""
        return LinkFaults(
            loss_percent=self.loss_percent,
            duplicate_percent=self.duplicate_percent,
            delay_min_ms=self.delay_min_ms,
            delay_max_ms=self.delay_max_ms,
            distribution=self.delay_distribution,
            reorder_percent=self.reorder_percent,
        )

    @classmethod
    def draw(
        cls,
        rng: random.Random,
        byzantine: int,
        *,
        behaviours: tuple[Behaviour, ...] | None = None,
    ) -> FaultParameters:
        """Draw a swarm configuration: each family on with probability 1/2, then its level."""

        def on() -> bool:
            return rng.randrange(2) == 1

        loss = rng.randint(1, LOSS_PERCENT_MAX) if on() else 0
        duplicate = rng.randint(1, DUPLICATE_PERCENT_MAX) if on() else 0
        delay_min = rng.randint(1, 5)
        delay_max = delay_min + rng.choice((5, 20, 60, 150))
        distribution = rng.choice(tuple(DelayDistribution))
        reorder = rng.randint(1, 30) if on() else 0
        partition = rng.randint(2, 15) if on() else 0
        kinds = tuple(k for k in PartitionKind if on()) or (PartitionKind.ISOLATE_ONE,)
        duration = rng.choice((300, 1_000, 3_000))
        crash = rng.randint(2, 12) if on() else 0
        restart = rng.choice((100, 500, 2_000))
        skew = rng.randint(0, CLOCK_SKEW_MS_MAX) if on() else 0
        if behaviours is None:
            behaviours = tuple(rng.choice(DRAWN_BEHAVIOURS) for _ in range(byzantine))
        return cls(
            loss_percent=loss,
            duplicate_percent=duplicate,
            delay_min_ms=delay_min,
            delay_max_ms=delay_max,
            delay_distribution=distribution,
            reorder_percent=reorder,
            partition_percent=partition,
            partition_kinds=kinds,
            partition_duration_ms_max=duration,
            crash_percent=crash,
            restart_delay_ms_max=restart,
            clock_skew_ms_max=skew,
            behaviours=behaviours,
        )

    def with_overrides(self, overrides: dict[str, object]) -> FaultParameters:
        """These parameters with the given fields pinned (None values are ignored)."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown fault parameters: {', '.join(unknown)}")
        pinned = {name: value for name, value in overrides.items() if value is not None}
        return replace(self, **pinned)  # type: ignore[arg-type]

    def describe(self) -> dict[str, object]:
        """A JSON-friendly view."""
        return {
            "loss_percent": self.loss_percent,
            "duplicate_percent": self.duplicate_percent,
            "delay_ms": [self.delay_min_ms, self.delay_max_ms],
            "delay_distribution": self.delay_distribution.value,
            "reorder_percent": self.reorder_percent,
            "partition_percent": self.partition_percent,
            "partition_kinds": [k.value for k in self.partition_kinds],
            "partition_duration_ms_max": self.partition_duration_ms_max,
            "crash_percent": self.crash_percent,
            "restart_delay_ms_max": self.restart_delay_ms_max,
            "clock_skew_ms_max": self.clock_skew_ms_max,
            "behaviours": [b.value for b in self.behaviours],
        }
