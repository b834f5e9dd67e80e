"""State snapshots: taken every ``[statesync] snapshot_interval`` heights, kept on disk, served
to peers in chunks that each verify on their own against a certified app hash.

Theory of operation
-------------------
The app hash is the root of the state's Merkle tree (``apps.merkle``): a 16-ary tree over the
SHA-256 of the state keys. A snapshot of the state after height h cuts that tree at one depth
``d``: chunk ``p`` holds every (key, value) whose key hash starts with the ``d`` nibbles of
``p``, sorted by key hash. The *manifest* lists, for every non-empty chunk, its prefix, the slot
its subtree has in the tree (a node hash, or the lone leaf), its entry count and size.

A node that receives a snapshot trusts nothing in it:

1. the app hash comes from a certified header (block h+1, whose commit certificate verifies
   against the genesis validators; ``node.statesync`` checks that);
2. the manifest verifies when the tree above depth ``d`` built from its slots has that root
   (``apps.merkle.root_from_slots``): no other list of slots has it;
3. each chunk verifies on its own when its entries are on its prefix, sorted, distinct, as many
   as the manifest says, and rebuild exactly the manifest's slot (``verify_chunk``). A chunk
   that does not is the sender's lie: it is refetched from another peer.

So a snapshot that installs completely holds exactly the certified state, with the tree records
the node needs (every chunk's subtree, plus the upper nodes from the manifest).

Files: ``<home>/snapshots/<height>/manifest`` (canonical encoding) and ``chunk-<prefix>`` (a
msgpack array of [key, value] pairs). A snapshot is written under a temporary name and renamed
when complete, so a directory named by a height is always whole. The newest
``snapshot_retention`` are kept; one marked ``pinned`` (the snapshot a state-synced node
started from: the audit replays from it) is never removed.

Serving (``SnapshotServer``) answers the state sync requests of the p2p request/response
channel: the snapshots on offer, a manifest, a chunk, a block with its certificate. Each peer
has a byte budget (a token bucket refilled at ``serve_bytes_per_second``): a peer that asks
faster is paced, and answered ``busy`` when it would wait longer than
``SERVE_WAIT_SECONDS_MAX``. At most ``SERVE_READS_MAX`` chunk files are read at once.

Cost: exporting reads the state once per pass (one pass per ``EXPORT_MEMORY_BYTES`` of state)
in one long read transaction and hashes every key; the slots come from the stored tree, so the
export never rebuilds it. Chunks average ``CHUNK_ENTRIES_TARGET`` entries.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgpack
import trio

from apps.merkle import (
    KEY_HASH_BYTES,
    ROOT_KEY,
    Leaf,
    TreeReader,
    node_key,
    root_from_slots,
    slot_of_leaves,
)
from consensus.codec import CodecError, Limits, Value, decode, encode
from consensus.types import VALIDATORS_MAX, DecodeError, ValidatorSet
from network.ratelimit import TokenBucket
from node.store import StateReader, Store

__all__ = [
    "CHUNK_BYTES_MAX",
    "CHUNK_DEPTH_MAX",
    "VALIDATOR_CHANGES_MAX",
    "ChunkInfo",
    "Manifest",
    "SnapshotDirectory",
    "SnapshotError",
    "SnapshotOffer",
    "SnapshotServer",
    "StateSyncRequest",
    "VerifiedChunk",
    "chunk_depth_for",
    "decode_block_answer",
    "decode_offers",
    "decode_validator_changes",
    "encode_validator_changes",
    "export_snapshot",
    "verify_chunk",
]

log = logging.getLogger("suanpan.snapshots")

SNAPSHOT_FORMAT: Final = 1
# Entries in one chunk on average: ~1 MiB of payments records; big enough that per-request
# overhead is small, small enough that one bad chunk costs little to refetch.
CHUNK_ENTRIES_TARGET: Final = 4096
# Depth 4 is 65,536 chunks: ~270 million entries at the target size, far beyond any state here.
CHUNK_DEPTH_MAX: Final = 4
# One chunk must fit a p2p response (16 MiB) with room to spare; an export that would make a
# bigger one cuts deeper.
CHUNK_BYTES_MAX: Final = 8 * 1024 * 1024
# One export pass holds at most about this much state in memory.
EXPORT_MEMORY_BYTES: Final = 256 * 1024 * 1024
# Chunk files read at once across all peers (disk and memory per request are bounded by this).
SERVE_READS_MAX: Final = 2
# A peer over its byte budget is paced; beyond this wait it is told to come back later.
SERVE_WAIT_SECONDS_MAX: Final = 5.0
# Snapshots offered in one answer (the newest ones).
OFFERS_MAX: Final = 16
# The smallest encoded entry: a 2-array header, a 1-byte key and an empty value, with headers.
_ENTRY_BYTES_MIN: Final = 5
_MANIFEST_FILE: Final = "manifest"
_PINNED_FILE: Final = "pinned"
_TEMPORARY_PREFIX: Final = ".partial-"
_MANIFEST_LIMITS: Final = Limits(
    total_bytes_max=16 * 1024 * 1024,
    depth_max=4,
    str_bytes_max=256,
    bytes_max=1024,
    array_len_max=16**CHUNK_DEPTH_MAX,
    map_len_max=1,
)
_REQUEST_LIMITS: Final = Limits(
    total_bytes_max=256, depth_max=2, str_bytes_max=16, bytes_max=64, array_len_max=8
)
# Validator-set changes in one VALIDATORS answer: one change takes effect at most every two
# heights, so this covers many years of governance; a longer history joins by block sync.
VALIDATOR_CHANGES_MAX: Final = 4096
_CHANGES_LIMITS: Final = Limits(
    total_bytes_max=32 * 1024 * 1024,
    depth_max=5,
    str_bytes_max=256,
    bytes_max=64,
    array_len_max=max(VALIDATOR_CHANGES_MAX, VALIDATORS_MAX),
    map_len_max=1,
)
_ANSWER_LIMITS: Final = Limits(
    total_bytes_max=32 * 1024 * 1024,
    depth_max=4,
    str_bytes_max=256,
    bytes_max=16 * 1024 * 1024 + 4096,
    array_len_max=OFFERS_MAX * 4,
    map_len_max=1,
)


class SnapshotError(Exception):
    """A snapshot, manifest or chunk that is malformed or does not match what it must; or a
    snapshot this node cannot provide. The message names the problem."""


# ---------------------------------------------------------------------------- the format


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """One chunk in a manifest: its key-hash prefix (as a number of ``depth`` nibbles), its
    subtree's slot in the tree, its entry count and its size in bytes."""

    prefix: int
    slot: bytes
    entries: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a snapshot of the state after ``height`` holds (see the module docstring)."""

    chain_id: str
    height: int
    app_hash: bytes
    depth: int
    chunks: tuple[ChunkInfo, ...]

    def encode(self) -> bytes:
        """Canonical bytes."""
        value: Value = (
            SNAPSHOT_FORMAT,
            self.chain_id,
            self.height,
            self.app_hash,
            self.depth,
            tuple((c.prefix, c.slot, c.entries, c.size_bytes) for c in self.chunks),
        )
        return encode(value, _MANIFEST_LIMITS)

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Parse; ``SnapshotError`` when malformed (not yet verified against a root)."""
        try:
            value = decode(data, _MANIFEST_LIMITS)
        except CodecError as error:
            raise SnapshotError(f"manifest does not decode: {error}") from None
        if not (isinstance(value, tuple) and len(value) == 6):
            raise SnapshotError("a manifest has 6 fields")
        version, chain_id, height, app_hash, depth, raw_chunks = value
        if version != SNAPSHOT_FORMAT:
            raise SnapshotError(f"manifest format {version!r}, this node reads {SNAPSHOT_FORMAT}")
        if not isinstance(chain_id, str) or not isinstance(app_hash, bytes):
            raise SnapshotError("manifest chain id or app hash malformed")
        if not (_natural(height) and _natural(depth) and isinstance(raw_chunks, tuple)):
            raise SnapshotError("manifest height, depth or chunks malformed")
        assert isinstance(height, int)
        assert isinstance(depth, int)
        if depth > CHUNK_DEPTH_MAX or len(app_hash) != 32:
            raise SnapshotError(f"manifest depth {depth} or app hash length out of range")
        chunks: list[ChunkInfo] = []
        for raw in raw_chunks:
            if not (
                isinstance(raw, tuple)
                and len(raw) == 4
                and _natural(raw[0])
                and isinstance(raw[1], bytes)
                and _natural(raw[2])
                and _natural(raw[3])
            ):
                raise SnapshotError("a manifest chunk is (prefix, slot, entries, bytes)")
            prefix, slot, entries, size = raw
            assert isinstance(prefix, int)
            assert isinstance(slot, bytes)
            assert isinstance(entries, int)
            assert isinstance(size, int)
            chunks.append(ChunkInfo(prefix, slot, entries, size))
        return cls(chain_id, height, app_hash, depth, tuple(chunks))

    def verify(self, chain_id: str, height: int, app_hash: bytes) -> dict[bytes, bytes]:
        """Check the manifest against the certified ``app_hash`` of ``height``; return the tree
        records above the chunks (to install with them). ``SnapshotError`` names the problem."""
        if self.chain_id != chain_id or self.height != height or self.app_hash != app_hash:
            raise SnapshotError(
                f"manifest is for {self.chain_id!r} height {self.height} app hash "
                f"{self.app_hash.hex()}, not {chain_id!r} height {height} app hash "
                f"{app_hash.hex()}"
            )
        for chunk in self.chunks:
            if chunk.entries < 1 or chunk.size_bytes > CHUNK_BYTES_MAX:
                raise SnapshotError(f"chunk {chunk.prefix} is empty or over {CHUNK_BYTES_MAX} B")
            if (chunk.entries == 1) != (len(chunk.slot) == 2 * KEY_HASH_BYTES):
                raise SnapshotError(f"chunk {chunk.prefix}: slot kind and entry count disagree")
        try:
            root, records = root_from_slots(
                self.depth, [(chunk.prefix, chunk.slot) for chunk in self.chunks]
            )
        except ValueError as error:
            raise SnapshotError(f"manifest chunks: {error}") from None
        if root != app_hash:
            raise SnapshotError(
                f"manifest's chunks make root {root.hex()}, the certified app hash is "
                f"{app_hash.hex()}"
            )
        return records

    def chunk(self, prefix: int) -> ChunkInfo:
        """The chunk with ``prefix``; ``SnapshotError`` when there is none."""
        for chunk in self.chunks:
            if chunk.prefix == prefix:
                return chunk
        raise SnapshotError(f"snapshot {self.height} has no chunk {prefix}")

    @property
    def entries(self) -> int:
        """State entries in the snapshot."""
        return sum(chunk.entries for chunk in self.chunks)

    @property
    def size_bytes(self) -> int:
        """Bytes of all chunks."""
        return sum(chunk.size_bytes for chunk in self.chunks)


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _prefix_of(digest: bytes, depth: int) -> int:
    assert depth <= CHUNK_DEPTH_MAX
    # Depths are at most CHUNK_DEPTH_MAX = 4 nibbles: the first two bytes hold them.
    return ((digest[0] << 8) | digest[1]) >> (16 - 4 * depth)


def chunk_depth_for(entries: int, entries_per_chunk: int = CHUNK_ENTRIES_TARGET) -> int:
    """The depth whose chunks hold about ``entries_per_chunk`` entries each."""
    depth = 0
    while depth < CHUNK_DEPTH_MAX and entries > entries_per_chunk * 16**depth:
        depth += 1
    return depth


def encode_chunk(items: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A chunk's bytes: a msgpack array of [key, value] pairs (in key-hash order)."""
    packed: bytes = msgpack.packb([[key, value] for key, value in items], use_bin_type=True)
    return packed


@dataclass(frozen=True, slots=True)
class VerifiedChunk:
    """A chunk that matched its manifest entry: its entries and its subtree's records."""

    prefix: int
    items: tuple[tuple[bytes, bytes], ...]
    records: dict[bytes, bytes]


def verify_chunk(manifest: Manifest, prefix: int, data: bytes) -> VerifiedChunk:
    """Check chunk ``prefix``'s bytes against the (verified) ``manifest``; ``SnapshotError``
    names the first problem (the sender lied, or the bytes were damaged).

    Only what the root covers decides: the chunk's entries must rebuild the manifest's slot.
    The manifest's entry counts and sizes are not covered by the root (a lying manifest may
    get them wrong with the right slots), so an honest chunk is never refused over them."""
    info = manifest.chunk(prefix)
    if len(data) > CHUNK_BYTES_MAX:
        raise SnapshotError(f"chunk {prefix} is {len(data)} bytes, over {CHUNK_BYTES_MAX}")
    try:
        raw = msgpack.unpackb(
            data,
            use_list=False,
            raw=True,
            max_bin_len=CHUNK_BYTES_MAX,
            # An entry takes at least 5 bytes, so no honest chunk has more; msgpack allocates
            # an array of its declared length, and this bounds that by the bytes received.
            max_array_len=max(2, len(data) // _ENTRY_BYTES_MIN),
            max_str_len=0,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack raises many types; each means "malformed"
        raise SnapshotError(f"chunk {prefix} does not decode: {type(error).__name__}") from None
    if not isinstance(raw, tuple) or not raw:
        raise SnapshotError(f"chunk {prefix} is not a non-empty array of entries")
    leaves: list[Leaf] = []
    items: list[tuple[bytes, bytes]] = []
    sha256 = hashlib.sha256
    previous = b""
    shift = 16 - 4 * manifest.depth
    for entry in raw:
        if not (
            isinstance(entry, tuple)
            and len(entry) == 2
            and type(entry[0]) is bytes
            and type(entry[1]) is bytes
            and entry[0]
        ):
            raise SnapshotError(f"chunk {prefix}: an entry is not [key, value]")
        key, value = entry
        digest = sha256(key).digest()
        if digest <= previous:
            raise SnapshotError(f"chunk {prefix}: entries are not in strict key-hash order")
        if ((digest[0] << 8) | digest[1]) >> shift != prefix:
            raise SnapshotError(f"chunk {prefix}: an entry belongs to another chunk")
        previous = digest
        leaves.append(digest + sha256(value).digest())
        items.append((key, value))
    slot, records = slot_of_leaves(manifest.depth, leaves)
    if slot != info.slot:
        raise SnapshotError(f"chunk {prefix}: its entries do not hash to the manifest's slot")
    return VerifiedChunk(prefix, tuple(items), records)


def _slot_at(tree: TreeReader, depth: int, prefix: int) -> bytes | None:
    """The slot the subtree of ``prefix`` (``depth`` nibbles) has in the stored tree."""
    path = (prefix << (4 * (2 * KEY_HASH_BYTES - depth))).to_bytes(KEY_HASH_BYTES, "big")
    slot = tree.tree_node(ROOT_KEY)
    for level in range(depth):
        if slot is None:
            return None
        if len(slot) == 2 * KEY_HASH_BYTES:
            # A lone leaf above the cut: it is this subtree's if its key hash has the prefix.
            return slot if _prefix_of(slot[:KEY_HASH_BYTES], depth) == prefix else None
        record = tree.tree_node(node_key(path, level))
        assert record is not None, "a stored tree node is missing"
        slot = _child(record, (prefix >> (4 * (depth - level - 1))) & 0x0F)
    return slot


def _child(record: bytes, index: int) -> bytes | None:
    bitmap = (record[0] << 8) | record[1]
    leafmap = (record[2] << 8) | record[3]
    bit = 0x8000 >> index
    if not bitmap & bit:
        return None
    before = 0xFFFF & ~((bit << 1) - 1)
    offset = 4 + 32 * ((bitmap & before).bit_count() + (leafmap & before).bit_count())
    return record[offset : offset + (64 if leafmap & bit else 32)]


# ---------------------------------------------------------------------------- exporting


def export_snapshot(
    reader: StateReader,
    directory: Path,
    chain_id: str,
    *,
    cancel: threading.Event | None = None,
    entries_per_chunk: int = CHUNK_ENTRIES_TARGET,
) -> Manifest:
    """Write the snapshot of the state ``reader`` holds to ``directory/<height>`` (runs on a
    worker thread; returns its manifest). ``cancel`` set meanwhile stops it with
    ``SnapshotError`` and leaves nothing behind."""
    height = reader.height
    depth = chunk_depth_for(reader.entries, entries_per_chunk)
    prefixes = 16**depth
    passes = max(1, math.ceil(reader.bytes_estimate / EXPORT_MEMORY_BYTES))
    final = directory / str(height)
    temporary = directory / f"{_TEMPORARY_PREFIX}{height}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    chunks: list[ChunkInfo] = []
    sha256 = hashlib.sha256
    try:
        for number in range(passes):
            low = prefixes * number // passes
            high = prefixes * (number + 1) // passes
            buckets: dict[int, list[tuple[bytes, bytes, bytes]]] = {}
            for index, (key, value) in enumerate(reader.scan()):
                if cancel is not None and index % 4096 == 0 and cancel.is_set():
                    raise SnapshotError("snapshot export cancelled")
                digest = sha256(key).digest()
                prefix = _prefix_of(digest, depth)
                if low <= prefix < high:
                    buckets.setdefault(prefix, []).append((digest, key, value))
            for prefix in sorted(buckets):
                entries = sorted(buckets.pop(prefix))
                data = encode_chunk([(key, value) for _, key, value in entries])
                if len(data) > CHUNK_BYTES_MAX:
                    raise SnapshotError(
                        f"chunk {prefix} would be {len(data)} bytes (over {CHUNK_BYTES_MAX})"
                    )
                slot = _slot_at(reader, depth, prefix)
                assert slot is not None, "a chunk with entries has no slot in the stored tree"
                (temporary / _chunk_file(prefix)).write_bytes(data)
                chunks.append(ChunkInfo(prefix, slot, len(entries), len(data)))
        manifest = Manifest(chain_id, height, reader.app_hash, depth, tuple(chunks))
        manifest.verify(chain_id, height, reader.app_hash)  # the stored tree agrees with itself
        _write_durably(temporary / _MANIFEST_FILE, manifest.encode())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return manifest


def _chunk_file(prefix: int) -> str:
    return f"chunk-{prefix}"


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------- the directory


@dataclass(frozen=True, slots=True)
class SnapshotOffer:
    """A snapshot a peer offers: its height, app hash, chunk count and total size."""

    height: int
    app_hash: bytes
    chunks: int
    size_bytes: int


class SnapshotDirectory:
    """The snapshots under ``<home>/snapshots``: list, read, write, retain, pin."""

    def __init__(self, path: Path, chain_id: str) -> None:
        self.path = path
        self.chain_id = chain_id
        self._manifests: dict[int, Manifest] = {}
        self._lock = threading.Lock()

    def heights(self) -> list[int]:
        """Heights of the complete snapshots on disk, ascending."""
        if not self.path.is_dir():
            return []
        return sorted(
            int(entry.name)
            for entry in self.path.iterdir()
            if entry.name.isdigit() and (entry / _MANIFEST_FILE).is_file()
        )

    def manifest(self, height: int) -> Manifest:
        """The manifest of snapshot ``height``; ``SnapshotError`` when there is none."""
        with self._lock:
            cached = self._manifests.get(height)
        if cached is not None:
            return cached
        try:
            data = (self.path / str(height) / _MANIFEST_FILE).read_bytes()
        except OSError:
            raise SnapshotError(f"no snapshot at height {height}") from None
        manifest = Manifest.decode(data)
        with self._lock:
            self._manifests[height] = manifest
        return manifest

    def manifest_bytes(self, height: int) -> bytes:
        """The manifest of snapshot ``height`` as stored."""
        return self.manifest(height).encode()

    def chunk_bytes(self, height: int, prefix: int) -> bytes:
        """Chunk ``prefix`` of snapshot ``height`` as stored."""
        self.manifest(height).chunk(prefix)
        try:
            return (self.path / str(height) / _chunk_file(prefix)).read_bytes()
        except OSError as error:
            raise SnapshotError(f"chunk {prefix} of snapshot {height}: {error}") from None

    def offers(self) -> list[SnapshotOffer]:
        """The newest snapshots, newest first (at most ``OFFERS_MAX``)."""
        offers = []
        for height in reversed(self.heights()):
            try:
                manifest = self.manifest(height)
            except SnapshotError:
                continue
            offers.append(
                SnapshotOffer(height, manifest.app_hash, len(manifest.chunks), manifest.size_bytes)
            )
            if len(offers) == OFFERS_MAX:
                break
        return offers

    def pinned(self) -> list[int]:
        """Heights of pinned snapshots (never removed by ``retain``)."""
        return [
            height for height in self.heights() if (self.path / str(height) / _PINNED_FILE).exists()
        ]

    def retain(self, keep: int) -> list[int]:
        """Remove all but the newest ``keep`` snapshots (pinned ones stay); return the heights
        removed. Leftover partial exports are removed too."""
        removed = []
        unpinned = [height for height in self.heights() if height not in self.pinned()]
        for height in unpinned[: max(0, len(unpinned) - keep)]:
            shutil.rmtree(self.path / str(height), ignore_errors=True)
            with self._lock:
                self._manifests.pop(height, None)
            removed.append(height)
        return removed

    def remove_partial(self) -> None:
        """Remove temporary directories of exports or syncs that never finished."""
        if self.path.is_dir():
            for entry in self.path.iterdir():
                if entry.name.startswith(_TEMPORARY_PREFIX):
                    shutil.rmtree(entry, ignore_errors=True)

    # -- a snapshot being received (state sync keeps the snapshot it installed) -------------

    def partial_path(self, height: int) -> Path:
        """Where a snapshot being received is written until it is complete."""
        return self.path / f"{_TEMPORARY_PREFIX}sync-{height}"

    def begin_received(self, manifest: Manifest) -> None:
        """Start writing a received snapshot (its verified manifest)."""
        path = self.partial_path(manifest.height)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        _write_durably(path / _MANIFEST_FILE, manifest.encode())

    def add_received_chunk(self, height: int, prefix: int, data: bytes) -> None:
        """Keep a verified chunk of the snapshot being received."""
        (self.partial_path(height) / _chunk_file(prefix)).write_bytes(data)

    def finish_received(self, manifest: Manifest, *, pinned: bool) -> None:
        """The received snapshot is complete (``manifest``: with the counts and sizes its
        chunks really have): make it a snapshot like the node's own."""
        height = manifest.height
        path = self.partial_path(height)
        _write_durably(path / _MANIFEST_FILE, manifest.encode())
        with self._lock:
            self._manifests.pop(height, None)
        if pinned:
            (path / _PINNED_FILE).write_bytes(b"")
        final = self.path / str(height)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(path, final)


# ---------------------------------------------------------------------------- serving


@dataclass(frozen=True, slots=True)
class StateSyncRequest:
    """A state sync request on the p2p request/response channel: ``kind`` is one of
    ``OFFERS`` (the snapshots on offer), ``MANIFEST`` (of ``height``), ``CHUNK`` (``prefix``
    of ``height``), ``BLOCK`` (block ``height`` with its certificate), ``VALIDATORS`` (every
    validator-set change in force by ``height``: effective height and set)."""

    OFFERS = 1
    MANIFEST = 2
    CHUNK = 3
    BLOCK = 4
    VALIDATORS = 5

    kind: int
    height: int = 0
    prefix: int = 0

    def encode(self) -> bytes:
        """Canonical bytes."""
        return encode((b"statesync", self.kind, self.height, self.prefix), _REQUEST_LIMITS)

    @classmethod
    def decode(cls, data: bytes) -> StateSyncRequest:
        """Parse; ``SnapshotError`` when malformed."""
        try:
            value = decode(data, _REQUEST_LIMITS)
        except CodecError as error:
            raise SnapshotError(f"request does not decode: {error}") from None
        if not (isinstance(value, tuple) and len(value) == 4 and value[0] == b"statesync"):
            raise SnapshotError("not a state sync request")
        _, kind, height, prefix = value
        if kind not in (cls.OFFERS, cls.MANIFEST, cls.CHUNK, cls.BLOCK, cls.VALIDATORS):
            raise SnapshotError(f"unknown state sync request kind {kind!r}")
        if not (_natural(height) and _natural(prefix)):
            raise SnapshotError("request height and prefix must be non-negative integers")
        assert isinstance(kind, int)
        assert isinstance(height, int)
        assert isinstance(prefix, int)
        return cls(kind, height, prefix)


def encode_offers(offers: Sequence[SnapshotOffer]) -> bytes:
    """The answer to ``OFFERS``."""
    value: Value = tuple((o.height, o.app_hash, o.chunks, o.size_bytes) for o in offers)
    return encode(value, _ANSWER_LIMITS)


def decode_offers(data: bytes) -> list[SnapshotOffer]:
    """Parse an ``OFFERS`` answer; ``SnapshotError`` when malformed."""
    try:
        value = decode(data, _ANSWER_LIMITS)
    except CodecError as error:
        raise SnapshotError(f"offers do not decode: {error}") from None
    if not isinstance(value, tuple) or len(value) > OFFERS_MAX:
        raise SnapshotError(f"offers must be an array of at most {OFFERS_MAX}")
    offers = []
    for raw in value:
        if not (
            isinstance(raw, tuple)
            and len(raw) == 4
            and _natural(raw[0])
            and isinstance(raw[1], bytes)
            and len(raw[1]) == 32
            and _natural(raw[2])
            and _natural(raw[3])
        ):
            raise SnapshotError("an offer is (height, app hash, chunks, bytes)")
        height, app_hash, chunks, size = raw
        assert isinstance(height, int)
        assert isinstance(app_hash, bytes)
        assert isinstance(chunks, int)
        assert isinstance(size, int)
        offers.append(SnapshotOffer(height, app_hash, chunks, size))
    return offers


def encode_validator_changes(changes: Sequence[tuple[int, ValidatorSet]]) -> bytes:
    """The answer to ``VALIDATORS``: (effective height, set) per change, in height order."""
    if len(changes) > VALIDATOR_CHANGES_MAX:
        raise SnapshotError(
            f"{len(changes)} validator-set changes, more than one answer holds"
            f" ({VALIDATOR_CHANGES_MAX}): join by block sync"
        )
    return encode(
        tuple((height, validators.fields()) for height, validators in changes), _CHANGES_LIMITS
    )


def decode_validator_changes(data: bytes) -> list[tuple[int, ValidatorSet]]:
    """Parse a ``VALIDATORS`` answer; ``SnapshotError`` when malformed (the sets are checked
    by the caller against certified headers)."""
    try:
        value = decode(data, _CHANGES_LIMITS)
    except CodecError as error:
        raise SnapshotError(f"validator changes do not decode: {error}") from None
    if not isinstance(value, tuple) or len(value) > VALIDATOR_CHANGES_MAX:
        raise SnapshotError(f"validator changes are an array of at most {VALIDATOR_CHANGES_MAX}")
    changes: list[tuple[int, ValidatorSet]] = []
    for entry in value:
        if not (isinstance(entry, tuple) and len(entry) == 2 and _natural(entry[0])):
            raise SnapshotError("a validator change is (effective height, set)")
        height = entry[0]
        assert isinstance(height, int)
        if changes and height <= changes[-1][0]:
            raise SnapshotError("validator changes must come in increasing height order")
        try:
            changes.append((height, ValidatorSet.from_fields(entry[1])))
        except DecodeError as error:
            raise SnapshotError(f"validator change at {height}: {error}") from None
    return changes


def encode_block_answer(block: bytes, certificate: bytes) -> bytes:
    """The answer to ``BLOCK``: the stored block and certificate bytes."""
    return encode((block, certificate), _ANSWER_LIMITS)


def decode_block_answer(data: bytes) -> tuple[bytes, bytes]:
    """Parse a ``BLOCK`` answer into (block bytes, certificate bytes); ``SnapshotError``."""
    try:
        value = decode(data, _ANSWER_LIMITS)
    except CodecError as error:
        raise SnapshotError(f"block answer does not decode: {error}") from None
    if not (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], bytes)
        and isinstance(value[1], bytes)
    ):
        raise SnapshotError("a block answer is (block, certificate)")
    return value[0], value[1]


class SnapshotServer:
    """Answers peers' state sync requests from a ``SnapshotDirectory`` and a ``Store``, within
    a per-peer byte budget."""

    def __init__(
        self,
        snapshots: SnapshotDirectory,
        store: Store,
        *,
        serve_bytes_per_second: int,
    ) -> None:
        self._snapshots = snapshots
        self._store = store
        self._rate = float(serve_bytes_per_second)
        self._budgets: dict[bytes, TokenBucket] = {}
        self._reads = trio.CapacityLimiter(SERVE_READS_MAX)
        self.served_bytes = 0
        self.refused_busy = 0

    async def handle(self, peer: bytes, payload: bytes) -> bytes:
        """The answer to one request from ``peer``; raises ``SnapshotError`` (the network
        sends its message back as the error)."""
        request = StateSyncRequest.decode(payload)
        if request.kind == StateSyncRequest.OFFERS:
            return encode_offers(self._snapshots.offers())
        if request.kind == StateSyncRequest.MANIFEST:
            answer = self._snapshots.manifest_bytes(request.height)
        elif request.kind == StateSyncRequest.VALIDATORS:
            changes = [
                (height, validators)
                for height, validators in self._store.validator_schedule()
                if height <= request.height
            ]
            answer = encode_validator_changes(changes)
        elif request.kind == StateSyncRequest.BLOCK:
            block = self._store.block_bytes(request.height)
            certificate = self._store.certificate(request.height)
            if block is None or certificate is None:
                raise SnapshotError(f"no block {request.height} here")
            answer = encode_block_answer(block, certificate.encode())
        else:
            size = self._snapshots.manifest(request.height).chunk(request.prefix).size_bytes
            await self._spend(peer, size)
            async with self._reads:
                answer = await trio.to_thread.run_sync(
                    self._snapshots.chunk_bytes, request.height, request.prefix
                )
        self.served_bytes += len(answer)
        return answer

    async def _spend(self, peer: bytes, size: int) -> None:
        now = time.monotonic()
        bucket = self._budgets.get(peer)
        if bucket is None:
            bucket = self._budgets[peer] = TokenBucket(
                self._rate, max(self._rate, float(CHUNK_BYTES_MAX)), now
            )
        wait = bucket.consume(size, now)
        if wait > SERVE_WAIT_SECONDS_MAX:
            bucket.consume(-size, now)  # not served: give the budget back
            self.refused_busy += 1
            raise SnapshotError(f"busy: over this peer's snapshot budget for {wait:.1f} s")
        if wait:
            await trio.sleep(wait)
