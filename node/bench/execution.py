"""Per-transaction cost of the node's execution path, phase by phase.

Theory of operation
-------------------
A node handles every committed transaction in five steps: it decodes the client's bytes and
verifies the signature (mempool admission), runs the stateful admission check (``Mempool.add``),
proposes it (``Mempool.reap``), executes the block (``AppHost.execute_block``, which decodes the
block's own bytes again but skips the signature of transactions the mempool verified), commits
the block with its write set to LMDB (``Store.commit_block``, fsync on) and finally drops it
from the mempool (``Mempool.update``). This benchmark times each step separately on pre-signed
transactions, so signing never counts:

* ``decode_signed`` / ``decode_unsigned``: ``Transaction.decode`` with and without the signature;
* ``execute_memory`` / ``execute_lmdb``: ``execute_block`` with ``known=`` (as the node calls it)
  over the in-memory backend and over the LMDB store's committed state, seen as the node sees
  it (``UnwrittenStateBackend``, with its read caches);
* ``commit``: ``Store.commit_block`` with ``sync=True`` (per block and per transaction), and
  the state view's record of the executed block (``UnwrittenStateBackend.add``);
* ``mempool_add`` / ``mempool_reap`` / ``mempool_update``: per transaction.

Three workloads: ``demo`` (``apps.demo.DemoTraffic``: payments, FX, supply-chain finance,
assets), ``payments`` (transfers only, between the demo consortium's ten payers) and
``accounts`` (the transfers the catch-up benchmark submits, between its 200 accounts, 50 per
bank; the throughput benchmark's 200 per bank spread wider still): a block's writes spread
over many more keys, so it dirties more tree paths and pages than ``payments`` does (``both``
runs the first two). Each run
starts from genesis; the figures are medians over the runs. ``node_path`` adds up what one node
spends per transaction (decode with signature + mempool add/reap/update + LMDB execution +
commit) and the rate one core could sustain on that alone.

The cost of a block grows with the ledger under it: a bigger state means a deeper Merkle tree
and, above all, more distinct LMDB pages dirtied by a block's writes (each is copied, written
and synced whole). So the LMDB run also reports ``ledger_growth``: execution and commit CPU per
transaction, the bytes each commit wrote (``wchar`` of ``/proc/self/io``, where Linux has
it) and the state keys and tree records written per transaction, over the first and the last
fifth of its blocks, with the transactions committed before each fifth. Run with more
``--transactions`` to see a larger ledger.

Every run also prints a *fingerprint*: SHA-256 over every block's app hash and every receipt.
It must not change when the code gets faster: identical blocks give identical results.

Run: ``python -m node.bench.execution [--transactions N] [--block-size B] [--runs R]
[--mix demo|payments|accounts|both] [--commit-blocks K] [--json] [--profile PHASE]``.
"""

from __future__ import annotations

import bisect
import contextlib
import cProfile
import gc
import hashlib
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeAlias

import click

from apps.assets import AssetsApp
from apps.base import App, BlockContext
from apps.demo import DemoTraffic, demo_consortium
from apps.host import AppHost, BlockResult
from apps.membership import MembershipApp
from apps.merkle import tree_status
from apps.payments import PaymentsApp
from apps.scf import ScfApp
from apps.state import MemoryBackend, WriteSet
from apps.transaction import Transaction, sign_transaction
from consensus.codec import Value, decoder_status, encoder_status
from consensus.crypto import PrivateKey, hash_bytes
from consensus.types import Block, CommitCertificate, Phase, Validator, ValidatorSet, Vote
from node.bench.workload import (
    BENCH_CHAIN_ID,
    CATCHUP_ACCOUNTS_PER_BANK,
    bench_accounts,
    sign_streams,
)
from node.jsonvalue import from_json
from node.mempool import Mempool, MempoolLimits
from node.native import native_status
from node.store import Store
from node.unwritten import UnwrittenStateBackend

__all__ = [
    "PHASES",
    "BlockSample",
    "GrowthSegment",
    "Workload",
    "growth_segments",
    "main",
    "prepare_workload",
    "run_benchmark",
]

EPOCH_MS: Final = 1_704_067_200_000
BLOCK_INTERVAL_MS: Final = 1000
PHASES: Final = (
    "decode_signed",
    "decode_unsigned",
    "execute_memory",
    "execute_lmdb",
    "commit",
    "mempool_add",
    "mempool_reap",
    "mempool_update",
)
# The phases a node pays for every committed transaction (execute_memory is the simulator's).
NODE_PATH_PHASES: Final = (
    "decode_signed",
    "mempool_add",
    "mempool_reap",
    "execute_lmdb",
    "commit",
    "mempool_update",
)
# One block of the LMDB run: transactions, execution CPU seconds, commit CPU seconds, bytes
# its commit wrote (None where the system does not say; the commit figures are 0 for a block
# whose write transaction a later block closes), and the state keys and Merkle tree records
# the block wrote.
BlockSample: TypeAlias = tuple[int, float, float, int | None, int, int]
# Benchmark validators: certificates are signed outside the timed sections.
_VALIDATOR_KEYS: Final = tuple(PrivateKey(bytes([index + 1]) * 32) for index in range(4))
_VALIDATORS: Final = ValidatorSet(
    tuple(Validator(f"v{index}", key.public_key) for index, key in enumerate(_VALIDATOR_KEYS))
)
_GENESIS_HASH: Final = hash_bytes(b"suanpan-bench genesis")
# The ``accounts`` mix: the catch-up benchmark's banks (one per validator).
ACCOUNT_BANKS: Final = 4


@dataclass(frozen=True, slots=True)
class Workload:
    """Pre-signed transactions cut into blocks, with the consortium's genesis."""

    mix: str
    chain_id: str
    app_genesis: dict[str, Value]
    blocks: tuple[tuple[bytes, ...], ...]

    @property
    def transactions(self) -> int:
        """Transactions in all blocks."""
        return sum(len(block) for block in self.blocks)


def _apps() -> list[App]:
    return [MembershipApp(), PaymentsApp(), ScfApp(), AssetsApp()]


def prepare_workload(mix: str, transactions: int, block_size: int, seed: int = 0) -> Workload:
    """Sign ``transactions`` transactions of ``mix`` (``demo`` or ``payments``) in blocks."""
    consortium = demo_consortium(seed)
    block_count = max(1, -(-transactions // block_size))
    blocks: list[tuple[bytes, ...]] = []
    if mix == "demo":
        traffic = DemoTraffic(consortium)
        for index in range(block_count):
            size = min(block_size, transactions - index * block_size)
            now_ms = EPOCH_MS + BLOCK_INTERVAL_MS * (index + 1)
            blocks.append(tuple(tx.encoded for tx in traffic.batch(size, now_ms)))
    elif mix == "payments":
        payers = [
            party
            for party in consortium.parties
            if {"bank", "enterprise", "customer"} & set(party.roles)
        ]
        nonces: dict[bytes, int] = {}
        made = 0
        for _ in range(block_count):
            block: list[bytes] = []
            while len(block) < block_size and made < transactions:
                source = payers[made % len(payers)]
                target = payers[(made // len(payers) + 1 + made) % len(payers)]
                if target is source:
                    target = payers[(made + 1) % len(payers)]
                nonce = nonces.get(source.public_key, 0)
                nonces[source.public_key] = nonce + 1
                tx = sign_transaction(
                    source.key,
                    chain_id=consortium.chain_id,
                    app="payments",
                    operation="transfer",
                    arguments={
                        "to": target.public_key,
                        "currency": source.currency,
                        "amount": 1 + made % 97,
                        "end_to_end_id": f"bench-{source.name}-{nonce}",
                        "purpose": "supplier invoice",
                        "originator": {"name": source.name, "country": source.jurisdiction},
                        "beneficiary": {"name": target.name, "country": target.jurisdiction},
                    },
                    nonce=nonce,
                )
                block.append(tx.encoded)
                made += 1
            blocks.append(tuple(block))
    elif mix == "accounts":
        return _accounts_workload(transactions, block_size, seed)
    else:
        raise ValueError(f"unknown mix {mix!r}: use demo, payments or accounts")
    return Workload(mix, consortium.chain_id, dict(consortium.app_genesis), tuple(blocks))


def _accounts_workload(transactions: int, block_size: int, seed: int) -> Workload:
    """The catch-up benchmark's transfers: ``ACCOUNT_BANKS`` banks of its
    ``CATCHUP_ACCOUNTS_PER_BANK`` accounts each, every account paying the next bank's accounts, the
    banks' streams interleaved as the validators' blocks interleave them."""
    accounts = bench_accounts(ACCOUNT_BANKS, CATCHUP_ACCOUNTS_PER_BANK, seed)
    rounds = -(-transactions // (ACCOUNT_BANKS * CATCHUP_ACCOUNTS_PER_BANK))
    streams = sign_streams(accounts, BENCH_CHAIN_ID, rounds, processes=os.cpu_count() or 1)
    interleaved = [tx for row in zip(*streams, strict=True) for tx in row][:transactions]
    blocks = tuple(
        tuple(interleaved[start : start + block_size])
        for start in range(0, len(interleaved), block_size)
    )
    genesis = {name: from_json(value) for name, value in accounts.app_state().items()}
    return Workload("accounts", BENCH_CHAIN_ID, genesis, blocks)


def _context(workload: Workload, height: int) -> BlockContext:
    return BlockContext(
        height=height,
        time_ms=EPOCH_MS + BLOCK_INTERVAL_MS * height,
        proposer=_VALIDATORS.validators[0].public_key,
        chain_id=workload.chain_id,
    )


def _memory_host(workload: Workload) -> tuple[AppHost, MemoryBackend]:
    backend = MemoryBackend()
    host = AppHost(_apps(), backend, chain_id=workload.chain_id)
    writes, app_hash = host.init_genesis(workload.app_genesis)
    backend.apply(writes)
    host.committed(0, app_hash)
    return host, backend


def _certify(block: Block, chain_id: str) -> CommitCertificate:
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
        for index, key in enumerate(_VALIDATOR_KEYS[: _VALIDATORS.quorum])
    ]
    return CommitCertificate.from_votes(votes)


class _Timer:
    """Accumulates wall-clock and CPU seconds of the timed sections of one run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.cpu_seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        # The LMDB run's blocks in order.
        self.blocks: list[BlockSample] = []
        # The LMDB run's last block: records written and estimated leaf pages, by database.
        self.last_block_pages: dict[str, tuple[int, int]] = {}

    @contextlib.contextmanager
    def section(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        cpu_start = time.process_time()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start
            self.cpu_seconds[phase] += time.process_time() - cpu_start


def _fingerprint_update(digest: hashlib._Hash, result: BlockResult) -> None:
    digest.update(result.app_hash)
    for receipt in result.receipts:
        digest.update(hash_bytes(receipt.encode()))


def _run_decode(workload: Workload, timer: _Timer) -> None:
    raws = [raw for block in workload.blocks for raw in block]
    chain_id = workload.chain_id

    def signed() -> None:
        for raw in raws:
            Transaction.decode(raw, chain_id=chain_id)

    def unsigned() -> None:
        for raw in raws:
            Transaction.decode(raw, chain_id=chain_id, check_signature=False)

    with timer.section("decode_signed"):
        signed()
    with timer.section("decode_unsigned"):
        unsigned()


def _decoded(workload: Workload) -> dict[bytes, Transaction]:
    known: dict[bytes, Transaction] = {}
    for block in workload.blocks:
        for raw in block:
            tx = Transaction.decode(raw, chain_id=workload.chain_id)
            known[tx.hash] = tx
    return known


def _run_memory(workload: Workload, timer: _Timer, known: dict[bytes, Transaction]) -> str:
    host, backend = _memory_host(workload)
    digest = hashlib.sha256()
    for height, block in enumerate(workload.blocks, start=1):
        context = _context(workload, height)
        with timer.section("execute_memory"):
            result = host.execute_block(context, block, known=known)
        backend.apply(result.writes, result.tree)
        host.committed(height, result.app_hash, result.writes)
        _fingerprint_update(digest, result)
    return digest.hexdigest()


def _bytes_written() -> int | None:
    """Bytes this process has passed to write calls so far (``wchar`` of ``/proc/self/io``),
    or None where the system does not say."""
    try:
        with open("/proc/self/io", encoding="ascii") as io:
            for line in io:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass(frozen=True, slots=True)
class GrowthSegment:
    """The LMDB run's cost over a stretch of its blocks (medians over the runs)."""

    name: str
    # Transactions committed before the stretch's first block.
    committed_before: int
    blocks: int
    execute_cpu_us_per_tx: float
    commit_cpu_us_per_tx: float
    # Bytes written per commit (the pages LMDB copied and wrote), where the system says.
    written_kib_per_block: float | None
    # State keys and Merkle tree records the blocks wrote, per transaction.
    state_writes_per_tx: float
    tree_records_per_tx: float

    def as_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "segment": self.name,
            "committed_before": self.committed_before,
            "blocks": self.blocks,
            "execute_cpu_us_per_tx": round(self.execute_cpu_us_per_tx, 2),
            "commit_cpu_us_per_tx": round(self.commit_cpu_us_per_tx, 2),
            "written_kib_per_block": None
            if self.written_kib_per_block is None
            else round(self.written_kib_per_block, 1),
            "state_writes_per_tx": round(self.state_writes_per_tx, 2),
            "tree_records_per_tx": round(self.tree_records_per_tx, 2),
        }


def growth_segments(
    runs: Sequence[Sequence[BlockSample]],
    commit_blocks: int = 1,
) -> tuple[GrowthSegment, ...]:
    """The first and the last fifth of the LMDB run's blocks, from each run's per-block
    samples (``_Timer.blocks``); medians over the runs. A stretch is whole write transactions
    of ``commit_blocks`` blocks (their commit is counted at the last block), at least one."""
    count = min(len(blocks) for blocks in runs)
    if count == 0:
        return ()
    width = max(commit_blocks, count // 5 // commit_blocks * commit_blocks)
    # The last stretch runs to the end from the first batch that leaves it ``width`` blocks
    # at least (the final batch may be short).
    last = max(0, (count - width) // commit_blocks * commit_blocks)
    segments: list[GrowthSegment] = []
    for name, start, size in (("first", 0, width), ("last", last, count - last)):
        executes: list[float] = []
        commits: list[float] = []
        written: list[float] = []
        state_writes: list[float] = []
        tree_records: list[float] = []
        for blocks in runs:
            stretch = blocks[start : start + size]
            transactions = sum(block[0] for block in stretch) or 1
            executes.append(sum(block[1] for block in stretch) * 1e6 / transactions)
            commits.append(sum(block[2] for block in stretch) * 1e6 / transactions)
            state_writes.append(sum(block[4] for block in stretch) / transactions)
            tree_records.append(sum(block[5] for block in stretch) / transactions)
            sizes = [block[3] for block in stretch]
            if all(written_bytes is not None for written_bytes in sizes):
                written.append(sum(written_bytes or 0 for written_bytes in sizes) / 1024 / size)
        segments.append(
            GrowthSegment(
                name=name,
                committed_before=sum(block[0] for block in runs[0][:start]),
                blocks=size,
                execute_cpu_us_per_tx=statistics.median(executes),
                commit_cpu_us_per_tx=statistics.median(commits),
                written_kib_per_block=statistics.median(written)
                if len(written) == len(runs)
                else None,
                state_writes_per_tx=statistics.median(state_writes),
                tree_records_per_tx=statistics.median(tree_records),
            )
        )
    return tuple(segments)


def _run_lmdb(
    workload: Workload,
    timer: _Timer,
    known: dict[bytes, Transaction],
    commit_blocks: int = 1,
) -> str:
    """Execute and commit every block over LMDB, ``commit_blocks`` blocks per write
    transaction (the node writes one at the tip, several when blocks queue up)."""
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="suanpan-bench-") as directory:
        store = Store(Path(directory), chain_id=workload.chain_id, genesis_hash=_GENESIS_HASH)
        try:
            genesis_host = AppHost(_apps(), store.state_backend(), chain_id=workload.chain_id)
            genesis: tuple[WriteSet, bytes] = genesis_host.init_genesis(workload.app_genesis)
            store.init_genesis(*genesis)
            # The node's view of the state: the store's, with its read caches.
            backend = UnwrittenStateBackend(store.state_backend())
            host = AppHost(
                _apps(), backend, chain_id=workload.chain_id, height=0, app_hash=store.app_hash
            )
            pending: list[tuple[Block, CommitCertificate, BlockResult]] = []
            parent_hash = store.last_block_hash
            app_hash = store.app_hash
            for height, transactions in enumerate(workload.blocks, start=1):
                context = _context(workload, height)
                block = Block.build(
                    chain_id=workload.chain_id,
                    height=height,
                    view=0,
                    parent_hash=parent_hash,
                    app_hash=app_hash,
                    next_validators_hash=_VALIDATORS.hash(),
                    proposer=0,
                    timestamp_ms=context.time_ms,
                    transactions=transactions,
                )
                certificate = _certify(block, workload.chain_id)
                execute_start = timer.cpu_seconds["execute_lmdb"]
                with timer.section("execute_lmdb"):
                    result = host.execute_block(context, block.transactions, known=known)
                commit_start = timer.cpu_seconds["commit"]
                with timer.section("commit"):
                    backend.add(height, result.writes, result.tree, result.write_map)
                pending.append((block, certificate, result))
                parent_hash = block.hash
                app_hash = result.app_hash
                written: int | None = 0  # a block whose transaction a later block closes
                if len(pending) == commit_blocks or height == len(workload.blocks):
                    written_before = _bytes_written()
                    with timer.section("commit"):
                        store.commit_blocks(pending)
                    written_after = _bytes_written()
                    written = (
                        None
                        if written_before is None or written_after is None
                        else written_after - written_before
                    )
                    backend.written(height)
                    pending = []
                timer.blocks.append(
                    (
                        len(transactions),
                        timer.cpu_seconds["execute_lmdb"] - execute_start,
                        timer.cpu_seconds["commit"] - commit_start,
                        written,
                        len(result.writes),
                        len(result.tree.records),
                    )
                )
                host.committed(height, result.app_hash, result.writes)
                _fingerprint_update(digest, result)
            if workload.blocks:  # the last height always closes its write transaction
                # The layout with the held tree records and index entries written (outside
                # the timed commits): where the last block's records land once written.
                store.write_held_tree()
                timer.last_block_pages = _last_block_pages(store, block, result)
        finally:
            store.close()
    return digest.hexdigest()


def estimated_leaf_pages(keys: Sequence[bytes], written: Iterable[bytes], leaf_pages: int) -> int:
    """How many of the ``leaf_pages`` holding the sorted ``keys`` the ``written`` keys fall
    in, taking the pages as equal runs of keys (LMDB does not say which page holds a key)."""
    if not keys or not leaf_pages:
        return 0
    per_page = len(keys) / leaf_pages
    return len({int(bisect.bisect_left(keys, key) / per_page) for key in written})


def _last_block_pages(
    store: Store, block: Block, result: BlockResult
) -> dict[str, tuple[int, int]]:
    """The records the last block wrote and the leaf pages they fall in, by database: the
    state, its Merkle tree and the transaction index (the store writes a block's tree records
    and index entries with those of the blocks around it, every few blocks), where each record
    lands at a place of its own (blocks and receipts are appended in key order)."""
    written = {
        "state": [key for key, _ in result.writes],
        "tree": [key for key, _ in result.tree.records],
        "transactions": [hash_bytes(transaction) for transaction in block.transactions],
    }
    pages: dict[str, tuple[int, int]] = {}
    for database, keys in written.items():
        stored, leaf_pages = store.key_layout(database)
        pages[database] = (len(keys), estimated_leaf_pages(stored, keys, leaf_pages))
    return pages


def _run_mempool(workload: Workload, timer: _Timer, known: dict[bytes, Transaction]) -> None:
    """Admission, proposal and cleanup with a backlog: the next block's transactions are
    pending while a block commits, so ``update`` rechecks them as it would on a busy node."""
    host, backend = _memory_host(workload)
    mempool = Mempool(host, MempoolLimits(transactions_max=200_000, per_sender_max=100_000))

    def add(block: Sequence[bytes]) -> None:
        for raw in block:
            mempool.add(known[hash_bytes(raw)])

    blocks = workload.blocks
    with timer.section("mempool_add"):
        add(blocks[0])
    for height, block in enumerate(blocks, start=1):
        if height < len(blocks):
            with timer.section("mempool_add"):
                add(blocks[height])
        with timer.section("mempool_reap"):
            reaped = mempool.reap(transactions_max=len(block), bytes_max=1 << 30)
        assert reaped == list(block), "the mempool proposes transactions in arrival order"
        result = host.execute_block(_context(workload, height), block, known=mempool.known())
        backend.apply(result.writes, result.tree)
        host.committed(height, result.app_hash, result.writes)
        with timer.section("mempool_update"):
            update = mempool.update(
                [hash_bytes(raw) for raw in block], [written for written, _ in result.writes]
            )
        assert update.committed == len(block), "the block's transactions leave the mempool"
        assert not update.evicted, "nothing is evicted"
    assert len(mempool) == 0, "every block committed leaves the mempool empty"


@dataclass(frozen=True, slots=True)
class MixResult:
    """Median microseconds per transaction of each phase (wall clock, and CPU time of this
    process: on a busy machine the CPU figure is the steadier one), and what they add up to."""

    mix: str
    transactions: int
    block_size: int
    runs: int
    commit_blocks: int
    microseconds_per_tx: dict[str, float]
    cpu_microseconds_per_tx: dict[str, float]
    commit_ms_per_block: float
    node_path_microseconds_per_tx: float
    node_path_cpu_microseconds_per_tx: float
    fingerprint: str
    accepted: int
    ledger_growth: tuple[GrowthSegment, ...]
    # The LMDB run's last block (first run): records written and the estimated leaf pages
    # they fall in, by database.
    last_block_pages: dict[str, tuple[int, int]]

    def as_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "mix": self.mix,
            "transactions": self.transactions,
            "block_size": self.block_size,
            "runs": self.runs,
            "commit_blocks": self.commit_blocks,
            "us_per_tx": {key: round(value, 2) for key, value in self.microseconds_per_tx.items()},
            "cpu_us_per_tx": {
                key: round(value, 2) for key, value in self.cpu_microseconds_per_tx.items()
            },
            "tx_per_s": {
                key: round(1e6 / value) if value else None
                for key, value in self.microseconds_per_tx.items()
            },
            "commit_ms_per_block": round(self.commit_ms_per_block, 2),
            "node_path_us_per_tx": round(self.node_path_microseconds_per_tx, 2),
            "node_path_tx_per_s_one_core": round(1e6 / self.node_path_microseconds_per_tx),
            "node_path_cpu_us_per_tx": round(self.node_path_cpu_microseconds_per_tx, 2),
            "node_path_cpu_tx_per_s_one_core": round(1e6 / self.node_path_cpu_microseconds_per_tx),
            "fingerprint": self.fingerprint,
            "accepted": self.accepted,
            "ledger_growth": [segment.as_json() for segment in self.ledger_growth],
            "last_block_pages": {
                database: {"records": records, "leaf_pages_estimated": pages}
                for database, (records, pages) in self.last_block_pages.items()
            },
        }


def _accepted(workload: Workload, known: dict[bytes, Transaction]) -> int:
    host, backend = _memory_host(workload)
    accepted = 0
    for height, block in enumerate(workload.blocks, start=1):
        result = host.execute_block(_context(workload, height), block, known=known)
        backend.apply(result.writes, result.tree)
        host.committed(height, result.app_hash, result.writes)
        accepted += sum(1 for receipt in result.receipts if receipt.ok)
    return accepted


def run_benchmark(workload: Workload, runs: int, commit_blocks: int = 1) -> MixResult:
    """Time every phase ``runs`` times from genesis; medians per transaction. The LMDB run
    commits ``commit_blocks`` blocks per write transaction."""
    known = _decoded(workload)
    samples: dict[str, list[float]] = {phase: [] for phase in PHASES}
    cpu_samples: dict[str, list[float]] = {phase: [] for phase in PHASES}
    fingerprints: set[str] = set()
    block_samples: list[list[BlockSample]] = []
    last_block_pages: dict[str, tuple[int, int]] = {}
    for _ in range(runs):
        timer = _Timer()
        gc.collect()
        _run_decode(workload, timer)
        fingerprints.add(_run_memory(workload, timer, known))
        fingerprints.add(_run_lmdb(workload, timer, known, commit_blocks))
        _run_mempool(workload, timer, known)
        block_samples.append(timer.blocks)
        last_block_pages = last_block_pages or timer.last_block_pages
        for phase in PHASES:
            samples[phase].append(timer.seconds[phase])
            cpu_samples[phase].append(timer.cpu_seconds[phase])
    assert len(fingerprints) == 1, "memory and LMDB backends disagree, or runs differ"
    count = workload.transactions
    per_tx = {phase: statistics.median(values) * 1e6 / count for phase, values in samples.items()}
    cpu_per_tx = {
        phase: statistics.median(values) * 1e6 / count for phase, values in cpu_samples.items()
    }
    return MixResult(
        mix=workload.mix,
        transactions=count,
        block_size=len(workload.blocks[0]),
        runs=runs,
        commit_blocks=commit_blocks,
        microseconds_per_tx=per_tx,
        cpu_microseconds_per_tx=cpu_per_tx,
        commit_ms_per_block=statistics.median(samples["commit"]) * 1e3 / len(workload.blocks),
        node_path_microseconds_per_tx=sum(per_tx[phase] for phase in NODE_PATH_PHASES),
        node_path_cpu_microseconds_per_tx=sum(cpu_per_tx[phase] for phase in NODE_PATH_PHASES),
        fingerprint=fingerprints.pop(),
        accepted=_accepted(workload, known),
        ledger_growth=growth_segments(block_samples, commit_blocks),
        last_block_pages=last_block_pages,
    )


def _profile(workload: Workload, phase: str, top: int) -> None:
    known = _decoded(workload)
    timer = _Timer()
    runner: Callable[[], object] = {
        "decode_signed": lambda: _run_decode(workload, timer),
        "decode_unsigned": lambda: _run_decode(workload, timer),
        "execute_memory": lambda: _run_memory(workload, timer, known),
        "execute_lmdb": lambda: _run_lmdb(workload, timer, known),
        "commit": lambda: _run_lmdb(workload, timer, known),
        "mempool_add": lambda: _run_mempool(workload, timer, known),
        "mempool_reap": lambda: _run_mempool(workload, timer, known),
        "mempool_update": lambda: _run_mempool(workload, timer, known),
    }[phase]
    profiler = cProfile.Profile()
    profiler.runcall(runner)
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)


def _print(result: MixResult) -> None:
    click.echo(
        f"\nmix={result.mix} transactions={result.transactions} block_size={result.block_size} "
        f"runs={result.runs} commit_blocks={result.commit_blocks} "
        f"accepted={result.accepted}/{result.transactions}"
    )
    click.echo(
        f"  {'phase':<16}{'wall us/tx':>12}{'wall tx/s':>12}{'cpu us/tx':>12}{'cpu tx/s':>12}"
    )
    for phase in PHASES:
        wall = result.microseconds_per_tx[phase]
        cpu = result.cpu_microseconds_per_tx[phase]
        wall_rate = f"{1e6 / wall:,.0f}" if wall else "-"
        cpu_rate = f"{1e6 / cpu:,.0f}" if cpu else "-"
        click.echo(f"  {phase:<16}{wall:>12.1f}{wall_rate:>12}{cpu:>12.1f}{cpu_rate:>12}")
    click.echo(
        f"  commit per block: {result.commit_ms_per_block:.1f} ms (wall, fsync included, "
        f"{result.commit_blocks} block(s) per write transaction)"
    )
    for segment in result.ledger_growth:
        written = (
            "-"
            if segment.written_kib_per_block is None
            else f"{segment.written_kib_per_block:,.0f} KiB written per block"
        )
        click.echo(
            f"  {segment.name} {segment.blocks} blocks (after {segment.committed_before:,} "
            f"transactions): execute {segment.execute_cpu_us_per_tx:.1f}, commit "
            f"{segment.commit_cpu_us_per_tx:.1f} cpu us/tx; {written}; "
            f"{segment.state_writes_per_tx:.1f} state keys and "
            f"{segment.tree_records_per_tx:.1f} tree records written per transaction"
        )
    if result.last_block_pages:
        click.echo(
            "  last block: "
            + ", ".join(
                f"{database} {records:,} records on about {pages:,} leaf pages"
                for database, (records, pages) in result.last_block_pages.items()
            )
        )
    node = result.node_path_microseconds_per_tx
    node_cpu = result.node_path_cpu_microseconds_per_tx
    click.echo(
        f"  node path ({' + '.join(NODE_PATH_PHASES)}):\n"
        f"    wall {node:.1f} us/tx = {1e6 / node:,.0f} tx/s; "
        f"cpu {node_cpu:.1f} us/tx = {1e6 / node_cpu:,.0f} tx/s on one core"
    )
    click.echo(f"  fingerprint: {result.fingerprint}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--transactions", default=5000, show_default=True, help="Transactions per mix.")
@click.option("--block-size", default=500, show_default=True, help="Transactions per block.")
@click.option("--runs", default=5, show_default=True, help="Runs per mix (medians are printed).")
@click.option(
    "--mix",
    type=click.Choice(["demo", "payments", "accounts", "both"]),
    default="both",
    show_default=True,
)
@click.option("--seed", default=0, show_default=True, help="Demo consortium seed.")
@click.option(
    "--commit-blocks",
    default=1,
    show_default=True,
    help="Blocks per LMDB write transaction in the LMDB run (the node writes one at the tip).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--profile",
    type=click.Choice(PHASES),
    default=None,
    help="Instead of timing, run PHASE's section once under cProfile and print the top.",
)
@click.option("--top", default=30, show_default=True, help="Profile lines to print.")
def main(
    transactions: int,
    block_size: int,
    runs: int,
    mix: str,
    seed: int,
    commit_blocks: int,
    as_json: bool,
    profile: str | None,
    top: int,
) -> None:
    """Time the per-transaction execution path phase by phase (see the module docstring)."""
    if transactions < 1 or block_size < 1 or runs < 1 or commit_blocks < 1:
        raise click.BadParameter(
            "transactions, block size, runs and commit blocks must be positive"
        )
    mixes = ("demo", "payments") if mix == "both" else (mix,)
    results: list[MixResult] = []
    for name in mixes:
        workload = prepare_workload(name, transactions, block_size, seed)
        if profile is not None:
            click.echo(f"profile of {profile} on mix {name}:")
            _profile(workload, profile, top)
            continue
        result = run_benchmark(workload, runs, commit_blocks)
        results.append(result)
        if not as_json:
            _print(result)
    if not as_json and profile is None:
        click.echo(
            f"native modules: {native_status()}; Merkle tree update: {tree_status()};"
            f" encoder: {encoder_status()}; decoder: {decoder_status()}"
        )
    if profile is None and as_json:
        click.echo(
            json.dumps(
                {
                    "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                    "native_modules": native_status(),
                    "merkle_tree": tree_status(),
                    "codec_encoder": encoder_status(),
                    "codec_decoder": decoder_status(),
                    "mixes": [result.as_json() for result in results],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
