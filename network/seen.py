"""Bounded memories of gossip: the hashes of recently seen transactions, and recently relayed
transactions by hash."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

__all__ = ["RelayStore", "SeenCache"]


class SeenCache:
    """Remembers at least the last ``capacity // 2`` and at most ``capacity`` inserted keys.

    Used for gossip deduplication, keyed by the SHA-256 of the whole transaction bytes. It
    caches no verification result: the network never checks transaction signatures (the node
    does, on admission), so a hit only means "these exact bytes were already relayed".

    Two generations: inserts go to the current set; when it holds ``capacity // 2`` keys the
    previous generation is dropped wholesale and the current one becomes previous. Lookups
    and inserts are O(1) and memory is bounded, unlike an LRU built on dict deletions.
    (``first_sightings`` rotates once per call, so it may exceed ``capacity`` by one batch.)
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

    def discard(self, keys: Iterable[bytes]) -> None:
        """Forget ``keys``: the next sighting of each is a first one again."""
        current, previous = self._current, self._previous
        for key in keys:
            current.discard(key)
            previous.discard(key)

    def first_sightings(self, transactions: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
        """The transactions whose SHA-256 was not seen yet, in order, and those hashes;
        records them as seen.

        The hot path of gossip (every received transaction passes here), hence inlined.
        """
        current, previous = self._current, self._previous
        insert = current.add
        sha256 = hashlib.sha256
        fresh = []
        digests = []
        for transaction in transactions:
            digest = sha256(transaction).digest()
            if digest in current or digest in previous:
                continue
            insert(digest)
            fresh.append(transaction)
            digests.append(digest)
        if len(current) >= self._generation_max:
            self._previous = current
            self._current = set()
        return fresh, digests


class RelayStore:
    """Recently relayed transactions by hash, to answer fetches.

    Two generations, like ``SeenCache``; a generation ends when it holds ``capacity // 2``
    transactions or when its first one is ``generation_s`` old (checked as transactions are
    put), and the one before it is then dropped. So a transaction is held at least
    ``generation_s`` unless the count bound rotates sooner, and at most two generations."""

    def __init__(self, capacity: int, generation_s: float = math.inf) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        if not generation_s > 0:
            raise ValueError("generation_s must be positive")
        self._generation_max = capacity // 2
        self._generation_s = generation_s
        self._current: dict[bytes, bytes] = {}
        self._previous: dict[bytes, bytes] = {}
        self._current_since = 0.0

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def put_many(self, digests: Sequence[bytes], transactions: Sequence[bytes], now: float) -> None:
        """Remember ``transactions`` under their ``digests`` at time ``now`` (seconds on any
        monotonic clock; rotating at most twice per call)."""
        if self._current and now - self._current_since >= self._generation_s:
            self._rotate()
        if not self._current:
            self._current_since = now
        self._current.update(zip(digests, transactions, strict=True))
        if len(self._current) >= self._generation_max:
            self._rotate()

    def _rotate(self) -> None:
        self._previous = self._current
        self._current = {}

    def get(self, digest: bytes) -> bytes | None:
        """The transaction with this hash, if still held."""
        found = self._current.get(digest)
        return found if found is not None else self._previous.get(digest)
