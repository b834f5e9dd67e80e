"""A bounded set of recently seen transaction hashes."""

from __future__ import annotations

__all__ = ["SeenCache"]


class SeenCache:
    """Remembers at least the last ``capacity // 2`` and at most ``capacity`` inserted keys.

    Two generations: inserts go to the current set; when it holds ``capacity // 2`` keys the
    previous generation is dropped wholesale and the current one becomes previous. Lookups
    and inserts are O(1) and memory is bounded, unlike an LRU built on dict deletions.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self.capacity = capacity
        self._generation_max = capacity // 2
        self._current: set[bytes] = set()
        self._previous: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def __contains__(self, key: bytes) -> bool:
        return key in self._current or key in self._previous

    def add(self, key: bytes) -> bool:
        """Insert ``key``; True if it was not already present (i.e. first sighting)."""
        if key in self._current or key in self._previous:
            return False
        if len(self._current) >= self._generation_max:
            self._previous = self._current
            self._current = set()
        self._current.add(key)
        return True
