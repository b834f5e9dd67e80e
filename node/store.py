"""The node's durable store: an LMDB environment holding the chain and its state, and one of
its own for the replica's votes.

Theory of operation
-------------------
Everything a node must not lose lives in one LMDB environment under ``<home>/data``, in named
databases, except the replica's vote record, in an environment of its own in
``<home>/data/replica`` (``REPLICA_DIR``): LMDB has one writer per environment, and a vote
(written and synced before it leaves the node) must not wait for the block writer's
transactions, the tree write above all:

========================  ===================================================================
``meta``                  chain id, genesis hash, schema version, committed height, app hash,
                          hash of the last block
``blocks``                height (8 bytes, big-endian) -> encoded ``Block``
``block_hashes``          block hash -> height
``certificates``          height -> encoded ``CommitCertificate``
``app_hashes``            height -> app hash of the state after that height (0: genesis)
``transactions``          transaction hash -> (height, index) of its *first* inclusion
``receipts``              height || index (4 bytes) -> encoded ``apps.host.Receipt``
``block_events``          height -> the apps' end-of-block events (expiries released ...), as an
                          encoded ``apps.host.end_block_record``; only blocks that have some
``state``                 application state (namespaced keys, see ``apps.state``)
``tree``                  the state's Merkle tree records (``apps.merkle``) as of the tree
                          height: the committed height, or an earlier one recorded in
                          ``meta`` as ``tree_height`` (see below)
``state_undo``            undo records: every key a block wrote with its value before the
                          block (absent: nil), as arrays ``[key, value, key, value, ...]``
                          (``consensus.codec``) of about 256 KiB each, under height || chunk
                          number (4 bytes, from 0); the last block's, and every block's from
                          the tree height on
``replica``               empty: where schema 7 and earlier kept the replica's persisted
                          state, and where a backup archive carries it (adopted into
                          ``REPLICA_DIR`` when the store opens)
``evidence``              height || SHA-256(evidence) -> opaque evidence bytes
========================  ===================================================================

``commit_block`` writes the block, its certificate, the state write set, the undo record, the
transaction index, the receipts, the end-of-block events, the app hash, the new height and
(every few blocks) the tree records in **one** LMDB write transaction. LMDB commits by
switching a meta page after the data pages are written, so a crash (SIGKILL, power loss with
``sync=True``) at any moment leaves either the previous height or the new one, never a part of
a block. The crash tests kill real processes mid-commit to check this. ``commit_blocks``
writes several consecutive blocks the same way in one transaction (one fsync): all of them or
none.

``node.unwritten.UnwrittenStateBackend`` is the committed state with the write sets and tree
records of executed blocks whose write is still queued on top: the node executes the next block
over it while a worker thread writes the ones before (block sync).

The map size starts small and doubles whenever a write transaction hits ``MapFullError``; the
transaction is retried, so a full map never reaches a caller. Read transactions and map
resizes run under one lock, so the map is never resized while a read is open in this process;
range scans of the state read in batches, each in its own short read transaction. Write
transactions are serialised by a second lock and do *not* hold the read lock while they write
and fsync (a write may run on a worker thread while the event loop keeps reading older MVCC
snapshots); a write that fills the map aborts its transaction first and only then takes the
read lock to resize, so no transaction of this process is open during a resize.

A full disk. The environments are opened without ``writemap``, so LMDB writes its pages with
pwrite(2) and a disk (or a file size limit) that refuses a write is an error, never SIGBUS. The
transaction is aborted, and LMDB switches its meta page only after every data page is written:
the store keeps the last committed height and reads as before, in this process and reopened.
Every write transaction reports it as ``StoreWriteError``, as ``StoreDiskFullError`` when the
disk is full or the file size limit reached (``_write_error``), and the same write succeeds
once space is freed. The map is never grown for it (that is ``MapFullError`` only).

Versions. The state and tree (with its held records, below) hold the state after the
committed height h. The undo record of h turns them back into the state after h-1
(``read_certified``): that is the latest state whose app hash a certificate covers (block h
carries it and certificate h signs block h), so proofs of single keys are answered against it.
A commit that writes the tree empties the undo database before recording its own, so the
records kept are those of the blocks since the tree was last written and nothing older needs
pruning. Only
the state is recorded: the tree is a function of the state's entries alone (``apps.merkle``),
so the tree records of h-1 are what ``apps.merkle.update`` makes of the tree at h with the
undo record's values written back, and their root must be the app hash stored for h-1 (a
store whose undo record does not lead there is refused with ``StoreError``). Recording the
block's replaced tree records as well cost a commit about a tenth of the pages it wrote and
11-17 % of its CPU, for a computation a proof needs once per height. A block's undo record
is a few values of about 256 KiB, not one entry per key: a block of 600 payments changes about
2,500 state keys, and one LMDB entry each (written, then deleted by the next commit) cost the
block writer a fifth of its CPU. Chunks rather than one value: a value of megabytes needs that
many contiguous free pages in the file, and a buffer of that size per commit. Readers of the
certified view decode the record and derive the tree records once per height
(``_UndoRecords``).

The tree written every few blocks. A block's tree records land on pages all over the tree
database (their keys are paths of hashed state keys): after 48,000 payments, a block of 600
wrote about 5,000 records on about 2,800 of its leaf pages, most of the 16 MB the commit wrote,
and the next block rewrote most of the same pages. So a commit writes its tree records to the
tree database only every ``tree_flush_blocks`` blocks (8), or sooner when more than
``tree_pending_records_max`` records (16,384) are held; in between, the records stay in memory
(``_TreeLayer``, one per block over the ones before it) and every read of the tree reads them
over the database, and the commit records ``tree_height`` (where the database's tree is) and
keeps the undo record of each block since instead of replacing the last one. Every read
transaction takes the held records of the height its snapshot sees (a short read looks them up
by that height, kept for the last few heights; a long reader takes them when it begins), so
it reads one height's tree whatever commits meanwhile. Written, the records of several blocks
replace each other, and the pages they share are written once. A crash loses the held records
only: when a store is opened with ``tree_height`` below its height, the keys the blocks since
wrote are in their undo records and their values in the state, and ``apps.merkle.update`` of
the stored tree with them gives the committed state's tree, whose root must be the stored app
hash (``StoreError`` otherwise); that is written at once, in one write transaction. A batch of
several blocks (block sync) counts as that many blocks: it keeps each block's undo record
while the tree waits, and only the last one's when it writes the tree. At the tip the node's
block writer commits with ``defer_tree`` and writes the tree, when it is due, in a write
transaction of its own (``write_held_tree``) once what waited on the blocks (votes, proposals,
answers) has gone on: the tree's records are the largest part of a commit that writes them, and
nothing a node sends depends on them. That transaction leaves the store as a commit that wrote
the tree would have, and a crash before it commits leaves the records held and lost as above.
While the node syncs blocks nothing but the sync waits on a write, and the tree, when due, goes
in the blocks' own transaction.

The transaction index is held the same way. Its keys are transaction hashes, so on a grown
ledger each of a block's entries lands on a page of its own, and in the block's own write
transaction those pages (about 450 for a block of 600 payments after 60,000) lengthened the
write that the next proposal and the votes wait on. A block's index entries (the first
inclusion of each hash; a replayed copy later is only a rejected receipt) are held in its
``_TreeLayer`` and written with the tree records, after any entry the index has, which stays.
Reads of the index (``committed_among``, ``transaction_location``) look in the database, then
in the held entries of their height. A crash loses the held entries with the held records;
opening the store puts them again from the stored blocks since ``tree_height``, in the
transaction that recovers the tree.

State sync (``begin_state_sync``, ``install_state_chunk``, ``finish_state_sync``) replaces the
genesis state of an empty store with a verified snapshot at height b, in several write
transactions; until the last one records height b the store says ``state_sync_pending`` and a
restart starts the sync over. Such a store holds blocks from b on only (``base_height``).

Opening a store records or checks the chain id, the genesis hash and the schema version: a data
directory from another chain or schema is refused with ``StoreMismatchError``.

Validator sets are state, not a database of their own: the membership registry
(``apps.validators``) keeps the set in force from each height, entries never deleted, so
``validator_set(h)`` answers for any ``h <= height + 2`` from the committed state alone (and a
store built from a state snapshot answers the same for the heights it covers).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import mmap
import operator
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, NamedTuple, ParamSpec, TypeVar

import lmdb
import msgpack

from apps.base import Event
from apps.host import MEMBERSHIP_APP, BlockResult, Receipt, stored_end_block_events
from apps.merkle import ROOT_KEY, build, leaf_of, root_of_slot
from apps.merkle import update as merkle_update
from apps.state import NamespacedState, WriteSet
from apps.validators import scheduled_sets, validator_set_at
from consensus.codec import CodecError, Limits, Value, decode, encode
from consensus.crypto import hash_bytes
from consensus.types import (
    Block,
    CertificateError,
    CommitCertificate,
    DecodeError,
    ValidatorSet,
    verify_certificate,
)
from node.lmdbmeta import read_meta
from node.procstatus import process_status_kib

__all__ = [
    "DATABASES",
    "DISK_FULL_ERRNOS",
    "LMDB_DAMAGE_ERRORS",
    "MAP_SIZE_INITIAL_BYTES",
    "REPLICA_DIR",
    "SCHEMAS_CONVERTED",
    "SCHEMA_VERSION",
    "TREE_FLUSH_BLOCKS",
    "TREE_PENDING_RECORDS_MAX",
    "UNDO_CHUNK_BYTES",
    "CertifiedView",
    "EncodedBlock",
    "FrameChannel",
    "LmdbStateBackend",
    "MapNotGrownHere",
    "StateReader",
    "Store",
    "StoreConsistencyError",
    "StoreDamagedError",
    "StoreDiskFullError",
    "StoreError",
    "StoreMismatchError",
    "StoreWriteError",
    "TransactionLocation",
    "WriterMessage",
    "damaged_store_message",
    "height_key",
    "is_disk_full",
    "open_error",
    "read_committed_height",
    "read_vote_record",
    "receipt_key",
    "undo_chunk_key",
    "undo_record",
    "verify_chain",
]

log = logging.getLogger("suanpan.store")

# 2: the Merkle tree and undo databases, state sync's base height. 3: block headers commit to
# the next validator set, and the genesis state holds the validator registry. 4: the apps'
# end-of-block events are stored. 5: one undo record (in chunks) per database per block
# instead of one entry per key. 6: no undo record of the tree (derived from the state's). 7:
# the tree database may lag the committed height (``tree_height``), with the state's undo
# records of every block since. 8: the replica's vote record lives in an LMDB environment of
# its own (``REPLICA_DIR``; a version 7 node would not see it, so it must not open the store).
# 9: the transaction index entries of the blocks since ``tree_height`` are held with the tree
# records and may be missing from the index (a version 8 node would not restore them). Stores
# of versions 4 to 8 are converted when opened (``_migrate_undo``).
SCHEMA_VERSION: Final = 9
# The schemas a store is converted from when opened.
SCHEMAS_CONVERTED: Final = (4, 5, 6, 7, 8)
# Databases earlier schemas kept and a conversion deletes.
_RETIRED_DATABASES: Final = ("tree_undo",)
# Small enough that a test node costs nothing; it doubles on demand.
MAP_SIZE_INITIAL_BYTES: Final = 64 * 1024 * 1024
# A hard ceiling so a runaway writer fails loudly instead of filling the disk: 1 TiB.
MAP_SIZE_MAX_BYTES: Final = 1 << 40
# Entries read per read transaction while scanning state: big enough to amortise the
# transaction, small enough that a map resize never waits long.
SCAN_BATCH_ENTRIES: Final = 512
DATABASES: Final = (
    "meta",
    "blocks",
    "block_hashes",
    "certificates",
    "app_hashes",
    "transactions",
    "receipts",
    "block_events",
    "state",
    "tree",
    "state_undo",
    "replica",
    "evidence",
)
_META_CHAIN_ID: Final = b"chain_id"
_META_GENESIS_HASH: Final = b"genesis_hash"
_META_SCHEMA: Final = b"schema_version"
_META_HEIGHT: Final = b"height"
_META_APP_HASH: Final = b"app_hash"
_META_LAST_BLOCK_HASH: Final = b"last_block_hash"
# The height whose block the undo records undo (absent: no earlier version is kept).
_META_UNDO_HEIGHT: Final = b"undo_height"
# The height whose state the tree database holds, when it is below the committed height
# (absent: the tree database is the committed state's).
_META_TREE_HEIGHT: Final = b"tree_height"
# The height a state-synced store starts at (absent: genesis).
_META_BASE_HEIGHT: Final = b"base_height"
# The snapshot height a state sync in progress installs (its state is incomplete).
_META_STATE_SYNC: Final = b"state_sync_pending"
_REPLICA_KEY: Final = b"replica"
# The replica's vote record is kept in an LMDB environment of its own, in this directory inside
# the store's: a vote is written (and synced) before it leaves the node, and in the store's
# environment it would wait for whichever write transaction holds LMDB's one writer lock (the
# block writer's tree write takes hundreds of milliseconds under load). The store's own
# ``replica`` database only carries a record in from an earlier schema or a backup archive
# (``Store._adopt_vote_record``).
REPLICA_DIR: Final = "replica"
_REPLICA_MAP_SIZE_INITIAL_BYTES: Final = 4 * 1024 * 1024
# A failed write is put down to a full disk when its filesystem has less than this free for
# the node's user. LMDB (without ``writemap``) writes its pages with pwrite(2): a write the
# disk cannot take is an error, never a signal, but one that fills the disk halfway through is
# a short write, which LMDB reports as EIO ("Input/output error"), not ENOSPC; once it failed
# the file keeps what it wrote, so the disk is then full to the last block.
_DISK_FULL_FREE_BYTES: Final = 16 * 1024 * 1024
# A failed write is put down to the process's file size limit when the environment's file is
# this close to it: a short write stops at the limit, and one write is at most a few hundred
# KiB (LMDB writes 64 pages at a time, an undo record's chunk is about ``UNDO_CHUNK_BYTES``).
_FILE_LIMIT_SLACK_BYTES: Final = 1024 * 1024
# The errors that only a full disk, a quota or a file size limit gives, and what the C library
# says for them (LMDB's errors carry only the words).
DISK_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_DISK_FULL_MESSAGES: Final = tuple(os.strerror(number) for number in sorted(DISK_FULL_ERRNOS))
_T = TypeVar("_T")
_P = ParamSpec("_P")
_ABSENT: Final = b"\x00"
# Sorts a dict's (key, record) pairs by key alone (keys are distinct, so the order is the
# pairs' own): about half the comparisons' cost of sorting the tuples.
_BY_KEY: Final = operator.itemgetter(0)
# An undo record holds whatever one block replaced: bounded by the block, not by the codec's
# defaults for network messages (a record is written and read only by this store).
_UNDO_LIMITS: Final = Limits(
    total_bytes_max=1 << 31, bytes_max=1 << 31, array_len_max=1 << 31, map_len_max=1
)
# Blocks whose tree records are held in memory (and the state's undo record of each kept)
# before a commit writes them all to the tree database, and the most records held so.
TREE_FLUSH_BLOCKS: Final = 8
TREE_PENDING_RECORDS_MAX: Final = 16_384
# Heights whose held tree records stay available to read transactions begun at them. Every
# reader takes its height's records right after it begins, holding ``_lock``, and they are
# forgotten under that lock, so a reader is never more than a commit behind.
_TREE_LAYERS_KEPT: Final = 2
# An undo record's chunk is closed once its keys and values reach this many bytes (one more
# pair at most, so a chunk is at most this plus one value).
UNDO_CHUNK_BYTES: Final = 256 * 1024


class StoreError(Exception):
    """A store operation failed; the message names the problem."""


class StoreMismatchError(StoreError):
    """The data directory belongs to another chain, genesis or schema version."""


class MapNotGrownHere(StoreError):
    """A block writer process's write found the map full (its node grows the map)."""


class StoreConsistencyError(StoreError):
    """A commit that does not extend the stored chain, or a stored chain that does not verify."""


class StoreDamagedError(StoreError):
    """The store's file is damaged: LMDB met a page it cannot use (``LMDB_DAMAGE_ERRORS``), or a
    stored record does not decode. LMDB has no checksums, so a damaged disk, a bad copy or a
    hand edit shows up only when a read meets it. Not repairable in place: restore a backup or
    sync a fresh store (``damaged_store_message`` says so)."""


# LMDB's errors for pages that are not what the structure around them says (MDB_CORRUPTED,
# MDB_PAGE_NOTFOUND, MDB_BAD_VALSIZE, MDB_INVALID, MDB_VERSION_MISMATCH, MDB_PANIC, and the two
# below): on a store this node wrote, a damaged file.
LMDB_DAMAGE_ERRORS: Final = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.BadValsizeError,
    lmdb.InvalidError,
    lmdb.VersionMismatchError,
    lmdb.PanicError,
    # A read transaction that met one of those is marked failed, and LMDB says so (MDB_BAD_TXN)
    # for its next reads, which may be all a caller sees: the first error is swallowed when
    # LMDB reports it as "not found".
    lmdb.BadTxnError,
    # A named database whose record in the main database changed under its handle.
    lmdb.BadDbiError,
)
# The page size of the store's files (LMDB's default on this platform).
_LMDB_PAGE_BYTES: Final = 4096
# The last page of a file LMDB has just made (its two meta pages, and at most one written).
_NEW_FILE_LAST_PAGE: Final = 2


def damaged_store_message(path: Path, detail: str) -> str:
    """What an operator is told about the damaged store in ``path``: which file, what was met,
    and what to do."""
    return (
        f"the store at {path} is damaged ({path / 'data.mdb'}: {detail}); restore it from a "
        "backup (suanpan restore) or give the node a fresh store that syncs from its peers: "
        'see docs/operators.md, "A damaged store"'
    )


def _meta_damage(path: Path) -> str | None:
    """What is wrong with the LMDB meta pages of ``path/data.mdb``, if anything: their flags,
    magic, version, fixed address or last page (beyond the file). LMDB reports most of these as
    ENOMEM or EINVAL when it opens the file, which does not tell an operator the file is
    damaged."""
    try:
        with open(path / "data.mdb", "rb") as handle:
            head = handle.read(2 * _LMDB_PAGE_BYTES)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return None
    if len(head) < 2 * _LMDB_PAGE_BYTES:
        return f"{len(head)} bytes, shorter than LMDB's two meta pages"
    for page in (0, 1):
        meta = read_meta(head[page * _LMDB_PAGE_BYTES :])
        if not meta.is_meta:
            return f"meta page {page} is not an LMDB meta page"
        if meta.address != 0 or (meta.last_page + 1) * _LMDB_PAGE_BYTES > size:
            return f"meta page {page} names a map address or a last page it cannot have"
    return None


def open_error(path: Path, error: lmdb.Error) -> StoreError:
    """The error for opening the LMDB environment in ``path`` that failed with ``error``:
    ``StoreDamagedError`` when its file is damaged (LMDB says so, or its meta pages are not
    what LMDB writes), ``StoreError`` otherwise (a permission, a lock, no memory)."""
    damage = _meta_damage(path) if (path / "data.mdb").is_file() else None
    if damage is not None:
        return StoreDamagedError(damaged_store_message(path, f"{damage}; LMDB: {error}"))
    if isinstance(error, LMDB_DAMAGE_ERRORS):
        return StoreDamagedError(damaged_store_message(path, f"LMDB: {error}"))
    return StoreError(f"cannot open store at {path}: {error}")


def _damage_reported(read: Callable[_P, _T]) -> Callable[_P, _T]:
    """``read`` (a method of ``Store``) with LMDB's damage errors raised as
    ``StoreDamagedError`` naming the store. Not for the reads execution makes per key
    (``LmdbStateBackend``, ``StateReader``): those catch in place, where a ``try`` costs
    nothing until it catches, and a wrapper would cost a call on every read."""

    @functools.wraps(read)
    def reported(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return read(*args, **kwargs)
        except LMDB_DAMAGE_ERRORS as error:
            store = args[0]
            assert isinstance(store, Store)
            raise _damage_met(store, error) from error

    return reported


def _damage_met(store: Store, error: lmdb.Error) -> StoreDamagedError:
    """The error for LMDB's ``error`` met reading ``store`` (one of ``LMDB_DAMAGE_ERRORS``)."""
    return StoreDamagedError(damaged_store_message(store.path, f"LMDB: {error}"))


def _decoded(path: Path, what: str, decode_record: Callable[[bytes], _T], raw: bytes) -> _T:
    """``decode_record(raw)`` for a record the store wrote; one that does not decode is
    damage (``StoreDamagedError`` naming ``what``)."""
    try:
        return decode_record(raw)
    except (DecodeError, CodecError, ValueError, AssertionError) as error:
        raise StoreDamagedError(
            damaged_store_message(path, f"{what} does not decode: {error}")
        ) from error


class StoreWriteError(StoreError):
    """A write transaction failed in LMDB (an I/O error, a full disk): nothing of it was
    written, and the store still holds, and reads, what it held before. The message names the
    cause when it can (``StoreDiskFullError``)."""


class StoreDiskFullError(StoreWriteError):
    """A write transaction failed because the disk holding the store is full, or the process's
    file size limit (``RLIMIT_FSIZE``) is reached. Freeing space (or lifting the limit) and
    writing again is enough: the store is as before the write."""


@dataclass(frozen=True, slots=True)
class TransactionLocation:
    """Where a transaction was first included."""

    height: int
    index: int


def height_key(height: int) -> bytes:
    """The 8-byte big-endian key per-height records are filed under (blocks, certificates...)."""
    return height.to_bytes(8, "big")


def receipt_key(height: int, index: int) -> bytes:
    """The key of receipt ``index`` of block ``height``."""
    return height.to_bytes(8, "big") + index.to_bytes(4, "big")


class EncodedBlock(NamedTuple):
    """One block's store write, checked and encoded (``Store.encode_block``): plain values, so
    a block writer process can take it."""

    height: int
    block_hash: bytes
    parent_hash: bytes
    # The block header's app hash: the state's before the block.
    parent_app_hash: bytes
    app_hash: bytes
    block: bytes
    certificate: bytes
    transaction_hashes: tuple[bytes, ...]
    receipts: tuple[bytes, ...]
    end_events: bytes | None
    writes: WriteSet
    # The block's Merkle tree records (None: deleted) by key: the execution's own map
    # (``TreeUpdate.changed``), shared, so nothing may modify it.
    tree_records: Mapping[bytes, bytes | None]


class Store:
    """One node's store: its LMDB environment, and the vote record's in ``REPLICA_DIR`` inside
    it. Open with ``Store(path, chain_id=, genesis_hash=)``."""

    scan_batch_entries: int = SCAN_BATCH_ENTRIES

    def __init__(
        self,
        path: Path,
        *,
        chain_id: str,
        genesis_hash: bytes,
        map_size_bytes: int = MAP_SIZE_INITIAL_BYTES,
        sync: bool = True,
        tree_flush_blocks: int = TREE_FLUSH_BLOCKS,
        tree_pending_records_max: int = TREE_PENDING_RECORDS_MAX,
        grow_map_here: bool = True,
    ) -> None:
        if tree_flush_blocks < 1 or tree_pending_records_max < 0:
            raise ValueError("tree_flush_blocks must be at least 1, the records held at least 0")
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.tree_flush_blocks = tree_flush_blocks
        self.tree_pending_records_max = tree_pending_records_max
        self._sync = sync
        # The tree records not yet in the tree database, by committed height (None: none).
        # Set by the writer before its transaction commits; readers take their snapshot's.
        self._tree_layers: dict[int, _TreeLayer | None] = {}
        # The committed height whose held records ``write_held_tree`` put in the tree database
        # (its layer stays for the readers that began before, and holds what the database now
        # does); commits start a new layer over it.
        self._tree_written: int | None = None
        # Held by every read transaction and by map resizes (never during a write's commit).
        self._lock = threading.RLock()
        # Serialises write transactions (one LMDB writer at a time; lock order: this, then
        # ``_lock``).
        self._write_lock = threading.Lock()
        # Long read transactions (snapshot exports) run without ``_lock``; a map resize waits
        # until none is open.
        self._long_readers = 0
        self._long_readers_closed = threading.Condition(self._lock)
        try:
            self._env = lmdb.open(
                str(path),
                map_size=map_size_bytes,
                max_dbs=len(DATABASES) + len(_RETIRED_DATABASES),
                sync=sync,
                metasync=sync,
                readahead=False,
            )
        except lmdb.Error as error:
            raise open_error(path, error) from error
        try:
            self._check_database_list()
            self._db = {name: self._env.open_db(name.encode()) for name in DATABASES}
        except (lmdb.Error, StoreError) as error:
            self._env.close()
            raise (open_error(path, error) if isinstance(error, lmdb.Error) else error) from error
        # The last undo records ``read_certified`` decoded (one height's).
        self._undo_cache: _UndoRecords | None = None
        self.chain_id = chain_id
        self.genesis_hash = genesis_hash
        self._votes: _VoteRecordEnvironment | None = None
        # The block writer process, once started (``start_writer_process``), and one
        # started that waits to take over (``spawn_writer_process``).
        self._writer: _WriterProcess | None = None
        self._spawned: _WriterProcess | None = None
        # Guards ``_spawned`` (its start on the node's thread never waits for a write).
        self._spawn_lock = threading.Lock()
        self._writer_rss_peak_bytes = 0
        # The CPU time of the block writer processes stopped so far.
        self._stopped_writers_cpu_ns = 0
        # Whether a full map is grown here; a writer process's store asks its node instead.
        self._grow_map_here = grow_map_here
        try:
            self._check_identity()
            self._votes = _VoteRecordEnvironment(path / REPLICA_DIR, sync=sync)
            self._adopt_vote_record()
            self._recover_tree()
        except BaseException as error:
            if self._votes is not None:
                self._votes.close()
            self._env.close()
            # A damaged page met while opening, in a read or in the write that records or
            # recovers (the write side reports LMDB's error as its cause), or a stored record
            # that does not decode or does not add up (the tree recovery's checks).
            met = error if isinstance(error, LMDB_DAMAGE_ERRORS) else error.__cause__
            if isinstance(error, StoreDamagedError | StoreMismatchError):
                raise
            if isinstance(met, LMDB_DAMAGE_ERRORS):
                raise StoreDamagedError(damaged_store_message(path, f"LMDB: {met}")) from error
            if isinstance(error, CodecError | DecodeError) or (
                isinstance(error, StoreError) and not isinstance(error, StoreWriteError)
            ):
                raise StoreDamagedError(damaged_store_message(path, str(error))) from error
            raise

    def _check_database_list(self) -> None:
        """Refuse a file whose main database (LMDB's list of named databases) lost some of the
        store's: opening them would create them empty, and the node would take its store for
        a new one (no ``meta``) and start over from genesis, or read an empty state or index.
        A new file has one page after its two meta pages at most and lists none; a store of
        this schema lists them all (an older one may lack those added since)."""
        found: dict[str, lmdb._Database] = {}
        with self._env.begin() as txn:
            for name in (*DATABASES, *_RETIRED_DATABASES):
                try:
                    found[name] = self._env.open_db(name.encode(), txn=txn, create=False)
                except lmdb.NotFoundError:
                    continue
            schema = None
            if "meta" in found:
                raw = txn.get(_META_SCHEMA, db=found["meta"])
                schema = None if raw is None else bytes(raw)
        last_page = int(self._env.info()["last_pgno"])
        if not found and last_page <= _NEW_FILE_LAST_PAGE:
            return
        missing = [name for name in DATABASES if name not in found]
        if "meta" in missing or (schema == str(SCHEMA_VERSION).encode() and missing):
            raise StoreDamagedError(
                damaged_store_message(
                    self.path,
                    f"it holds {last_page + 1} pages but its list of databases lacks "
                    f"{', '.join(missing)}",
                )
            )

    def _check_identity(self) -> None:
        expected = {
            _META_CHAIN_ID: self.chain_id.encode("utf-8"),
            _META_GENESIS_HASH: self.genesis_hash,
            _META_SCHEMA: str(SCHEMA_VERSION).encode(),
        }
        stored = {key: self._get("meta", key) for key in expected}
        # A store whose genesis state was never written holds nothing but this identity
        # (a first start that failed, e.g. on an app's genesis): it takes the one it is
        # opened with, so a corrected genesis.json starts without clearing data/ by hand.
        never_initialised = self._get("meta", _META_HEIGHT) is None
        if all(value is None for value in stored.values()) or (
            never_initialised and stored[_META_SCHEMA] == expected[_META_SCHEMA]
        ):

            def record(txn: lmdb.Transaction) -> None:
                for key, value in expected.items():
                    txn.put(key, value, db=self._db["meta"])

            self._write(record)
            return
        migrate_from = next(
            (
                version
                for version in SCHEMAS_CONVERTED
                if stored[_META_SCHEMA] == str(version).encode()
            ),
            None,
        )
        if stored[_META_SCHEMA] != expected[_META_SCHEMA] and migrate_from is None:
            raise StoreMismatchError(
                f"store at {self.path} has schema version {stored[_META_SCHEMA]!r}, "
                f"this node needs {SCHEMA_VERSION}"
            )
        if stored[_META_CHAIN_ID] != expected[_META_CHAIN_ID]:
            found = (stored[_META_CHAIN_ID] or b"").decode("utf-8", "replace")
            raise StoreMismatchError(
                f"store at {self.path} belongs to chain {found!r}, not {self.chain_id!r}"
            )
        if stored[_META_GENESIS_HASH] != expected[_META_GENESIS_HASH]:
            raise StoreMismatchError(
                f"store at {self.path} was created from genesis "
                f"{(stored[_META_GENESIS_HASH] or b'').hex()}, not {self.genesis_hash.hex()}"
            )
        if migrate_from is not None:
            self._migrate_undo(migrate_from)

    def _migrate_undo(self, version: int) -> None:
        """Convert a version 4 to 8 store, in one write transaction with the new schema
        version (a crash leaves the old version, converted again at the next start). Its vote
        record moves to its own environment after (``_adopt_vote_record``). Version
        4's state undo entries (one per key, ``0x01 || value`` or ``0x00``) become one record
        under the undo height (a store with no undo height has none to convert); the tree
        undo database of versions 4 and 5 is deleted (the tree of h-1 is derived from the
        state's undo record). Their tree is always at their height, which is what version 7
        and later read when ``tree_height`` is absent. A version 8 store's index holds every
        block's entries, which version 9 allows: only the version changes."""
        converted = 0

        def work(txn: lmdb.Transaction) -> None:
            nonlocal converted
            meta = self._db["meta"]
            if version == 4:
                undo_height = txn.get(_META_UNDO_HEIGHT, db=meta)
                handle = self._db["state_undo"]
                replaced: list[tuple[bytes, bytes | None]] = []
                for key, record in txn.cursor(db=handle):
                    entry = bytes(record)
                    replaced.append((bytes(key), None if entry[:1] == _ABSENT else entry[1:]))
                converted = len(replaced)
                txn.drop(handle, delete=False)
                if undo_height is not None:
                    _write_undo(txn, handle, bytes(undo_height), replaced)
            for name in _RETIRED_DATABASES:
                try:
                    retired = self._env.open_db(name.encode(), txn=txn, create=False)
                except lmdb.NotFoundError:
                    continue
                txn.drop(retired, delete=True)
            txn.put(_META_SCHEMA, str(SCHEMA_VERSION).encode(), db=meta)

        self._write(work)
        log.info(
            "store_migrated",
            extra={
                "path": str(self.path),
                "from_schema": version,
                "to_schema": SCHEMA_VERSION,
                "state_undo_keys_converted": converted,
                "databases_deleted": ",".join(_RETIRED_DATABASES),
            },
        )

    def _recover_tree(self) -> None:
        """Bring the tree database to the committed height when it lags (the held records of
        the last blocks were lost with the process): the keys every block since the tree's
        height wrote are in their undo records, and their committed values are in the state,
        so applying those to the stored tree gives the committed state's tree. Its root must
        be the stored app hash (``StoreError`` otherwise). One write transaction, which also
        drops the undo records of the heights before the committed one."""
        with self._lock, self._env.begin(db=self._db["meta"]) as txn:
            raw_height = txn.get(_META_HEIGHT)
            raw_tree_height = txn.get(_META_TREE_HEIGHT)
            if raw_height is None:
                self._tree_layers = {}
                return
            height = int.from_bytes(raw_height, "big")
        if raw_tree_height is None:
            self._tree_layers = {height: None}
            return
        tree_height = int.from_bytes(raw_tree_height, "big")
        if not tree_height < height:
            raise StoreError(
                f"store at {self.path}: its tree is recorded at height {tree_height}, not "
                f"below the committed height {height}"
            )
        applied = indexed = 0

        def work(txn: lmdb.Transaction) -> None:
            nonlocal applied, indexed
            keys: set[bytes] = set()
            for written in range(tree_height + 1, height + 1):
                keys.update(self._read_undo(txn, height_key(written)))
            state = self._db["state"]
            writes = []
            for key in keys:
                value = txn.get(key, db=state)
                writes.append((key, None if value is None else bytes(value)))
            try:
                tree = merkle_update(_UndoneReader(txn, self._db["tree"], {}, None), writes)
            except (AssertionError, ValueError) as error:
                raise StoreError(
                    f"store at {self.path}: its tree at height {tree_height} does not take the "
                    f"writes of the blocks after it: {error}"
                ) from error
            meta = self._db["meta"]
            app_hash = txn.get(_META_APP_HASH, db=meta)
            if app_hash is None or tree.root != bytes(app_hash):
                raise StoreError(
                    f"store at {self.path}: its tree at height {tree_height} with the writes of "
                    f"heights {tree_height + 1}-{height} has root {tree.root.hex()[:16]}, not "
                    "the committed app hash"
                )
            self._apply_records(txn, "tree", tree.records)
            # The index entries of those blocks were held with the tree records: from the
            # stored blocks again.
            located: dict[bytes, bytes] = {}
            blocks = self._db["blocks"]
            for written in range(tree_height + 1, height + 1):
                raw_block = txn.get(height_key(written), db=blocks)
                if raw_block is None:
                    raise StoreError(f"store at {self.path} misses block {written}")
                hashes = Block.decode(bytes(raw_block)).transaction_hashes()
                _locate(located, written, _first_positions(hashes))
            indexed = self._index_transactions(txn, located)
            txn.delete(_META_TREE_HEIGHT, db=meta)
            self._drop_undo_below(txn, height_key(height))
            applied = len(tree.records)

        self._write(work)
        self._tree_layers = {height: None}
        log.info(
            "store_tree_recovered",
            extra={
                "path": str(self.path),
                "tree_height": tree_height,
                "height": height,
                "tree_records_written": applied,
                "transactions_indexed": indexed,
            },
        )

    def _layer_at(self, txn: lmdb.Transaction) -> _TreeLayer | None:
        """The tree records held for the committed height ``txn`` sees (None: the tree
        database is that height's)."""
        raw_height = txn.get(_META_HEIGHT, db=self._db["meta"])
        if raw_height is None:
            return None
        height = int.from_bytes(raw_height, "big")
        try:
            return self._tree_layers[height]
        except KeyError:
            raise StoreError(
                f"store at {self.path}: the tree records of height {height} are no longer "
                f"held (a read begun {_TREE_LAYERS_KEPT} commits or more ago)"
            ) from None

    def _read_undo(self, txn: lmdb.Transaction, undo_key: bytes) -> dict[bytes, bytes | None]:
        """The state undo record stored under ``undo_key`` (a height); ``StoreError`` when it
        is missing or a chunk is."""
        chunks: list[bytes] = []
        with txn.cursor(db=self._db["state_undo"]) as cursor:
            found = cursor.set_range(undo_key)
            while found and cursor.key()[: len(undo_key)] == undo_key:
                if bytes(cursor.key()) != undo_chunk_key(undo_key, len(chunks)):
                    raise StoreError(f"store at {self.path} misses a state_undo chunk")
                chunks.append(bytes(cursor.value()))
                found = cursor.next()
        if not chunks:
            raise StoreError(
                f"store at {self.path} has no state_undo record for height "
                f"{int.from_bytes(undo_key, 'big')}"
            )
        return undo_record(chunks)

    # -- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the block writer process, if any, and close the environments (idempotent)."""
        self.stop_writer_process()
        with self._write_lock, self._lock:
            self._env.close()
        if self._votes is not None:
            self._votes.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @_damage_reported
    def _get(self, db: str, key: bytes) -> bytes | None:
        with self._lock, self._env.begin(db=self._db[db]) as txn:
            value = txn.get(key)
            return None if value is None else bytes(value)

    def _write(self, work: Callable[[lmdb.Transaction], object]) -> None:
        """Run ``work`` in one write transaction, growing the map and retrying when full."""
        with self._write_lock:
            # The reads are waited out (``_lock``) before the map changes.
            _write_growing(self._env, work, self._lock, self._grow)

    def _grow(self) -> None:
        if not self._grow_map_here:
            raise MapNotGrownHere(f"store at {self.path}: the map is full")
        while self._long_readers:  # a snapshot export's transaction must not see a remap
            self._long_readers_closed.wait()
        current, new = _double_map(self._env, f"store at {self.path}")
        log.info("store_map_grown", extra={"from_bytes": current, "to_bytes": new})

    def statistics(self) -> dict[str, int]:
        """Map size, bytes in use, committed height."""
        with self._lock:
            info = self._env.info()
            stat = self._env.stat()
        return {
            "map_size_bytes": int(info["map_size"]),
            "used_bytes": int(stat["psize"]) * (int(info["last_pgno"]) + 1),
            "height": self.height if self.initialised else -1,
        }

    def key_layout(self, database: str) -> tuple[list[bytes], int]:
        """Every key of ``database`` in order, and the leaf pages holding them (for
        measurements of what a commit touches: ``node.bench.execution``)."""
        with self._lock, self._env.begin(db=self._db[database]) as txn:
            keys = [bytes(key) for key in txn.cursor().iternext(keys=True, values=False)]
            return keys, int(txn.stat(self._db[database])["leaf_pages"])

    def start_writer_process(self) -> None:
        """Write blocks and the held tree records from now on in a process of its own (the
        block writer process: ``node.storewriter``), which opens this store's environment
        beside this one; this process keeps the held records its readers need. Call it from
        the thread that lives as long as the store (the child dies with that thread, on
        Linux). Raises ``StoreError`` when the process cannot start."""
        self.spawn_writer_process()
        self.attach_writer_process()

    def discard_spawned_writer(self) -> None:
        """End a process ``spawn_writer_process`` started that has not taken over."""
        with self._spawn_lock:
            spawned, self._spawned = self._spawned, None
        if spawned is not None:
            spawned.close()

    def spawn_writer_process(self) -> None:
        """Start a block writer process that takes over the writes at
        ``attach_writer_process`` (it loads its code meanwhile; starting it takes a few
        milliseconds and never waits for a write). Call it from the thread that lives as
        long as the store: on Linux the child dies with the thread that started it. Does
        nothing when one is running or waiting. Raises ``StoreError`` when it cannot start."""
        with self._spawn_lock:
            if self._writer is None and self._spawned is None:
                self._spawned = _WriterProcess()

    def attach_writer_process(self) -> None:
        """Have the process ``spawn_writer_process`` started write from now on (nothing to do
        when one writes already). The tree records held here are written first (the process
        reads the tree's state as it opens), then the process opens the store with this
        store's map size and settings. Blocks until the process has loaded its code. Raises
        ``StoreError`` when none was spawned or it cannot open the store (the process is
        stopped and the writes stay here)."""
        with self._spawn_lock:
            spawned, self._spawned = self._spawned, None
        if spawned is None:
            if self._writer is not None:
                return
            raise StoreError("no block writer process was started to take over the writes")
        with self._write_lock:
            try:
                self._write_held_tree_here()
                with self._lock:
                    map_size = int(self._env.info()["map_size"])
                spawned.open(
                    {
                        "path": str(self.path),
                        "chain_id": self.chain_id,
                        "genesis_hash": self.genesis_hash,
                        "map_size_bytes": map_size,
                        "sync": self._sync,
                        "tree_flush_blocks": self.tree_flush_blocks,
                        "tree_pending_records_max": self.tree_pending_records_max,
                    }
                )
            except BaseException:
                spawned.close()
                raise
            self._writer = spawned

    def stop_writer_process(self) -> None:
        """Write blocks here again, and end the block writer process (and one spawned that
        waits). The held tree records stay as they are: this store holds the same ones and
        writes them when due. Its peak RSS joins ``writer_process_rss_peak_bytes``, its CPU
        time stays in ``writer_process_cpu_ns``."""
        with self._write_lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                self._note_writer_rss(writer)
                self._stopped_writers_cpu_ns += writer.process_cpu_ns
                writer.close()
            self.discard_spawned_writer()

    def _note_writer_rss(self, writer: _WriterProcess) -> None:
        self._writer_rss_peak_bytes = max(self._writer_rss_peak_bytes, writer.rss_peak_bytes())

    @property
    def writer_process_rss_peak_bytes(self) -> int:
        """The largest peak RSS of this store's block writer processes, the running one's as
        of now (0: none has run, or not on Linux)."""
        writer = self._writer
        if writer is not None:
            self._note_writer_rss(writer)
        return self._writer_rss_peak_bytes

    @property
    def writer_process_pid(self) -> int | None:
        """The block writer process's pid (None: blocks are written here)."""
        return None if self._writer is None else self._writer.pid

    def take_writer_cpu_ns(self) -> int:
        """CPU nanoseconds the block writer process spent on writes since the last call."""
        return 0 if self._writer is None else self._writer.take_cpu_ns()

    @property
    def writer_process_cpu_ns(self) -> int:
        """The CPU time so far of this store's block writer processes (the running one's as
        of its last answer; 0: none has run)."""
        writer = self._writer
        return self._stopped_writers_cpu_ns + (0 if writer is None else writer.process_cpu_ns)

    def _grow_for_writer(self) -> int:
        """The writer process found the map full: grow it here (where the readers are) and
        return the new size for the process to take."""
        with self._lock:
            self._grow()
            return int(self._env.info()["map_size"])

    def adopt_map_size(self, size: int) -> None:
        """Map ``size`` bytes of the environment (a writer process: the size its node grew the
        map to)."""
        with self._lock:
            self._env.set_mapsize(size)

    def reload_held_records(self) -> None:
        """Read the tree's height and held records from the environment again (a writer
        process: its node's genesis or state sync changed them)."""
        self._tree_written = None
        self._recover_tree()

    def _reload_writer(self) -> None:
        """The tree's state changed here (genesis, state sync): the writer process reads it
        again."""
        with self._write_lock:
            if self._writer is not None:
                self._writer.call(("reload",), self._grow_for_writer)

    # -- metadata -----------------------------------------------------------------------------

    @property
    def initialised(self) -> bool:
        """True once genesis state has been written."""
        return self._get("meta", _META_HEIGHT) is not None

    @property
    def height(self) -> int:
        """The last committed height (0: genesis only)."""
        raw = self._get("meta", _META_HEIGHT)
        if raw is None:
            raise StoreError("store has no genesis state yet")
        return int.from_bytes(raw, "big")

    @property
    def app_hash(self) -> bytes:
        """The app hash of the committed state."""
        raw = self._get("meta", _META_APP_HASH)
        if raw is None:
            raise StoreError("store has no genesis state yet")
        return raw

    @property
    def last_block_hash(self) -> bytes:
        """Hash of the last committed block (the genesis hash at height 0)."""
        return self._get("meta", _META_LAST_BLOCK_HASH) or self.genesis_hash

    # -- commits ------------------------------------------------------------------------------

    def init_genesis(self, writes: WriteSet, app_hash: bytes) -> None:
        """Write the genesis state (height 0) and its Merkle tree once; raise
        ``StoreConsistencyError`` if done, or if ``app_hash`` is not the state's root."""
        if self.initialised:
            raise StoreConsistencyError("genesis state is already written")
        tree = build(leaf_of(key, value) for key, value in writes if value is not None)
        if tree.root != app_hash:
            raise StoreConsistencyError(
                f"genesis app hash {app_hash.hex()} is not the genesis state's root "
                f"{tree.root.hex()}"
            )

        def work(txn: lmdb.Transaction) -> None:
            if txn.get(_META_HEIGHT, db=self._db["meta"]) is not None:
                raise StoreConsistencyError("genesis state is already written")
            for database in ("state", "tree", "state_undo"):
                txn.drop(self._db[database], delete=False)
            self._apply_records(txn, "state", writes)
            self._apply_records(txn, "tree", tree.records)
            txn.put(height_key(0), app_hash, db=self._db["app_hashes"])
            meta = self._db["meta"]
            txn.delete(_META_TREE_HEIGHT, db=meta)
            self._tree_layers = {0: None}
            txn.put(_META_APP_HASH, app_hash, db=meta)
            txn.put(_META_LAST_BLOCK_HASH, self.genesis_hash, db=meta)
            txn.put(_META_HEIGHT, height_key(0), db=meta)

        self._write(work)
        self._reload_writer()

    def commit_block(
        self, block: Block, certificate: CommitCertificate, result: BlockResult
    ) -> None:
        """Persist ``block`` (the next height), its certificate and its execution ``result``
        in one write transaction. Raises ``StoreConsistencyError`` (nothing written) when the
        block does not extend the stored chain or the pieces do not belong together.

        The certificate's signatures are the caller's to verify (it knows the validators)."""
        self.commit_blocks(((block, certificate, result),))

    def commit_blocks(
        self,
        entries: Sequence[tuple[Block, CommitCertificate, BlockResult]],
        *,
        defer_tree: bool = False,
    ) -> None:
        """Persist consecutive blocks (each as ``commit_block`` would) in **one** write
        transaction and one fsync: all of them or none. Each block is checked against the
        store as the blocks before it in ``entries`` left it (it must follow, link to and
        carry the app hash of its predecessor); any failure writes nothing. The blocks count
        as that many towards writing the tree: while it waits each block's undo record is
        kept, and when it is written only the last block's. With ``defer_tree`` the tree is
        never written here, whatever is held: the caller writes it in a transaction of its own
        (``write_held_tree``) when ``tree_write_due``, after what waited on these blocks.

        With a block writer process (``start_writer_process``) that process writes them."""
        self.write_blocks(
            [
                self.encode_block(block, certificate, result)
                for block, certificate, result in entries
            ],
            defer_tree=defer_tree,
        )

    def write_blocks(
        self,
        encoded: Sequence[EncodedBlock],
        *,
        defer_tree: bool = False,
        flush: bool | None = None,
    ) -> None:
        """``commit_blocks`` of blocks already checked and encoded (``encode_block``).
        ``flush`` (a block writer process's request) says whether this write writes the tree,
        as the node decided with its own ``tree_flush_blocks`` and record bound: the process
        keeps the settings it opened the store with, and both ends must hold the same
        records."""
        if not encoded:
            return
        top = encoded[-1].height
        writer = self._writer
        if writer is not None:
            with self._write_lock:
                with self._lock, self._env.begin() as txn:
                    below = self._held_layer(txn)
                flushes = self._flushes(below, encoded, defer_tree, flush)
                # Readers that begin once the process has committed find the held records.
                self._tree_layers[top] = _layer_after(below, encoded, flushes)
                writer.call(("write_blocks", list(encoded), flushes), self._grow_for_writer)
        else:
            self._write(lambda txn: self._write_encoded(txn, encoded, defer_tree, flush))
        with self._lock:
            for height in [
                height for height in self._tree_layers if height <= top - _TREE_LAYERS_KEPT
            ]:
                del self._tree_layers[height]

    def _write_encoded(
        self,
        txn: lmdb.Transaction,
        encoded: Sequence[EncodedBlock],
        defer_tree: bool,
        decided: bool | None,
    ) -> None:
        below = self._held_layer(txn)
        flush = self._flushes(below, encoded, defer_tree, decided)
        last = len(encoded) - 1
        for index, entry in enumerate(encoded):
            # When the tree is written, the last block's undo record replaces the ones
            # kept (the others' would go with them); while it waits, every block's joins
            # them (they list the keys a restart applies to the tree).
            self._put_block(txn, entry, not flush or index == last, flush)
        meta = self._db["meta"]
        if flush:
            merged = below.merged() if below is not None else {}
            located = below.merged_locations() if below is not None else {}
            for entry in encoded:
                merged.update(entry.tree_records)
                _locate(located, entry.height, _first_positions(entry.transaction_hashes))
            self._apply_records(txn, "tree", sorted(merged.items(), key=_BY_KEY))
            self._index_transactions(txn, located)
            txn.delete(_META_TREE_HEIGHT, db=meta)
        elif below is None:
            txn.put(_META_TREE_HEIGHT, height_key(encoded[0].height - 1), db=meta)
        self._tree_layers[encoded[-1].height] = _layer_after(below, encoded, flush)

    def _flushes(
        self,
        below: _TreeLayer | None,
        encoded: Sequence[EncodedBlock],
        defer_tree: bool,
        decided: bool | None,
    ) -> bool:
        """Whether a write of ``encoded`` over the held records ``below`` writes the tree: as
        ``decided`` when the caller decided it (a block writer process's node), else when the
        tree is due and not deferred."""
        if decided is not None:
            return decided
        return not defer_tree and self._tree_due(*_held_after(below, encoded))

    def _tree_due(self, blocks: int, records: int) -> bool:
        return blocks >= self.tree_flush_blocks or records > self.tree_pending_records_max

    def tree_write_due(self) -> bool:
        """True when the tree records held at the committed height are due to be written
        (``tree_flush_blocks`` blocks, or more than ``tree_pending_records_max`` records):
        what ``commit_blocks`` would have written had it not been told to defer."""
        with self._lock, self._env.begin() as txn:
            layer = self._held_layer(txn)
        return layer is not None and self._tree_due(layer.blocks, layer.records_held)

    def write_held_tree(self) -> int:
        """Write the tree records held at the committed height to the tree database, in one
        write transaction of their own: the tree is then the committed height's, and only that
        height's undo record is kept (as when a commit writes the tree). Returns the records
        written (0: nothing was held). A crash before it commits leaves the tree height and
        undo records as they were, so opening the store recovers the tree as after any lost
        held records."""
        written = 0
        written_at = 0
        if self._writer is not None:
            with self._write_lock:
                reply = self._writer.call(("write_held_tree",), self._grow_for_writer)
            if (
                type(reply) is not tuple
                or len(reply) != 2
                or not all(type(n) is int for n in reply)
            ):
                raise StoreError(f"the block writer process answered {reply!r} to a tree write")
            written, written_at = reply
            if written:
                with self._lock:
                    self._tree_written = written_at
            return int(written)
        with self._write_lock:
            return self._write_held_tree_here()

    def _write_held_tree_here(self) -> int:
        """``write_held_tree`` in this process, the write lock held."""
        written = 0
        written_at = 0

        def work(txn: lmdb.Transaction) -> None:
            nonlocal written, written_at
            layer = self._held_layer(txn)
            if layer is None:
                return
            meta = self._db["meta"]
            raw_height = txn.get(_META_HEIGHT, db=meta)
            assert raw_height is not None  # a held layer belongs to a committed height
            current = bytes(raw_height)
            records = sorted(layer.merged().items(), key=_BY_KEY)
            self._apply_records(txn, "tree", records)
            self._index_transactions(txn, layer.merged_locations())
            txn.delete(_META_TREE_HEIGHT, db=meta)
            self._drop_undo_below(txn, current)
            written = len(records)
            written_at = int.from_bytes(current, "big")

        _write_growing(self._env, work, self._lock, self._grow)
        if written:
            with self._lock:
                self._tree_written = written_at
        return written

    def _index_transactions(self, txn: lmdb.Transaction, located: dict[bytes, bytes]) -> int:
        """Put the transaction index entries ``located`` (hash: encoded location), in key
        order; an entry the index holds already stays (the first inclusion wins: a replayed
        copy later is only a rejected receipt). Returns the entries added."""
        added = 0
        with txn.cursor(db=self._db["transactions"]) as cursor:
            put = cursor.put
            for tx_hash, location in sorted(located.items(), key=_BY_KEY):
                added += put(tx_hash, location, overwrite=False)
        return added

    def _drop_undo_below(self, txn: lmdb.Transaction, height: bytes) -> None:
        """Delete the undo records of the heights before ``height`` (a ``height_key``): once
        the tree database is at ``height`` they are not needed to recover it."""
        undo = self._db["state_undo"]
        with txn.cursor(db=undo) as cursor:
            older: list[bytes] = []
            for key in cursor.iternext(keys=True, values=False):
                if bytes(key[: len(height)]) >= height:
                    break  # keys sort by height first
                older.append(bytes(key))
        for key in older:
            txn.delete(key, db=undo)

    def _held_layer(self, txn: lmdb.Transaction) -> _TreeLayer | None:
        """The tree records held for the committed height ``txn`` sees that the tree database
        does not hold yet (None: it holds them all)."""
        layer = self._layer_at(txn)
        if layer is not None and layer.height == self._tree_written:
            return None
        return layer

    def encode_block(
        self, block: Block, certificate: CommitCertificate, result: BlockResult
    ) -> EncodedBlock:
        """Check that the pieces belong together (``StoreConsistencyError`` otherwise) and
        encode them for ``write_blocks``."""
        height = block.height
        header = block.header
        if header.chain_id != self.chain_id:
            raise StoreConsistencyError(f"block is for chain {header.chain_id!r}")
        if certificate.height != height or certificate.block_hash != block.hash:
            raise StoreConsistencyError("certificate is for another block")
        if result.height != height or len(result.receipts) != len(block.transactions):
            raise StoreConsistencyError("execution result is for another block")
        if result.tree.root != result.app_hash:
            raise StoreConsistencyError("execution result's tree does not have its app hash")
        return EncodedBlock(
            height=height,
            block_hash=block.hash,
            parent_hash=header.parent_hash,
            parent_app_hash=header.app_hash,
            app_hash=result.app_hash,
            block=block.encode(),
            certificate=certificate.encode(),
            transaction_hashes=block.transaction_hashes(),
            receipts=tuple(receipt.encode() for receipt in result.receipts),
            end_events=stored_end_block_events(self.chain_id, len(block.transactions), result),
            writes=result.writes,
            tree_records=result.tree.changed,
        )

    def _put_block(
        self, txn: lmdb.Transaction, entry: EncodedBlock, undo: bool, replace_undo: bool
    ) -> None:
        """Write the block ``entry`` and its state writes in ``txn`` (the caller writes the
        tree), with its undo record when told (the last block of the transaction), replacing
        the undo records kept or joining them."""
        height = entry.height
        meta = self._db["meta"]
        raw_height = txn.get(_META_HEIGHT, db=meta)
        if raw_height is None:
            raise StoreConsistencyError("store has no genesis state yet")
        stored_height = int.from_bytes(raw_height, "big")
        if height != stored_height + 1:
            raise StoreConsistencyError(
                f"block {height} does not follow committed height {stored_height}"
            )
        last_hash = txn.get(_META_LAST_BLOCK_HASH, db=meta)
        if last_hash is None or entry.parent_hash != bytes(last_hash):
            raise StoreConsistencyError(f"block {height} does not link to block {height - 1}")
        stored_app_hash = txn.get(_META_APP_HASH, db=meta)
        if stored_app_hash is None or entry.parent_app_hash != bytes(stored_app_hash):
            raise StoreConsistencyError(
                f"block {height} carries an app hash that differs from the stored state"
            )
        key = height_key(height)
        txn.put(key, entry.block, db=self._db["blocks"])
        txn.put(entry.block_hash, key, db=self._db["block_hashes"])
        txn.put(key, entry.certificate, db=self._db["certificates"])
        txn.put(key, entry.app_hash, db=self._db["app_hashes"])
        receipts = txn.cursor(db=self._db["receipts"])
        for index, receipt in enumerate(entry.receipts):
            receipts.put(receipt_key(height, index), receipt)
        if entry.end_events is not None:
            txn.put(key, entry.end_events, db=self._db["block_events"])
        self._apply_records(
            txn, "state", entry.writes, key if undo else None, replace_undo=replace_undo
        )
        if undo:
            txn.put(_META_UNDO_HEIGHT, key, db=meta)
        txn.put(_META_APP_HASH, entry.app_hash, db=meta)
        txn.put(_META_LAST_BLOCK_HASH, entry.block_hash, db=meta)
        txn.put(_META_HEIGHT, key, db=meta)

    # -- state sync ---------------------------------------------------------------------------

    def begin_state_sync(self, height: int) -> None:
        """Start replacing the genesis state with a snapshot of ``height``: the state and tree
        are emptied and the store says ``state_sync_pending`` until ``finish_state_sync``.
        Only a store holding no block may be synced (``StoreConsistencyError`` otherwise)."""

        def work(txn: lmdb.Transaction) -> None:
            meta = self._db["meta"]
            raw_height = txn.get(_META_HEIGHT, db=meta)
            if raw_height is None or int.from_bytes(raw_height, "big") != 0:
                raise StoreConsistencyError("state sync needs a store at genesis, with no block")
            if txn.get(_META_BASE_HEIGHT, db=meta) is not None:
                raise StoreConsistencyError("this store was already state-synced")
            for database in ("state", "tree", "state_undo"):
                txn.drop(self._db[database], delete=False)
            txn.delete(_META_TREE_HEIGHT, db=meta)
            txn.put(_META_STATE_SYNC, height_key(height), db=meta)
            self._tree_layers = {0: None}

        self._write(work)
        self._reload_writer()

    def install_state_chunk(
        self, items: tuple[tuple[bytes, bytes], ...], records: dict[bytes, bytes]
    ) -> None:
        """Write one verified snapshot chunk: its state entries and tree records."""

        def work(txn: lmdb.Transaction) -> None:
            if txn.get(_META_STATE_SYNC, db=self._db["meta"]) is None:
                raise StoreConsistencyError("no state sync in progress")
            state = self._db["state"]
            tree = self._db["tree"]
            # In key order: LMDB inserts a sorted run with far fewer page splits.
            for key, value in sorted(items):
                txn.put(key, value, db=state)
            for key, record in sorted(records.items()):
                txn.put(key, record, db=tree)

        self._write(work)

    def finish_state_sync(
        self,
        block: Block,
        certificate: CommitCertificate,
        app_hash: bytes,
        records: dict[bytes, bytes],
    ) -> None:
        """Complete a state sync at ``block``'s height: the tree records above the chunks, the
        block and its certificate (the new tip) and the metadata, in one write transaction.
        The caller verified the certificate, the app hash and every chunk."""
        height = block.height

        def work(txn: lmdb.Transaction) -> None:
            meta = self._db["meta"]
            pending = txn.get(_META_STATE_SYNC, db=meta)
            if pending is None or int.from_bytes(pending, "big") != height:
                raise StoreConsistencyError(f"no state sync to height {height} in progress")
            tree = self._db["tree"]
            for key, record in records.items():
                txn.put(key, record, db=tree)
            stored_root = txn.get(ROOT_KEY, db=tree)
            if root_of_slot(None if stored_root is None else bytes(stored_root)) != app_hash:
                raise StoreConsistencyError("the installed tree does not have the app hash")
            key = height_key(height)
            txn.put(key, block.encode(), db=self._db["blocks"])
            txn.put(block.hash, key, db=self._db["block_hashes"])
            txn.put(key, certificate.encode(), db=self._db["certificates"])
            txn.put(key, app_hash, db=self._db["app_hashes"])
            txn.put(_META_APP_HASH, app_hash, db=meta)
            txn.put(_META_LAST_BLOCK_HASH, block.hash, db=meta)
            txn.put(_META_BASE_HEIGHT, key, db=meta)
            txn.put(_META_HEIGHT, key, db=meta)
            txn.delete(_META_UNDO_HEIGHT, db=meta)
            txn.delete(_META_STATE_SYNC, db=meta)
            self._tree_layers[height] = None

        self._write(work)
        self._tree_layers = {height: None}
        self._reload_writer()

    def _apply_records(
        self,
        txn: lmdb.Transaction,
        database: str,
        records: Sequence[tuple[bytes, bytes | None]],
        undo_key: bytes | None = None,
        *,
        replace_undo: bool = True,
    ) -> None:
        """Write ``records`` (None deletes) to ``database``; with ``undo_key``, put the record
        of what each key held before (one version back) in its undo database
        (``<database>_undo``) under ``undo_key``, in place of the records there
        (``replace_undo``) or beside them."""
        db = self._db[database]
        if undo_key is None:
            # One cursor for the whole run: records come sorted, and LMDB searches from the
            # cursor's page when the next key falls on it, instead of from the root.
            cursor = txn.cursor(db=db)
            for key, value in records:
                if value is None:
                    cursor.pop(key)
                else:
                    cursor.put(key, value)
            return
        undo = self._db[f"{database}_undo"]
        if replace_undo:
            txn.drop(undo, delete=False)
        _write_undo(txn, undo, undo_key, _replace_all(txn, db, records))

    # -- chain reads --------------------------------------------------------------------------

    def block(self, height: int) -> Block | None:
        """The committed block at ``height``, or None."""
        raw = self._get("blocks", height_key(height))
        return None if raw is None else _decoded(self.path, f"block {height}", Block.decode, raw)

    def block_bytes(self, height: int) -> bytes | None:
        """The committed block at ``height`` as stored (for block sync), or None."""
        return self._get("blocks", height_key(height))

    def height_of(self, block_hash: bytes) -> int | None:
        """The height of the committed block with ``block_hash``, or None."""
        raw = self._get("block_hashes", block_hash)
        return None if raw is None else int.from_bytes(raw, "big")

    def block_by_hash(self, block_hash: bytes) -> Block | None:
        """The committed block with ``block_hash``, or None."""
        height = self.height_of(block_hash)
        return None if height is None else self.block(height)

    def certificate(self, height: int) -> CommitCertificate | None:
        """The commit certificate of ``height``, or None."""
        raw = self._get("certificates", height_key(height))
        if raw is None:
            return None
        return _decoded(self.path, f"certificate {height}", CommitCertificate.decode, raw)

    def app_hash_at(self, height: int) -> bytes | None:
        """The app hash after ``height`` (0: genesis), or None."""
        return self._get("app_hashes", height_key(height))

    @_damage_reported
    def committed_among(self, tx_hashes: Sequence[bytes]) -> set[bytes]:
        """Those of ``tx_hashes`` that committed blocks include (the transaction index, and the
        entries held with the tree records), read in one read transaction (admission asks for
        a whole batch at once)."""
        if not tx_hashes:
            return set()
        with self._lock, self._env.begin(db=self._db["transactions"]) as txn:
            get = txn.get
            found = {tx_hash for tx_hash in tx_hashes if get(tx_hash) is not None}
            layer = self._held_layer(txn) if len(found) < len(tx_hashes) else None
        if layer is not None:
            found.update(
                tx_hash
                for tx_hash in tx_hashes
                if tx_hash not in found and layer.holds_transaction(tx_hash)
            )
        return found

    @_damage_reported
    def transaction_location(self, tx_hash: bytes) -> TransactionLocation | None:
        """Where the transaction with ``tx_hash`` was first included, or None."""
        with self._lock, self._env.begin(db=self._db["transactions"]) as txn:
            raw = txn.get(tx_hash)
            layer = self._held_layer(txn) if raw is None else None
        if layer is not None:
            # Not in the index: the blocks since the tree was written hold it, if any does.
            return layer.first_location(tx_hash)
        if raw is None:
            return None
        return _decoded(self.path, f"index entry {tx_hash.hex()}", _location_of, bytes(raw))

    def receipt(self, height: int, index: int) -> Receipt | None:
        """The receipt of transaction ``index`` of block ``height``, or None."""
        raw = self._get("receipts", receipt_key(height, index))
        if raw is None:
            return None
        return _decoded(self.path, f"receipt {height}/{index}", Receipt.decode, raw)

    def block_events(self, height: int) -> tuple[Event, ...]:
        """The events of block ``height``'s end-of-block work (none stored: empty)."""
        raw = self._get("block_events", height_key(height))
        return () if raw is None else Receipt.decode(raw).events

    def receipt_of(self, tx_hash: bytes) -> Receipt | None:
        """The receipt of the first inclusion of ``tx_hash``, or None."""
        location = self.transaction_location(tx_hash)
        return None if location is None else self.receipt(location.height, location.index)

    # -- validator sets -------------------------------------------------------------------------

    def validator_set(self, height: int) -> ValidatorSet | None:
        """The validator set that certifies block ``height``, as the committed state records it:
        final for ``height <= self.height + 2`` (a change decided in block c is in force from
        c + 2). None when the chain keeps no registry: its genesis validators certify every
        height. This is the set to verify a certificate of ``height`` against, never another.
        A state-synced store answers it for every height from its base on (the registry's
        entries are never deleted, so the snapshot holds them all).
        """
        if height < 1:
            raise ValueError("heights start at 1")
        view = NamespacedState(self.state_backend(), MEMBERSHIP_APP, writable=False)
        return validator_set_at(view, height)

    def validator_schedule(self) -> tuple[tuple[int, ValidatorSet], ...]:
        """Every (effective height, set) the committed registry holds, in height order (empty
        on a chain without a registry): what a state-syncing peer walks from genesis."""
        view = NamespacedState(self.state_backend(), MEMBERSHIP_APP, writable=False)
        return scheduled_sets(view)

    @property
    def base_height(self) -> int:
        """The first height this store holds the state of: 0, or the snapshot height a state
        sync started from (no blocks below it are stored)."""
        raw = self._get("meta", _META_BASE_HEIGHT)
        return 0 if raw is None else int.from_bytes(raw, "big")

    @property
    def state_sync_pending(self) -> int | None:
        """The snapshot height of a state sync that has not finished (its state is partial),
        or None."""
        raw = self._get("meta", _META_STATE_SYNC)
        return None if raw is None else int.from_bytes(raw, "big")

    # -- state --------------------------------------------------------------------------------

    @_damage_reported
    def tree_node(self, key: bytes) -> bytes | None:
        """The committed Merkle tree record under ``key``."""
        with self._lock, self._env.begin() as txn:
            return _read_layered(txn, self._db["tree"], self._layer_at(txn), key)

    @_damage_reported
    def tree_held(self) -> tuple[int, int]:
        """The blocks, and their tree records, that the tree database does not hold yet at the
        committed height (held in memory until the tree is next written)."""
        with self._lock, self._env.begin() as txn:
            layer = self._held_layer(txn)
        return (0, 0) if layer is None else (layer.blocks, layer.records_held)

    @_damage_reported
    def read_certified(self, work: Callable[[CertifiedView], _T]) -> _T | None:
        """Run ``work`` on the state after height h-1 (h: the committed height), the latest
        state whose app hash a certificate covers, with block h and its certificate, all read
        in one read transaction. Returns None (without calling ``work``) when no earlier
        version is kept: genesis only, or no block since a state sync or a restart from a
        backup. ``work`` must not call back into the store."""
        with self._lock, self._env.begin() as txn:
            meta = self._db["meta"]
            raw_height = txn.get(_META_HEIGHT, db=meta)
            raw_undo = txn.get(_META_UNDO_HEIGHT, db=meta)
            if raw_height is None or raw_undo is None or bytes(raw_undo) != bytes(raw_height):
                return None
            height = int.from_bytes(raw_height, "big")
            block = txn.get(height_key(height), db=self._db["blocks"])
            certificate = txn.get(height_key(height), db=self._db["certificates"])
            app_hash = txn.get(height_key(height - 1), db=self._db["app_hashes"])
            assert block is not None
            assert certificate is not None
            assert app_hash is not None
            layer = self._layer_at(txn)
            undo = self._undo_records(txn, bytes(raw_undo), bytes(app_hash), layer)
            view = CertifiedView(
                height=height - 1,
                app_hash=bytes(app_hash),
                block=Block.decode(bytes(block)),
                certificate=CommitCertificate.decode(bytes(certificate)),
                state=_UndoneReader(txn, self._db["state"], undo.state, None),
                tree=_UndoneReader(txn, self._db["tree"], undo.tree, layer),
            )
            return work(view)

    def _undo_records(
        self, txn: lmdb.Transaction, undo_key: bytes, app_hash: bytes, layer: _TreeLayer | None
    ) -> _UndoRecords:
        """The state undo record under ``undo_key`` (the committed height h) and the tree
        records of h-1 derived from it, once per height: every proof at one height reads the
        same records. The derived tree's root must be ``app_hash`` (the one stored for h-1),
        or the store is inconsistent (``StoreError``). Called holding ``_lock``."""
        cached = self._undo_cache
        if cached is not None and cached.key == undo_key:
            return cached
        state = self._read_undo(txn, undo_key)
        tree = merkle_update(_UndoneReader(txn, self._db["tree"], {}, layer), state.items())
        if tree.root != app_hash:
            raise StoreError(
                f"store at {self.path}: its undo record does not lead back to the app hash of "
                f"height {int.from_bytes(undo_key, 'big') - 1} ({tree.root.hex()[:16]} instead "
                f"of {app_hash.hex()[:16]})"
            )
        self._undo_cache = _UndoRecords(undo_key, state, tree.changed)
        return self._undo_cache

    def open_state_reader(self) -> StateReader:
        """A read transaction over the committed state and tree, held until its ``close``
        (snapshot exports read a whole state at one height while blocks keep committing).
        Grows the map first when it is more than half full, so commits are unlikely to need a
        resize (which waits for the reader) meanwhile."""
        with self._write_lock, self._lock:  # no write transaction open while the map grows
            info = self._env.info()
            stat = self._env.stat()
            used = int(stat["psize"]) * (int(info["last_pgno"]) + 1)
            if used * 2 > int(info["map_size"]):
                self._grow()
            txn, layer = self._begin_long_read()
        return StateReader(self, txn, layer)

    def _begin_long_read(self) -> tuple[lmdb.Transaction, _TreeLayer | None]:
        """A read transaction counted as a long reader (``_close_long_reader`` ends it), and
        the tree records held for its height, taken at once. Called holding ``_lock``."""
        txn = self._env.begin()
        self._long_readers += 1
        try:
            return txn, self._layer_at(txn)
        except BaseException:
            self._close_long_reader(txn)
            raise

    def _close_long_reader(self, txn: lmdb.Transaction) -> None:
        with self._lock:
            txn.abort()
            self._long_readers -= 1
            self._long_readers_closed.notify_all()

    def state_backend(self) -> LmdbStateBackend:
        """The committed application state as an ``apps.state.StateBackend``."""
        return LmdbStateBackend(self)

    def state_get(self, key: bytes) -> bytes | None:
        """The committed value at the namespaced ``key``."""
        return self._get("state", key)

    def state_scan(
        self,
        start: bytes = b"",
        end: bytes | None = None,
        *,
        reverse: bool = False,
        first_batch: list[tuple[bytes, bytes]] | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Committed (key, value) with ``start <= key < end`` in key order (or reverse).

        Reads in batches of short read transactions: a commit that lands during a long scan
        can be seen part way (the node executes and commits in one task, so blocks never
        see this). ``first_batch``: the scan's first batch, already read (``_scan_batch_in``)."""
        batch = self._scan_batch(start, end, reverse, None) if first_batch is None else first_batch
        while True:
            yield from batch
            if len(batch) < self.scan_batch_entries:
                return
            batch = self._scan_batch(start, end, reverse, batch[-1][0])

    def _scan_batch(
        self, start: bytes, end: bytes | None, reverse: bool, after: bytes | None
    ) -> list[tuple[bytes, bytes]]:
        with self._lock, self._env.begin(db=self._db["state"]) as txn:
            return self._scan_batch_in(txn, start, end, reverse, after)

    @_damage_reported
    def _scan_batch_in(
        self,
        txn: lmdb.Transaction,
        start: bytes,
        end: bytes | None,
        reverse: bool,
        after: bytes | None,
    ) -> list[tuple[bytes, bytes]]:
        batch: list[tuple[bytes, bytes]] = []
        with txn.cursor(db=self._db["state"]) as cursor:
            if not reverse:
                positioned = cursor.set_range(after if after is not None else start)
                if positioned and after is not None and cursor.key() == after:
                    positioned = cursor.next()
                while positioned:
                    key = bytes(cursor.key())
                    if end is not None and key >= end:
                        break
                    batch.append((key, bytes(cursor.value())))
                    if len(batch) == self.scan_batch_entries:
                        break
                    positioned = cursor.next()
            else:
                bound = after if after is not None else end
                if bound is None:
                    positioned = cursor.last()
                else:
                    # Position on the last key < bound.
                    positioned = cursor.prev() if cursor.set_range(bound) else cursor.last()
                while positioned:
                    key = bytes(cursor.key())
                    if key < start:
                        break
                    batch.append((key, bytes(cursor.value())))
                    if len(batch) == self.scan_batch_entries:
                        break
                    positioned = cursor.prev()
        return batch

    # -- consensus persistence ----------------------------------------------------------------

    def save_replica_state(self, data: bytes) -> None:
        """Durably record the replica's state (before the messages it justifies are sent), in
        the vote record's own environment: it never waits for the store's write transactions."""
        assert self._votes is not None
        self._votes.put(data)

    def clear_replica_state(self) -> None:
        """Forget the replica's state (a restored backup of another validator's store)."""
        assert self._votes is not None
        self._votes.delete()

    def load_replica_state(self) -> bytes | None:
        """The last saved replica state, or None."""
        assert self._votes is not None
        return self._votes.get()

    def _adopt_vote_record(self) -> None:
        """A vote record in the store's own ``replica`` database (written by schema 7 or
        earlier, or carried by a backup archive) moves to the vote record's environment, unless
        that already holds one: that one is the record the node writes, so it is the newer.
        The copy is synced before the old record is deleted, so a crash in between leaves both,
        and the next open settles them the same way."""
        legacy = self._get("replica", _REPLICA_KEY)
        if legacy is None:
            return
        assert self._votes is not None
        adopted = self._votes.get() is None
        if adopted:
            self._votes.put(legacy)
        self._write(lambda txn: txn.delete(_REPLICA_KEY, db=self._db["replica"]))
        log.info("vote_record_moved", extra={"path": str(self.path), "adopted": adopted})

    def add_evidence(self, height: int, data: bytes) -> bool:
        """Store equivocation evidence observed at ``height``; False when already stored."""
        key = height_key(height) + hash_bytes(data)
        added = False

        def work(txn: lmdb.Transaction) -> None:
            nonlocal added
            added = bool(txn.put(key, data, db=self._db["evidence"], overwrite=False))

        self._write(work)
        return added

    @_damage_reported
    def evidence(self, from_height: int = 0) -> list[tuple[int, bytes]]:
        """Stored evidence as (height, bytes), by height then evidence hash."""
        items: list[tuple[int, bytes]] = []
        with self._lock, self._env.begin(db=self._db["evidence"]) as txn:
            cursor = txn.cursor()
            positioned = cursor.set_range(height_key(from_height))
            while positioned:
                key = bytes(cursor.key())
                items.append((int.from_bytes(key[:8], "big"), bytes(cursor.value())))
                positioned = cursor.next()
        return items


class StateReader:
    """The committed state, tree and metadata at one height, read in one long transaction
    (``Store.open_state_reader``). Used from one thread at a time; ``close`` it."""

    def __init__(self, store: Store, txn: lmdb.Transaction, layer: _TreeLayer | None) -> None:
        self._store = store
        self._txn = txn
        self._layer = layer
        self._closed = False
        meta = store._db["meta"]
        raw_height = txn.get(_META_HEIGHT, db=meta)
        raw_hash = txn.get(_META_APP_HASH, db=meta)
        if raw_height is None or raw_hash is None:
            self.close()
            raise StoreError("store has no genesis state yet")
        self.height = int.from_bytes(raw_height, "big")
        self.app_hash = bytes(raw_hash)
        stat = txn.stat(store._db["state"])
        self.entries = int(stat["entries"])
        page = int(stat["psize"])
        self.bytes_estimate = page * (
            int(stat["leaf_pages"]) + int(stat["branch_pages"]) + int(stat["overflow_pages"])
        )

    def scan(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of the state, in key order."""
        cursor = self._txn.cursor(db=self._store._db["state"])
        try:
            for key, value in cursor.iternext(keys=True, values=True):
                yield bytes(key), bytes(value)
        except LMDB_DAMAGE_ERRORS as error:
            detail = f"LMDB: {error}"
            raise StoreDamagedError(damaged_store_message(self._store.path, detail)) from error

    def tree_node(self, key: bytes) -> bytes | None:
        """The tree record under ``key`` (an ``apps.merkle.TreeReader``)."""
        try:
            return _read_layered(self._txn, self._store._db["tree"], self._layer, key)
        except LMDB_DAMAGE_ERRORS as error:
            raise _damage_met(self._store, error) from error

    def close(self) -> None:
        """End the transaction (idempotent)."""
        if not self._closed:
            self._closed = True
            self._store._close_long_reader(self._txn)

    def __enter__(self) -> StateReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _VoteRecordEnvironment:
    """The replica's vote record: one value in an LMDB environment of its own (``REPLICA_DIR``),
    written with its own fsync. Every operation holds ``_lock``; the map doubles when full."""

    def __init__(self, path: Path, *, sync: bool) -> None:
        path.mkdir(mode=0o700, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        try:
            self._env = lmdb.open(
                str(path),
                map_size=_REPLICA_MAP_SIZE_INITIAL_BYTES,
                max_dbs=0,
                sync=sync,
                metasync=sync,
                readahead=False,
            )
        except lmdb.Error as error:
            raise StoreError(f"cannot open the vote record at {path}: {error}") from error

    def get(self) -> bytes | None:
        with self._lock, self._env.begin() as txn:
            value = txn.get(_REPLICA_KEY)
            return None if value is None else bytes(value)

    def put(self, data: bytes) -> None:
        self._write(lambda txn: txn.put(_REPLICA_KEY, data))

    def delete(self) -> None:
        self._write(lambda txn: txn.delete(_REPLICA_KEY))

    def _write(self, work: Callable[[lmdb.Transaction], object]) -> None:
        with self._lock:
            _write_growing(
                self._env,
                work,
                contextlib.nullcontext(),  # every operation already holds ``_lock``
                lambda: _double_map(self._env, f"the vote record at {self.path}"),
            )

    def close(self) -> None:
        with self._lock:
            self._env.close()


def _write_growing(
    env: lmdb.Environment,
    work: Callable[[lmdb.Transaction], object],
    remap_lock: AbstractContextManager[object],
    grow: Callable[[], object],
) -> None:
    """Run ``work`` in one write transaction of ``env``; when the map is full, ``grow`` it and
    run ``work`` again, and adopt a size another opener set. Both hold ``remap_lock``."""
    while True:
        try:
            with env.begin(write=True) as txn:
                work(txn)
            return
        except lmdb.MapFullError:
            with remap_lock:  # the write transaction is aborted
                grow()
        except lmdb.MapResizedError:
            with remap_lock:
                env.set_mapsize(0)
        except lmdb.Error as error:
            # Aborted: LMDB switches its meta page only after every data page is written, so
            # the store holds what the last transaction that committed left.
            raise _write_error(Path(env.path()), error) from error


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a write refused for want of room: the store's
    ``StoreDiskFullError``, or an ``OSError`` of ``DISK_FULL_ERRNOS`` (a file outside the store,
    such as a snapshot's)."""
    return isinstance(error, StoreDiskFullError) or (
        isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS
    )


def _write_error(path: Path, error: lmdb.Error) -> StoreWriteError:
    """The error for a write transaction of the LMDB environment in ``path`` that failed with
    ``error``: ``StoreDiskFullError`` naming the full disk or the file size limit when that is
    the cause (``_DISK_FULL_FREE_BYTES``), ``StoreWriteError`` otherwise."""
    where = f"cannot write to the store at {path}"
    try:
        disk = os.statvfs(path)
        free_bytes = disk.f_bavail * disk.f_frsize
        file_bytes = (path / "data.mdb").stat().st_size
    except OSError:
        return StoreWriteError(f"{where}: {error}")
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    limited = limit != resource.RLIM_INFINITY and file_bytes + _FILE_LIMIT_SLACK_BYTES > limit
    if limited and "No space left" not in str(error):
        return StoreDiskFullError(
            f"{where}: its file reached the process's file size limit (RLIMIT_FSIZE, "
            f"ulimit -f) of {limit} bytes ({error}); nothing of this write was stored"
        )
    if free_bytes < _DISK_FULL_FREE_BYTES or any(
        message in str(error) for message in _DISK_FULL_MESSAGES
    ):
        return StoreDiskFullError(
            f"{where}: the disk is full ({free_bytes} bytes free on its filesystem; {error}); "
            "nothing of this write was stored"
        )
    return StoreWriteError(f"{where}: {error}")


def _double_map(env: lmdb.Environment, what: str) -> tuple[int, int]:
    """Double ``env``'s map size, up to ``MAP_SIZE_MAX_BYTES`` (``StoreError`` past it, naming
    ``what``); returns the size before and after."""
    current = int(env.info()["map_size"])
    new = current * 2
    if new > MAP_SIZE_MAX_BYTES:
        raise StoreError(f"{what} would exceed {MAP_SIZE_MAX_BYTES} bytes")
    env.set_mapsize(new)
    return current, new


def read_vote_record(path: Path) -> bytes | None:
    """The replica's vote record of the store in ``path``, read-only, whatever the store's
    schema: from the vote record's environment when it holds one, else from the store's own
    ``replica`` database (a store of an earlier schema); None when neither does. Raises
    ``StoreError`` when the store cannot be read."""
    votes = path / REPLICA_DIR
    try:
        if (votes / "data.mdb").is_file():
            env = lmdb.open(str(votes), readonly=True, max_dbs=0, readahead=False)
            try:
                with env.begin() as txn:
                    value = txn.get(_REPLICA_KEY)
                    if value is not None:
                        return bytes(value)
            finally:
                env.close()
    except lmdb.Error as error:
        raise StoreError(f"cannot read the vote record of the store at {path}: {error}") from error
    return _read_any_schema(path, "replica", _REPLICA_KEY)


def read_committed_height(path: Path) -> int | None:
    """The committed height of the store in ``path``, read-only, whatever the store's schema;
    None when there is no store or it holds no genesis state yet. Raises ``StoreError`` when
    the store cannot be read."""
    raw = _read_any_schema(path, "meta", _META_HEIGHT)
    return None if raw is None else int.from_bytes(raw, "big")


def _read_any_schema(path: Path, database: str, key: bytes) -> bytes | None:
    """One value of the store environment in ``path`` (None: no store, database or value),
    read-only and without checking the schema."""
    if not (path / "data.mdb").is_file():
        return None
    try:
        env = lmdb.open(
            str(path),
            readonly=True,
            max_dbs=len(DATABASES) + len(_RETIRED_DATABASES),
            readahead=False,
        )
        try:
            try:
                handle = env.open_db(database.encode(), create=False)
            except lmdb.NotFoundError:
                return None
            with env.begin(db=handle) as txn:
                value = txn.get(key)
                return None if value is None else bytes(value)
        finally:
            env.close()
    except lmdb.Error as error:
        raise open_error(path, error) from error


def _replace_all(
    txn: lmdb.Transaction, db: lmdb._Database, records: Sequence[tuple[bytes, bytes | None]]
) -> Iterator[tuple[bytes, bytes | None]]:
    """Write each record (None deletes), yielding its key and what it held before."""
    cursor = txn.cursor(db=db)  # as in ``Store._apply_records``
    for key, value in records:
        old = cursor.pop(key) if value is None else cursor.replace(key, value)
        yield key, None if old is None else bytes(old)


def undo_chunk_key(undo_key: bytes, index: int) -> bytes:
    """Where chunk ``index`` of the undo record under ``undo_key`` (a height) is stored."""
    return undo_key + index.to_bytes(4, "big")


def _write_undo(
    txn: lmdb.Transaction,
    undo: lmdb._Database,
    undo_key: bytes,
    replaced: Iterable[tuple[bytes, bytes | None]],
) -> None:
    """Put the undo record of ``replaced`` (key, value before) under ``undo_key`` in chunks
    of about ``UNDO_CHUNK_BYTES`` (at least one chunk, empty when nothing was replaced)."""
    chunk: list[Value] = []
    size = 0
    index = 0
    for key, old in replaced:
        chunk.append(key)
        chunk.append(old)
        size += len(key) if old is None else len(key) + len(old)
        if size >= UNDO_CHUNK_BYTES:
            txn.put(undo_chunk_key(undo_key, index), encode(chunk, _UNDO_LIMITS), db=undo)
            index += 1
            chunk = []
            size = 0
    if chunk or not index:
        txn.put(undo_chunk_key(undo_key, index), encode(chunk, _UNDO_LIMITS), db=undo)


def undo_record(chunks: Iterable[bytes]) -> dict[bytes, bytes | None]:
    """The undo record stored as ``chunks`` (in chunk order): each key and what it held one
    version back (None: absent). A key listed twice keeps its first value (the one before
    the block). Raises ``StoreError`` naming the problem when a chunk is not a list of key
    and value pairs."""
    undone: dict[bytes, bytes | None] = {}
    for raw in chunks:
        try:
            items = decode(raw, _UNDO_LIMITS)
        except CodecError as error:
            raise StoreError(f"undo record does not decode: {error}") from error
        if type(items) is not tuple or len(items) % 2:
            raise StoreError("undo record is not a list of key and value pairs")
        for index in range(0, len(items), 2):
            key = items[index]
            value = items[index + 1]
            if type(key) is not bytes or (value is not None and type(value) is not bytes):
                raise StoreError(f"undo record's entry {index // 2} is not bytes and bytes or nil")
            undone.setdefault(key, value)
    return undone


@dataclass(frozen=True, slots=True)
class _TreeLayer:
    """The tree records (None: deleted) of block ``height`` that the tree database does not
    hold yet, and its transactions' index entries (hash: position of the first inclusion in
    the block), over those of the blocks before it (``below``, down to the block
    after the tree's height); ``blocks`` and ``records_held`` count the whole chain."""

    height: int
    records: Mapping[bytes, bytes | None]  # the block's own map (``EncodedBlock``), shared
    positions: dict[bytes, int]
    below: _TreeLayer | None
    blocks: int
    records_held: int

    @classmethod
    def over(
        cls,
        below: _TreeLayer | None,
        height: int,
        records: Mapping[bytes, bytes | None],
        transaction_hashes: Sequence[bytes],
    ) -> _TreeLayer:
        """Block ``height``'s ``records`` (kept as they are: nothing modifies them) and
        transactions held over ``below``."""
        positions = _first_positions(transaction_hashes)
        if below is None:
            return cls(height, records, positions, None, 1, len(records))
        return cls(
            height,
            records,
            positions,
            below,
            below.blocks + 1,
            below.records_held + len(records),
        )

    def _chain(self) -> list[_TreeLayer]:
        """This layer and those below it, the oldest first."""
        chain: list[_TreeLayer] = []
        layer: _TreeLayer | None = self
        while layer is not None:
            chain.append(layer)
            layer = layer.below
        chain.reverse()
        return chain

    def holds_transaction(self, tx_hash: bytes) -> bool:
        """Whether a block of the chain includes ``tx_hash``."""
        layer: _TreeLayer | None = self
        while layer is not None:
            if tx_hash in layer.positions:
                return True
            layer = layer.below
        return False

    def first_location(self, tx_hash: bytes) -> TransactionLocation | None:
        """Where the chain first includes ``tx_hash``, or None."""
        for layer in self._chain():
            index = layer.positions.get(tx_hash)
            if index is not None:
                return TransactionLocation(layer.height, index)
        return None

    def merged_locations(self) -> dict[bytes, bytes]:
        """Every held index entry of the chain (hash: encoded location), the first inclusion
        winning."""
        merged: dict[bytes, bytes] = {}
        for layer in self._chain():
            _locate(merged, layer.height, layer.positions)
        return merged

    def merged(self) -> dict[bytes, bytes | None]:
        """Every held record of the chain, the newest block's winning."""
        merged: dict[bytes, bytes | None] = {}
        for held in self._chain():
            merged.update(held.records)
        return merged


def _first_positions(transaction_hashes: Sequence[bytes]) -> dict[bytes, int]:
    """Each hash of a block's transactions and its first position there."""
    positions: dict[bytes, int] = {}
    for index, tx_hash in enumerate(transaction_hashes):
        positions.setdefault(tx_hash, index)
    return positions


def _locate(located: dict[bytes, bytes], height: int, positions: Mapping[bytes, int]) -> None:
    """Add the index entries (hash: encoded location) of block ``height``'s first
    ``positions`` to ``located``, keeping an entry it has (the first inclusion wins)."""
    for tx_hash, index in positions.items():
        if tx_hash not in located:
            located[tx_hash] = encode((height, index))


def _held_after(below: _TreeLayer | None, encoded: Sequence[EncodedBlock]) -> tuple[int, int]:
    """The blocks and tree records held once ``encoded`` is written over ``below``."""
    records = sum(len(entry.tree_records) for entry in encoded)
    if below is None:
        return len(encoded), records
    return below.blocks + len(encoded), below.records_held + records


def _layer_after(
    below: _TreeLayer | None, encoded: Sequence[EncodedBlock], flush: bool
) -> _TreeLayer | None:
    """The held records of the height ``encoded`` ends at (None: the write ``flush``-ed them
    to the tree database)."""
    if flush:
        return None
    layer = below
    for entry in encoded:
        layer = _TreeLayer.over(layer, entry.height, entry.tree_records, entry.transaction_hashes)
    return layer


def _location_of(raw: bytes) -> TransactionLocation:
    """A transaction index entry: ``(height, index)``."""
    value = decode(raw)
    if not (isinstance(value, tuple) and len(value) == 2):
        raise ValueError("an index entry is an array of (height, index)")
    height, index = value
    if not (isinstance(height, int) and isinstance(index, int)):
        raise ValueError("an index entry's height and index are integers")
    return TransactionLocation(height, index)


def _read_layered(
    txn: lmdb.Transaction, db: lmdb._Database, layer: _TreeLayer | None, key: bytes
) -> bytes | None:
    """``key`` from the held records of ``layer``'s chain (newest first), else from ``db`` in
    ``txn``."""
    while layer is not None:
        records = layer.records
        if key in records:
            return records[key]
        layer = layer.below
    value = txn.get(key, db=db)
    return None if value is None else bytes(value)


@dataclass(frozen=True, slots=True)
class _UndoRecords:
    """One height's decoded undo record (what the block at that height replaced in the
    state) and the tree records it changes back (deleted ones None)."""

    key: bytes
    state: dict[bytes, bytes | None]
    tree: dict[bytes, bytes | None]


class _UndoneReader:
    """One database as it was one version back: the block's undo record first, then the
    held tree records (``layer``, for the tree), then the database (read in the caller's
    transaction)."""

    __slots__ = ("_current", "_layer", "_txn", "_undone")

    def __init__(
        self,
        txn: lmdb.Transaction,
        current: lmdb._Database,
        undone: dict[bytes, bytes | None],
        layer: _TreeLayer | None,
    ) -> None:
        self._txn = txn
        self._current = current
        self._undone = undone
        self._layer = layer

    def get(self, key: bytes) -> bytes | None:
        """The value under ``key`` one version back, or None."""
        undone = self._undone
        if key in undone:
            return undone[key]
        return _read_layered(self._txn, self._current, self._layer, key)

    def tree_node(self, key: bytes) -> bytes | None:
        """``get``, as an ``apps.merkle.TreeReader``."""
        return self.get(key)


@dataclass(frozen=True, slots=True)
class CertifiedView:
    """The state after ``height`` and what certifies it: ``block`` (height + 1) carries
    ``app_hash``, and ``certificate`` is block's commit certificate. ``state`` reads values
    (``get``) and ``tree`` Merkle records (``tree_node``), both as of ``height``."""

    height: int
    app_hash: bytes
    block: Block
    certificate: CommitCertificate
    state: _UndoneReader
    tree: _UndoneReader


class LmdbStateBackend:
    """``apps.state.StateBackend`` over a store's committed state.

    Inside ``reading`` (the host wraps a block's execution in it) the thread that entered it
    reads state values and tree records from one read transaction held until the context
    ends, instead of one transaction per read; other threads read as always. The transaction
    is a long reader (as a snapshot export's): a commit that must resize the map waits until
    the context ends, and other threads' reads go on meanwhile. Execution never waits for a
    commit, so nothing can wait in a circle."""

    __slots__ = ("_layer", "_state_db", "_store", "_thread", "_tree_db", "_txn")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._txn: lmdb.Transaction | None = None
        self._layer: _TreeLayer | None = None
        self._thread = 0
        self._state_db = store._db["state"]
        self._tree_db = store._db["tree"]

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """One read transaction for this thread's reads until the context ends (nested:
        the outer one's)."""
        if self._txn is not None:
            yield
            return
        store = self._store
        with store._lock:
            txn, self._layer = store._begin_long_read()
        self._thread = threading.get_ident()
        self._txn = txn
        try:
            yield
        finally:
            self._txn = None
            self._layer = None
            store._close_long_reader(txn)

    def reading_here(self) -> bool:
        """Whether the calling thread is inside ``reading`` (its reads come from one read
        transaction, begun when it entered)."""
        return self._txn is not None and self._thread == threading.get_ident()

    def get(self, key: bytes) -> bytes | None:
        """The committed value at ``key``, or None."""
        txn = self._txn
        if txn is not None and self._thread == threading.get_ident():
            # A try costs nothing until it catches; a wrapper's call would, on every read.
            try:
                value = txn.get(key, db=self._state_db)
            except LMDB_DAMAGE_ERRORS as error:
                raise _damage_met(self._store, error) from error
            return None if value is None else bytes(value)
        return self._store.state_get(key)

    def scan(
        self, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Committed (key, value) with ``start <= key < end`` in key order (or reverse).

        Inside ``reading``, on its thread, the first batch comes from the context's
        transaction (the snapshot its other reads see, without a transaction of its own),
        read before this returns, so the iterator may outlive the context; a scan longer
        than a batch goes on in batches of their own, as ``Store.state_scan`` reads."""
        txn = self._txn
        store = self._store
        if txn is None or self._thread != threading.get_ident():
            return store.state_scan(start, end, reverse=reverse)
        first = store._scan_batch_in(txn, start, end, reverse, None)
        return store.state_scan(start, end, reverse=reverse, first_batch=first)

    def tree_node(self, key: bytes) -> bytes | None:
        """The committed Merkle tree record under ``key``."""
        txn = self._txn
        if txn is not None and self._thread == threading.get_ident():
            try:
                return _read_layered(txn, self._tree_db, self._layer, key)
            except LMDB_DAMAGE_ERRORS as error:
                raise _damage_met(self._store, error) from error
        return self._store.tree_node(key)


def verify_chain(store: Store, genesis: ValidatorSet, *, from_height: int = 1) -> int:
    """Check every committed block from ``from_height``: it decodes, links to its parent,
    carries the previous app hash, names the next height's validator set, has a valid
    certificate of its own height's set (``Store.validator_set``; ``genesis`` on a chain
    without a registry), is indexed by hash, and its transactions and receipts are recorded;
    nothing exists beyond the committed height. Returns the height checked up to; raises
    ``StoreConsistencyError`` naming the problem."""
    top = store.height
    previous_hash = store.genesis_hash if from_height == 1 else None
    if previous_hash is None:
        previous = store.block(from_height - 1)
        if previous is None:
            raise StoreConsistencyError(f"block {from_height - 1} is missing")
        previous_hash = previous.hash
    for height in range(from_height, top + 1):
        try:
            block = store.block(height)
            certificate = store.certificate(height)
        except (DecodeError, CodecError) as error:
            raise StoreConsistencyError(f"block {height} does not decode: {error}") from error
        if block is None or certificate is None:
            raise StoreConsistencyError(f"block {height} or its certificate is missing")
        if block.header.parent_hash != previous_hash:
            raise StoreConsistencyError(f"block {height} does not link to its parent")
        if block.header.app_hash != store.app_hash_at(height - 1):
            raise StoreConsistencyError(f"block {height} app hash differs from state {height - 1}")
        validators = store.validator_set(height) or genesis
        following = store.validator_set(height + 1) or genesis
        if block.header.next_validators_hash != following.hash():
            raise StoreConsistencyError(f"block {height} names another next validator set")
        try:
            verify_certificate(
                certificate, validators, store.chain_id, block_hash=block.hash, height=height
            )
        except CertificateError as error:
            raise StoreConsistencyError(f"certificate {height}: {error}") from error
        if store.height_of(block.hash) != height:
            raise StoreConsistencyError(f"block {height} is not indexed by its hash")
        for index, tx in enumerate(block.transactions):
            location = store.transaction_location(hash_bytes(tx))
            if location is None or location.height > height:
                raise StoreConsistencyError(f"transaction {index} of block {height} not indexed")
            if store.receipt(height, index) is None:
                raise StoreConsistencyError(f"receipt {index} of block {height} is missing")
        previous_hash = block.hash
    if store.last_block_hash != previous_hash and top >= from_height:
        raise StoreConsistencyError("metadata's last block hash differs from the last block")
    if store.app_hash_at(top) != store.app_hash:
        raise StoreConsistencyError("metadata's app hash differs from the last block's")
    beyond = top + 1
    if store.block_bytes(beyond) is not None or store.certificate(beyond) is not None:
        raise StoreConsistencyError(f"data exists beyond committed height {top}")
    if store.app_hash_at(beyond) is not None or store.receipt(beyond, 0) is not None:
        raise StoreConsistencyError(f"data exists beyond committed height {top}")
    return top


# -- the block writer process ------------------------------------------------------------------

# Requests and answers between a node and its block writer process, whose pipes only the two
# ends hold; each is one frame: eight bytes of length, then the message in msgpack. Where the
# system has ``memfd_create``, a request's message goes into a memory file the two share
# instead (one copy each way, rather than a pipe's 64 KiB at a time, each a wake-up of the
# other side: 3.6 ms of the node's CPU per MiB under load against well under one), and the
# length on the pipe carries ``_SHARED_FRAME``.
WriterMessage = tuple[object, ...]
_SHARED_FRAME: Final = 1 << 63
# Past a request this large, the encoder's buffer and the shared memory file are given back
# once it is answered.
_SHARED_KEEP_BYTES: Final = 64 * 1024 * 1024
# How long a failed exchange waits for the process's exit status (to say it exited, and how).
_EXIT_STATUS_WAIT_S: Final = 2.0
# A mapping of a request's body has its pages mapped in one call rather than a fault per page.
_MAP_POPULATE: Final = getattr(mmap, "MAP_POPULATE", 0)


class FrameChannel:
    """One end of the frames between a node and its block writer process: ``send`` writes to
    ``writer``, ``receive`` reads from ``reader``. With ``shared`` (a memory file both ends
    hold), a received frame may have its body there, and with ``share_sends`` too this end
    puts the bodies of the frames it sends there; a body there is decoded in place, from a
    mapping of the file. The encoder's buffer is kept from frame to frame: a fresh one of a
    few MiB costs a page fault per page each time, once the allocator has handed the last one
    back."""

    def __init__(
        self,
        reader: IO[bytes],
        writer: IO[bytes],
        shared: int | None = None,
        *,
        share_sends: bool = False,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._shared = shared
        self._share_sends = share_sends and shared is not None
        self._packer = msgpack.Packer(autoreset=False)

    def send(self, message: WriterMessage) -> int:
        """Send one frame of ``message`` (msgpack: tuples, bytes, str, int, bool, None and
        maps of them); returns its body's size."""
        packer = self._packer
        packer.reset()
        packer.pack(message)
        with packer.getbuffer() as body:
            size = len(body)
            if self._share_sends:
                assert self._shared is not None
                written = os.pwrite(self._shared, body, 0)
                if written != size:
                    raise OSError(f"wrote {written} of {size} bytes to the shared memory file")
                self._writer.write((size | _SHARED_FRAME).to_bytes(8, "big"))
            else:
                self._writer.write(size.to_bytes(8, "big"))
                self._writer.write(body)
        packer.reset()
        self._writer.flush()
        return size

    def receive(self) -> WriterMessage:
        """The next frame's message (arrays come back as tuples); ``EOFError`` when the stream
        ends or a frame is not a message."""
        header = self._reader.read(8)
        if len(header) < 8:
            raise EOFError("the stream ended")
        size = int.from_bytes(header, "big")
        if size & _SHARED_FRAME:
            if self._shared is None:
                raise EOFError("a frame in a shared memory file, and none is shared")
            return self._receive_shared(size & ~_SHARED_FRAME)
        body = self._reader.read(size)
        if len(body) < size:
            raise EOFError("the stream ended inside a frame")
        return _message_of(body)

    def _receive_shared(self, size: int) -> WriterMessage:
        """The message whose body is the first ``size`` bytes of the shared memory file, read
        in place from a mapping of it: no buffer to fill (and fault in) and no copy."""
        assert self._shared is not None
        # Reading a mapping past the end of its file would kill the process (SIGBUS).
        if not 0 < size <= os.fstat(self._shared).st_size:
            raise EOFError("the shared memory file ended inside a frame")
        with mmap.mmap(
            self._shared, size, flags=mmap.MAP_SHARED | _MAP_POPULATE, prot=mmap.PROT_READ
        ) as view:
            return _message_of(view)

    def shrink(self) -> None:
        """Give back the encoder's buffer, and empty the shared memory file (a large frame has
        been answered)."""
        self._packer = msgpack.Packer(autoreset=False)
        if self._share_sends:
            assert self._shared is not None
            os.ftruncate(self._shared, 0)


def _message_of(body: bytes | mmap.mmap) -> WriterMessage:
    """The message a frame's body encodes; ``EOFError`` when it does not decode or is not a
    message."""
    try:
        message = msgpack.unpackb(body, use_list=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise EOFError(f"a frame that does not decode: {error}") from error
    if type(message) is not tuple or not message:
        raise EOFError("a frame that is not a message")
    return message


# The store errors a writer process's answer may name, raised again here as themselves.
_WRITER_ERRORS: Final[dict[str, type[StoreError]]] = {
    error.__name__: error
    for error in (
        StoreError,
        StoreMismatchError,
        StoreConsistencyError,
        StoreWriteError,
        StoreDiskFullError,
    )
}
# How long a writer process has to exit once its requests end, before it is killed.
_WRITER_EXIT_SECONDS: Final = 10.0


class _WriterProcess:
    """A node's end of its block writer process (``node.storewriter``): requests go down the
    process's standard input and answers come back on its standard output, one at a time (the
    store's write lock orders them)."""

    def __init__(self) -> None:
        """Start the process; it loads its code and waits for ``open``."""
        self._shared: int | None = None
        arguments = [sys.executable, "-m", "node.storewriter", str(os.getpid())]
        if hasattr(os, "memfd_create"):
            try:
                self._shared = os.memfd_create("suanpan-block-writer")
            except OSError:
                self._shared = None
            else:
                arguments.append(str(self._shared))
        try:
            self._process = subprocess.Popen(
                arguments,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                pass_fds=() if self._shared is None else (self._shared,),
            )
        except OSError as error:
            self._close_shared()
            raise StoreError(f"cannot start the block writer process: {error}") from error
        self.pid = self._process.pid
        self._cpu_ns = 0
        # The process's CPU time in all, as of its last answer.
        self.process_cpu_ns = 0
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._channel = FrameChannel(
            self._process.stdout, self._process.stdin, self._shared, share_sends=True
        )

    def open(self, options: dict[str, object]) -> None:
        """Have the process open the store with ``options`` (``node.storewriter``)."""
        self.call(("open", options), _map_not_grown)

    def rss_peak_bytes(self) -> int:
        """The process's peak resident set size (0 where ``/proc`` does not say)."""
        (peak_kib,) = process_status_kib(Path(f"/proc/{self.pid}/status"), "VmHWM")
        return 0 if peak_kib is None else peak_kib * 1024

    def take_cpu_ns(self) -> int:
        """The process's CPU nanoseconds on requests since the last call."""
        spent, self._cpu_ns = self._cpu_ns, 0
        return spent

    def call(self, request: WriterMessage, grow: Callable[[], int]) -> object:
        """Send ``request`` and return the process's answer. When the process found the map
        full, ``grow`` grows it here and the process takes the new size and tries again. A
        store error there is raised here as itself; a process that died or answered nonsense
        is a ``StoreError`` naming it."""
        while True:
            kind, rest = self._exchange(request)
            if kind == "ok" and len(rest) == 1:
                return rest[0]
            if kind == "map_full" and not rest:
                size = grow()
                if self._exchange(("map_size", size))[0] != "ok":
                    raise StoreError(f"the block writer process (pid {self.pid}) kept its map")
                continue
            if kind == "error" and len(rest) == 2:
                error = _WRITER_ERRORS.get(str(rest[0]))
                if error is None:
                    raise StoreError(f"block writer process: {rest[0]}: {rest[1]}")
                raise error(str(rest[1]))
            raise StoreError(f"the block writer process (pid {self.pid}) answered {kind!r}")

    def _exchange(self, request: WriterMessage) -> tuple[object, WriterMessage]:
        """Send ``request``; the answer's kind and the rest of it, once its CPU figures (the
        request's, the process's so far) are counted."""
        try:
            size = self._channel.send(request)
            reply = self._channel.receive()
            if size > _SHARED_KEEP_BYTES:
                self._channel.shrink()
        except (OSError, EOFError) as error:
            status = self._process.poll()
            if status is None:
                # A pipe that ends is most often a process that died: its exit status is
                # there a moment after its end of the pipe closed.
                try:
                    status = self._process.wait(timeout=_EXIT_STATUS_WAIT_S)
                except subprocess.TimeoutExpired:
                    status = None
            state = "is still running" if status is None else f"exited with status {status}"
            raise StoreError(
                f"the block writer process (pid {self.pid}) {state}, its pipe: {error}"
            ) from error
        if len(reply) < 3 or type(reply[1]) is not int or type(reply[2]) is not int:
            raise StoreError(f"the block writer process (pid {self.pid}) answered {reply[:1]!r}")
        self._cpu_ns += reply[1]
        self.process_cpu_ns = reply[2]
        return reply[0], reply[3:]

    def close(self) -> None:
        """End the requests and wait for the process to exit (killed past
        ``_WRITER_EXIT_SECONDS``)."""
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            self._process.wait(_WRITER_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._close_shared()

    def _close_shared(self) -> None:
        if self._shared is not None:
            os.close(self._shared)
            self._shared = None


def _map_not_grown() -> int:
    raise StoreError("the block writer process found the map full while opening the store")
