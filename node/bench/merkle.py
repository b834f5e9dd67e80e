"""What the Merkle state commitment costs, and why it is a 16-ary tree (``suanpan bench merkle``).

The run builds a state of ``accounts`` payments-like accounts (a balance, a nonce and a
history record each: three keys per account), then applies ``blocks`` blocks of ``writes``
random writes (60 % updates of existing keys, 40 % new keys, the mix a payments block makes)
and reports, as CPU time (the machine is shared):

* **app hash from scratch**: the root of the whole state built from its entries (what a
  snapshot install and the audit's replay do);
* **per block and per write**: ``apps.merkle.update`` over the in-memory tree, and over a real
  LMDB store (the node's path: records read from LMDB, then the block's records and undo
  records committed with fsync); with ``python_update`` (``--python-update``) the Python
  update even where the C one is loaded (``merkle_tree`` in the report says which ran);
* **proofs**: median size and verify time of proofs of present and absent keys.

``--designs`` adds the same blocks applied to models of the designs considered and not chosen,
written here only to be measured (each computes its root the same way a full implementation
would; none is used by the node):

* ``binary``: a binary sparse Merkle tree with compressed leaves (the logical tree of Diem's
  Jellyfish) stored one binary node per record;
* ``bucketed``: a fixed tree over 65,536 buckets (by the first 16 bits of the key hash), each
  bucket one record of its sorted leaves (Hyperledger Fabric 0.6's bucket tree);
* ``chained``: the previous app hash, SHA-256 over the write set chained to the last one
  (no proofs, no state check; the baseline).

``--layouts`` writes the same blocks' tree records to LMDB (one write transaction with fsync
per write, in a fresh environment each) in the ways a store could lay them out, and reports
the CPU, wall time and bytes written per block once the run is steady (the blocks after the
first ``LAYOUT_HOLD``, in whole cycles of it), and the live records compaction moved on per
block (``moved_per_block``; 0 in the layouts that do not compact). Only the write side is
measured: reading a record by its path in the version layouts would need each parent record
to carry its children's versions (as Jellyfish's does), which none of them models.

* ``by path``: records keyed by their path (the store's layout), written every block, or
  every ``LAYOUT_HOLD`` blocks with the records of those blocks merged (the store holds them
  so);
* ``by version``: records keyed by the height that wrote them and their path, so a block's
  records are contiguous; the records they replace are deleted at once, every
  ``LAYOUT_HOLD`` blocks, or never (a store that grows without bound: the floor of the
  layout's cost); or the records of ``LAYOUT_HOLD`` blocks merged as the store holds them,
  written under the last one's height, and the records they replace deleted in the same
  transaction;
* compacted: the records of ``LAYOUT_HOLD`` blocks merged and put in key order at the end of
  the store, the records they replace left where they are until the store holds more replaced
  records than live ones; then the oldest heights are compacted, their live records moved on
  with the next write and the rest removed. ``version log`` keeps every height in one
  database and removes a compacted height's records one by one; ``segments`` gives each write
  a database of its own and drops a compacted one whole. A reader would find a record through
  the height that holds it (kept here in memory, as a parent record carrying its children's
  heights would give it).

Each layout's store is checked at the end against the tree's records, so what is measured
holds the tree.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import lmdb

from apps.merkle import (
    MemoryTree,
    Proof,
    TreeReader,
    TreeUpdate,
    build,
    leaf_of,
    prove,
    tree_status,
    update,
    update_python,
    verify,
)
from consensus.crypto import PrivateKey, hash_bytes
from consensus.types import Block, CommitCertificate, Phase, Validator, ValidatorSet, Vote
from node.jsonvalue import JsonType

__all__ = ["LAYOUT_HOLD", "MerkleReport", "run_merkle_bench"]

_sha256 = hashlib.sha256
UPDATE_SHARE: Final = 0.6
_PROOF_SAMPLES: Final = 200
# ``--layouts``: blocks merged per write (by path) or per removal of stale records (by
# version); the store writes its held tree records every 8 blocks.
LAYOUT_HOLD: Final = 8
# (name, keyed by, blocks per write or removal; 0: never removed).
_LAYOUTS: Final = (
    ("by path, every block", "path", 1),
    (f"by path, every {LAYOUT_HOLD} blocks", "path", LAYOUT_HOLD),
    ("by version, stale removed at once", "version", 1),
    (f"by version, stale removed every {LAYOUT_HOLD} blocks", "version", LAYOUT_HOLD),
    (
        f"by version, written and stale removed every {LAYOUT_HOLD} blocks",
        "version held",
        LAYOUT_HOLD,
    ),
    ("by version, stale never removed", "version", 0),
    (f"by version, {LAYOUT_HOLD} blocks merged, compacted", "version log", LAYOUT_HOLD),
    (
        f"by version, {LAYOUT_HOLD} blocks merged, compacted by database",
        "segments",
        LAYOUT_HOLD,
    ),
)
# Layouts whose store keeps replaced records until it holds more of them than live ones.
_COMPACTED: Final = ("version log", "segments")
# The most databases a layout opens (``segments``: one per height it keeps).
_LAYOUT_DATABASES_MAX: Final = 4096
_VERSION_BYTES: Final = 8


@dataclass(frozen=True, slots=True)
class MerkleReport:
    """Figures of one run (see the module docstring)."""

    accounts: int
    keys: int
    writes_per_block: int
    blocks: int
    build_s: float
    memory_ms_per_block: float
    memory_us_per_write: float
    records_per_block: float
    record_bytes_per_block: float
    lmdb_execute_ms_per_block: float
    lmdb_commit_ms_per_block: float
    lmdb_us_per_write: float
    proof_bytes_median: int
    proof_bytes_max: int
    verify_us_median: float
    merkle_tree: str
    designs: dict[str, dict[str, float]]
    layouts: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, JsonType]:
        """As one JSON object."""
        document: dict[str, JsonType] = {
            name: value
            for name, value in asdict(self).items()
            if name not in ("designs", "layouts")
        }
        for name in ("designs", "layouts"):
            rows: dict[str, JsonType] = {}
            for row_name, row in getattr(self, name).items():
                columns: dict[str, JsonType] = {}
                columns.update(row)
                rows[row_name] = columns
            document[name] = rows
        return document


def _cpu() -> float:
    return time.process_time()


def _state(accounts: int, rng: random.Random) -> list[tuple[bytes, bytes]]:
    items = []
    for index in range(accounts):
        account = rng.randbytes(32).hex().encode()
        items.append((b"payments\x00bal/" + account + b"/SGD", rng.randbytes(9)))
        items.append((b"_host\x00nonce/" + account, rng.randbytes(3)))
        items.append((b"payments\x00hist/" + account + b"/%016x" % index, b""))
    return items


def _blocks(
    keys: list[bytes], writes: int, blocks: int, rng: random.Random
) -> list[tuple[tuple[bytes, bytes | None], ...]]:
    result = []
    for number in range(blocks):
        block: dict[bytes, bytes | None] = {}
        while len(block) < writes:
            if rng.random() < UPDATE_SHARE:
                block[rng.choice(keys)] = rng.randbytes(20)
            else:
                key = b"payments\x00pay/%08x%08x" % (number, len(block)) + rng.randbytes(4)
                keys.append(key)
                block[key] = rng.randbytes(120)
        result.append(tuple(sorted(block.items())))
    return result


def run_merkle_bench(
    *,
    accounts: int = 100_000,
    writes: int = 5_000,
    blocks: int = 5,
    designs: bool = False,
    layouts: bool = False,
    python_update: bool = False,
) -> MerkleReport:
    """Run the benchmark (see the module docstring). ``layouts`` needs at least
    ``2 * LAYOUT_HOLD`` blocks."""
    apply_writes = update_python if python_update else update
    if layouts and blocks < 2 * LAYOUT_HOLD:
        raise ValueError(f"comparing layouts needs at least {2 * LAYOUT_HOLD} blocks")
    rng = random.Random(7)
    items = _state(accounts, rng)
    keys = [key for key, _ in items]
    block_writes = _blocks(keys, writes, blocks, rng)

    started = _cpu()
    full = build(leaf_of(key, value) for key, value in items)
    build_s = _cpu() - started

    tree = MemoryTree()
    tree.apply(full)
    memory_times: list[float] = []
    records: list[int] = []
    record_bytes: list[int] = []
    tree_updates: list[TreeUpdate] = []
    for block in block_writes:
        started = _cpu()
        tree_update = apply_writes(tree, block)
        memory_times.append(_cpu() - started)
        tree.apply(tree_update)
        tree_updates.append(tree_update)
        records.append(len(tree_update.records))
        record_bytes.append(sum(len(record or b"") for _, record in tree_update.records))

    execute_ms, commit_ms = _lmdb_blocks(items, block_writes, apply_writes)

    present = [rng.choice(keys) for _ in range(_PROOF_SAMPLES // 2)]
    absent = [rng.randbytes(16) for _ in range(_PROOF_SAMPLES // 2)]
    values = dict(items)
    for block in block_writes:
        values.update((key, value) for key, value in block if value is not None)
    sizes: list[int] = []
    verify_times: list[float] = []
    for key in present + absent:
        proof = Proof.decode(prove(tree, key).encode())
        sizes.append(proof.size_bytes)
        started = time.perf_counter()
        verify(tree.root, key, values.get(key), proof)
        verify_times.append(time.perf_counter() - started)

    memory_s = statistics.median(memory_times)
    compared: dict[str, dict[str, float]] = {}
    if designs:
        compared = _compare_designs(items, block_writes)
    laid_out = _compare_layouts(full, tree_updates, tree.records) if layouts else {}
    return MerkleReport(
        accounts=accounts,
        keys=len(items),
        writes_per_block=writes,
        blocks=blocks,
        build_s=round(build_s, 3),
        memory_ms_per_block=round(memory_s * 1000, 2),
        memory_us_per_write=round(memory_s / writes * 1e6, 2),
        records_per_block=statistics.median(records),
        record_bytes_per_block=statistics.median(record_bytes),
        lmdb_execute_ms_per_block=round(execute_ms, 2),
        lmdb_commit_ms_per_block=round(commit_ms, 2),
        lmdb_us_per_write=round(execute_ms / writes * 1000, 2),
        proof_bytes_median=int(statistics.median(sizes)),
        proof_bytes_max=max(sizes),
        verify_us_median=round(statistics.median(verify_times) * 1e6, 1),
        merkle_tree="python (--python-update)" if python_update else tree_status(),
        designs=compared,
        layouts=laid_out,
    )


def _lmdb_blocks(
    items: list[tuple[bytes, bytes]],
    block_writes: list[tuple[tuple[bytes, bytes | None], ...]],
    apply_writes: Callable[[TreeReader, Iterable[tuple[bytes, bytes | None]]], TreeUpdate],
) -> tuple[float, float]:
    """Median ms per block of the tree update over a real store, and of the whole commit
    (state, tree and undo records, fsync) minus the same commit without the tree."""
    from apps.host import BlockResult
    from node.store import Store

    validators = ValidatorSet(
        tuple(Validator(f"v{index}", key.public_key) for index, key in enumerate(_KEYS))
    )
    chain_id = "bench-merkle"
    execute: list[float] = []
    commit: list[float] = []
    with tempfile.TemporaryDirectory(prefix="suanpan-bench-merkle-") as directory:
        store = Store(Path(directory), chain_id=chain_id, genesis_hash=hash_bytes(b"g"))
        with store:
            genesis = tuple(sorted(items))
            store.init_genesis(genesis, build(leaf_of(k, v) for k, v in genesis).root)
            backend = store.state_backend()
            for height, block_writes_one in enumerate(block_writes, start=1):
                started = _cpu()
                tree_update = apply_writes(backend, block_writes_one)
                execute.append(_cpu() - started)
                block = Block.build(
                    chain_id=chain_id,
                    height=height,
                    view=0,
                    parent_hash=store.last_block_hash,
                    app_hash=store.app_hash,
                    next_validators_hash=validators.hash(),
                    proposer=0,
                    timestamp_ms=height,
                    transactions=(),
                )
                certificate = _certify(block, chain_id, validators)
                result = BlockResult(height, (), block_writes_one, tree_update.root, tree_update)
                started = _cpu()
                store.commit_block(block, certificate, result)
                commit.append(_cpu() - started)
    return statistics.median(execute) * 1000, statistics.median(commit) * 1000


_KEYS: Final = tuple(PrivateKey(bytes([index + 1]) * 32) for index in range(4))


def _certify(block: Block, chain_id: str, validators: ValidatorSet) -> CommitCertificate:
    votes = [
        Vote.create(
            key,
            chain_id,
            phase=Phase.COMMIT,
            height=block.height,
            view=0,
            block_hash=block.hash,
            validator=index,
        )
        for index, key in enumerate(_KEYS[: validators.quorum])
    ]
    return CommitCertificate.from_votes(votes)


# ---------------------------------------------------------------------------- rejected designs


def _written_bytes() -> int | None:
    """Bytes this process has passed to write calls so far (Linux), or None."""
    try:
        with open("/proc/self/io", encoding="ascii") as counters:
            for line in counters:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _compare_layouts(
    full: TreeUpdate, tree_updates: list[TreeUpdate], final: dict[bytes, bytes]
) -> dict[str, dict[str, float]]:
    """Each layout of ``_LAYOUTS``: the tree of ``full`` loaded, then ``tree_updates``
    written; per-block means over the whole cycles after the first. ``final`` is the tree's
    records after the last update: each layout's store must hold exactly them."""
    rows: dict[str, dict[str, float]] = {}
    cycle = range(LAYOUT_HOLD, len(tree_updates) - len(tree_updates) % LAYOUT_HOLD)
    for name, keyed_by, every in _LAYOUTS:
        with tempfile.TemporaryDirectory(prefix="suanpan-bench-layout-") as directory:
            env = lmdb.open(directory, map_size=1 << 36, max_dbs=_LAYOUT_DATABASES_MAX, lock=False)
            try:
                times, walls, written, moved, stored = _write_layout(
                    env, keyed_by, every, full, tree_updates
                )
                size = Path(directory, "data.mdb").stat().st_size
            finally:
                env.close()
        _check_layout(name, keyed_by, every, stored, final)
        rows[name] = {
            "cpu_ms_per_block": round(sum(times[i] for i in cycle) / len(cycle) * 1000, 2),
            "wall_ms_per_block": round(sum(walls[i] for i in cycle) / len(cycle) * 1000, 2),
            "kib_written_per_block": (
                round(sum(written[i] for i in cycle) / len(cycle) / 1024)
                if all(value >= 0 for value in written)
                else math.nan
            ),
            "file_mib": round(size / 2**20, 1),
            "moved_per_block": round(sum(moved[i] for i in cycle) / len(cycle)),
        }
    return rows


def _check_layout(
    name: str, keyed_by: str, every: int, stored: dict[bytes, bytes], final: dict[bytes, bytes]
) -> None:
    """``RuntimeError`` unless the records a layout's store holds (``stored``, as
    ``_write_layout`` returns them) are exactly the tree's (``final``)."""
    if keyed_by == "path":
        held = stored
    elif every and keyed_by not in _COMPACTED:
        held = {key[_VERSION_BYTES:]: record for key, record in stored.items()}
        if len(held) != len(stored):
            raise RuntimeError(f"{name}: a path is stored under two versions")
    else:  # never removed or compacted: the newest version of each path the tree holds
        newest: dict[bytes, tuple[int, bytes]] = {}
        for key, record in stored.items():
            version = int.from_bytes(key[:_VERSION_BYTES], "big")
            path = key[_VERSION_BYTES:]
            if path not in newest or newest[path][0] < version:
                newest[path] = (version, record)
        held = {path: newest[path][1] for path in final if path in newest}
    if held != final:
        raise RuntimeError(f"{name}: the store does not hold the tree's records")


def _write_layout(
    env: lmdb.Environment,
    keyed_by: str,
    every: int,
    full: TreeUpdate,
    tree_updates: list[TreeUpdate],
) -> tuple[list[float], list[float], list[int], list[int], dict[bytes, bytes]]:
    """Write ``full`` then each update in one layout; per block: CPU and wall seconds, bytes
    written (-1 unknown), live records compaction moved on; and the store's records at the
    end (with held records written)."""
    zero = bytes(_VERSION_BYTES)
    with env.begin(write=True) as txn:
        first = env.open_db(b"0", txn=txn) if keyed_by == "segments" else None
        for key, record in full.records:
            if record is not None:
                if first is not None:
                    txn.put(key, record, db=first)
                else:
                    txn.put(key if keyed_by == "path" else zero + key, record)
    versions = {key: 0 for key, record in full.records if record is not None}
    held: dict[bytes, bytes | None] = {}
    stale: list[bytes] = []

    def write_by_path(txn: lmdb.Transaction, records: dict[bytes, bytes | None]) -> None:
        for key, record in sorted(records.items()):
            if record is None:
                txn.delete(key)
            else:
                txn.put(key, record)

    def write_by_version(
        txn: lmdb.Transaction, height: int, key: bytes, record: bytes | None
    ) -> None:
        """``record`` as ``height``'s; the version it replaces becomes stale."""
        old = versions.pop(key, None)
        if old is not None:
            stale.append(old.to_bytes(_VERSION_BYTES, "big") + key)
        if record is not None:
            txn.put(height.to_bytes(_VERSION_BYTES, "big") + key, record)
            versions[key] = height

    def remove_stale(txn: lmdb.Transaction) -> None:
        for key in sorted(stale):
            txn.delete(key)
        stale.clear()

    # The compacted layouts: how many records each height put in the store (live or stale);
    # a height's records stay until compaction moves its live ones on and removes the rest.
    # "segments" keeps each height's records in a database of their own, with the paths it
    # holds.
    put_at: dict[int, int] = {0: len(versions)}
    moved_now = 0  # live records moved on by compaction in the current write
    segments: dict[int, tuple[lmdb._Database, list[bytes]]] = {}
    if first is not None:
        segments[0] = (first, list(versions))

    def take_oldest(txn: lmdb.Transaction, merged: dict[bytes, bytes | None]) -> None:
        """Remove the oldest height's records from the store; its live ones join ``merged``
        unless a newer record of their path is there."""
        nonlocal moved_now
        oldest = min(put_at)
        if keyed_by == "segments":
            db, paths = segments.pop(oldest)
            for path in paths:
                if versions.get(path) == oldest:
                    del versions[path]
                    record = txn.get(path, db=db)
                    if record is None:
                        raise RuntimeError(f"height {oldest} lost a live record")
                    if path not in merged:
                        merged[path] = bytes(record)
                        moved_now += 1
            txn.drop(db, delete=True)
        else:  # one database: its records read and deleted in key order
            prefix = oldest.to_bytes(_VERSION_BYTES, "big")
            cursor = txn.cursor()
            found = cursor.set_range(prefix)
            while found and cursor.key()[:_VERSION_BYTES] == prefix:
                path = bytes(cursor.key()[_VERSION_BYTES:])
                if versions.get(path) == oldest:
                    del versions[path]
                    if path not in merged:
                        merged[path] = bytes(cursor.value())
                        moved_now += 1
                found = cursor.delete()
        del put_at[oldest]

    def write_compacted(
        txn: lmdb.Transaction, height: int, records: dict[bytes, bytes | None]
    ) -> None:
        """Compact the oldest heights while the store holds more stale records than live
        ones (or, in ``segments``, while no database is left for this write), then put
        ``records`` and the live records moved on under ``height``, in key order at the end
        of the store."""
        merged = dict(records)
        while put_at and (
            sum(put_at.values()) - len(versions) > len(versions)
            or len(segments) >= _LAYOUT_DATABASES_MAX - 1  # room for this write's database
        ):
            take_oldest(txn, merged)
        prefix = b"" if keyed_by == "segments" else height.to_bytes(_VERSION_BYTES, "big")
        puts: list[tuple[bytes, bytes]] = []
        for path, record in sorted(merged.items()):
            versions.pop(path, None)
            if record is not None:
                puts.append((prefix + path, record))
                versions[path] = height
        if keyed_by == "segments":
            db = env.open_db(b"%d" % height, txn=txn)
            segments[height] = (db, [path for path, _ in puts])
            txn.cursor(db=db).putmulti(puts, append=True)
        else:
            txn.cursor().putmulti(puts, append=True)
        put_at[height] = len(puts)

    times: list[float] = []
    walls: list[float] = []
    written: list[int] = []
    moved: list[int] = []
    for height, tree_update in enumerate(tree_updates, start=1):
        moved_now = 0
        before = _written_bytes()
        started, started_wall = _cpu(), time.perf_counter()
        if keyed_by == "version":
            with env.begin(write=True) as txn:
                for key, record in tree_update.records:
                    write_by_version(txn, height, key, record)
                if every and height % every == 0:
                    remove_stale(txn)
        else:
            held.update(tree_update.records)
            if height % every == 0:
                with env.begin(write=True) as txn:
                    if keyed_by == "path":
                        write_by_path(txn, held)
                    elif keyed_by in _COMPACTED:
                        write_compacted(txn, height, held)
                    else:  # version held
                        for key, record in sorted(held.items()):
                            write_by_version(txn, height, key, record)
                        remove_stale(txn)
                held = {}
        times.append(_cpu() - started)
        walls.append(time.perf_counter() - started_wall)
        after = _written_bytes()
        written.append(-1 if before is None or after is None else after - before)
        moved.append(moved_now)
    with env.begin(write=True) as txn:  # what is still held or stale, outside the figures
        if keyed_by == "path":
            write_by_path(txn, held)
        elif keyed_by in _COMPACTED:
            write_compacted(txn, len(tree_updates) + 1, held)
        else:
            for key, record in sorted(held.items()):
                write_by_version(txn, len(tree_updates) + 1, key, record)
            if every:
                remove_stale(txn)
    with env.begin() as txn:
        stored: dict[bytes, bytes] = {}
        if keyed_by == "segments":  # as keyed in one database, for the check
            for height, (db, _) in segments.items():
                prefix = height.to_bytes(_VERSION_BYTES, "big")
                stored.update((prefix + bytes(k), bytes(v)) for k, v in txn.cursor(db=db))
        else:
            stored.update((bytes(key), bytes(value)) for key, value in txn.cursor())
    return times, walls, written, moved, stored


def _compare_designs(
    items: list[tuple[bytes, bytes]], block_writes: list[tuple[tuple[bytes, bytes | None], ...]]
) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    writes = len(block_writes[0])
    models: dict[str, Callable[[], _Model]] = {
        "16-ary (chosen)": _Hexary,
        "binary": _Binary,
        "bucketed": _Bucketed,
        "chained": _Chained,
    }
    for name, factory in models.items():
        model = factory()
        model.load(items)
        times = []
        records = []
        for block in block_writes:
            started = _cpu()
            written = model.apply(block)
            times.append(_cpu() - started)
            records.append(written)
        median = statistics.median(times)
        rows[name] = {
            "us_per_write": round(median / writes * 1e6, 2),
            "ms_per_block": round(median * 1000, 2),
            "records_per_block": statistics.median(records),
            "proof_bytes": model.proof_bytes(),
        }
    return rows


class _Model:
    def load(self, items: list[tuple[bytes, bytes]]) -> None:
        raise NotImplementedError

    def apply(self, writes: tuple[tuple[bytes, bytes | None], ...]) -> int:
        """Apply one block; return the records it writes."""
        raise NotImplementedError

    def proof_bytes(self) -> float:
        """Typical proof size of a present key."""
        raise NotImplementedError


class _Hexary(_Model):
    """The node's tree (``apps.merkle``)."""

    def load(self, items: list[tuple[bytes, bytes]]) -> None:
        self.tree = MemoryTree()
        self.tree.apply(build(leaf_of(k, v) for k, v in items))
        self.key = items[0][0]

    def apply(self, writes: tuple[tuple[bytes, bytes | None], ...]) -> int:
        tree_update = update(self.tree, writes)
        self.tree.apply(tree_update)
        return len(tree_update.records)

    def proof_bytes(self) -> float:
        return float(prove(self.tree, self.key).size_bytes)


class _Binary(_Model):
    """Binary sparse Merkle tree with compressed leaves, one record per binary node: the
    definition of ``apps.merkle`` with two children per node instead of sixteen."""

    def load(self, items: list[tuple[bytes, bytes]]) -> None:
        self.records: dict[tuple[int, int], tuple[bytes | None, bytes | None]] = {}
        self.written = 0
        self.root = self._build(0, sorted(leaf_of(k, v) for k, v in items))
        self.sample = items[0][0]

    @staticmethod
    def _bit(digest: bytes, depth: int) -> int:
        return (digest[depth >> 3] >> (7 - (depth & 7))) & 1

    @staticmethod
    def _key(digest: bytes, depth: int) -> tuple[int, int]:
        return depth, int.from_bytes(digest[:32], "big") >> (256 - depth) if depth else 0

    def _node(self, key: tuple[int, int], left: bytes | None, right: bytes | None) -> bytes | None:
        present = [child for child in (left, right) if child is not None]
        if not present or (len(present) == 1 and len(present[0]) == 64):
            self.records.pop(key, None)
            return present[0] if present else None
        self.records[key] = (left, right)
        self.written += 1
        return _sha256(b"\x01" + _slot_hash(left) + _slot_hash(right)).digest()

    def _build(self, depth: int, leaves: Sequence[bytes]) -> bytes | None:
        if len(leaves) <= 1:
            return leaves[0] if leaves else None
        split = 0
        while split < len(leaves) and not self._bit(leaves[split], depth):
            split += 1
        return self._node(
            self._key(leaves[0], depth),
            self._build(depth + 1, leaves[:split]),
            self._build(depth + 1, leaves[split:]),
        )

    def apply(self, writes: tuple[tuple[bytes, bytes | None], ...]) -> int:
        changes = sorted(
            (_sha256(k).digest(), None if v is None else _sha256(v).digest()) for k, v in writes
        )
        self.written = 0
        self.root = self._apply(0, self.root, changes)
        return self.written

    def _apply(
        self, depth: int, slot: bytes | None, changes: list[tuple[bytes, bytes | None]]
    ) -> bytes | None:
        if slot is not None and len(slot) == 32:
            key = self._key(changes[0][0], depth)
            left, right = self.records[key]
            split = 0
            while split < len(changes) and not self._bit(changes[split][0], depth):
                split += 1
            if split:
                left = self._apply(depth + 1, left, changes[:split])
            if split < len(changes):
                right = self._apply(depth + 1, right, changes[split:])
            return self._node(key, left, right)
        leaves: dict[bytes, bytes] = {}
        if slot is not None:
            leaves[slot[:32]] = slot
        for digest, value_hash in changes:
            if value_hash is None:
                leaves.pop(digest, None)
            else:
                leaves[digest] = digest + value_hash
        return self._build(depth, sorted(leaves.values()))

    def proof_bytes(self) -> float:
        digest = _sha256(self.sample).digest()
        slot = self.root
        depth = 0
        while slot is not None and len(slot) == 32:
            left, right = self.records[self._key(digest, depth)]
            slot = right if self._bit(digest, depth) else left
            depth += 1
        return float(32 * depth + 64)


def _slot_hash(slot: bytes | None) -> bytes:
    if slot is None:
        return bytes(32)
    return _sha256(b"\x00" + slot).digest() if len(slot) == 64 else slot


class _Bucketed(_Model):
    """65,536 buckets of sorted leaves under a fixed 16-ary tree of 4 levels."""

    BUCKETS = 1 << 16

    def load(self, items: list[tuple[bytes, bytes]]) -> None:
        self.buckets: list[list[bytes]] = [[] for _ in range(self.BUCKETS)]
        for key, value in items:
            leaf = leaf_of(key, value)
            self.buckets[int.from_bytes(leaf[:2], "big")].append(leaf)
        for bucket in self.buckets:
            bucket.sort()
        self.hashes = [_sha256(b"".join(bucket)).digest() for bucket in self.buckets]
        self.levels = [self.hashes]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [_sha256(b"".join(below[i : i + 16])).digest() for i in range(0, len(below), 16)]
            )

    def apply(self, writes: tuple[tuple[bytes, bytes | None], ...]) -> int:
        dirty: set[int] = set()
        for key, value in writes:
            digest = _sha256(key).digest()
            index = int.from_bytes(digest[:2], "big")
            bucket = self.buckets[index]
            position = bisect.bisect_left(bucket, digest)
            if position < len(bucket) and bucket[position][:32] == digest:
                del bucket[position]
            if value is not None:
                bucket.insert(position, digest + _sha256(value).digest())
            dirty.add(index)
        written = len(dirty)
        for index in dirty:
            self.hashes[index] = _sha256(b"".join(self.buckets[index])).digest()
        for level in range(1, len(self.levels)):
            dirty = {index // 16 for index in dirty}
            below = self.levels[level - 1]
            for index in dirty:
                self.levels[level][index] = _sha256(
                    b"".join(below[index * 16 : index * 16 + 16])
                ).digest()
            written += len(dirty)
        return written

    def proof_bytes(self) -> float:
        average = sum(len(bucket) for bucket in self.buckets) / self.BUCKETS
        return 64 * average + 4 * 15 * 32


class _Chained(_Model):
    """SHA-256 of the write set chained to the previous app hash (no proofs)."""

    def load(self, items: list[tuple[bytes, bytes]]) -> None:
        self.root = bytes(32)

    def apply(self, writes: tuple[tuple[bytes, bytes | None], ...]) -> int:
        digest = _sha256(self.root)
        for key, value in writes:
            digest.update(len(key).to_bytes(4, "big"))
            digest.update(key)
            if value is not None:
                digest.update(len(value).to_bytes(4, "big"))
                digest.update(value)
        self.root = digest.digest()
        return 0

    def proof_bytes(self) -> float:
        return float("nan")
