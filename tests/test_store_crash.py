"""Crash safety with real processes: a child commits blocks in a loop and is SIGKILLed.

Each round forks a child process that opens the node's store (recovering from the last
kill), then commits blocks of real membership transactions as fast as it can, reporting each
committed height on a pipe. The parent waits for a random number of reports and kills the
child with SIGKILL, so the kill lands at an arbitrary point: inside an LMDB write
transaction, during a map resize, between commits, while opening. After every kill the parent
reopens the store and checks that

* the height never went backwards and includes every height the child reported committed;
* every block links to its parent, carries the previous app hash, has a valid commit
  certificate, its transactions and receipts are indexed, and nothing exists past the height
  (``verify_chain``);
* replaying the stored blocks on the in-memory host reproduces every stored app hash and
  exactly the stored state: no partial block ever reached the state;
* the stored Merkle tree is exactly the replayed state's. The child writes the tree every
  ``TREE_FLUSH_BLOCKS_CHILD`` blocks, so kills land while its records are held, while they are
  written, and while an opening store writes the ones a kill lost. Half the children write
  the tree as the node's block writer does, in a transaction of its own after the block's.

The children are forked from the test process (no interpreter start-up per kill), which keeps
50 kills within a few seconds; they are real processes killed by the kernel.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import traceback
from pathlib import Path

import pytest

from apps.base import BlockContext
from apps.transaction import sign_transaction
from consensus.crypto import PrivateKey
from node.store import verify_chain
from tests.host_fixtures import CHAIN, Chain, key
from tests.store_fixtures import VALIDATORS, NodeChain

BANK = key("bank_a")
# A deadline for a child's next report; only reached if the child hangs (a real failure).
REPORT_DEADLINE_SECONDS = 120.0
# Small, so the map grows (and gets killed while growing) during the test.
CHILD_MAP_SIZE_BYTES = 128 * 1024
# Few, so a child's short life both writes the tree and dies holding records.
TREE_FLUSH_BLOCKS_CHILD = 3


def _customer(nonce: int) -> PrivateKey:
    return PrivateKey(hashlib.sha256(b"customer" + nonce.to_bytes(8, "big")).digest())


def _child(path: Path, report_fd: int, sync: bool, defer_tree: bool) -> None:
    """Commit blocks forever, writing each committed height to ``report_fd``; with
    ``defer_tree`` as the node's block writer does (the tree in a transaction of its own)."""
    chain = NodeChain(
        path,
        map_size_bytes=CHILD_MAP_SIZE_BYTES,
        sync=sync,
        tree_flush_blocks=TREE_FLUSH_BLOCKS_CHILD,
    )
    while True:
        nonce = chain.host.next_nonce(BANK.public_key)
        transactions = []
        for offset in range(3):
            # Two registrations that succeed, then one that fails (the key already exists).
            customer = _customer(nonce + min(offset, 1))
            transactions.append(
                sign_transaction(
                    BANK,
                    chain_id=CHAIN,
                    app="membership",
                    operation="register_identity",
                    arguments={
                        "public_key": customer.public_key,
                        "institution": "bank_a",
                        "roles": ["customer"],
                    },
                    nonce=nonce + offset,
                ).encoded
            )
        if defer_tree:
            block, certificate, result = chain.execute(transactions)
            chain.store.commit_blocks([(block, certificate, result)], defer_tree=True)
            chain.host.committed(block.height, result.app_hash)
            if chain.store.tree_write_due():
                chain.store.write_held_tree()
        else:
            chain.commit(transactions)
        os.write(report_fd, f"{chain.store.height}\n".encode())


def _spawn(path: Path, sync: bool, defer_tree: bool) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        os.close(read_fd)
        try:
            _child(path, write_fd, sync, defer_tree)
        except BaseException:
            os.write(write_fd, b"error " + traceback.format_exc().encode() + b"\n")
        finally:
            os._exit(1)
    os.close(write_fd)
    return pid, read_fd


def _read_reports(read_fd: int, wanted: int, buffer: bytearray) -> list[int]:
    """Block until ``wanted`` height reports arrived (or the child failed)."""
    heights: list[int] = []
    while len(heights) < wanted:
        ready, _, _ = select.select([read_fd], [], [], REPORT_DEADLINE_SECONDS)
        assert ready, "the child stopped reporting commits"
        chunk = os.read(read_fd, 65536)
        assert chunk, "the child exited on its own"
        buffer.extend(chunk)
        *lines, rest = bytes(buffer).split(b"\n")
        buffer[:] = rest
        for line in lines:
            assert not line.startswith(b"error"), line.decode()
            heights.append(int(line))
    return heights


def _drain(read_fd: int, buffer: bytearray) -> list[int]:
    """Reports the child wrote before it died (the pipe is at EOF)."""
    while chunk := os.read(read_fd, 65536):
        buffer.extend(chunk)
    lines = bytes(buffer).split(b"\n")
    for line in lines:
        assert not line.startswith(b"error"), line.decode()
    return [int(line) for line in lines[:-1]]


def run_kills(path: Path, kills: int, seed: int) -> int:
    """Kill ``kills`` children at random moments, checking the store after each; return the
    final height."""
    rng = random.Random(seed)
    replay = Chain.start()
    committed_height = 0  # highest height the store showed or a child reported
    replayed_height = 0
    for round_number in range(kills):
        pid, read_fd = _spawn(path, sync=round_number % 2 == 0, defer_tree=round_number % 4 >= 2)
        buffer = bytearray()
        try:
            reported = _read_reports(read_fd, rng.randint(0, 3), buffer)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        reported += _drain(read_fd, buffer)
        os.close(read_fd)

        chain = NodeChain(path, map_size_bytes=CHILD_MAP_SIZE_BYTES)
        try:
            height = chain.store.height
            assert height >= committed_height, f"height went back from {committed_height}"
            assert height >= max(reported, default=0), "a reported commit was lost"
            committed_height = height
            verify_chain(chain.store, VALIDATORS, from_height=replayed_height + 1)
            for next_height in range(replayed_height + 1, height + 1):
                block = chain.store.block(next_height)
                assert block is not None
                context = BlockContext(
                    height=next_height,
                    time_ms=block.header.timestamp_ms,
                    proposer=VALIDATORS.public_key(block.header.proposer),
                    chain_id=CHAIN,
                )
                result = replay.host.execute_block(context, block.transactions)
                assert result.app_hash == chain.store.app_hash_at(next_height)
                replay.backend.apply(result.writes, result.tree)
                replay.host.committed(next_height, result.app_hash)
            replayed_height = height
            assert list(chain.store.state_scan()) == replay.backend.items()
            with chain.store._env.begin(db=chain.store._db["tree"]) as txn:
                stored_tree = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
            assert stored_tree == list(replay.backend.tree_records())
        finally:
            chain.close()
    return committed_height


def test_sigkill_at_random_moments_never_leaves_a_partial_block(tmp_path: Path) -> None:
    height = run_kills(tmp_path / "node", kills=50, seed=1)
    assert height > 0, "no block was ever committed"


@pytest.mark.slow
def test_sigkill_soak_thousand_kills(tmp_path: Path) -> None:
    height = run_kills(tmp_path / "node", kills=1000, seed=2)
    assert height > 100
