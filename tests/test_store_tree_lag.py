"""The tree database written every few blocks (``node.store``): the records of the blocks since
are held in memory and read on top of it, the state's undo record of each of those blocks is
kept, and a restart applies those blocks' writes to the stored tree. Every reader sees the tree
of its own height; a restart leaves the store as one that wrote the tree at every block."""

from __future__ import annotations

import logging
import random
import tempfile
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from apps import merkle
from consensus.codec import Value, encode
from consensus.crypto import hash_bytes
from node.store import (
    Store,
    StoreError,
    TransactionLocation,
    height_key,
    undo_chunk_key,
    undo_record,
)
from tests.host_fixtures import CHAIN
from tests.store_fixtures import GENESIS_HASH, NodeChain, stored_block
from tests.test_store import Signer, _all_state, _certified, node
from tests.test_store_unwritten import PipelinedChain, blocks_of_writes, dump


def chain_at(path: Path, flush_blocks: int, records_max: int = 1 << 20) -> NodeChain:
    return node(
        path, sync=False, tree_flush_blocks=flush_blocks, tree_pending_records_max=records_max
    )


def tree_height(store: Store) -> int | None:
    raw = store._get("meta", b"tree_height")
    return None if raw is None else int.from_bytes(raw, "big")


def undo_heights(store: Store) -> list[int]:
    with store._env.begin(db=store._db["state_undo"]) as txn:
        return sorted({int.from_bytes(key[:8], "big") for key, _ in txn.cursor()})


def block_of(signer: Signer, number: int) -> list[bytes]:
    return [
        signer.write((b"k%d" % (number % 5), b"v%d" % number), (b"n%d" % number, b"x")),
        signer.write(deletes=(b"n%d" % (number - 2),)) if number >= 2 else signer.write(),
    ]


def check_reads(store: Store) -> None:
    """The committed tree (held records over the database) has the committed app hash, and
    the certified view's tree the previous height's, every proof verifying."""
    assert merkle.root_hash(store) == store.app_hash
    assert merkle.root_hash(store.state_backend()) == store.app_hash
    keys = set(_all_state(store)) | {b"kv\x00never-written"}
    height, root, _ = _certified(store, keys)
    assert height == store.height - 1
    assert root == store.app_hash_at(height)


def test_the_tree_is_written_every_few_blocks_and_read_with_the_held_records(
    tmp_path: Path,
) -> None:
    chain = chain_at(tmp_path, flush_blocks=3)
    signer = Signer()
    seen: list[tuple[int | None, list[int]]] = []
    held: list[int] = []
    for number in range(1, 8):
        result = chain.commit(block_of(signer, number))
        check_reads(chain.store)
        seen.append((tree_height(chain.store), undo_heights(chain.store)))
        blocks, records = chain.store.tree_held()
        held.append(blocks)
        if blocks == 1:
            assert records == len(result.tree.records)
    # Written at 3 and 6; in between, the undo records from the written height on are kept.
    assert seen == [
        (0, [1]),
        (0, [1, 2]),
        (None, [3]),
        (3, [3, 4]),
        (3, [3, 4, 5]),
        (None, [6]),
        (6, [6, 7]),
    ]
    assert held == [1, 2, 0, 1, 2, 0, 1]
    chain.close()


def test_too_many_held_records_write_the_tree_before_the_block_count(tmp_path: Path) -> None:
    held = chain_at(tmp_path, flush_blocks=100, records_max=20)
    signer = Signer()
    written = 0  # the height of the tree in the database
    records = 0  # held records
    for number in range(1, 13):
        result = held.commit(block_of(signer, number))
        records += len(result.tree.records)
        if records > 20:
            written, records = number, 0
        assert tree_height(held.store) == (None if written == number else written)
        check_reads(held.store)
    assert written > 1  # written several times, long before 100 blocks
    held.close()


def lagging_and_every(path: Path, flush_blocks: int) -> tuple[NodeChain, NodeChain]:
    """A chain that writes the tree every ``flush_blocks`` blocks, and one that writes it at
    every block, to commit the same blocks."""
    return chain_at(path / "lagging", flush_blocks), chain_at(path / "every", flush_blocks=1)


def reopen_recovered(
    path: Path, flush_blocks: int, caplog: pytest.LogCaptureFixture
) -> tuple[NodeChain, logging.LogRecord]:
    """The lagging chain of ``path`` opened again, and the store's ``store_tree_recovered``."""
    with caplog.at_level(logging.INFO, logger="suanpan.store"):
        reopened = chain_at(path / "lagging", flush_blocks)
    (recovered,) = [record for record in caplog.records if record.msg == "store_tree_recovered"]
    return reopened, recovered


def test_a_restart_applies_the_held_blocks_writes_to_the_stored_tree(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lagging, every = lagging_and_every(tmp_path, flush_blocks=5)
    signers = Signer(), Signer()
    for number in range(1, 8):
        for chain, signer in zip((lagging, every), signers, strict=True):
            chain.commit(block_of(signer, number))
    assert tree_height(lagging.store) == 5
    assert tree_height(every.store) is None
    assert dump(lagging.store)["tree"] != dump(every.store)["tree"]
    lagging.close()  # the held records are gone with the process
    reopened, _ = reopen_recovered(tmp_path, 5, caplog)
    assert dump(reopened.store) == dump(every.store)
    check_reads(reopened.store)
    # It goes on as before: held again from the next block.
    for chain, signer in zip((reopened, every), signers, strict=True):
        chain.commit(block_of(signer, 8))
    assert tree_height(reopened.store) == 7
    check_reads(reopened.store)
    reopened.close()
    every.close()


def test_the_transaction_index_is_held_with_the_tree_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lagging, every = lagging_and_every(tmp_path, flush_blocks=3)
    signers = Signer(), Signer()
    first = [signer.write((b"a", b"1")) for signer in signers]
    # Block 1 (indexed when block 3 writes the tree), then 4 and 5 held, each repeating a
    # transaction first included earlier: the index keeps the first inclusion.
    for number in range(1, 6):
        for chain, signer, tx in zip((lagging, every), signers, first, strict=True):
            transactions = [tx] if number == 1 else block_of(signer, number)
            if number == 4:
                transactions.append(tx)
            if number == 5:
                transactions.append(stored_block(chain.store, 4).transactions[0])
            chain.commit(transactions)
    assert tree_height(lagging.store) == 3
    held = stored_block(lagging.store, 4).transaction_hashes()[0]
    repeated = stored_block(lagging.store, 1).transaction_hashes()[0]
    assert lagging.store._get("transactions", held) is None
    assert lagging.store._get("transactions", repeated) is not None
    never = hash_bytes(b"never included")
    for chain in (lagging, every):
        store = chain.store
        assert store.committed_among([repeated, held, never]) == {repeated, held}
        assert store.transaction_location(repeated) == TransactionLocation(1, 0)
        assert store.transaction_location(held) == TransactionLocation(4, 0)
        assert store.transaction_location(never) is None
        receipt = store.receipt_of(held)
        assert receipt is not None
        assert receipt == store.receipt(4, 0)
    # Written with the tree records at block 6, after the entries the index has.
    for chain, signer in zip((lagging, every), signers, strict=True):
        chain.commit(block_of(signer, 6))
    assert tree_height(lagging.store) is None
    assert dump(lagging.store) == dump(every.store)
    # Lost with the process while held: the store indexes them again when it opens.
    for chain, signer in zip((lagging, every), signers, strict=True):
        chain.commit([*block_of(signer, 7), stored_block(chain.store, 6).transactions[0]])
    assert (
        lagging.store._get("transactions", stored_block(lagging.store, 7).transaction_hashes()[0])
        is None
    )
    lagging.close()
    reopened, recovered = reopen_recovered(tmp_path, 3, caplog)
    assert recovered.__dict__["transactions_indexed"] == 2  # block 7's repeat is indexed at 6
    assert dump(reopened.store) == dump(every.store)
    reopened.close()
    every.close()


def _lagging_home(path: Path) -> list[dict[bytes, bytes | None]]:
    """A store whose tree is at height 4 of 6, and the undo records of blocks 5 and 6."""
    chain = chain_at(path, flush_blocks=4)
    signer = Signer()
    for number in range(1, 7):
        chain.commit(block_of(signer, number))
    assert tree_height(chain.store) == 4
    records = []
    with chain.store._env.begin(db=chain.store._db["state_undo"]) as txn:
        for height in (5, 6):
            chunk = txn.get(undo_chunk_key(height_key(height), 0))
            assert chunk is not None
            records.append(undo_record([bytes(chunk)]))
    chain.close()
    return records


def _put_undo(path: Path, height: int, record: dict[bytes, bytes | None] | None) -> None:
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        db = env.open_db(b"state_undo", txn=txn)
        key = undo_chunk_key(height_key(height), 0)
        if record is None:
            txn.delete(key, db=db)
        else:
            flat: list[Value] = []
            for name, value in record.items():
                flat.extend((name, value))
            txn.put(key, encode(flat), db=db)
    env.close()


def test_a_held_blocks_undo_record_that_misses_a_key_is_refused_at_restart(
    tmp_path: Path,
) -> None:
    records = _lagging_home(tmp_path)
    fifth = records[0]
    written = next(key for key in fifth if key.startswith(b"kv\x00"))
    _put_undo(tmp_path, 5, {key: value for key, value in fifth.items() if key != written})
    with pytest.raises(StoreError, match="not the committed app hash"):
        Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    _put_undo(tmp_path, 5, None)
    with pytest.raises(StoreError, match="no state_undo record for height 5"):
        Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    _put_undo(tmp_path, 5, fifth)  # put back: it opens, and writes the tree
    store = Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    assert tree_height(store) is None
    assert merkle.root_hash(store) == store.app_hash
    store.close()


def test_a_recorded_tree_height_not_below_the_committed_one_is_refused(tmp_path: Path) -> None:
    _lagging_home(tmp_path)
    env = lmdb.open(str(tmp_path), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(b"tree_height", height_key(6), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(StoreError, match="tree is recorded at height 6, not below"):
        Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)


def test_a_reader_keeps_its_heights_tree_while_blocks_commit(tmp_path: Path) -> None:
    chain = chain_at(tmp_path, flush_blocks=3)
    signer = Signer()
    for number in range(1, 6):
        chain.commit(block_of(signer, number))
    assert tree_height(chain.store) == 3  # the reader starts over held records
    app_hash = chain.store.app_hash
    keys = sorted(_all_state(chain.store))
    with chain.store.open_state_reader() as reader:
        values = dict(reader.scan())
        for number in range(6, 12):  # written twice meanwhile
            chain.commit(block_of(signer, number))
        assert merkle.root_hash(reader) == app_hash != chain.store.app_hash
        for key in keys:
            merkle.verify(app_hash, key, values.get(key), merkle.prove(reader, key))
    chain.close()


def test_a_read_begun_before_the_held_heights_is_refused(tmp_path: Path) -> None:
    chain = chain_at(tmp_path, flush_blocks=4)
    signer = Signer()
    chain.commit(block_of(signer, 1))
    store = chain.store
    txn = store._env.begin()
    try:
        assert store._layer_at(txn) is not None
        for number in range(2, 20):
            chain.commit(block_of(signer, number))
        with pytest.raises(StoreError, match="tree records of height 1 are no longer held"):
            store._layer_at(txn)
    finally:
        txn.abort()
    chain.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    flush_blocks=st.integers(1, 5),
    records_max=st.integers(0, 40),
    blocks=st.integers(1, 14),
)
def test_any_flush_policy_and_restarts_read_and_leave_the_tree_of_every_block(
    seed: int, flush_blocks: int, records_max: int, blocks: int
) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="suanpan-tree-lag-") as directory:
        root = Path(directory)
        lagging = chain_at(root / "lagging", flush_blocks, records_max)
        every = chain_at(root / "every", flush_blocks=1)
        signers = Signer(), Signer()
        try:
            for number in range(1, blocks + 1):
                variant = 3 * number + rng.randrange(3)  # the same block for both chains
                for chain, signer in zip((lagging, every), signers, strict=True):
                    chain.commit(block_of(signer, variant))
                assert lagging.store.app_hash == every.store.app_hash
                check_reads(lagging.store)
                if rng.random() < 0.25:
                    lagging.close()
                    lagging = chain_at(root / "lagging", flush_blocks, records_max)
                    assert tree_height(lagging.store) is None
                    check_reads(lagging.store)
            lagging.close()
            lagging = chain_at(root / "lagging", flush_blocks, records_max)
            assert dump(lagging.store) == dump(every.store)
        finally:
            lagging.close()
            every.close()


def test_a_deferred_tree_write_leaves_the_store_a_commit_that_wrote_it_would(
    tmp_path: Path,
) -> None:
    # The node's block writer commits blocks without the tree and writes the tree after, in a
    # transaction of its own, once what waited on the blocks has gone on.
    deferred = PipelinedChain(tmp_path / "deferred", tree_flush_blocks=3)
    inline = PipelinedChain(tmp_path / "inline", tree_flush_blocks=3)
    for transactions in blocks_of_writes(5, 10):
        assert deferred.execute(transactions).app_hash == inline.execute(transactions).app_hash
    store = deferred.store
    written_at: list[int] = []
    for height in range(1, 11):
        inline.write(1)
        deferred.write(1, defer_tree=True)
        assert merkle.root_hash(store) == store.app_hash == inline.store.app_hash
        if store.tree_write_due():
            # Never written by the commit, whatever is held: the undo records all kept.
            assert tree_height(store) == (written_at[-1] if written_at else 0)
            assert undo_heights(store)[-1] == height
            assert tree_height(inline.store) is None
            with store.open_state_reader() as before:
                assert store.write_held_tree() > 0
                assert merkle.root_hash(before) == store.app_hash
            assert store.tree_held() == (0, 0)
            assert not store.tree_write_due()
            assert store.write_held_tree() == 0  # nothing held
            written_at.append(height)
        assert merkle.root_hash(store) == store.app_hash
        assert dump(store) == dump(inline.store)
    assert written_at == [3, 6, 9]
    # A crash while records are held: the reopened store recovers them like any lost ones.
    store.close()
    reopened = Store(tmp_path / "deferred", chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    inline.store.close()
    rewritten = Store(tmp_path / "inline", chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    assert dump(reopened) == dump(rewritten)
    reopened.close()
    rewritten.close()


def test_a_tree_write_lost_to_a_crash_is_recovered_at_restart(tmp_path: Path) -> None:
    chain = PipelinedChain(tmp_path, tree_flush_blocks=2)
    for transactions in blocks_of_writes(8, 5):
        chain.execute(transactions)
    for _ in range(5):
        chain.write(1, defer_tree=True)  # due from the second block on, never written
    assert chain.store.tree_write_due()
    assert chain.store.tree_held()[0] == 5
    assert tree_height(chain.store) == 0
    assert undo_heights(chain.store) == [1, 2, 3, 4, 5]
    app_hash = chain.store.app_hash
    chain.store.close()
    reopened = Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    assert tree_height(reopened) is None
    assert undo_heights(reopened) == [5]
    assert merkle.root_hash(reopened) == reopened.app_hash == app_hash
    reopened.close()


def test_a_batch_of_blocks_keeps_each_blocks_undo_record_while_the_tree_waits(
    tmp_path: Path,
) -> None:
    chain = PipelinedChain(tmp_path, tree_flush_blocks=6)
    for transactions in blocks_of_writes(3, 9):
        chain.execute(transactions)
    chain.write(3)  # blocks 1-3: the tree waits
    assert tree_height(chain.store) == 0
    assert undo_heights(chain.store) == [1, 2, 3]
    chain.write(2)  # 4-5
    assert undo_heights(chain.store) == [1, 2, 3, 4, 5]
    assert merkle.root_hash(chain.store) == chain.store.app_hash
    chain.write(2)  # 6-7: six blocks held, so the tree is written; the last record is kept
    assert tree_height(chain.store) is None
    assert undo_heights(chain.store) == [7]
    chain.write(2)  # 8-9 wait again
    assert tree_height(chain.store) == 7
    assert undo_heights(chain.store) == [7, 8, 9]
    chain.store.close()
    reopened = Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    assert tree_height(reopened) is None
    assert undo_heights(reopened) == [9]
    assert merkle.root_hash(reopened) == reopened.app_hash
    reopened.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pick=st.integers(0, 2**32 - 1), offset=st.integers(0, 2**16), blocks=st.integers(2, 7))
def test_a_restart_never_opens_a_store_over_a_changed_tree_record(
    pick: int, offset: int, blocks: int
) -> None:
    """Any byte of any stored tree record changed while the store holds the last blocks'
    records. A restart reads the records on the paths of the held blocks' writes: a change
    there gives another root, and the store is refused (unless the held writes replace or
    remove what changed). A record off those paths is not read (its parent holds its hash, as
    at any other time: the audit compares every record), so it stays as changed. Either way
    every record the restart writes is the one a store that never lagged holds."""
    with tempfile.TemporaryDirectory(prefix="suanpan-tree-lag-") as directory:
        root = Path(directory)
        lagging = chain_at(root / "lagging", flush_blocks=blocks + 1)
        every = chain_at(root / "every", flush_blocks=1)
        signers = Signer(), Signer()
        for number in range(1, blocks + 1):
            for chain, signer in zip((lagging, every), signers, strict=True):
                chain.commit(block_of(signer, number))
        assert tree_height(lagging.store) == 0
        expected = dump(every.store)
        every.close()
        lagging.close()
        env = lmdb.open(str(root / "lagging"), max_dbs=16)
        with env.begin(write=True) as txn:
            tree = env.open_db(b"tree", txn=txn)
            records = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=tree)]
            key, record = records[pick % len(records)]
            position = offset % len(record)
            changed = record[:position] + bytes([record[position] ^ 0x01]) + record[position + 1 :]
            txn.put(key, changed, db=tree)
        env.close()
        refusal = ""
        try:
            store = Store(root / "lagging", chain_id=CHAIN, genesis_hash=GENESIS_HASH)
        except StoreError as error:
            refusal = str(error)
            event("refused")
        else:
            try:
                reopened = dump(store)
            finally:
                store.close()
            changed_off_path = dict(reopened["tree"]).get(key) == changed
            event("opened, the change off the paths read" if changed_off_path else "opened")
            if changed_off_path:
                reopened["tree"] = [
                    (name, record if name == key else value) for name, value in reopened["tree"]
                ]
            assert reopened == expected
        assert refusal == "" or "its tree at height 0" in refusal
