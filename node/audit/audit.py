"""Offline audit of a node's store: is this chain, and the state it holds, what it claims to be?

Theory of operation
-------------------
The audit reads a node's home directory alone: ``genesis.json`` (chain id, genesis hash,
validator set, enabled apps, genesis app state) and the LMDB store under ``data/``, opened
read-only (``node.audit.storeview``). It trusts nothing in the store: every height is re-derived.

It walks heights in ascending order and, at each height ``h``, checks in this order (the names
in brackets are the *items* a failure reports):

1. the block is stored and decodes canonically, for this chain and height [block, header];
2. its ``parent_hash`` is the hash of block ``h-1`` (the genesis hash for ``h = 1``) [link];
3. its transactions hash to the header's ``transactions_root`` [body];
4. its commit certificate is a quorum of valid commit signatures, on this block hash and
   height, of the validator set *in force at h* (``consensus.types.verify_certificate``): the
   genesis validators at first, then each set the replayed chain decided, from its height on
   (``Replay.validators_at``), never a set the store claims [certificate]; its
   ``next_validators_hash`` is the hash of the set the replayed state puts in force at h+1
   [validators];
5. the block-hash index maps its hash to ``h`` [block index];
6. its ``app_hash`` equals the hash of the replayed state after ``h-1`` [app hash];
7. every transaction is in the transaction index at its first inclusion: at ``(h, i)``, or
   for a repeated transaction at an earlier position holding the same bytes [tx index];
8. replaying the block through the real apps (``node.audit.replay``) yields the stored receipts
   [receipt] and the stored app hash of ``h`` [app hash];
9. stored equivocation evidence filed at ``h`` decodes, is filed under its own hash and
   height, and its two signatures verify against the validator set of ``h`` [evidence].

Before the walk it checks the LMDB file's page structure in Python (``node.audit.lmdbcheck``:
a damaged node header in a leaf page would make LMDB read past the file and kill the audit
with SIGBUS), then reads every record of every database once [store]: LMDB has no checksums,
but a page whose structure it cannot follow (a damaged branch, leaf or overflow page, in any
database) fails there, named as damage to the store's file rather than found half way through
the walk (``StoreView.read_every_record``); a page LMDB meets later while the audit runs (the
store changed under it) is reported the same way, at the height being checked. Damage inside a
record's bytes reads fine at the LMDB level: the checks below find it in the record it changed
(a block that does not decode, a receipt or state value that differs from the replay, ...).
Then it checks the store's identity against genesis [store] and the genesis state's app hash
[genesis] (height 0). After it, at the committed height: the metadata (height, app
hash, last block hash) [meta]; that no database holds entries the walk did not account for,
e.g. a block beyond the committed height or an index entry naming no committed transaction
[blocks, certificates, app hashes, block index, receipts, tx index]; evidence filed beyond the
committed height [evidence]; and finally the stored state against the replayed state, key by
key [state]. A state key that differs is reported at the last height whose block wrote it in
the replay (the committed height for a key the replay never wrote).

Then the undo records against what each block's state writes replaced in the replay [undo]:
the last block's (proofs of the certified state are answered from it and the tree derived
from it), and, while the stored tree waits at an earlier height ``tree_height`` (``node.store``
writes the tree every few blocks), every block's since that height, which say what the node
applies to the tree after a crash. Last, the stored Merkle tree, with the writes of the blocks
after its height applied as the node applies them, against the tree of the replayed state,
record by record [tree]; a recorded tree height outside the base and committed heights is
[tree] too. The transaction index entries of the blocks after the tree's height are held with
the tree records, so a transaction of those blocks may be missing from the index; one that is
there must name its first inclusion, as everywhere [tx index].

A store that joined by state sync holds blocks from its base height b on only. Its audit starts
from the snapshot it installed, kept pinned under ``<home>/snapshots/b``: the manifest must
rebuild the stored app hash of b and every chunk its slot [snapshot]; block b is checked like any
block except for its replay (its state *is* the snapshot), block b+1 must carry the snapshot's
app hash, and the replay goes on from there.

The audit stops at the first failure and names its height, item and detail. Memory: one block
at a time plus the replayed state (``apps.state.MemoryBackend``); indexes and state are
streamed in batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

from apps import merkle
from apps.base import App
from apps.host import GenesisError as HostGenesisError
from apps.host import stored_end_block_events
from consensus.codec import CodecError, decode
from consensus.crypto import hash_bytes
from consensus.evidence import Evidence, EvidenceError, verify_evidence
from consensus.types import (
    BLOCK_LIMITS,
    Block,
    BlockHeader,
    CertificateError,
    CommitCertificate,
    DecodeError,
    ValidatorSet,
    verify_certificate,
)
from node.apploader import AppLoadError
from node.audit.lmdbcheck import check_lmdb_file
from node.audit.replay import Replay, load_home_genesis
from node.audit.statediff import diff_states, render_key, render_value
from node.audit.storeview import StoreView, StoreViewDamagedError, StoreViewError, height_key
from node.genesis import Genesis, GenesisError
from node.home import SNAPSHOTS_DIR
from node.snapshots import SnapshotDirectory, SnapshotError, verify_chunk
from node.store import StoreError, damaged_store_message, undo_chunk_key, undo_record
from node.unwritten import overlaid

__all__ = ["AuditFailure", "AuditReport", "audit_home", "audit_store"]

log = logging.getLogger("suanpan.audit")

# Heights between two progress log events: frequent enough to watch, rare enough to be cheap.
PROGRESS_EVERY_HEIGHTS: Final = 1000
_EVIDENCE_KEY_BYTES: Final = 8 + 32

ITEM_HOME: Final = "home"
ITEM_STORE: Final = "store"
ITEM_GENESIS: Final = "genesis"
ITEM_BLOCK: Final = "block"
ITEM_HEADER: Final = "header"
ITEM_LINK: Final = "link"
ITEM_BODY: Final = "body"
ITEM_CERTIFICATE: Final = "certificate"
ITEM_VALIDATORS: Final = "validators"
ITEM_BLOCK_INDEX: Final = "block index"
ITEM_APP_HASH: Final = "app hash"
ITEM_TX_INDEX: Final = "tx index"
ITEM_RECEIPT: Final = "receipt"
ITEM_REPLAY: Final = "replay"
ITEM_EVIDENCE: Final = "evidence"
ITEM_META: Final = "meta"
ITEM_STATE: Final = "state"
ITEM_TREE: Final = "tree"
# The most blocks a store's tree may be behind its committed height (a node writes it every
# ``node.store.TREE_FLUSH_BLOCKS`` blocks; this leaves room for a store configured otherwise).
TREE_LAG_MAX: Final = 1024
ITEM_UNDO: Final = "undo"
ITEM_SNAPSHOT: Final = "snapshot"


def _short(data: bytes | None) -> str:
    # Whole hashes: two hashes that differ in their last byte must not look equal.
    return "(none)" if data is None else data.hex()


@dataclass(frozen=True, slots=True)
class AuditFailure:
    """The first thing found wrong: at ``height``, the ``item`` checked, and why."""

    height: int
    item: str
    detail: str

    def __str__(self) -> str:
        return f"height {self.height}: {self.item}: {self.detail}"

    def to_json(self) -> dict[str, object]:
        """JSON form."""
        return {"height": self.height, "item": self.item, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What an audit checked and the first failure (None: the store passed every check).

    ``heights_checked`` counts the heights 1.. that passed every per-height check;
    ``height`` is the committed height the store claims (-1 when unknown)."""

    home: str
    chain_id: str
    height: int
    heights_checked: int
    transactions: int
    state_keys: int
    evidence: int
    failure: AuditFailure | None
    elapsed_seconds: float
    replay_seconds: float
    certificate_seconds: float

    @property
    def ok(self) -> bool:
        """True when the audit found nothing wrong."""
        return self.failure is None

    def to_json(self) -> dict[str, object]:
        """The report as one JSON object."""
        return {
            "ok": self.ok,
            "home": self.home,
            "chain_id": self.chain_id,
            "height": self.height,
            "heights_checked": self.heights_checked,
            "transactions": self.transactions,
            "state_keys": self.state_keys,
            "evidence": self.evidence,
            "failure": None if self.failure is None else self.failure.to_json(),
            "timing": {
                "total_seconds": round(self.elapsed_seconds, 3),
                "replay_seconds": round(self.replay_seconds, 3),
                "certificate_seconds": round(self.certificate_seconds, 3),
            },
        }

    def render(self) -> str:
        """The report as text."""
        rate = self.heights_checked / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0
        if self.height < 0 and self.failure is not None:
            # Nothing was read (no store, no genesis): the failure is the whole report.
            return f"audit {self.home}\nFAILED at {self.failure}"
        lines = [
            f"audit {self.home} (chain {self.chain_id}, committed height {self.height})",
            f"  heights checked  {self.heights_checked}",
            f"  transactions     {self.transactions}",
            f"  state keys       {self.state_keys}",
            f"  evidence         {self.evidence}",
            f"  time             {self.elapsed_seconds:.2f} s ({rate:.0f} heights/s; replay "
            f"{self.replay_seconds:.2f} s, certificates {self.certificate_seconds:.2f} s)",
        ]
        if self.failure is None:
            lines.append("OK: every check passed")
        else:
            lines.append(f"FAILED at {self.failure}")
        return "\n".join(lines)


class _Failed(Exception):
    def __init__(self, failure: AuditFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure


def _fail(height: int, item: str, detail: str) -> NoReturn:
    raise _Failed(AuditFailure(height, item, detail))


def _decode_location(raw: bytes) -> tuple[int, int] | None:
    try:
        value = decode(raw)
    except CodecError:
        return None
    if not (isinstance(value, tuple) and len(value) == 2):
        return None
    height, index = value
    if not (isinstance(height, int) and isinstance(index, int)):
        return None
    if isinstance(height, bool) or isinstance(index, bool) or height < 1 or index < 0:
        return None
    return height, index


def _decode_block(raw: bytes) -> Block:
    """Decode stored block bytes, leaving the body-vs-root check to the caller."""
    try:
        value = decode(raw, BLOCK_LIMITS)
    except CodecError as error:
        raise DecodeError(str(error)) from None
    if not (isinstance(value, tuple) and len(value) == 2):
        raise DecodeError("a block is an array of (header, transactions)")
    header_fields, transactions = value
    header = BlockHeader.from_fields(header_fields)
    if not (isinstance(transactions, tuple) and all(isinstance(tx, bytes) for tx in transactions)):
        raise DecodeError("block transactions must be an array of byte strings")
    return Block(header, tuple(tx for tx in transactions if isinstance(tx, bytes)))


class _EvidenceCursor:
    """Walks stored evidence in height order alongside the block walk."""

    def __init__(
        self, view: StoreView, validators: Callable[[int], ValidatorSet], chain_id: str
    ) -> None:
        self._items: Iterator[tuple[int, bytes, bytes]] = view.evidence_scan()
        self._next = next(self._items, None)
        self._validators = validators
        self._chain_id = chain_id
        self.count = 0

    def check_through(self, height: int | None) -> None:
        """Check every stored evidence filed at a height up to ``height`` (None: all)."""
        while self._next is not None and (height is None or self._next[0] <= height):
            filed_at, key, data = self._next
            self._check(filed_at, key, data)
            self.count += 1
            self._next = next(self._items, None)

    def _check(self, filed_at: int, key: bytes, data: bytes) -> None:
        where = f"entry {key[8:].hex()}"
        if len(key) != _EVIDENCE_KEY_BYTES or key[8:] != hash_bytes(data):
            _fail(filed_at, ITEM_EVIDENCE, f"{where}: key does not match the evidence's hash")
        try:
            evidence = Evidence.decode(data)
        except EvidenceError as error:
            _fail(filed_at, ITEM_EVIDENCE, f"{where}: does not decode: {error}")
        if evidence.height != filed_at:
            _fail(
                filed_at,
                ITEM_EVIDENCE,
                f"{where}: filed at height {filed_at} but is about height {evidence.height}",
            )
        try:
            verify_evidence(evidence, self._validators(max(1, filed_at)), self._chain_id)
        except EvidenceError as error:
            _fail(filed_at, ITEM_EVIDENCE, f"{where}: {error}")


class _Auditor:
    """One audit run; ``run`` raises ``_Failed`` at the first failure."""

    def __init__(
        self,
        view: StoreView,
        genesis: Genesis,
        apps: Sequence[App] | None,
        snapshots: Path | None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.view = view
        self.progress = progress
        self.genesis = genesis
        self.apps = apps
        self.snapshots = snapshots
        self.base = 0
        self.chain_id = genesis.chain_id
        self.top = -1
        self.tree_height = -1
        self.heights_checked = 0
        self.transactions = 0
        self.first_inclusions = 0
        self.replay_seconds = 0.0
        self.certificate_seconds = 0.0
        self.evidence: _EvidenceCursor | None = None
        self._block_cache: tuple[int, Block] | None = None
        # The height being checked: where a read the store fails is reported.
        self.at = 0

    def run(self) -> None:
        self.view.read_every_record()
        self._check_identity()
        replay = self._genesis()
        # Evidence of height h is checked against the set of h, as the replay at hand says.
        self.evidence = _EvidenceCursor(
            self.view, lambda height: replay.validators_at(height), self.chain_id
        )
        self.evidence.check_through(0)
        previous_hash = self.genesis.hash
        self.base = self.view.base_height
        self.tree_height = self._tree_height()
        if self.base:
            # A state-synced store: the snapshot's state, its validator registry included, is
            # the starting point the audit trusts (as the node did, once certified).
            replay = self._snapshot_replay(self.base)
            previous_hash = self._check_base_block(self.base, replay)
            self.evidence.check_through(self.base)
        # The store keeps the undo records of the heights from the tree's (none at the base).
        replay.undo_kept_from = max(self.tree_height, self.base + 1)
        for height in range(self.base + 1, self.top + 1):
            self.at = height
            block = self._check_height(height, previous_hash, replay)
            self.evidence.check_through(height)
            self.heights_checked = height - self.base
            previous_hash = block.hash
            if height % PROGRESS_EVERY_HEIGHTS == 0:
                log.info("audit_progress", extra={"height": height, "top": self.top})
            if self.progress is not None:
                self.progress("checking blocks", height - self.base, self.top - self.base)
        self.at = self.top
        self._check_meta(previous_hash, replay)
        self._check_accounting()
        self.evidence.check_through(None)
        self._check_state(replay)
        self._check_undo(replay)
        self._check_tree(replay)

    # -- a state-synced store's start -------------------------------------------------------

    def _snapshot_replay(self, base: int) -> Replay:
        where = f"snapshots/{base}"
        if base > self.top:
            _fail(base, ITEM_SNAPSHOT, f"base height {base} is above the committed height")
        if self.snapshots is None:
            _fail(base, ITEM_SNAPSHOT, f"the store was state-synced at {base}: give its home")
        directory = SnapshotDirectory(self.snapshots, self.chain_id)
        stored = self.view.app_hash_at(base)
        if stored is None:
            _fail(base, ITEM_APP_HASH, "no app hash is stored for the base height")
        items: list[tuple[bytes, bytes]] = []
        try:
            manifest = directory.manifest(base)
            manifest.verify(self.chain_id, base, stored)
            for chunk in manifest.chunks:
                data = directory.chunk_bytes(base, chunk.prefix)
                items.extend(verify_chunk(manifest, chunk.prefix, data).items)
        except SnapshotError as error:
            _fail(base, ITEM_SNAPSHOT, f"{where} (the store was state-synced from it): {error}")
        try:
            return Replay(self.genesis, self.apps, base=(base, items))
        except AppLoadError as error:
            _fail(0, ITEM_GENESIS, f"apps cannot be loaded: {error}")

    def _check_base_block(self, base: int, replay: Replay) -> bytes:
        """Block ``base`` of a state-synced store: everything but its link and its replay.
        Returns its hash."""
        validators = replay.validators_at(base)
        block = self._load_block(base, validators)
        if not block.body_matches_header():
            _fail(base, ITEM_BODY, "the transactions do not hash to the header's root")
        self._check_certificate(base, block, validators)
        if self.view.height_of(block.hash) != base:
            _fail(base, ITEM_BLOCK_INDEX, f"block hash {_short(block.hash)} is not indexed")
        return block.hash

    # -- height 0 -----------------------------------------------------------------------------

    def _check_identity(self) -> None:
        view = self.view
        if view.chain_id != self.chain_id:
            _fail(
                0,
                ITEM_STORE,
                f"store is for chain {view.chain_id!r}, genesis says {self.chain_id!r}",
            )
        if view.genesis_hash != self.genesis.hash:
            _fail(
                0,
                ITEM_STORE,
                f"store was created from genesis {_short(view.genesis_hash)}, genesis.json "
                f"hashes to {_short(self.genesis.hash)}",
            )
        top = view.height
        if top is None:
            _fail(0, ITEM_STORE, "the store holds no genesis state")
        self.top = top

    def _genesis(self) -> Replay:
        try:
            replay = Replay(self.genesis, self.apps)
        except AppLoadError as error:
            _fail(0, ITEM_GENESIS, f"apps cannot be loaded: {error}")
        except HostGenesisError as error:
            _fail(0, ITEM_GENESIS, f"genesis app state is rejected: {error}")
        stored = self.view.app_hash_at(0)
        if stored != replay.app_hash:
            _fail(
                0,
                ITEM_GENESIS,
                f"stored genesis app hash {_short(stored)}, genesis.json gives "
                f"{_short(replay.app_hash)}",
            )
        return replay

    # -- one height ---------------------------------------------------------------------------

    def _check_height(self, height: int, previous_hash: bytes, replay: Replay) -> Block:
        # The replayed state is after height - 1: it decides the sets of height and height + 1.
        validators = replay.validators_at(height)
        block = self._load_block(height, validators)
        header = block.header
        if header.parent_hash != previous_hash:
            what = "the genesis hash" if height == 1 else f"block {height - 1}'s hash"
            _fail(
                height,
                ITEM_LINK,
                f"parent hash {_short(header.parent_hash)} is not {what} {_short(previous_hash)}",
            )
        if not block.body_matches_header():
            _fail(height, ITEM_BODY, "the transactions do not hash to the header's root")
        self._check_certificate(height, block, validators)
        following = replay.validators_at(height + 1)
        if header.next_validators_hash != following.hash():
            _fail(
                height,
                ITEM_VALIDATORS,
                f"header names next validator set {_short(header.next_validators_hash)}, the"
                f" replayed chain puts {_short(following.hash())} ({following.size} validators)"
                f" in force at height {height + 1}",
            )
        indexed = self.view.height_of(block.hash)
        if indexed != height:
            where = "not indexed" if indexed is None else f"indexed at height {indexed}"
            _fail(height, ITEM_BLOCK_INDEX, f"block hash {_short(block.hash)} is {where}")
        if header.app_hash != replay.app_hash:
            _fail(
                height,
                ITEM_APP_HASH,
                f"header carries {_short(header.app_hash)}, the replayed state after height "
                f"{height - 1} hashes to {_short(replay.app_hash)}",
            )
        for index, tx in enumerate(block.transactions):
            self._check_indexed(height, index, tx)
        self._replay(height, block, replay)
        return block

    def _load_block(self, height: int, validators: ValidatorSet) -> Block:
        raw = self.view.block_bytes(height)
        if raw is None:
            _fail(height, ITEM_BLOCK, "missing from the store")
        try:
            block = _decode_block(raw)
        except DecodeError as error:
            _fail(height, ITEM_BLOCK, f"does not decode: the stored bytes are damaged ({error})")
        if block.encode() != raw:
            _fail(height, ITEM_BLOCK, "stored bytes are not the block's canonical encoding")
        header = block.header
        if header.chain_id != self.chain_id:
            _fail(height, ITEM_HEADER, f"chain id {header.chain_id!r}, not {self.chain_id!r}")
        if header.height != height:
            _fail(height, ITEM_HEADER, f"stored at height {height} but says {header.height}")
        if header.proposer >= validators.size:
            _fail(height, ITEM_HEADER, f"proposer index {header.proposer} names no validator")
        return block

    def _check_certificate(self, height: int, block: Block, validators: ValidatorSet) -> None:
        raw = self.view.certificate_bytes(height)
        if raw is None:
            _fail(height, ITEM_CERTIFICATE, "missing from the store")
        started = time.perf_counter()
        try:
            certificate = CommitCertificate.decode(raw)
            verify_certificate(
                certificate, validators, self.chain_id, block_hash=block.hash, height=height
            )
        except DecodeError as error:
            _fail(
                height,
                ITEM_CERTIFICATE,
                f"does not decode: the stored bytes are damaged ({error})",
            )
        except CertificateError as error:
            _fail(height, ITEM_CERTIFICATE, str(error))
        finally:
            self.certificate_seconds += time.perf_counter() - started

    def _check_indexed(self, height: int, index: int, tx: bytes) -> None:
        tx_hash = hash_bytes(tx)
        self.transactions += 1
        what = f"transaction {index} ({_short(tx_hash)})"
        raw = self.view.transaction_location_bytes(tx_hash)
        if raw is None:
            if height > self.tree_height:
                # Held with the tree records: the node indexes it again when it opens the store.
                return
            _fail(height, ITEM_TX_INDEX, f"{what} is not indexed")
        location = _decode_location(raw)
        if location is None:
            _fail(height, ITEM_TX_INDEX, f"{what}: index entry does not decode")
        if location == (height, index):
            self.first_inclusions += 1
            return
        if location > (height, index):
            _fail(
                height,
                ITEM_TX_INDEX,
                f"{what} is indexed at later position {location}, not at its first inclusion",
            )
        # A repeated transaction: the index keeps its first inclusion, which must hold it.
        if self._transaction_at(*location) != tx:
            _fail(
                height,
                ITEM_TX_INDEX,
                f"{what} is indexed at {location}, which holds another transaction",
            )

    def _transaction_at(self, height: int, index: int) -> bytes | None:
        if self._block_cache is None or self._block_cache[0] != height:
            raw = self.view.block_bytes(height)
            if raw is None:
                return None
            try:
                self._block_cache = (height, _decode_block(raw))
            except DecodeError:
                return None
        transactions = self._block_cache[1].transactions
        return transactions[index] if index < len(transactions) else None

    def _replay(self, height: int, block: Block, replay: Replay) -> None:
        started = time.perf_counter()
        try:
            result = replay.execute(block)
        except Exception as error:  # an app bug: report it, never crash the audit
            _fail(
                height, ITEM_REPLAY, f"executing the block raised {type(error).__name__}: {error}"
            )
        finally:
            self.replay_seconds += time.perf_counter() - started
        for receipt in result.receipts:
            stored = self.view.receipt_bytes(height, receipt.index)
            if stored is None:
                _fail(height, ITEM_RECEIPT, f"transaction {receipt.index} has no stored receipt")
            if stored != receipt.encode():
                _fail(
                    height,
                    ITEM_RECEIPT,
                    f"transaction {receipt.index}: stored receipt differs from the replay "
                    f"(replay: {receipt.status} {receipt.code}".rstrip()
                    + ")",
                )
        replayed_events = stored_end_block_events(self.chain_id, len(block.transactions), result)
        if self.view.block_events_bytes(height) != replayed_events:
            _fail(
                height,
                ITEM_RECEIPT,
                f"stored end-of-block events differ from the replay ({len(result.block_events)}"
                " events)",
            )
        stored_hash = self.view.app_hash_at(height)
        if stored_hash != result.app_hash:
            _fail(
                height,
                ITEM_APP_HASH,
                f"stored {_short(stored_hash)}, replaying the block gives "
                f"{_short(result.app_hash)}",
            )

    # -- after the walk ---------------------------------------------------------------------

    def _check_meta(self, last_hash: bytes, replay: Replay) -> None:
        view = self.view
        if view.meta(b"app_hash") != replay.app_hash:
            _fail(
                self.top,
                ITEM_META,
                f"recorded app hash {_short(view.meta(b'app_hash'))}, the replay gives "
                f"{_short(replay.app_hash)}",
            )
        recorded_last = view.meta(b"last_block_hash")
        if recorded_last != last_hash:
            _fail(
                self.top,
                ITEM_META,
                f"recorded last block hash {_short(recorded_last)}, the last block is "
                f"{_short(last_hash)}",
            )

    def _check_accounting(self) -> None:
        top = self.top
        first = max(1, self.base)
        for db, item, low, extra in (
            ("blocks", ITEM_BLOCK, first, 0),
            ("certificates", ITEM_CERTIFICATE, first, 0),
            # A state-synced store keeps the genesis app hash as well.
            ("app_hashes", ITEM_APP_HASH, self.base, 1 if self.base else 0),
        ):
            expected = top + 1 - low + extra
            found = self.view.entries(db)
            if found != expected:
                self._report_stray_height_key(db, item, low, found, expected)
        found = self.view.entries("block_hashes")
        if found != top + 1 - first:
            self._report_stray_block_hash(found)
        found = self.view.entries("receipts")
        if found != self.transactions:
            self._report_stray_receipt(found)
        found = self.view.entries("transactions")
        if found != self.first_inclusions:
            self._report_stray_transaction(found)

    def _report_stray_height_key(
        self, db: str, item: str, low: int, found: int, expected: int
    ) -> NoReturn:
        for key, _ in self.view.scan(db, end=height_key(low)):
            if self.base and db == "app_hashes" and key == height_key(0):
                continue  # a state-synced store keeps the genesis app hash
            _fail(low, item, f"{db} holds an entry with key {key.hex()} below height {low}")
        for key, _ in self.view.scan(db, start=height_key(self.top + 1)):
            claimed = int.from_bytes(key[:8], "big")
            _fail(
                claimed,
                item,
                f"{db} holds an entry at height {claimed}, beyond the committed height {self.top}",
            )
        _fail(self.top, item, f"{db} holds {found} entries, expected {expected}")

    def _report_stray_block_hash(self, found: int) -> NoReturn:
        stray: AuditFailure | None = None
        for block_hash, raw in self.view.scan("block_hashes"):
            claimed = int.from_bytes(raw, "big")
            if max(1, self.base) <= claimed <= self.top:
                block_raw = self.view.block_bytes(claimed)
                try:
                    if block_raw is not None and _decode_block(block_raw).hash == block_hash:
                        continue
                except DecodeError:
                    pass
            if stray is None or claimed < stray.height:
                stray = AuditFailure(
                    claimed,
                    ITEM_BLOCK_INDEX,
                    f"hash {_short(block_hash)} is indexed at height {claimed} but is not the "
                    "hash of a committed block there",
                )
        if stray is not None:
            raise _Failed(stray)
        _fail(self.top, ITEM_BLOCK_INDEX, f"{found} entries, expected {self.top}")

    def _report_stray_receipt(self, found: int) -> NoReturn:
        for key, _ in self.view.scan("receipts"):
            height = int.from_bytes(key[:8], "big")
            index = int.from_bytes(key[8:], "big")
            if len(key) != 12 or not 1 <= height <= self.top:
                _fail(height, ITEM_RECEIPT, f"receipt {index} of height {height} has no block")
            if self._transaction_at(height, index) is None:
                _fail(height, ITEM_RECEIPT, f"receipt {index} has no transaction in the block")
        _fail(self.top, ITEM_RECEIPT, f"{found} receipts, expected {self.transactions}")

    def _report_stray_transaction(self, found: int) -> NoReturn:
        stray: AuditFailure | None = None
        for tx_hash, raw in self.view.scan("transactions"):
            location = _decode_location(raw)
            if location is not None and location[0] <= self.top:
                tx = self._transaction_at(*location)
                if tx is not None and hash_bytes(tx) == tx_hash:
                    continue
            claimed = self.top if location is None else location[0]
            if stray is None or claimed < stray.height:
                stray = AuditFailure(
                    claimed,
                    ITEM_TX_INDEX,
                    f"entry {_short(tx_hash)} -> {location} names no committed transaction "
                    "with that hash",
                )
        if stray is not None:
            raise _Failed(stray)
        _fail(
            self.top,
            ITEM_TX_INDEX,
            f"{found} entries, expected {self.first_inclusions} distinct transactions",
        )

    def _tree_height(self) -> int:
        """The height whose state the stored tree holds: the committed height unless the
        store records an earlier one, which must not be below the base height."""
        raw = self.view.meta(b"tree_height")
        if raw is None:
            return self.top
        height = int.from_bytes(raw, "big")
        if len(raw) != 8 or not self.base <= height < self.top:
            _fail(
                self.top,
                ITEM_TREE,
                f"the tree is recorded at height {height} ({raw.hex()}): not from the base "
                f"height {self.base} and below the committed height {self.top}",
            )
        if self.top - height > TREE_LAG_MAX:
            # The replay would keep every block's undo record since: bounded, as a node's.
            _fail(
                self.top,
                ITEM_TREE,
                f"the tree is recorded at height {height}, {self.top - height} blocks behind "
                f"the committed height: more than the {TREE_LAG_MAX} a store holds",
            )
        return height

    def _check_tree(self, replay: Replay) -> None:
        stored = self.view.scan("tree")
        held = ""
        if self.tree_height < self.top:
            # The node applies the writes of the blocks since (their undo records, checked
            # above, list the keys) to the stored tree, with the committed values.
            keys: set[bytes] = set()
            for height in range(self.tree_height + 1, self.top + 1):
                keys.update(replay.undo_states[height])
            writes = [(key, replay.backend.get(key)) for key in keys]
            try:
                pending = merkle.update(_StoredTree(self.view), writes)
            except (AssertionError, ValueError) as error:
                _fail(
                    self.top,
                    ITEM_TREE,
                    f"the stored tree of height {self.tree_height} does not take the writes of "
                    f"heights {self.tree_height + 1}-{self.top}: {error}",
                )
            stored = overlaid(pending.records, stored)
            held = f" (the tree of height {self.tree_height} with the writes since)"
        difference = _first_difference(stored, iter(replay.backend.tree_records()))
        if difference is not None:
            key, found, expected = difference
            _fail(
                self.top,
                ITEM_TREE,
                f"record {key.hex()}: stored{held} {_short(found)}, the replayed state's tree "
                f"has {_short(expected)}",
            )
        if self.tree_height < self.top:
            self._check_tree_as_stored(replay)

    def _check_tree_as_stored(self, replay: Replay) -> None:
        """The stored tree record by record against the replayed tree of ``tree_height`` (the
        replayed state's tree with the undo records of the blocks since applied): the check
        above reads only the stored records the later writes do not replace, so damage to one
        they replace would pass it, and a node serving proofs before it rewrites the tree
        reads it."""
        undone: dict[bytes, bytes | None] = {}
        for height in range(self.top, self.tree_height, -1):
            undone.update(replay.undo_states[height])  # an earlier block's value wins
        try:
            back = merkle.update(replay.backend, list(undone.items()))
        except (AssertionError, ValueError) as error:
            _fail(self.top, ITEM_TREE, f"the replayed tree does not take its undo: {error}")
        expected = overlaid(back.records, iter(replay.backend.tree_records()))
        difference = _first_difference(self.view.scan("tree"), expected)
        if difference is not None:
            key, found, wanted = difference
            _fail(
                self.top,
                ITEM_TREE,
                f"record {key.hex()}: stored {_short(found)}, the replayed tree of height "
                f"{self.tree_height} has {_short(wanted)}",
            )

    def _check_undo(self, replay: Replay) -> None:
        undo_height = self.view.meta(b"undo_height")
        if self.top == self.base:
            # No block since genesis or the snapshot: no earlier version is kept.
            if undo_height is not None or self.view.entries("state_undo"):
                _fail(self.top, ITEM_UNDO, "undo records exist but no block was committed")
            return
        if undo_height != height_key(self.top):
            _fail(self.top, ITEM_UNDO, "the undo records are not the last block's")
        first = max(self.tree_height, self.base + 1)
        database = "state_undo"
        stored_chunks = list(self.view.scan(database))
        expected_keys: list[bytes] = []
        by_height: dict[int, list[bytes]] = {}
        for key, value in stored_chunks:
            height = int.from_bytes(key[:8], "big")
            chunks = by_height.setdefault(height, [])
            expected_keys.append(undo_chunk_key(height_key(height), len(chunks)))
            chunks.append(value)
        keys = [key for key, _ in stored_chunks]
        if keys != expected_keys or sorted(by_height) != list(range(first, self.top + 1)):
            found = ", ".join(key.hex() for key in keys[:3]) or "none"
            under = f"height {self.top}" if first == self.top else f"heights {first}-{self.top}"
            _fail(
                self.top,
                ITEM_UNDO,
                f"{database} holds records {found} ({len(keys)}), expected chunks 0.. under "
                f"{under}",
            )
        for height, chunks in by_height.items():
            self._check_undo_record(height, chunks, replay.undo_states[height])

    def _check_undo_record(
        self, height: int, chunks: list[bytes], expected: dict[bytes, bytes | None]
    ) -> None:
        """The undo record of ``height`` (its ``chunks`` in order) lists exactly the keys the
        block's writes replaced in the replay with what each held before (``expected``)."""
        database = "state_undo"
        try:
            stored = undo_record(chunks)
        except StoreError as error:
            _fail(height, ITEM_UNDO, f"{database}: {error}")
        for key in sorted(stored.keys() | expected.keys()):
            if key not in stored or key not in expected or stored[key] != expected[key]:
                _fail(
                    height,
                    ITEM_UNDO,
                    f"{database} {render_key(key)}: stored "
                    f"{_short(stored[key]) if key in stored else '(not listed)'}, block "
                    f"{height} replaced "
                    f"{_short(expected[key]) if key in expected else '(nothing: not written)'}",
                )

    def _check_state(self, replay: Replay) -> None:
        for difference in diff_states(self.view.state_scan(), replay.backend.scan()):
            height = replay.last_written.get(difference.key, self.top)
            key = render_key(difference.key)
            if difference.b is None:
                detail = (
                    f"key {key} is in the store ({render_value(difference.a)}) but not in "
                    "the replay"
                )
            elif difference.a is None:
                detail = (
                    f"key {key} is missing from the store (replay: {render_value(difference.b)})"
                )
            else:
                detail = (
                    f"key {key} differs: stored {render_value(difference.a)}, replay "
                    f"{render_value(difference.b)}"
                )
            _fail(height, ITEM_STATE, detail)


class _StoredTree:
    """The stored tree database as an ``apps.merkle.TreeReader``."""

    def __init__(self, view: StoreView) -> None:
        self._view = view

    def tree_node(self, key: bytes) -> bytes | None:
        return self._view.get("tree", key)


def _first_difference(
    stored: Iterator[tuple[bytes, bytes]], expected: Iterator[tuple[bytes, bytes]]
) -> tuple[bytes, bytes | None, bytes | None] | None:
    """The first key at which two sorted (key, value) streams differ, with both values."""
    left = next(stored, None)
    right = next(expected, None)
    while left is not None or right is not None:
        if right is None or (left is not None and left[0] < right[0]):
            assert left is not None
            return left[0], left[1], None
        if left is None or right[0] < left[0]:
            return right[0], None, right[1]
        if left[1] != right[1]:
            return left[0], left[1], right[1]
        left = next(stored, None)
        right = next(expected, None)
    return None


def audit_store(
    view: StoreView,
    genesis: Genesis,
    *,
    apps: Sequence[App] | None = None,
    home: str = "",
    snapshots: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> AuditReport:
    """Audit the store behind ``view`` against ``genesis`` (apps: as genesis enables them,
    loaded through entry points, unless given; ``snapshots``: the home's snapshot directory,
    needed for a state-synced store; ``progress(phase, heights done, heights)`` after each
    height). Never raises for what it finds in the store."""
    started = time.perf_counter()
    auditor = _Auditor(view, genesis, apps, snapshots, progress)
    failure: AuditFailure | None = None
    try:
        auditor.run()
    except _Failed as failed:
        failure = failed.failure
    except StoreViewError as error:  # a damaged page (``StoreView.read_every_record``)
        failure = AuditFailure(auditor.at, ITEM_STORE, str(error))
    evidence = auditor.evidence.count if auditor.evidence is not None else 0
    report = AuditReport(
        home=home or str(view.path),
        chain_id=genesis.chain_id,
        height=auditor.top,
        heights_checked=auditor.heights_checked,
        transactions=auditor.transactions,
        state_keys=_entries_or_zero(view, "state"),
        evidence=evidence,
        failure=failure,
        elapsed_seconds=time.perf_counter() - started,
        replay_seconds=auditor.replay_seconds,
        certificate_seconds=auditor.certificate_seconds,
    )
    log.info("audit_finished", extra={"ok": report.ok, "height": report.height})
    return report


def _entries_or_zero(view: StoreView, db: str) -> int:
    """The entries of ``db``, 0 when its root page is damaged (reported as the failure)."""
    try:
        return view.entries(db)
    except StoreViewError:
        return 0


def audit_home(
    home: Path,
    *,
    apps: Sequence[App] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> AuditReport:
    """Audit the node home ``home`` (its ``genesis.json`` and ``data/`` store). A home that
    cannot be read yields a report whose failure item is ``home`` at height 0. ``progress``:
    as for ``audit_store``."""
    started = time.perf_counter()
    try:
        genesis, data = load_home_genesis(home)
        if (data / "data.mdb").is_file():
            problem = check_lmdb_file(data / "data.mdb")
            if problem is not None:
                raise StoreViewDamagedError(damaged_store_message(data, problem))
        view = StoreView(data)
    except (GenesisError, StoreViewError, OSError) as error:
        # A store whose file is damaged is a finding, like any other damage; a home that
        # cannot be read at all (no genesis, no store, no permission) is not.
        item = ITEM_STORE if isinstance(error, StoreViewDamagedError) else ITEM_HOME
        return AuditReport(
            home=str(home),
            chain_id="",
            height=-1,
            heights_checked=0,
            transactions=0,
            state_keys=0,
            evidence=0,
            failure=AuditFailure(0, item, str(error)),
            elapsed_seconds=time.perf_counter() - started,
            replay_seconds=0.0,
            certificate_seconds=0.0,
        )
    with view:
        return audit_store(
            view,
            genesis,
            apps=apps,
            home=str(home),
            snapshots=home / SNAPSHOTS_DIR,
            progress=progress,
        )
