"""Whether a core of the machine a node runs on is left over for the node's worker threads,
from Linux's ``/proc/stat`` and the node's own CPU time.

Theory of operation
-------------------
A worker thread only helps a node when a core is free to run it beside the event loop. When
every core of the machine is busy (several nodes on one machine under load), the hand-off to a
thread costs CPU and buys no parallelism. ``MachineIdle.busy`` says whether the *spare* cores
over the last interval, the machine's idle time plus the time this node's own worker threads
ran (what the loop's work could use beside it), came to less than ``SPARE_CORES_BUSY``. The
worker threads' time counts as spare because moving their work onto the loop would free it:
a single node on a machine of two cores, its loop on one core and its threads on part of the
other, has a whole core beside the loop and is never busy, however little of the machine is
idle; four nodes on two cores under load leave a fraction of a core to each node's threads
and count as busy.

The idle time is read from the first line of ``/proc/stat`` (the jiffies every core spent in
each state since boot; idle is ``idle`` plus ``iowait``); the worker threads' time comes from
``helpers_ns``, a counter of nanoseconds the caller supplies (the node: its process's CPU
time less its event loop thread's). Both are read at most once per ``interval_s``, and the
answer between readings is the last one, so asking costs nothing on a hot path.

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

__all__ = [
    "CPU_STATES",
    "PROC_STAT",
    "SPARE_CORES_BUSY",
    "MachineIdle",
    "cores_by_state",
    "read_cpu_jiffies",
]

PROC_STAT: Final = Path("/proc/stat")
# With fewer spare cores than this on average (the machine's idle cores plus the cores the
# node's own worker threads used), the machine counts as busy.
SPARE_CORES_BUSY: Final = 0.5
# The states of the first line of /proc/stat read here, in its order (guest time is counted in
# user already).
CPU_STATES: Final = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_FIELDS: Final = len(CPU_STATES)


def read_cpu_jiffies(path: Path = PROC_STAT) -> tuple[int, ...] | None:
    """The jiffies all cores spent in each of ``CPU_STATES`` since boot, from the first line
    of ``path``; None when it cannot be read or does not have them."""
    try:
        with path.open("rb") as file:
            line = file.readline()
    except OSError:
        return None
    parts = line.split()
    if len(parts) < 1 + _FIELDS or parts[0] != b"cpu":
        return None
    try:
        jiffies = tuple(int(part) for part in parts[1 : 1 + _FIELDS])
    except ValueError:
        return None
    if min(jiffies) < 0:
        return None
    return jiffies


def cores_by_state(
    before: tuple[int, ...] | None, after: tuple[int, ...] | None, cores: int
) -> dict[str, float]:
    """The cores the machine spent on average between two ``read_cpu_jiffies`` readings:
    ``busy`` (user, nice, system, irq, softirq), ``idle``, ``iowait`` and ``steal`` (time the
    hypervisor gave to others: a virtual machine slowed from outside). Empty when either
    reading is missing or no time passed between them."""
    if before is None or after is None:
        return {}
    spent = dict(zip(CPU_STATES, (b - a for a, b in zip(before, after, strict=True)), strict=True))
    total = sum(spent.values())
    if total <= 0 or min(spent.values()) < 0:
        return {}
    busy = sum(spent[state] for state in ("user", "nice", "system", "irq", "softirq"))
    return {
        name: value / total * cores
        for name, value in (
            ("busy", busy),
            ("idle", spent["idle"]),
            ("iowait", spent["iowait"]),
            ("steal", spent["steal"]),
        )
    }


def _no_helpers() -> int:
    return 0


class MachineIdle:
    """The machine's spare cores for a node's worker threads, sampled every ``interval_s``
    from ``path`` (``/proc/stat``) and ``helpers_ns`` (the worker threads' CPU nanoseconds
    so far)."""

    def __init__(
        self,
        path: Path = PROC_STAT,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        cores: int | None = None,
        helpers_ns: Callable[[], int] = _no_helpers,
    ) -> None:
        self._path = path
        self._cores = cores or os.cpu_count() or 1
        self._interval_s = interval_s
        self._clock = clock
        self._helpers_ns = helpers_ns
        self._busy = False
        self._last = read_cpu_jiffies(path)
        self._last_helpers_ns = helpers_ns()
        self._sampled_at = clock()
        # The idle share of all cores' time over the last interval, and the cores the worker
        # threads used in it (None until two readings were taken).
        self.idle_share: float | None = None
        self.helper_cores: float | None = None

    @property
    def idle_cores(self) -> float | None:
        """The idle share over the last interval times the cores (None without one)."""
        return None if self.idle_share is None else self.idle_share * self._cores

    @property
    def spare_cores(self) -> float | None:
        """Idle cores plus the cores the worker threads used, over the last interval (None
        without one)."""
        idle = self.idle_cores
        if idle is None or self.helper_cores is None:
            return None
        return idle + self.helper_cores

    def busy(self) -> bool:
        """Whether the machine had fewer than ``SPARE_CORES_BUSY`` spare cores on average over
        the last interval (read again once ``interval_s`` has passed since the last reading)."""
        now = self._clock()
        elapsed_s = now - self._sampled_at
        if elapsed_s < self._interval_s:
            return self._busy
        self._sampled_at = now
        reading = read_cpu_jiffies(self._path)
        helpers_ns = self._helpers_ns()
        cores = cores_by_state(self._last, reading, self._cores)
        self._last = reading
        last_helpers_ns, self._last_helpers_ns = self._last_helpers_ns, helpers_ns
        if not cores:
            self._busy = False
            self.idle_share = None
            self.helper_cores = None
            return False
        self.idle_share = (cores["idle"] + cores["iowait"]) / self._cores
        self.helper_cores = max(0, helpers_ns - last_helpers_ns) / 1e9 / elapsed_s
        spare = self.idle_share * self._cores + self.helper_cores
        self._busy = spare < SPARE_CORES_BUSY
        return self._busy
