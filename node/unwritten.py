"""The state as the node executes over it: the store's committed state with the writes of
executed blocks that are not written to the store yet on top.

Theory of operation
-------------------
The node executes a block as soon as the one before it is executed and hands the block's write
to the block writer; the next block executes over ``UnwrittenStateBackend`` meanwhile. Every
state value and Merkle tree record a block's execution reads goes through it, so it is one of
the compiled modules (``node.native``): from compiled code (the app host, the tree) a call into
it costs a C call rather than an interpreted frame. It reads the committed state through the
small ``CommittedState`` protocol (the store's ``LmdbStateBackend``), so it imports nothing of
the store and holds no LMDB handle of its own.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Final, Protocol, cast

from apps.merkle import TreeUpdate
from apps.state import WriteSet

__all__ = [
    "READ_CACHE_ENTRIES_MAX",
    "CommittedState",
    "UnwrittenStateBackend",
    "overlaid",
]

# Committed state values and tree records ``UnwrittenStateBackend`` keeps in memory (each map):
# past this it starts afresh. Twice as many cost each node 7-8 MiB more heap and no less CPU:
# what execution reads again comes mostly from the few blocks before (their writes stay here).
READ_CACHE_ENTRIES_MAX: Final = 16_384


class _Uncached:
    """The type of ``_UNCACHED``: a key not in a read cache (None is a cached "absent")."""

    __slots__ = ()


_UNCACHED: Final = _Uncached()


class CommittedState(Protocol):
    """The store's committed state as ``UnwrittenStateBackend`` reads it
    (``node.store.LmdbStateBackend``)."""

    def reading(self) -> AbstractContextManager[None]:
        """One read transaction for the calling thread's reads until the context ends."""
        ...

    def reading_here(self) -> bool:
        """Whether the calling thread is inside ``reading``."""
        ...

    def get(self, key: bytes) -> bytes | None:
        """The committed value at ``key``, or None."""
        ...

    def tree_node(self, key: bytes) -> bytes | None:
        """The committed Merkle tree record under ``key``, or None."""
        ...

    def scan(
        self, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Committed (key, value) with ``start <= key < end`` in key order (or reverse)."""
        ...


class _UnwrittenBlock:
    """One executed block's state writes and tree records (None deletes), for reads."""

    __slots__ = ("height", "keys", "tree", "values")

    def __init__(
        self,
        height: int,
        writes: WriteSet,
        tree: TreeUpdate,
        values: dict[bytes, bytes | None] | None,
    ) -> None:
        self.height = height
        # The maps the execution made are shared, not copied: nothing here modifies them.
        self.values: dict[bytes, bytes | None] = dict(writes) if values is None else values
        self.keys = [key for key, _ in writes]  # a write set is in key order
        self.tree: dict[bytes, bytes | None] = tree.changed


class _Answers:
    """One map (the state's values, or the tree's records) as execution reads it, in one
    dict, ``entries``: every unwritten block's writes (newest last, so the newest wins) and
    the committed values read before (the read cache). A read is one lookup.

    A written block's writes stay in ``entries``: they are the committed values from then on
    (or a later unwritten block's write replaced them). ``unwritten`` holds the writes of the
    blocks not written yet, oldest first, and ``unwritten_records`` counts them. Once
    ``entries`` holds more than ``committed_max`` entries beyond that count, it starts afresh
    from the unwritten writes (over those of a block just written, kept as committed values);
    that rebuild costs one insert per unwritten record and comes once every few dozen blocks,
    where tracking which block wrote each key last would cost an insert and a delete per
    record of every block."""

    __slots__ = ("committed_max", "entries", "unwritten", "unwritten_records")

    def __init__(self, committed_max: int) -> None:
        self.committed_max = committed_max
        self.entries: dict[bytes, bytes | None] = {}
        self.unwritten: deque[dict[bytes, bytes | None]] = deque()
        self.unwritten_records = 0

    def committed(self) -> int:
        """Committed values held (the read cache's size; fewer when unwritten blocks write
        one key more than once)."""
        return max(0, len(self.entries) - self.unwritten_records)

    def add(self, records: dict[bytes, bytes | None]) -> None:
        """A block's writes, newer than every one held."""
        self.entries.update(records)
        self.unwritten.append(records)
        self.unwritten_records += len(records)

    def written(self, records: dict[bytes, bytes | None]) -> None:
        """The oldest unwritten block (which wrote ``records``) is in the store now."""
        oldest = self.unwritten.popleft()
        assert oldest is records, "blocks are written oldest first"
        self.unwritten_records -= len(records)
        if len(self.entries) - self.unwritten_records > self.committed_max:
            self._afresh(records)

    def remember(self, key: bytes, value: bytes | None) -> None:
        """A committed value read from the store (``key`` is not in ``entries``)."""
        if len(self.entries) - self.unwritten_records >= self.committed_max:
            self._afresh({})
        self.entries[key] = value

    def _afresh(self, keep: dict[bytes, bytes | None]) -> None:
        """Start the read cache again with ``keep`` (committed values), under the unwritten
        writes."""
        fresh = dict(keep)
        for records in self.unwritten:  # oldest first: a later block's write replaces
            fresh.update(records)
        self.entries = fresh

    def clear(self) -> None:
        self.entries = {}
        self.unwritten.clear()
        self.unwritten_records = 0


class UnwrittenStateBackend:
    """``apps.state.StateBackend``: the store's committed state with the write sets and tree
    records of executed blocks that are not written to the store yet on top (newest wins).

    The node executes a block as soon as the one before it is executed and hands the write to
    a worker thread; the next block executes over this view meanwhile. A block is removed
    (``written``) only after its write transaction committed, and every key it wrote is
    answered from here until then, so a read gives the same answer whether the store's write
    of that block has landed yet or not (the keys it did not write are the same in both).

    Committed values and tree records read during a block's execution (``reading``, on its
    thread) are kept in memory, and a written block's writes stay there as it is removed, so
    a value read again costs no LMDB call. An LMDB read releases the GIL: with worker threads
    waiting for it (signatures, the block writer) each one handed it over, which cost a
    block's execution about a third more CPU. A cached value is the committed one: a key
    changed since it was read belongs to a block still here, whose write replaced it and
    answers until the block's removal makes it the committed value. Only the reading thread
    fills the cache (it is also the one that removes blocks), so no read from an older
    snapshot can land after that. The unwritten writes and the cached values share one dict
    per map (``_Answers``), so a read is one lookup. The store must have no other writer
    while this view is in use (the node opens a new one after a state sync)."""

    __slots__ = ("_blocks", "_committed", "_tree", "_values")

    def __init__(
        self, committed: CommittedState, *, cache_entries_max: int = READ_CACHE_ENTRIES_MAX
    ) -> None:
        self._committed = committed
        self._blocks: deque[_UnwrittenBlock] = deque()
        self._values = _Answers(cache_entries_max)
        self._tree = _Answers(cache_entries_max)

    def __len__(self) -> int:
        return len(self._blocks)

    def add(
        self,
        height: int,
        writes: WriteSet,
        tree: TreeUpdate,
        values: dict[bytes, bytes | None] | None = None,
    ) -> None:
        """Block ``height`` (the one after the last added, or after the store's height) is
        executed: its ``writes`` and ``tree`` records are visible from now on. ``values`` is
        ``writes`` as a map when the caller has one (``BlockResult.write_map``); it and
        ``tree.changed`` are kept as they are, not copied, so neither may change after."""
        if self._blocks and height != self._blocks[-1].height + 1:
            raise ValueError(f"block {height} does not follow block {self._blocks[-1].height}")
        block = _UnwrittenBlock(height, writes, tree, values)
        self._blocks.append(block)
        self._values.add(block.values)
        self._tree.add(block.tree)

    def complete_tree(self, height: int, tree: TreeUpdate) -> None:
        """The newest block, ``height``, added with a tree update of no records (its tree left
        to a later computation: ``AppHost.execute_block``'s ``vouched_app_hash``), has
        ``tree``'s records now: those of the blocks since the last with records, merged."""
        blocks = self._blocks
        if not blocks or blocks[-1].height != height:
            raise ValueError(f"block {height} is not the newest unwritten block")
        block = blocks[-1]
        if block.tree:
            raise ValueError(f"block {height} has its tree records already")
        popped = self._tree.unwritten.pop()
        assert popped is block.tree
        block.tree = tree.changed
        self._tree.add(block.tree)

    def written(self, height: int) -> None:
        """The store holds every block up to ``height``: read those from the store."""
        blocks = self._blocks
        while blocks and blocks[0].height <= height:
            block = blocks.popleft()
            self._values.written(block.values)
            self._tree.written(block.tree)

    def clear(self) -> None:
        """Forget every unwritten block (the store is the whole state again)."""
        self._blocks.clear()
        self._values.clear()
        self._tree.clear()

    def cached_entries(self) -> int:
        """Values and tree records held in the read caches."""
        return self._values.committed() + self._tree.committed()

    def unwritten_records(self) -> int:
        """Values and tree records the unwritten blocks wrote."""
        return self._values.unwritten_records + self._tree.unwritten_records

    def reading(self) -> AbstractContextManager[None]:
        """The store's ``LmdbStateBackend.reading``: one read transaction for a block's reads
        of what no unwritten block wrote. Its snapshot may be older than a write that lands
        meanwhile; the block that write holds stays here until the loop, after the block's
        execution, learns it was written, so every key it wrote is still answered from here."""
        return self._committed.reading()

    def get(self, key: bytes) -> bytes | None:
        """The value at ``key`` after the last executed block, or None."""
        value = self._values.entries.get(key, _UNCACHED)
        if value is not _UNCACHED:
            return cast("bytes | None", value)
        return self._read_committed(self._values, self._committed.get, key)

    def tree_node(self, key: bytes) -> bytes | None:
        """The Merkle tree record under ``key`` after the last executed block, or None."""
        record = self._tree.entries.get(key, _UNCACHED)
        if record is not _UNCACHED:
            return cast("bytes | None", record)
        return self._read_committed(self._tree, self._committed.tree_node, key)

    def _read_committed(
        self, answers: _Answers, read: Callable[[bytes], bytes | None], key: bytes
    ) -> bytes | None:
        """A read ``answers`` missed: from the store, remembered if this is the reading
        thread (the one whose snapshot holds every block removed so far)."""
        value = read(key)
        if self._committed.reading_here():
            answers.remember(key, value)
        return value

    def scan(
        self, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) with ``start <= key < end`` after the last executed block, in key
        order (or reverse)."""
        committed = self._committed.scan(start, end, reverse=reverse)
        if not self._blocks:
            return committed
        newest: dict[bytes, bytes | None] = {}
        for block in self._blocks:  # oldest first: a later block's write replaces
            keys = block.keys
            low = bisect.bisect_left(keys, start)
            high = len(keys) if end is None else bisect.bisect_left(keys, end)
            for key in keys[low:high]:
                newest[key] = block.values[key]
        return overlaid(sorted(newest.items(), reverse=reverse), committed, reverse=reverse)


def overlaid(
    unwritten: Sequence[tuple[bytes, bytes | None]],
    committed: Iterator[tuple[bytes, bytes]],
    *,
    reverse: bool = False,
) -> Iterator[tuple[bytes, bytes]]:
    """``committed`` with ``unwritten`` (same order; None deletes) laid over it."""
    index = 0
    count = len(unwritten)
    for key, value in committed:
        while index < count and (
            unwritten[index][0] > key if reverse else unwritten[index][0] < key
        ):
            earlier, written = unwritten[index]
            index += 1
            if written is not None:
                yield earlier, written
        if index < count and unwritten[index][0] == key:
            written = unwritten[index][1]
            index += 1
            if written is not None:
                yield key, written
            continue
        yield key, value
    for key, written in unwritten[index:]:
        if written is not None:
            yield key, written
