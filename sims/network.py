"""The simulated network: lossy, duplicating, delaying, reordering, partitionable links.

Theory of operation
-------------------
``SimNetwork.send`` takes one message (bytes) from one node to another and decides its fate
with the network's own seeded ``random.Random``: dropped (loss), delivered once or several
times (duplication), each copy after a delay drawn from the configured distribution. A copy
that draws "reorder" gets an extra delay so it overtakes nothing but is overtaken, which is
how later messages arrive first. Partitions are a set of blocked *directed* links checked
when a copy is due: a message in flight when a partition starts is lost, as on a real link.

Draws happen in the order ``send`` is called, which the event loop makes deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Final

from sims.loop import EventLoop

__all__ = [
    "COPIES_MAX",
    "DelayDistribution",
    "LinkFaults",
    "NetworkStatistics",
    "Partition",
    "PartitionKind",
    "SimNetwork",
]

# Duplication draws again for each extra copy; three copies of one message is plenty of abuse
# and keeps a 50% duplication rate from snowballing.
COPIES_MAX: Final = 3
LOSS_PERCENT_MAX: Final = 30
DUPLICATE_PERCENT_MAX: Final = 50


class DelayDistribution(Enum):
    """Shape of the per-message delay between ``delay_min_ms`` and ``delay_max_ms``."""

    UNIFORM = "uniform"
    EXPONENTIAL = "exponential"  # mostly fast, a long tail of slow messages
    BIMODAL = "bimodal"  # fast path, and a slow path (a congested route) 20% of the time


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """How the network mistreats messages. Percentages are integers 0..100."""

    loss_percent: int = 0
    duplicate_percent: int = 0
    delay_min_ms: int = 1
    delay_max_ms: int = 10
    distribution: DelayDistribution = DelayDistribution.UNIFORM
    reorder_percent: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.loss_percent <= LOSS_PERCENT_MAX:
            raise ValueError(f"loss must be 0..{LOSS_PERCENT_MAX}%")
        if not 0 <= self.duplicate_percent <= DUPLICATE_PERCENT_MAX:
            raise ValueError(f"duplication must be 0..{DUPLICATE_PERCENT_MAX}%")
        if not 0 <= self.delay_min_ms <= self.delay_max_ms:
            raise ValueError("delays need 0 <= min <= max")
        if not 0 <= self.reorder_percent <= 100:
            raise ValueError("reorder must be 0..100%")

    def quiet(self) -> LinkFaults:
        """The same delays with no loss, duplication or reordering (the liveness phase)."""
        return replace(self, loss_percent=0, duplicate_percent=0, reorder_percent=0)


class PartitionKind(Enum):
    """The partition shapes the fault schedule draws."""

    SYMMETRIC = "symmetric"  # two groups that cannot reach each other
    ASYMMETRIC = "asymmetric"  # group A's messages to B are lost; B still reaches A
    ISOLATE_ONE = "isolate-one"  # one node cut off in both directions


@dataclass(frozen=True, slots=True)
class Partition:
    """A set of blocked directed links (source node, destination node)."""

    kind: PartitionKind
    blocked: frozenset[tuple[int, int]]
    description: str

    @classmethod
    def between(
        cls, kind: PartitionKind, side_a: Iterable[int], side_b: Iterable[int]
    ) -> Partition:
        """Block a->b links (and b->a unless ``kind`` is asymmetric)."""
        a = sorted(side_a)
        b = sorted(side_b)
        blocked = {(x, y) for x in a for y in b}
        if kind is not PartitionKind.ASYMMETRIC:
            blocked |= {(y, x) for x in a for y in b}
        arrow = "->" if kind is PartitionKind.ASYMMETRIC else "|"
        return cls(kind, frozenset(blocked), f"{kind.value} {a}{arrow}{b}")


@dataclass(slots=True)
class NetworkStatistics:
    """Counters over a run."""

    sent: int = 0
    delivered: int = 0
    bytes_delivered: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0
    dropped_down: int = 0
    duplicated: int = 0
    reordered: int = 0
    per_kind: dict[str, int] = field(default_factory=dict)


Handler = Callable[[int, int, bytes], bool]


class SimNetwork:
    """Delivers bytes between node ids through the event loop, applying ``LinkFaults``.

    ``handler(destination, source, payload)`` is called on delivery and returns False when
    the destination was down (the copy is then counted as dropped).
    """

    def __init__(self, loop: EventLoop, rng: random.Random, faults: LinkFaults) -> None:
        self._loop = loop
        self._rng = rng
        self.faults = faults
        self._partition: Partition | None = None
        self._handler: Handler | None = None
        # An extra cut decided per message (source, destination, payload): the Twins schedule.
        self.link_filter: Callable[[int, int, bytes], bool] | None = None
        self.statistics = NetworkStatistics()

    def attach(self, handler: Handler) -> None:
        """Set the delivery callback."""
        self._handler = handler

    @property
    def partition(self) -> Partition | None:
        """The partition in force, if any."""
        return self._partition

    def set_partition(self, partition: Partition | None) -> None:
        """Start (or, with None, heal) a partition."""
        self._partition = partition

    def blocked(self, source: int, destination: int) -> bool:
        """True when the link source->destination is cut right now."""
        return self._partition is not None and (source, destination) in self._partition.blocked

    def _delay_ms(self) -> int:
        f = self.faults
        span = f.delay_max_ms - f.delay_min_ms
        if f.distribution is DelayDistribution.UNIFORM:
            delay = f.delay_min_ms + self._rng.randint(0, span)
        elif f.distribution is DelayDistribution.EXPONENTIAL:
            mean = max(1.0, span / 4)
            delay = f.delay_min_ms + min(span, int(self._rng.expovariate(1.0 / mean)))
        else:
            slow = self._rng.randrange(100) < 20
            low = f.delay_min_ms + (span * 3 // 4 if slow else 0)
            high = f.delay_max_ms if slow else f.delay_min_ms + span // 4
            delay = self._rng.randint(low, high)
        if f.reorder_percent and self._rng.randrange(100) < f.reorder_percent:
            self.statistics.reordered += 1
            delay += self._rng.randint(1, max(1, f.delay_max_ms * 2))
        return delay

    def send(self, source: int, destination: int, payload: bytes, kind: str) -> None:
        """Put one message on the wire from ``source`` to ``destination``."""
        stats = self.statistics
        stats.sent += 1
        stats.per_kind[kind] = stats.per_kind.get(kind, 0) + 1
        if self._rng.randrange(100) < self.faults.loss_percent:
            stats.dropped_loss += 1
            return
        copies = 1
        while copies < COPIES_MAX and self._rng.randrange(100) < self.faults.duplicate_percent:
            copies += 1
            stats.duplicated += 1
        for _ in range(copies):
            delay = self._delay_ms()
            self._loop.call_later(delay, lambda: self._deliver(source, destination, payload, kind))

    def _deliver(self, source: int, destination: int, payload: bytes, kind: str) -> None:
        stats = self.statistics
        if self.blocked(source, destination) or (
            self.link_filter is not None and self.link_filter(source, destination, payload)
        ):
            stats.dropped_partition += 1
            return
        assert self._handler is not None, "network has no delivery handler"
        if not self._handler(destination, source, payload):
            stats.dropped_down += 1
            return
        stats.delivered += 1
        stats.bytes_delivered += len(payload)
