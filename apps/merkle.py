"""The state commitment: a sparse 16-ary Merkle tree over the hashed state keys.

Theory of operation
-------------------
The committed state is a map from keys to values. Each entry is a *leaf* identified by
``key_hash = SHA-256(key)`` and carrying ``value_hash = SHA-256(value)``. The 64 nibbles of
``key_hash`` are a path from the root of a tree in which every internal node has 16 slots, one
per nibble. The tree is defined by the set of leaves alone (never by the order of the writes
that produced it), so every node that holds the same state computes the same root:

* a subtree with no leaf is an empty slot;
* a subtree with exactly one leaf is that leaf, held *in its parent's slot* (the 64 bytes
  ``key_hash || value_hash``) however deep the subtree's path is: paths are compressed, so a
  leaf sits at the shallowest depth where its key hash differs from every other one;
* a subtree with two leaves or more is an internal *node* at that path. Its record is
  ``bitmap (2 bytes) || leafmap (2 bytes) || the non-empty slots in nibble order``, where
  ``bitmap`` has bit ``0x8000 >> i`` set when slot ``i`` is non-empty and ``leafmap`` when
  that slot holds a leaf (64 bytes) rather than a child node's hash (32 bytes). Its hash is
  ``SHA-256(0x01 || record)``.

The root hash (the app hash) is the root node's hash; for a state of one entry it is
``SHA-256(0x00 || key_hash || value_hash)``, and for an empty state 32 zero bytes. The 0x00 and
0x01 prefixes keep a leaf from ever hashing like a node.

Storage. A backend keeps every node record under ``node_key(path)`` (one byte of depth, then the
path's nibbles packed two to a byte) and the root *slot* under ``ROOT_KEY`` (absent: empty
tree; 64 bytes: a lone leaf; 32 bytes: the root node's hash). ``update`` reads the records it
needs through a ``TreeReader`` and returns a ``TreeUpdate``: the new root and every record to
write or delete, which the caller persists with the state writes (the node: in the block's
LMDB write transaction). It is pure and batched: a block's writes are sorted by key hash and
applied in one descent, so a node shared by many writes is read, re-encoded and hashed once
per block.

Proofs. ``prove`` returns, for any key, the records on its path with the path's own slot left
out, and what the path ends at: an empty slot, the key's leaf (membership), or another leaf
whose key hash shares the path (non-membership). ``verify`` rebuilds the records bottom-up and
checks that they hash to the root; any altered value, key, sibling or root changes a hash on
the way up. SHA-256 collisions aside, a proof that verifies is a statement about the tree the
root commits to, because each record encodes unambiguously which slots are leaves and which
are nodes.

Chunks. ``slot_of_leaves`` builds the subtree of any nibble prefix from its leaves alone and
``root_from_slots`` computes the root from the slots of every prefix at one depth: together
they let a snapshot be checked chunk by chunk against a root (``node.snapshots``).

Cost: a write costs two SHA-256 of its key and value; a block then re-encodes and hashes each
node on the paths it touched once (about log16(state size) nodes per write, fewer where writes
share upper nodes). A proof is one record per level, each at most 4 + 15 * 64 bytes.

Two implementations of ``update``. ``update_python`` is the one described above;
``apps/_merkletree.c`` follows it step for step in C, hashing with OpenSSL's SHA-256 functions
(``apps.nativetree``). ``update`` runs the C one once it has given ``update_python``'s records
and roots on a fixed workload, and the Python one otherwise (``tree_status()`` says which):
the same records and root either way, about half the CPU in C. The C walk also lists its
records by depth as it makes them; a depth's arrive in path order (the walk takes the nibbles
in order), so the depths one after the other are the records sorted by key, with no sort.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from apps import nativetree
from apps.nativetree import NativeUpdate
from consensus.codec import CodecError, Limits, Value, decode, encode

__all__ = [
    "EMPTY_ROOT",
    "KEY_HASH_BYTES",
    "PROOF_LIMITS",
    "ROOT_KEY",
    "Leaf",
    "MemoryTree",
    "Proof",
    "ProofError",
    "ProofLevel",
    "TreeReader",
    "TreeUpdate",
    "build",
    "key_hash",
    "leaf_of",
    "nibble",
    "node_key",
    "prove",
    "root_from_slots",
    "root_hash",
    "root_of_slot",
    "slot_of_leaves",
    "tree_status",
    "update",
    "update_native",
    "update_python",
    "verify",
]

KEY_HASH_BYTES: Final = 32
# A key hash has 64 nibbles, so no path is deeper than that.
DEPTH_MAX: Final = 2 * KEY_HASH_BYTES
EMPTY_ROOT: Final = bytes(32)
# The storage key of the root slot: no node key starts with 0xff (depths are 0..63).
ROOT_KEY: Final = b"\xff"
_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"
_LEAF_BYTES: Final = 64
_HASH_BYTES: Final = 32
_HEADER_BYTES: Final = 4
_FANOUT: Final = 16
# A proof has one level per nibble of depth at most; each level's siblings are at most 15
# leaves of 64 bytes. The bound is what an honest proof can need, so decoding never allocates
# more than ~64 KiB for a proof.
PROOF_LIMITS: Final = Limits(
    total_bytes_max=DEPTH_MAX * (16 + (_FANOUT - 1) * _LEAF_BYTES) + 256,
    depth_max=4,
    str_bytes_max=1,
    bytes_max=(_FANOUT - 1) * _LEAF_BYTES,
    array_len_max=DEPTH_MAX,
    map_len_max=1,
)

_sha256 = hashlib.sha256
# Sorts (key, record) pairs and (key hash, value hash) changes by their first item alone: keys
# are distinct (``update`` refuses a key changed twice), so the order is the pairs' own, and
# comparing one bytes item costs about half of comparing tuples.
_FIRST: Final = operator.itemgetter(0)
# Precomputed pieces of node keys: the depth byte, and a byte's high nibble as a byte.
_DEPTH_BYTES: Final = tuple(bytes((depth,)) for depth in range(DEPTH_MAX))
_HIGH_NIBBLE: Final = tuple(bytes((byte & 0xF0,)) for byte in range(256))
# Set bits of a byte: a node's bitmaps are counted with two lookups, which compiled are plain
# C, where ``int.bit_count()`` is a method call through Python.
_BITS: Final = tuple(bin(byte).count("1") for byte in range(256))


def _bit_count(bits: int) -> int:
    """Set bits of a 16-bit map (``bits.bit_count()``)."""
    return _BITS[bits >> 8] + _BITS[bits & 0xFF]


# A slot: None (empty), 64 bytes (a leaf: key hash || value hash) or 32 bytes (a node's hash).
Slot = bytes | None
# One change for ``update``: (key hash, the new leaf slot or None to delete).
Leaf = bytes


class TreeReader(Protocol):
    """Where ``update`` and ``prove`` read the stored records (a backend's tree records)."""

    def tree_node(self, key: bytes) -> bytes | None:
        """The record stored under ``key`` (``node_key(...)`` or ``ROOT_KEY``), or None."""
        ...


@dataclass(frozen=True, slots=True)
class TreeUpdate:
    """What applying a write set did to the tree: the new root hash, and every record to store
    (``(key, record)``) or delete (``(key, None)``), in key order; ``changed`` holds the same
    records as a map, for readers that look them up (shared: never modify it)."""

    root: bytes
    records: tuple[tuple[bytes, bytes | None], ...]
    changed: dict[bytes, bytes | None]


class ProofError(ValueError):
    """A proof that does not prove what it is claimed to prove; the message says where."""


def key_hash(key: bytes) -> bytes:
    """SHA-256 of a state key: its path in the tree."""
    return _sha256(key).digest()


def leaf_of(key: bytes, value: bytes) -> Leaf:
    """The 64-byte leaf slot of ``key`` holding ``value``."""
    return _sha256(key).digest() + _sha256(value).digest()


def nibble(digest: bytes, depth: int) -> int:
    """Nibble ``depth`` (0 = the high half of the first byte) of ``digest``."""
    byte = digest[depth >> 1]
    return byte & 0x0F if depth & 1 else byte >> 4


def node_key(digest: bytes, depth: int) -> bytes:
    """The storage key of the node at ``depth`` on the path of ``digest`` (a key hash)."""
    half = depth >> 1
    if depth & 1:
        return _DEPTH_BYTES[depth] + digest[:half] + _HIGH_NIBBLE[digest[half]]
    return _DEPTH_BYTES[depth] + digest[:half]


def root_of_slot(slot: Slot) -> bytes:
    """The root hash of a tree whose root slot is ``slot``."""
    if slot is None:
        return EMPTY_ROOT
    if len(slot) == _LEAF_BYTES:
        return _sha256(_LEAF_PREFIX + slot).digest()
    return slot


def root_hash(reader: TreeReader) -> bytes:
    """The root hash of the tree ``reader`` holds."""
    return root_of_slot(reader.tree_node(ROOT_KEY))


# ---------------------------------------------------------------------------- node records


def _encode(children: list[Slot]) -> bytes:
    bitmap = 0
    leafmap = 0
    parts: list[bytes] = []
    bit = 0x8000
    for child in children:
        if child is not None:
            bitmap |= bit
            if len(child) == _LEAF_BYTES:
                leafmap |= bit
            parts.append(child)
        bit >>= 1
    return bytes((bitmap >> 8, bitmap & 0xFF, leafmap >> 8, leafmap & 0xFF)) + b"".join(parts)


def _decode(record: bytes) -> list[Slot]:
    bitmap = (record[0] << 8) | record[1]
    leafmap = (record[2] << 8) | record[3]
    children: list[Slot] = [None] * _FANOUT
    position = _HEADER_BYTES
    bit = 0x8000
    for index in range(_FANOUT):
        if bitmap & bit:
            size = _LEAF_BYTES if leafmap & bit else _HASH_BYTES
            children[index] = record[position : position + size]
            position += size
        bit >>= 1
    assert position == len(record), "a stored tree node is malformed"
    return children


def _finish(key: bytes, children: list[Slot], out: dict[bytes, bytes | None]) -> Slot:
    """Store the node at ``key`` with ``children`` (or remove it when the subtree now holds at
    most one leaf) and return the slot its parent holds for it."""
    present = [child for child in children if child is not None]
    if not present:
        out[key] = None
        return None
    if len(present) == 1 and len(present[0]) == _LEAF_BYTES:
        out[key] = None
        return present[0]
    record = _encode(children)
    out[key] = record
    return _sha256(_NODE_PREFIX + record).digest()


# ---------------------------------------------------------------------------- building


def _build(depth: int, leaves: Sequence[Leaf], out: dict[bytes, bytes | None]) -> Slot:
    """The slot of the subtree at ``depth`` holding ``leaves`` (sorted, distinct key hashes,
    all on one path down to ``depth``); new node records go to ``out``."""
    if not leaves:
        return None
    if len(leaves) == 1:
        return leaves[0]
    assert depth < DEPTH_MAX, "two leaves with one key hash"
    children: list[Slot] = [None] * _FANOUT
    start = 0
    count = len(leaves)
    byte_index = depth >> 1
    odd = depth & 1
    while start < count:
        byte = leaves[start][byte_index]
        index = byte & 0x0F if odd else byte >> 4
        end = start + 1
        while end < count:
            byte = leaves[end][byte_index]
            if (byte & 0x0F if odd else byte >> 4) != index:
                break
            end += 1
        children[index] = (
            leaves[start] if end - start == 1 else _build(depth + 1, leaves[start:end], out)
        )
        start = end
    record = _encode(children)
    out[node_key(leaves[0], depth)] = record
    return _sha256(_NODE_PREFIX + record).digest()


def build(leaves: Iterable[Leaf]) -> TreeUpdate:
    """The whole tree of ``leaves`` (any order, distinct key hashes): root and every record."""
    ordered = sorted(leaves)
    for first, second in itertools.pairwise(ordered):
        if first[:KEY_HASH_BYTES] == second[:KEY_HASH_BYTES]:
            raise ValueError("two leaves share a key hash")
    out: dict[bytes, bytes | None] = {}
    slot = _build(0, ordered, out)
    if slot is not None:
        out[ROOT_KEY] = slot
    return TreeUpdate(root_of_slot(slot), tuple(sorted(out.items(), key=_FIRST)), out)


def slot_of_leaves(depth: int, leaves: Sequence[Leaf]) -> tuple[Slot, dict[bytes, bytes]]:
    """The slot of the subtree at ``depth`` whose leaves are ``leaves`` (sorted by key hash,
    distinct, all sharing their first ``depth`` nibbles), and its node records."""
    out: dict[bytes, bytes | None] = {}
    slot = _build(depth, leaves, out)
    return slot, {key: record for key, record in out.items() if record is not None}


def root_from_slots(
    depth: int, slots: Sequence[tuple[int, bytes]]
) -> tuple[bytes, dict[bytes, bytes]]:
    """The root hash, and the node records above ``depth``, of the tree whose subtrees at
    ``depth`` have the given non-empty slots: ``(prefix index, slot)`` in increasing prefix
    order, the prefix index being the subtree's first ``depth`` nibbles as a number.

    Raises ``ValueError`` for prefixes out of order or out of range, or a malformed slot."""
    previous = -1
    for index, slot in slots:
        if not previous < index < _FANOUT**depth:
            raise ValueError(f"subtree prefix {index} out of order or beyond depth {depth}")
        if len(slot) not in (_LEAF_BYTES, _HASH_BYTES):
            raise ValueError(f"subtree slot {index} is {len(slot)} bytes, not 32 or 64")
        previous = index
    out: dict[bytes, bytes | None] = {}
    root_slot = _upper(0, depth, 0, list(slots), out)
    if root_slot is not None:
        out[ROOT_KEY] = root_slot
    return root_of_slot(root_slot), {
        key: record for key, record in out.items() if record is not None
    }


def _upper(
    depth: int,
    bottom: int,
    prefix: int,
    slots: list[tuple[int, bytes]],
    out: dict[bytes, bytes | None],
) -> Slot:
    """The slot at ``depth`` for ``prefix`` (its first ``depth`` nibbles as a number) built from
    the slots at depth ``bottom`` below it."""
    if depth == bottom:
        assert len(slots) <= 1
        return slots[0][1] if slots else None
    shift = 4 * (bottom - depth - 1)
    children: list[Slot] = [None] * _FANOUT
    start = 0
    while start < len(slots):
        index = (slots[start][0] >> shift) & 0x0F
        end = start + 1
        while end < len(slots) and (slots[end][0] >> shift) & 0x0F == index:
            end += 1
        children[index] = _upper(depth + 1, bottom, (prefix << 4) | index, slots[start:end], out)
        start = end
    # The node key wants the path as the leading nibbles of a key hash.
    path = (prefix << (4 * (DEPTH_MAX - depth))).to_bytes(KEY_HASH_BYTES, "big")
    return _finish(node_key(path, depth), children, out)


# ---------------------------------------------------------------------------- updating


def update(reader: TreeReader, writes: Iterable[tuple[bytes, bytes | None]]) -> TreeUpdate:
    """Apply ``writes`` ((key, value), value None deleting; distinct keys, in any order: the
    update orders them by their keys' hashes) to the tree ``reader`` holds; nothing is
    written, the result says what to store.

    With the extension loaded (``tree_status()`` is ``"native"``) the update runs in C
    (``apps/_merkletree.c``), else in Python (``update_python``): the same records and root."""
    native = _native_update()
    if native is None:
        return update_python(reader, writes)
    return update_native(native, reader, writes)


def update_native(
    native: NativeUpdate, reader: TreeReader, writes: Iterable[tuple[bytes, bytes | None]]
) -> TreeUpdate:
    """``update`` by the extension's ``native`` update."""
    old_root = reader.tree_node(ROOT_KEY)
    slot, out, ordered = native(reader.tree_node, old_root, list(writes))
    if slot != old_root:
        out[ROOT_KEY] = slot
        ordered.append((ROOT_KEY, slot))  # the last key: node keys start with a depth < 64
    return TreeUpdate(root_of_slot(slot), tuple(ordered), out)


def update_python(reader: TreeReader, writes: Iterable[tuple[bytes, bytes | None]]) -> TreeUpdate:
    """``update`` in Python."""
    changes = sorted(
        [
            (_sha256(key).digest(), None if value is None else _sha256(value).digest())
            for key, value in writes
        ],
        key=_FIRST,
    )
    # Sorted, so a key written twice has its two changes side by side.
    for index in range(1, len(changes)):
        if changes[index][0] == changes[index - 1][0]:
            raise ValueError("a write set changes one key twice")
    old_root = reader.tree_node(ROOT_KEY)
    out: dict[bytes, bytes | None] = {}
    if not changes:
        return TreeUpdate(root_of_slot(old_root), (), out)
    slot = _apply(reader, 0, old_root, changes, 0, len(changes), out)
    if slot != old_root:
        out[ROOT_KEY] = slot
    return TreeUpdate(root_of_slot(slot), tuple(sorted(out.items(), key=_FIRST)), out)


# Filled at first use with what was loaded, its update dropped if it failed the check against
# the Python one (holding it keeps the hash functions' library loaded).
_LOADED: Final[list[nativetree.Loaded]] = []


def _loaded() -> nativetree.Loaded:
    """The extension as loaded and checked at first use (``update`` None: the Python update
    runs)."""
    if not _LOADED:
        loaded = nativetree.load()
        if loaded.update is not None and not _same_as_python(loaded.update):
            loaded = nativetree.Loaded(
                None, "python (the extension's update differs from the Python one)"
            )
        _LOADED.append(loaded)
    return _LOADED[0]


def _native_update() -> NativeUpdate | None:
    """The extension's update when it is loaded and gives what ``update_python`` gives on a
    fixed workload (checked at first use), else None."""
    return _loaded().update


def tree_status() -> str:
    """``"native"`` when ``update`` runs in C, else ``"python (why)"``."""
    return _loaded().status


def _same_as_python(native: NativeUpdate) -> bool:
    """Whether ``native`` gives ``update_python``'s records and roots over a workload that
    builds a tree, splits and merges leaves, deletes present and absent keys and empties it."""
    ours = MemoryTree()
    theirs = MemoryTree()
    keys = [b"self-test %d" % number for number in range(400)]
    batches: list[list[tuple[bytes, bytes | None]]] = [
        [(key, key) for key in keys],
        [(key, None if number % 3 else b"changed") for number, key in enumerate(keys)],
        [(key, b"back") for key in keys[::2]] + [(b"absent", None)],
        [(key, None) for key in keys],
    ]
    for writes in batches:
        try:
            expected = update_python(ours, writes)
            got = update_native(native, theirs, writes)
        except (AssertionError, ValueError, TypeError):
            return False
        if (got.root, got.records) != (expected.root, expected.records):
            return False
        ours.apply(expected)
        theirs.apply(got)
    return True


def _apply(
    reader: TreeReader,
    depth: int,
    slot: Slot,
    changes: list[tuple[bytes, bytes | None]],
    low: int,
    high: int,
    out: dict[bytes, bytes | None],
) -> Slot:
    """The new slot at ``depth`` on the path shared by ``changes[low:high]``, given the old
    one."""
    if slot is not None and len(slot) == _HASH_BYTES:
        if high - low == 1:
            digest, value_hash = changes[low]
            return _descend(reader, depth, digest, value_hash, out)
        return _apply_node(reader, depth, changes, low, high, out)
    if high - low == 1:
        # One change to an empty slot or a lone leaf (new keys mostly land so): the general
        # listing below, without the list.
        digest, value_hash = changes[low]
        if slot is None or slot[:KEY_HASH_BYTES] == digest:
            return None if value_hash is None else digest + value_hash
        if value_hash is None:
            return slot
        return _build(depth, sorted((slot, digest + value_hash)), out)
    # An empty slot or a lone leaf: the subtree's new leaves are few enough to list.
    leaves: dict[bytes, bytes] = {}
    if slot is not None:
        leaves[slot[:KEY_HASH_BYTES]] = slot
    for index in range(low, high):
        digest, value_hash = changes[index]
        if value_hash is None:
            leaves.pop(digest, None)
        else:
            leaves[digest] = digest + value_hash
    if len(leaves) <= 1:
        return next(iter(leaves.values()), None)
    return _build(depth, sorted(leaves.values()), out)


def _apply_node(
    reader: TreeReader,
    depth: int,
    changes: list[tuple[bytes, bytes | None]],
    low: int,
    high: int,
    out: dict[bytes, bytes | None],
) -> Slot:
    """``_apply`` for a stored node: the changed slots are spliced into its record (most
    blocks change one or two of a node's sixteen slots)."""
    key = node_key(changes[low][0], depth)
    record = reader.tree_node(key)
    assert record is not None, f"tree node {key.hex()} is missing"
    bitmap = (record[0] << 8) | record[1]
    leafmap = (record[2] << 8) | record[3]
    byte_index = depth >> 1
    odd = depth & 1
    # The changed slots' groups, found in increasing nibble order...
    groups: list[tuple[int, int, int]] = []
    start = low
    while start < high:
        byte = changes[start][0][byte_index]
        index = byte & 0x0F if odd else byte >> 4
        end = start + 1
        while end < high:
            byte = changes[end][0][byte_index]
            if (byte & 0x0F if odd else byte >> 4) != index:
                break
            end += 1
        groups.append((index, start, end))
        start = end
    # ...are applied from the last to the first, and the body is joined once: the runs of
    # unchanged slots between them are sliced from the old record (at its own offsets).
    old_bitmap = bitmap
    old_leafmap = leafmap
    pieces: list[bytes] = []
    run_end = len(record)
    for index, start, end in reversed(groups):
        bit = 0x8000 >> index
        before = 0xFFFF & ~((bit << 1) - 1)
        offset = _HEADER_BYTES + _HASH_BYTES * (
            _bit_count(old_bitmap & before) + _bit_count(old_leafmap & before)
        )
        if old_bitmap & bit:
            size = _LEAF_BYTES if old_leafmap & bit else _HASH_BYTES
            old: Slot = record[offset : offset + size]
        else:
            size = 0
            old = None
        new = _apply(reader, depth + 1, old, changes, start, end, out)
        pieces.append(record[offset + size : run_end])
        run_end = offset
        if new is None:
            bitmap &= ~bit
            leafmap &= ~bit
        else:
            pieces.append(new)
            bitmap |= bit
            if len(new) == _LEAF_BYTES:
                leafmap |= bit
            else:
                leafmap &= ~bit
    pieces.append(record[_HEADER_BYTES:run_end])
    pieces.reverse()
    return _store_node(key, bitmap, leafmap, b"".join(pieces), out)


def _store_node(
    key: bytes, bitmap: int, leafmap: int, body: bytes, out: dict[bytes, bytes | None]
) -> Slot:
    """Store the node at ``key`` with its new bitmaps and slots (``body``), or remove it when
    it now holds at most one leaf; return the slot its parent holds for it."""
    count = _bit_count(bitmap)
    if count == 0:
        out[key] = None
        return None
    if count == 1 and leafmap == bitmap:
        out[key] = None
        return body
    record = bytes((bitmap >> 8, bitmap & 0xFF, leafmap >> 8, leafmap & 0xFF)) + body
    out[key] = record
    return _sha256(_NODE_PREFIX + record).digest()


def _descend(
    reader: TreeReader,
    depth: int,
    digest: bytes,
    value_hash: bytes | None,
    out: dict[bytes, bytes | None],
) -> Slot:
    """``_apply`` for one change (``digest``'s new value hash, or None to delete) below the
    stored node at ``depth`` (the common case below the levels that many writes share): the
    slot it ends in is found down the path, and the new slot is spliced into each record on
    the way back up. A record whose bitmaps stay as they were (a value changed, a child
    rehashed: most records) is rewritten in one splice, its header kept."""
    key = node_key(digest, depth)
    record = reader.tree_node(key)
    assert record is not None, f"tree node {key.hex()} is missing"
    old_bitmap = bitmap = (record[0] << 8) | record[1]
    old_leafmap = leafmap = (record[2] << 8) | record[3]
    byte = digest[depth >> 1]
    bit = 0x8000 >> (byte & 0x0F if depth & 1 else byte >> 4)
    before = 0xFFFF & ~((bit << 1) - 1)
    offset = _HEADER_BYTES + _HASH_BYTES * (
        _bit_count(bitmap & before) + _bit_count(leafmap & before)
    )
    new: Slot
    if not bitmap & bit:
        size = 0
        new = None if value_hash is None else digest + value_hash
    elif leafmap & bit:
        size = _LEAF_BYTES
        slot = record[offset : offset + _LEAF_BYTES]
        if slot[:KEY_HASH_BYTES] == digest:
            new = None if value_hash is None else digest + value_hash
        elif value_hash is None:
            new = slot
        else:
            new = _build(depth + 1, sorted((slot, digest + value_hash)), out)
    else:
        size = _HASH_BYTES
        new = _descend(reader, depth + 1, digest, value_hash, out)
    if new is None:
        bitmap &= ~bit
        leafmap &= ~bit
        return _store_node(
            key, bitmap, leafmap, record[_HEADER_BYTES:offset] + record[offset + size :], out
        )
    bitmap |= bit
    if len(new) == _LEAF_BYTES:
        leafmap |= bit
    else:
        leafmap &= ~bit
    if bitmap == old_bitmap and leafmap == old_leafmap:
        # The same slots, one of them changed: the record keeps its header.
        record = record[:offset] + new + record[offset + size :]
        out[key] = record
        return _sha256(_NODE_PREFIX + record).digest()
    return _store_node(
        key, bitmap, leafmap, record[_HEADER_BYTES:offset] + new + record[offset + size :], out
    )


class MemoryTree:
    """Tree records in a dict (``TreeReader``), for the in-memory state backend."""

    __slots__ = ("records", "root")

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self.root = EMPTY_ROOT

    def tree_node(self, key: bytes) -> bytes | None:
        """The record under ``key``, or None."""
        return self.records.get(key)

    def apply(self, tree_update: TreeUpdate) -> None:
        """Store a ``TreeUpdate``'s records."""
        records = self.records
        for key, record in tree_update.records:
            if record is None:
                records.pop(key, None)
            else:
                records[key] = record
        self.root = tree_update.root


# ---------------------------------------------------------------------------- proofs


@dataclass(frozen=True, slots=True)
class ProofLevel:
    """One node on a key's path: its bitmaps and its slots other than the path's own, in order
    (concatenated: 64 bytes per leaf, 32 per node)."""

    bitmap: int
    leafmap: int
    siblings: bytes


@dataclass(frozen=True, slots=True)
class Proof:
    """A key's path from the root: ``levels`` (root first) and ``terminal``, what the path's
    slot in the last level holds (a 64-byte leaf, or None for an empty slot). For a tree of at
    most one leaf there are no levels and ``terminal`` is the root slot."""

    levels: tuple[ProofLevel, ...]
    terminal: bytes | None

    def encode(self) -> bytes:
        """Canonical bytes."""
        value: Value = (
            tuple((level.bitmap, level.leafmap, level.siblings) for level in self.levels),
            self.terminal,
        )
        return encode(value, PROOF_LIMITS)

    @classmethod
    def decode(cls, data: bytes) -> Proof:
        """Parse proof bytes; ``ProofError`` when malformed (the content is checked by
        ``verify``)."""
        try:
            value = decode(data, PROOF_LIMITS)
        except CodecError as error:
            raise ProofError(f"proof does not decode: {error}") from None
        if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], tuple)):
            raise ProofError("a proof is (levels, terminal)")
        raw_levels, terminal = value
        assert isinstance(raw_levels, tuple)
        if terminal is not None and not isinstance(terminal, bytes):
            raise ProofError("the proof's terminal must be bytes or nil")
        levels: list[ProofLevel] = []
        for raw in raw_levels:
            if not (
                isinstance(raw, tuple)
                and len(raw) == 3
                and all(isinstance(item, int) and not isinstance(item, bool) for item in raw[:2])
                and isinstance(raw[2], bytes)
            ):
                raise ProofError("a proof level is (bitmap, leafmap, siblings)")
            bitmap, leafmap, siblings = raw
            assert isinstance(bitmap, int)
            assert isinstance(leafmap, int)
            assert isinstance(siblings, bytes)
            levels.append(ProofLevel(bitmap, leafmap, siblings))
        return cls(tuple(levels), terminal)

    @property
    def size_bytes(self) -> int:
        """Encoded size."""
        return len(self.encode())


def prove(reader: TreeReader, key: bytes) -> Proof:
    """The proof of ``key``'s presence or absence in the tree ``reader`` holds."""
    digest = _sha256(key).digest()
    slot = reader.tree_node(ROOT_KEY)
    levels: list[ProofLevel] = []
    depth = 0
    while slot is not None and len(slot) == _HASH_BYTES:
        record = reader.tree_node(node_key(digest, depth))
        assert record is not None, "tree node on a proof path is missing"
        children = _decode(record)
        index = nibble(digest, depth)
        slot = children[index]
        children[index] = None
        bitmap = (record[0] << 8) | record[1]
        leafmap = (record[2] << 8) | record[3]
        siblings = b"".join(child for child in children if child is not None)
        levels.append(ProofLevel(bitmap, leafmap, siblings))
        depth += 1
    return Proof(tuple(levels), slot)


def verify(root: bytes, key: bytes, value: bytes | None, proof: Proof) -> None:
    """Check that the tree with root hash ``root`` maps ``key`` to ``value`` (None: ``key`` is
    absent); raise ``ProofError`` naming the first thing that does not hold."""
    digest = _sha256(key).digest()
    depth_count = len(proof.levels)
    if depth_count > DEPTH_MAX:
        raise ProofError(f"a proof has at most {DEPTH_MAX} levels, this one {depth_count}")
    terminal = proof.terminal
    if terminal is not None and len(terminal) != _LEAF_BYTES:
        raise ProofError("the proof's terminal slot is not a 64-byte leaf")
    if value is not None:
        if terminal is None or terminal != digest + _sha256(value).digest():
            raise ProofError("the path does not end at this key's leaf with this value")
    elif terminal is not None:
        if terminal[:KEY_HASH_BYTES] == digest:
            raise ProofError("the path ends at this key's leaf: the key is present")
        for depth in range(depth_count):
            if nibble(terminal, depth) != nibble(digest, depth):
                raise ProofError("the leaf ending the path is not on the key's path")
    current: Slot = terminal
    for depth in range(depth_count - 1, -1, -1):
        level = proof.levels[depth]
        current = _hash_level(level, nibble(digest, depth), current, depth == depth_count - 1)
    computed = root_of_slot(current)
    if computed != root:
        raise ProofError(f"the proof hashes to {computed.hex()}, not to the root {root.hex()}")


def _hash_level(level: ProofLevel, index: int, below: Slot, last: bool) -> bytes:
    bitmap, leafmap = level.bitmap, level.leafmap
    if not (0 <= bitmap < 1 << 16 and 0 <= leafmap < 1 << 16) or leafmap & ~bitmap:
        raise ProofError("a proof level's bitmaps are malformed")
    bit = 0x8000 >> index
    if below is None:
        if bitmap & bit:
            raise ProofError("a proof level claims the key's empty slot is occupied")
    elif not bitmap & bit:
        raise ProofError("a proof level leaves the key's slot empty")
    elif bool(leafmap & bit) != (len(below) == _LEAF_BYTES):
        raise ProofError("a proof level marks the key's slot as the wrong kind")
    if not last and below is not None and len(below) != _HASH_BYTES:
        raise ProofError("a leaf sits above the end of the path")
    children: list[Slot] = [None] * _FANOUT
    siblings = level.siblings
    position = 0
    flag = 0x8000
    for child in range(_FANOUT):
        if child == index:
            children[child] = below
        elif bitmap & flag:
            size = _LEAF_BYTES if leafmap & flag else _HASH_BYTES
            if position + size > len(siblings):
                raise ProofError("a proof level has fewer siblings than its bitmap")
            children[child] = siblings[position : position + size]
            position += size
        flag >>= 1
    if position != len(siblings):
        raise ProofError("a proof level has more siblings than its bitmap")
    present = [child for child in children if child is not None]
    if len(present) < 2 and not (present and len(present[0]) == _HASH_BYTES):
        raise ProofError("a proof level is a node no tree holds (fewer than two leaves)")
    return _sha256(_NODE_PREFIX + _encode(children)).digest()
