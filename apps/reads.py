"""Read sets: which committed state an admission check looked at.

Theory of operation
-------------------
An admission check (``AppHost.check_transaction``) is a deterministic function of the
transaction, the expected nonce and the committed state it reads (the determinism rules in
``apps.base``). ``RecordingBackend`` wraps the committed state for one check and records every
key it reads and every range it scans; the result is a ``ReadSet``. While no committed block
writes a key in the read set or inside one of its ranges, the same check gives the same answer,
so a pending transaction needs no recheck after such a block (the mempool's recheck relies on
this: ``node.mempool``).

The host records the last block's height and time only if the app actually looks at
``ctx.block`` (every block writes that record); it never records the sender's nonce, which the
mempool tracks itself: a block changes a sender's nonce only by including a transaction of
that sender.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Final

from apps.state import StateBackend

__all__ = ["EMPTY_READ_SET", "ReadSet", "RecordingBackend"]


class ReadSet:
    """Keys read and ``[start, end)`` ranges scanned (``end`` None: unbounded) by one check.

    A value: its fields are ``Final``, and two read sets are equal when their fields are. A
    plain class rather than a frozen dataclass, as one is built for every admission check:
    compiled (``node.native``), building it is a C call, where a frozen dataclass's generated
    ``__init__`` runs as Python."""

    __slots__ = ("keys", "ranges")

    def __init__(
        self, keys: frozenset[bytes], ranges: tuple[tuple[bytes, bytes | None], ...] = ()
    ) -> None:
        self.keys: Final = keys
        self.ranges: Final = ranges

    def __eq__(self, other: object) -> bool:
        if type(other) is not ReadSet:
            return NotImplemented
        return self.keys == other.keys and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash((self.keys, self.ranges))

    def __repr__(self) -> str:
        return f"ReadSet(keys={self.keys!r}, ranges={self.ranges!r})"

    def written_by(self, written_keys: Sequence[bytes]) -> bool:
        """True when a key of ``written_keys`` (sorted ascending) is in this read set."""
        if any(key in self.keys for key in written_keys):
            return True
        return any(_range_hit(written_keys, start, end) for start, end in self.ranges)


EMPTY_READ_SET: Final = ReadSet(frozenset())


def _range_hit(written_keys: Sequence[bytes], start: bytes, end: bytes | None) -> bool:
    position = bisect.bisect_left(written_keys, start)
    if position == len(written_keys):
        return False
    return end is None or written_keys[position] < end


class RecordingBackend:
    """A ``StateBackend`` that passes reads through to ``backend`` and records them."""

    __slots__ = ("_backend", "keys", "ranges")

    def __init__(self, backend: StateBackend) -> None:
        self._backend = backend
        self.keys: set[bytes] = set()
        self.ranges: list[tuple[bytes, bytes | None]] = []

    def get(self, key: bytes) -> bytes | None:
        """The backend's value at ``key`` (recorded)."""
        self.keys.add(key)
        return self._backend.get(key)

    def scan(
        self, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """The backend's scan (the whole range is recorded, however far it is iterated)."""
        self.ranges.append((start, end))
        return self._backend.scan(start, end, reverse=reverse)

    def tree_node(self, key: bytes) -> bytes | None:
        """The backend's Merkle tree record (not app state: a check never reads it, and a
        read here is not recorded)."""
        return self._backend.tree_node(key)

    def read_set(self) -> ReadSet:
        """What was read so far."""
        return ReadSet(frozenset(self.keys), tuple(self.ranges))
