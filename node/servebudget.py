"""How many bytes of block-sync answers each peer may receive per time window.

A ``BlockRequest`` is a few bytes; its answer may be a 16 MiB ``BlockResponse`` built from the
store. Without a limit one peer could make a node read and send blocks as fast as it can ask.
``ServeBudget`` gives every peer a fixed number of bytes per fixed window: the node answers a
request only with what still fits (fewer blocks, or none this window), and the requester's own
retry brings it the rest. The clock is an argument, so the budget is deterministic to test.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["ServeBudget"]


@dataclass(slots=True)
class _Window:
    start_ms: int
    used_bytes: int


class ServeBudget:
    """``bytes_per_window`` bytes per peer in each window of ``window_ms`` milliseconds."""

    def __init__(self, *, bytes_per_window: int, window_ms: int) -> None:
        if bytes_per_window < 1 or window_ms < 1:
            raise ValueError("a serve budget needs positive bytes and window")
        self.bytes_per_window = bytes_per_window
        self.window_ms = window_ms
        # One entry per peer served in a recent window (peers are allowlisted validators and
        # observers; expired windows are dropped as new peers come, so the set changing over
        # time does not grow it).
        self._windows: dict[Hashable, _Window] = {}

    def available(self, peer: Hashable, now_ms: int) -> int:
        """Bytes ``peer`` may still be sent in the window that holds ``now_ms``."""
        window = self._windows.get(peer)
        if window is None or now_ms - window.start_ms >= self.window_ms or now_ms < window.start_ms:
            return self.bytes_per_window
        return max(0, self.bytes_per_window - window.used_bytes)

    def spend(self, peer: Hashable, now_ms: int, size_bytes: int) -> None:
        """Record ``size_bytes`` sent to ``peer`` at ``now_ms``."""
        window = self._windows.get(peer)
        if window is None or now_ms - window.start_ms >= self.window_ms or now_ms < window.start_ms:
            if window is None:
                self._windows = {
                    key: kept
                    for key, kept in self._windows.items()
                    if 0 <= now_ms - kept.start_ms < self.window_ms
                }
            window = _Window(now_ms, 0)
            self._windows[peer] = window
        window.used_bytes += size_bytes
