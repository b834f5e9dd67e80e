"""A read-only view of a node's LMDB store, for offline tools (audit, state-diff).

Theory of operation
-------------------
``node.store.Store`` opens its environment for writing and records the chain identity in an
empty directory; an auditor must never change what it audits, so ``StoreView`` opens the same
environment with ``readonly=True`` and reads the databases ``node.store`` documents (``meta``,
``blocks``, ``block_hashes``, ``certificates``, ``app_hashes``, ``transactions``, ``receipts``,
``state``, ``tree``, the undo databases, ``evidence``). It returns raw bytes: checking and
decoding them is the caller's job, since the point of an audit is to find the bytes that do
not decode.

The layout is ``node.store``'s schema version ``SCHEMA_VERSION``; a store recording another
schema is refused with ``StoreViewError``, so a layout change cannot be misread silently.

Scans read in batches, each in its own short read transaction, so a scan of a large state or
index never holds one read transaction (and the pages it pins) for long and never loads a
database into memory. LMDB readers may run alongside a live node: a map the node grew while
the view was open is adopted (``MapResizedError``) and the read retried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Final, TypeVar

import lmdb

from node.store import (
    DATABASES,
    LMDB_DAMAGE_ERRORS,
    SCHEMA_VERSION,
    StoreDamagedError,
    damaged_store_message,
    height_key,
    open_error,
    receipt_key,
)

__all__ = [
    "DATABASES",
    "SCAN_BATCH_ENTRIES",
    "StoreView",
    "StoreViewDamagedError",
    "StoreViewError",
    "height_key",
]

# Entries per read transaction while scanning: amortises the transaction, keeps it short.
SCAN_BATCH_ENTRIES: Final = 1024
_LMDB_DATA_FILE: Final = "data.mdb"
_T = TypeVar("_T")


class StoreViewError(Exception):
    """The directory holds no readable store of the expected schema; the message says why."""


class StoreViewDamagedError(StoreViewError):
    """The store's file is damaged: LMDB met a page it cannot use, opening it or reading a
    record (``node.store.LMDB_DAMAGE_ERRORS``); the message names the file and what to do."""


def _open_failure(path: Path, error: lmdb.Error) -> StoreViewError:
    failure = open_error(path, error)
    if isinstance(failure, StoreDamagedError):
        return StoreViewDamagedError(str(failure))
    return StoreViewError(str(failure))


class StoreView:
    """Read-only access to the store in ``path`` (a node's ``<home>/data``)."""

    scan_batch_entries: int = SCAN_BATCH_ENTRIES

    def __init__(self, path: Path) -> None:
        if not (path / _LMDB_DATA_FILE).is_file():
            raise StoreViewError(f"no store at {path} (no {_LMDB_DATA_FILE})")
        self.path = path
        try:
            self._env = lmdb.open(str(path), readonly=True, max_dbs=len(DATABASES), readahead=False)
        except lmdb.Error as error:
            raise _open_failure(path, error) from error
        try:
            self._db = {name: self._env.open_db(name.encode(), create=False) for name in DATABASES}
        except LMDB_DAMAGE_ERRORS as error:
            self._env.close()
            raise _open_failure(path, error) from error
        except lmdb.Error as error:
            self._env.close()
            raise StoreViewError(f"store at {path} lacks a database: {error}") from error
        try:
            schema = self.meta(b"schema_version")
        except StoreViewError:
            self._env.close()
            raise
        if schema != str(SCHEMA_VERSION).encode():
            self._env.close()
            raise StoreViewError(
                f"store at {path} has schema version {schema!r}; this tool reads {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        """Close the environment (idempotent)."""
        self._env.close()

    def __enter__(self) -> StoreView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _read(self, work: Callable[[lmdb.Transaction], _T]) -> _T:
        while True:
            try:
                with self._env.begin() as txn:
                    return work(txn)
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)  # adopt the size the node grew the map to
            except LMDB_DAMAGE_ERRORS as error:
                raise StoreViewDamagedError(
                    damaged_store_message(self.path, f"LMDB: {error}")
                ) from error

    def read_every_record(self) -> int:
        """Read every key and value of every database (LMDB walks each page that holds one:
        a branch, leaf or overflow page it cannot use raises). Returns the records read;
        ``StoreViewDamagedError`` names the database where a page is damaged. Values whose
        bytes are damaged read fine here: checking them is the audit's work."""
        records = 0
        for db in DATABASES:
            try:
                for _ in self.scan(db):
                    records += 1
            except StoreViewDamagedError as error:
                raise StoreViewDamagedError(f"{error} (reading database {db})") from error
        return records

    def get(self, db: str, key: bytes) -> bytes | None:
        """The raw value at ``key`` in database ``db``, or None."""

        def work(txn: lmdb.Transaction) -> bytes | None:
            value = txn.get(key, db=self._db[db])
            return None if value is None else bytes(value)

        return self._read(work)

    def entries(self, db: str) -> int:
        """How many entries database ``db`` holds."""
        return self._read(lambda txn: int(txn.stat(self._db[db])["entries"]))

    def scan(
        self, db: str, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of ``db`` with ``start <= key < end`` in key order, read in batches."""
        after: bytes | None = None
        while True:
            batch = self._read(partial(self._batch, db=db, start=start, end=end, after=after))
            yield from batch
            if len(batch) < self.scan_batch_entries:
                return
            after = batch[-1][0]

    def _batch(
        self,
        txn: lmdb.Transaction,
        *,
        db: str,
        start: bytes,
        end: bytes | None,
        after: bytes | None,
    ) -> list[tuple[bytes, bytes]]:
        batch: list[tuple[bytes, bytes]] = []
        cursor = txn.cursor(db=self._db[db])
        positioned = cursor.set_range(after if after is not None else start)
        if positioned and after is not None and bytes(cursor.key()) == after:
            positioned = cursor.next()
        while positioned and len(batch) < self.scan_batch_entries:
            key = bytes(cursor.key())
            if end is not None and key >= end:
                break
            batch.append((key, bytes(cursor.value())))
            positioned = cursor.next()
        return batch

    # -- the store's records ----------------------------------------------------------------------

    def meta(self, name: bytes) -> bytes | None:
        """A raw ``meta`` record (``chain_id``, ``genesis_hash``, ``height``, ...)."""
        return self.get("meta", name)

    @property
    def chain_id(self) -> str | None:
        """The chain id the store was created for."""
        raw = self.meta(b"chain_id")
        return None if raw is None else raw.decode("utf-8", "replace")

    @property
    def genesis_hash(self) -> bytes | None:
        """The genesis hash the store was created from."""
        return self.meta(b"genesis_hash")

    @property
    def base_height(self) -> int:
        """The height a state-synced store starts at (0: it holds every block from 1)."""
        raw = self.meta(b"base_height")
        return 0 if raw is None else int.from_bytes(raw, "big")

    @property
    def height(self) -> int | None:
        """The committed height, or None before genesis state was written."""
        raw = self.meta(b"height")
        return None if raw is None else int.from_bytes(raw, "big")

    def block_bytes(self, height: int) -> bytes | None:
        """The stored block at ``height``."""
        return self.get("blocks", height_key(height))

    def certificate_bytes(self, height: int) -> bytes | None:
        """The stored commit certificate of ``height``."""
        return self.get("certificates", height_key(height))

    def app_hash_at(self, height: int) -> bytes | None:
        """The stored app hash after ``height`` (0: genesis)."""
        return self.get("app_hashes", height_key(height))

    def height_of(self, block_hash: bytes) -> int | None:
        """The height the block-hash index gives ``block_hash``."""
        raw = self.get("block_hashes", block_hash)
        return None if raw is None else int.from_bytes(raw, "big")

    def transaction_location_bytes(self, tx_hash: bytes) -> bytes | None:
        """The raw (height, index) record the transaction index holds for ``tx_hash``."""
        return self.get("transactions", tx_hash)

    def receipt_bytes(self, height: int, index: int) -> bytes | None:
        """The stored receipt of transaction ``index`` of block ``height``."""
        return self.get("receipts", receipt_key(height, index))

    def block_events_bytes(self, height: int) -> bytes | None:
        """The stored end-of-block events of block ``height`` (None: it has none)."""
        return self.get("block_events", height_key(height))

    def state_scan(self) -> Iterator[tuple[bytes, bytes]]:
        """The committed application state in key order."""
        return self.scan("state")

    def evidence_scan(self) -> Iterator[tuple[int, bytes, bytes]]:
        """Stored evidence as (height, key, bytes), in key order (height first)."""
        for key, value in self.scan("evidence"):
            yield int.from_bytes(key[:8], "big"), key, value
