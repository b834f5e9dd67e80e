"""Deterministic application state: the backend protocol, the per-block overlay, the app hash.

Theory of operation
-------------------
Committed state is a sorted map from bytes to bytes held by a ``StateBackend`` (an LMDB
database on a node, ``MemoryBackend`` in the simulator and in tests). The backend is only
read while a block executes; the host collects every change in a ``StateOverlay`` and hands
the caller a sorted *write set* to persist (atomically with the block) once the block is done.

The overlay is a stack of layers over the backend. The bottom layer holds the block's writes;
the host pushes a layer (a *savepoint*) for each transaction and for each nested cross-app
call, then either folds it into the layer below (success) or drops it (rejection). Reads look
through the stack top-down and then at the backend, so a transaction sees the block's earlier
writes and its own; scans merge the layers and the backend in key order, hiding deletions.
The backend does not change while an overlay over it is in use, so the overlay remembers what
each key read from the backend held (absence included): a record that many transactions of a
block read and none writes (a currency, an account's controls) costs one backend read.

Keys are namespaced per app: ``app name || 0x00 || key``. App names match
``[a-z][a-z0-9_]*`` so no name is a prefix of another's namespace, and the host keeps its own
records (nonces, last block) under ``_host``, which no app can be called.

The app hash is the root of a Merkle tree over the whole state (``apps.merkle``): it commits to
every key and value, so one key's value can be proven against it, and a copy of the state can be
checked against it without replaying the chain. The backend keeps the tree's records next to the
state; ``app_hash_of`` applies a block's write set to them and returns the new root with the
records to store, which the caller persists together with the write set.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Final, Protocol, TypeAlias, cast

from apps.merkle import EMPTY_ROOT, MemoryTree, TreeUpdate, update

__all__ = [
    "GENESIS_PREVIOUS_APP_HASH",
    "HOST_NAMESPACE",
    "MemoryBackend",
    "NamespacedState",
    "StateBackend",
    "StateOverlay",
    "Write",
    "WriteSet",
    "app_hash_of",
    "namespace_prefix",
    "reading",
]

# A write: the key and its new value, or None for a deletion.
Write: TypeAlias = tuple[bytes, bytes | None]
# A block's writes in strictly increasing key order.
WriteSet: TypeAlias = tuple[Write, ...]

# The app hash of the empty state, before genesis.
GENESIS_PREVIOUS_APP_HASH: Final = EMPTY_ROOT
HOST_NAMESPACE: Final = "_host"
_SEPARATOR: Final = b"\x00"


def namespace_prefix(app: str) -> bytes:
    """The key prefix of ``app``'s namespace."""
    return app.encode("ascii") + _SEPARATOR


def _namespace_end(app: str) -> bytes:
    # The first key after every key with this namespace's prefix.
    return app.encode("ascii") + b"\x01"


def app_hash_of(backend: StateBackend, writes: Iterable[Write]) -> TreeUpdate:
    """The app hash after applying ``writes`` (distinct keys, any order) to the state
    ``backend`` holds, with the tree records to store alongside the writes
    (``TreeUpdate.root`` is the app hash)."""
    return update(backend, writes)


class StateBackend(Protocol):
    """Committed state: a sorted bytes-to-bytes map, read only while blocks execute."""

    def get(self, key: bytes) -> bytes | None:
        """The value at ``key``, or None."""
        ...

    def scan(
        self, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) with ``start <= key < end`` (``end`` None: no bound) in key order."""
        ...

    def tree_node(self, key: bytes) -> bytes | None:
        """The state's Merkle tree record under ``key`` (``apps.merkle``), or None."""
        ...


class BatchedReads(Protocol):
    """A backend that can serve a run of reads faster together (the node's store: from one
    read transaction instead of one each); ``reading`` covers the run."""

    def reading(self) -> AbstractContextManager[None]:
        """A context in which this thread's reads see one committed state, read together."""
        ...


def reading(backend: StateBackend) -> AbstractContextManager[None]:
    """``backend.reading()`` when the backend batches reads, else a context that does
    nothing: the reads a block's execution makes (state and tree records) go in it."""
    # (``hasattr``, not a runtime-checkable protocol: the compiled module cannot have one.)
    if hasattr(backend, "reading"):
        return cast(BatchedReads, backend).reading()
    return nullcontext()


class _Layer:
    """Writes (a value or a None tombstone); the keys are sorted when a range scan or the
    write set needs them (most layers are written and folded without ever being scanned)."""

    __slots__ = ("_keys", "_sorted", "values")

    def __init__(self) -> None:
        self.values: dict[bytes, bytes | None] = {}
        self._keys: list[bytes] = []
        self._sorted = True

    def set(self, key: bytes, value: bytes | None) -> None:
        if key not in self.values:
            keys = self._keys
            if self._sorted and keys and key < keys[-1]:
                self._sorted = False
            keys.append(key)
        self.values[key] = value

    def update(self, writes: dict[bytes, bytes | None]) -> None:
        """``set`` every write of ``writes`` (in its order)."""
        values = self.values
        keys = self._keys
        in_order = self._sorted
        for key, value in writes.items():
            if key not in values:
                if in_order and keys and key < keys[-1]:
                    in_order = False
                keys.append(key)
            values[key] = value
        self._sorted = in_order

    @property
    def keys(self) -> list[bytes]:
        """Every key of the layer, in order."""
        if not self._sorted:
            self._keys.sort()
            self._sorted = True
        return self._keys

    def range(self, start: bytes, end: bytes | None) -> list[Write]:
        # A snapshot: callers may write while they iterate a scan.
        keys = self.keys
        low = bisect.bisect_left(keys, start)
        high = len(keys) if end is None else bisect.bisect_left(keys, end)
        return [(key, self.values[key]) for key in keys[low:high]]

    def sorted_items(self) -> WriteSet:
        return tuple((key, self.values[key]) for key in self.keys)


class MemoryBackend:
    """An in-memory ``StateBackend`` for the simulator and tests (pure, sorted)."""

    def __init__(self, items: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self._layer = _Layer()
        self._tree = MemoryTree()
        self.apply(tuple(sorted(dict(items).items())))

    def get(self, key: bytes) -> bytes | None:
        """The value at ``key``, or None."""
        return self._layer.values.get(key)

    def tree_node(self, key: bytes) -> bytes | None:
        """The Merkle tree record under ``key``, or None."""
        return self._tree.records.get(key)

    @property
    def app_hash(self) -> bytes:
        """The root of the state's Merkle tree."""
        return self._tree.root

    def tree_records(self) -> list[tuple[bytes, bytes]]:
        """Every Merkle tree record (key, record), in key order."""
        return sorted(self._tree.records.items())

    def scan(
        self, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) with ``start <= key < end`` in key order (or reverse)."""
        items = self._layer.range(start, end)
        if reverse:
            items.reverse()
        for key, value in items:
            assert value is not None
            yield key, value

    def apply(self, writes: WriteSet, tree: TreeUpdate | None = None) -> None:
        """Persist a block's write set and its tree records (what the node's store does inside
        its commit). ``tree`` is ``app_hash_of(self, writes)``, computed here when not given."""
        self._tree.apply(app_hash_of(self, writes) if tree is None else tree)
        for key, value in writes:
            if value is None:
                if key in self._layer.values:
                    del self._layer.values[key]
                    keys = self._layer.keys
                    keys.pop(bisect.bisect_left(keys, key))
            else:
                self._layer.set(key, value)

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) in key order."""
        return list(self.scan())

    def __len__(self) -> int:
        return len(self._layer.values)


class StateOverlay:
    """Uncommitted writes of one block over a backend, with nested savepoints.

    ``watch`` (a key prefix) makes ``watched_changes`` count every write and deletion under
    that prefix, and every rollback: while the count stays the same, nothing visible under
    the prefix has changed, so answers derived from it (the host's per-block memo of
    membership answers) are still valid."""

    def __init__(self, backend: StateBackend, *, watch: bytes | None = None) -> None:
        self._backend = backend
        self._layers: list[_Layer] = [_Layer()]
        self._watch = watch
        self.watched_changes = 0
        # What each key read from the backend held (None: absent). Bounded by the reads of one
        # block (or check): the overlay lives no longer than that.
        self._backend_reads: dict[bytes, bytes | None] = {}

    @property
    def depth(self) -> int:
        """Open savepoints (0: only the block layer)."""
        return len(self._layers) - 1

    def savepoint(self) -> None:
        """Open a layer; later writes can be folded in (``release``) or dropped (``rollback``)."""
        self._layers.append(_Layer())

    def release(self) -> None:
        """Keep the top savepoint's writes: fold them into the layer below."""
        assert len(self._layers) > 1, "no savepoint to release"
        top = self._layers.pop()
        self._layers[-1].update(top.values)

    def rollback(self) -> None:
        """Discard every write since the top savepoint."""
        assert len(self._layers) > 1, "no savepoint to roll back"
        self._layers.pop()
        self.watched_changes += 1

    def get(self, key: bytes) -> bytes | None:
        """The value visible at ``key``: the newest layer that wrote it, else the backend."""
        for layer in reversed(self._layers):
            values = layer.values
            if key in values:
                return values[key]
        reads = self._backend_reads
        if key in reads:
            return reads[key]
        value = reads[key] = self._backend.get(key)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        """Write ``value`` at ``key`` in the top layer."""
        assert isinstance(key, bytes), "state keys are bytes"
        assert isinstance(value, bytes), "state values are bytes"
        watch = self._watch
        if watch is not None and key.startswith(watch):
            self.watched_changes += 1
        self._layers[-1].set(key, value)

    def delete(self, key: bytes) -> None:
        """Delete ``key`` (a tombstone in the top layer)."""
        assert isinstance(key, bytes), "state keys are bytes"
        if self._watch is not None and key.startswith(self._watch):
            self.watched_changes += 1
        self._layers[-1].set(key, None)

    def scan(
        self, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Visible (key, value) with ``start <= key < end`` in key order (or reverse)."""
        # Each source yields (key, rank, value); rank 0 is the newest layer, so for equal keys
        # the heap yields the newest version first and older versions are skipped.
        sources: list[Iterator[tuple[bytes, int, bytes | None]]] = []
        count = len(self._layers)
        for position, layer in enumerate(self._layers):
            rank = count - position
            items = layer.range(start, end)
            if reverse:
                items.reverse()
            sources.append(_ranked(items, rank))
        backend_rank = count + 1
        sources.append(_ranked(self._backend.scan(start, end, reverse=reverse), backend_rank))
        if reverse:
            # Descending keys, but still the newest (lowest rank) first among equal keys.
            merged = heapq.merge(*sources, key=lambda item: (_Descending(item[0]), item[1]))
        else:
            merged = heapq.merge(*sources, key=lambda item: (item[0], item[1]))
        previous: bytes | None = None
        for key, _, value in merged:
            if key == previous:
                continue
            previous = key
            if value is not None:
                yield key, value

    def writes(self) -> WriteSet:
        """The block's write set in key order (all savepoints must be closed)."""
        assert len(self._layers) == 1, "savepoints still open"
        return self._layers[0].sorted_items()

    def write_map(self) -> dict[bytes, bytes | None]:
        """The block's writes as a map (all savepoints must be closed): the overlay's own, so
        the caller must not modify it, and the overlay must take no more writes."""
        assert len(self._layers) == 1, "savepoints still open"
        return self._layers[0].values


def _ranked(
    items: Iterable[tuple[bytes, bytes | None]], rank: int
) -> Iterator[tuple[bytes, int, bytes | None]]:
    for key, value in items:
        yield key, rank, value


class _Descending:
    """Inverts byte-string order, for reverse merges."""

    __slots__ = ("key",)

    def __init__(self, key: bytes) -> None:
        self.key = key

    def __lt__(self, other: _Descending) -> bool:
        return self.key > other.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


class NamespacedState:
    """One app's view of an overlay: keys are prefixed, scans stay inside the namespace.

    Implements ``AppState``. ``writable=False`` turns writes into an assertion failure (used
    for queries); ``check`` contexts get a writable view over a throwaway savepoint instead.
    """

    __slots__ = ("_end", "_overlay", "_prefix", "_target")

    def __init__(self, overlay: StateOverlay | StateBackend, app: str, *, writable: bool) -> None:
        self._overlay = overlay
        self._prefix = namespace_prefix(app)
        self._end = _namespace_end(app)
        # The overlay writes go to (None: this view is read-only).
        self._target = overlay if writable and isinstance(overlay, StateOverlay) else None

    def get(self, key: bytes) -> bytes | None:
        """The value at ``key`` in this namespace, or None."""
        return self._overlay.get(self._prefix + _check_key(key))

    def scan(
        self, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) with ``start <= key < end`` in this namespace, in key order."""
        low = self._prefix + _check_key(start)
        high = self._end if end is None else self._prefix + _check_key(end)
        size = len(self._prefix)
        for key, value in self._overlay.scan(low, high, reverse=reverse):
            yield key[size:], value

    def put(self, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value`` in this namespace."""
        if not isinstance(value, bytes):
            raise TypeError("state values are bytes")
        overlay = self._target
        if overlay is None:
            raise PermissionError("this state view is read-only")
        overlay.put(self._prefix + _check_key(key), value)

    def delete(self, key: bytes) -> None:
        """Remove ``key`` from this namespace."""
        overlay = self._target
        if overlay is None:
            raise PermissionError("this state view is read-only")
        overlay.delete(self._prefix + _check_key(key))


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes):
        raise TypeError("state keys are bytes")
    return key


def sorted_unique(writes: Sequence[Write]) -> bool:
    """True when ``writes`` is in strictly increasing key order (a valid write set)."""
    return all(writes[i][0] < writes[i + 1][0] for i in range(len(writes) - 1))
