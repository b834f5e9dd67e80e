"""A seeded, single-threaded discrete-event loop with a simulated clock.

Theory of operation
-------------------
The loop holds a priority queue of events ordered by (due time in ms, insertion sequence).
``run`` pops the earliest event, advances the simulated clock to its due time and calls it.
Nothing else advances time, so a run is a pure function of its inputs: the same seed and
arguments always pop the same events in the same order. Ties on time are broken by the
insertion sequence, never by hashing or object identity.

Every event that *delivers* something to a replica (a message, a tick, a restart) is folded
into the trace digest (``record``), a SHA-256 chain over the labels, so two runs can be
compared bit for bit by one hex string.

trio is deliberately not used: its scheduler randomises task order, which would make a run
impossible to reproduce from its seed.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["EVENTS_MAX", "EventLoop", "EventLoopError"]

# A run that schedules this many events is runaway (a message storm or a timer loop);
# stopping it keeps a bad seed from hanging a sweep.
EVENTS_MAX: Final = 5_000_000


class EventLoopError(RuntimeError):
    """The loop was misused (an event scheduled in the past) or ran away."""


@dataclass(order=True, slots=True)
class _Scheduled:
    due_ms: int
    sequence: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class EventLoop:
    """Discrete-event scheduler over a simulated millisecond clock."""

    def __init__(self) -> None:
        self._queue: list[_Scheduled] = []
        self._sequence = 0
        self._now_ms = 0
        self._events_run = 0
        self._digest = hashlib.sha256(b"suanpan/sim/trace/v1")
        self._recorded = 0

    @property
    def now_ms(self) -> int:
        """The simulated time, in milliseconds since the start of the run."""
        return self._now_ms

    @property
    def events_run(self) -> int:
        """How many events have been executed."""
        return self._events_run

    @property
    def recorded(self) -> int:
        """How many trace entries have been folded into the digest."""
        return self._recorded

    def call_at(self, due_ms: int, callback: Callable[[], None]) -> _Scheduled:
        """Run ``callback`` at simulated time ``due_ms`` (not earlier than now)."""
        if due_ms < self._now_ms:
            raise EventLoopError(f"event scheduled at {due_ms} ms, before now ({self._now_ms} ms)")
        self._sequence += 1
        entry = _Scheduled(due_ms, self._sequence, callback)
        heapq.heappush(self._queue, entry)
        return entry

    def call_later(self, delay_ms: int, callback: Callable[[], None]) -> _Scheduled:
        """Run ``callback`` after ``delay_ms`` simulated milliseconds."""
        return self.call_at(self._now_ms + max(0, delay_ms), callback)

    @staticmethod
    def cancel(entry: _Scheduled) -> None:
        """Prevent a scheduled event from running (it stays queued, inert)."""
        entry.cancelled = True

    def record(self, *parts: bytes | str | int) -> None:
        """Fold one delivered event into the trace digest."""
        self._recorded += 1
        for part in parts:
            if isinstance(part, bytes):
                chunk = b"b" + part
            elif isinstance(part, str):
                chunk = b"s" + part.encode("utf-8")
            else:
                chunk = b"i" + str(part).encode("ascii")
            self._digest.update(len(chunk).to_bytes(4, "big") + chunk)
        self._digest.update(b"\x00")

    def trace_digest(self) -> str:
        """Hex SHA-256 over everything recorded so far."""
        return self._digest.copy().hexdigest()

    def run(self, *, until_ms: int, stop: Callable[[], bool] | None = None) -> None:
        """Run events due no later than ``until_ms``; return early once ``stop()`` is true.

        The clock ends at ``until_ms`` when the queue runs dry or the horizon is reached.
        """
        while self._queue:
            if stop is not None and stop():
                return
            entry = self._queue[0]
            if entry.due_ms > until_ms:
                break
            heapq.heappop(self._queue)
            if entry.cancelled:
                continue
            self._now_ms = entry.due_ms
            self._events_run += 1
            if self._events_run > EVENTS_MAX:
                raise EventLoopError(f"more than {EVENTS_MAX} events: runaway simulation")
            entry.callback()
        self._now_ms = max(self._now_ms, until_ms)
