"""Whether the machine a node runs on has had idle CPU lately, from Linux's ``/proc/stat``.

Theory of operation
-------------------
A worker thread only helps a node when a core is free to run it beside the event loop. When
every core of the machine is busy (several nodes on one machine under load), the hand-off to a
thread costs CPU and buys no parallelism. ``MachineIdle.busy`` says whether the machine's
cores, all of them together, were idle for less than one core's worth of time
(``IDLE_CORES_BUSY``) since the sample before, when a verifying thread would mostly wait for a
core or take one from another process. It reads ``/proc/stat`` at most once per
``interval_s`` (the first line: the jiffies every core spent in each state since boot; idle is
``idle`` plus ``iowait``) and answers from the last reading in between, so asking costs
nothing on a hot path.

Where there is no ``/proc/stat`` (not Linux) or it cannot be read or parsed, the machine never
counts as busy. In a container limited by a CPU quota rather than by its cores, the file shows
the host's cores, which may be idle while the container is throttled: the machine then does
not count as busy either.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = ["IDLE_CORES_BUSY", "PROC_STAT", "MachineIdle"]

PROC_STAT: Final = Path("/proc/stat")
# With fewer idle cores than this on average (the idle share of all cores' time times the
# cores), the machine counts as busy.
IDLE_CORES_BUSY: Final = 1.0
# user nice system idle iowait irq softirq steal (guest time is counted in user already).
_FIELDS: Final = 8


class MachineIdle:
    """The machine's idle share of CPU time, sampled from ``path`` every ``interval_s``."""

    def __init__(
        self,
        path: Path = PROC_STAT,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        cores: int | None = None,
    ) -> None:
        self._path = path
        self._cores = cores or os.cpu_count() or 1
        self._interval_s = interval_s
        self._clock = clock
        self._busy = False
        self._last = self._read()
        self._sampled_at = clock()
        # The idle share over the last interval (None until two readings were taken).
        self.idle_share: float | None = None

    def _read(self) -> tuple[int, int] | None:
        """(idle jiffies, all jiffies) since boot, or None when the file gives none."""
        try:
            with self._path.open("rb") as file:
                line = file.readline()
        except OSError:
            return None
        parts = line.split()
        if len(parts) < 1 + _FIELDS or parts[0] != b"cpu":
            return None
        try:
            jiffies = [int(part) for part in parts[1 : 1 + _FIELDS]]
        except ValueError:
            return None
        return jiffies[3] + jiffies[4], sum(jiffies)

    @property
    def idle_cores(self) -> float | None:
        """The idle share over the last interval times the cores (None without one)."""
        return None if self.idle_share is None else self.idle_share * self._cores

    def busy(self) -> bool:
        """Whether the machine had fewer than ``IDLE_CORES_BUSY`` cores idle on average over
        the last interval (read again once ``interval_s`` has passed since the last reading)."""
        now = self._clock()
        if now - self._sampled_at < self._interval_s:
            return self._busy
        self._sampled_at = now
        reading = self._read()
        last, self._last = self._last, reading
        if reading is None or last is None or reading[1] <= last[1]:
            self._busy = False
            self.idle_share = None
            return False
        self.idle_share = (reading[0] - last[0]) / (reading[1] - last[1])
        self._busy = self.idle_share * self._cores < IDLE_CORES_BUSY
        return self._busy
