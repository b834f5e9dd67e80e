"""Executing ahead of the store's writes (block sync's pipeline): blocks execute over
``UnwrittenStateBackend`` while earlier ones wait for their write, and ``Store.commit_blocks``
writes several in one transaction. The store must end up exactly as if every block had been
executed and committed one at a time, and a batch holding one bad block must write nothing."""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.base import BlockContext
from apps.host import AppHost, BlockResult
from apps.membership import MembershipApp
from apps.merkle import TreeUpdate
from apps.state import MemoryBackend
from consensus.types import Block, CommitCertificate
from node.store import (
    DATABASES,
    TREE_FLUSH_BLOCKS,
    Store,
    StoreConsistencyError,
)
from node.unwritten import READ_CACHE_ENTRIES_MAX, UnwrittenStateBackend
from tests.host_fixtures import CHAIN, genesis_config
from tests.store_fixtures import GENESIS_HASH, GENESIS_TIME_MS, VALIDATORS, certify, open_store
from tests.test_host import KvApp, VaultApp
from tests.test_store import Signer

Entry = tuple[Block, CommitCertificate, BlockResult]


class PipelinedChain:
    """A store and a host over ``UnwrittenStateBackend``: ``execute`` runs the next block on
    top of the executed (not necessarily written) ones, ``write`` writes the oldest ``count``
    unwritten blocks in one transaction."""

    def __init__(
        self,
        path: Path,
        *,
        tree_flush_blocks: int = TREE_FLUSH_BLOCKS,
        writer_process: bool = False,
        map_size_bytes: int | None = None,
    ) -> None:
        self.store = open_store(
            path,
            sync=False,
            tree_flush_blocks=tree_flush_blocks,
            **({} if map_size_bytes is None else {"map_size_bytes": map_size_bytes}),
        )
        if writer_process:
            # Before genesis: the process reads the genesis tree state again after it.
            self.store.start_writer_process()
        apps = [MembershipApp(), KvApp(), VaultApp()]
        genesis_host = AppHost(apps, self.store.state_backend(), chain_id=CHAIN)
        writes, app_hash = genesis_host.init_genesis({"membership": genesis_config()})
        self.store.init_genesis(writes, app_hash)
        self.state = UnwrittenStateBackend(self.store.state_backend())
        self.host = AppHost(apps, self.state, chain_id=CHAIN, height=0, app_hash=app_hash)
        self.tip_hash = self.store.last_block_hash
        self.unwritten: list[Entry] = []

    def execute(
        self, transactions: list[bytes], *, vouched_app_hash: bytes | None = None
    ) -> BlockResult:
        """Execute the next block; with ``vouched_app_hash`` without updating the tree (a
        tree group's block: ``close_group`` gives the group's last block the records)."""
        height = self.host.height + 1
        time_ms = GENESIS_TIME_MS + 1000 * height
        block = Block.build(
            chain_id=CHAIN,
            height=height,
            view=0,
            parent_hash=self.tip_hash,
            app_hash=self.host.app_hash,
            next_validators_hash=VALIDATORS.hash(),
            proposer=0,
            timestamp_ms=time_ms,
            transactions=transactions,
        )
        context = BlockContext(height, time_ms, VALIDATORS.public_key(0), CHAIN)
        result = self.host.execute_block(
            context, block.transactions, vouched_app_hash=vouched_app_hash
        )
        self.state.add(height, result.writes, result.tree)
        self.host.committed(height, result.app_hash, result.writes)
        self.tip_hash = block.hash
        self.unwritten.append((block, certify(block), result))
        return result

    def close_group(self, size: int) -> None:
        """The last ``size`` executed blocks were executed with a vouched app hash: update the
        tree once for their merged writes and give the last of them the records (as the
        node's ``_close_tree_group`` does)."""
        group = self.unwritten[-size:]
        merged: dict[bytes, bytes | None] = {}
        for _, _, result in group:
            merged.update(result.writes)
        tree = self.host.tree_update(tuple(sorted(merged.items())))
        block, certificate, result = group[-1]
        assert tree.root == result.app_hash
        self.state.complete_tree(block.height, tree)
        self.unwritten[-1] = (block, certificate, replace(result, tree=tree))

    def write(self, count: int, *, defer_tree: bool = False, tree_when_due: bool = False) -> None:
        """Write the oldest ``count`` unwritten blocks (with ``defer_tree``, as the node's
        block writer does: the tree is left for ``Store.write_held_tree``, which
        ``tree_when_due`` then calls when the tree is due, as the node does)."""
        batch, self.unwritten = self.unwritten[:count], self.unwritten[count:]
        self.store.commit_blocks(batch, defer_tree=defer_tree)
        self.state.written(batch[-1][0].height)
        if tree_when_due and self.store.tree_write_due():
            assert self.store.write_held_tree() > 0


def dump(store: Store) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every record of every database (the store's whole content)."""
    env: lmdb.Environment = store._env
    with env.begin() as txn:
        return {
            name: [(bytes(k), bytes(v)) for k, v in txn.cursor(db=store._db[name])]
            for name in DATABASES
        }


def blocks_of_writes(seed: int, count: int) -> list[list[bytes]]:
    """Transactions that overwrite, delete and re-create a small set of keys across blocks (so
    later blocks read what unwritten earlier ones wrote), some failing."""
    rng = random.Random(seed)
    signer = Signer()
    keys = [f"k{i}".encode() for i in range(6)]
    blocks: list[list[bytes]] = []
    for height in range(count):
        transactions: list[bytes] = []
        for _ in range(rng.randrange(0, 4)):
            puts = [(rng.choice(keys), bytes([height, rng.randrange(256)]))]
            deletes = tuple(rng.sample(keys, rng.randrange(0, 3)))
            transactions.append(signer.write(*puts, fail=rng.random() < 0.15, deletes=deletes))
        blocks.append(transactions)
    return blocks


@pytest.mark.parametrize("seed", range(4))
def test_pipelined_writes_leave_the_store_as_one_at_a_time(tmp_path: Path, seed: int) -> None:
    """Same transactions, two nodes: one executes and writes each block before the next, the
    other executes up to five blocks ahead of its writes and writes them in batches of random
    size. Same app hashes, and once reopened (the tree written up to the last height) every
    database (blocks, receipts, state, tree, undo records, metadata) byte for byte the
    same."""
    rng = random.Random(seed)
    blocks = blocks_of_writes(seed, 24)
    serial = PipelinedChain(tmp_path / "serial")
    # The pipelined store writes its tree every 1 to 4 blocks (a batch counts its blocks).
    pipelined = PipelinedChain(tmp_path / "pipelined", tree_flush_blocks=1 + seed % 4)
    for transactions in blocks:
        expected = serial.execute(transactions)
        serial.write(1)
        assert pipelined.execute(transactions).app_hash == expected.app_hash
        while pipelined.unwritten and (len(pipelined.unwritten) > 4 or rng.random() < 0.4):
            pipelined.write(rng.randrange(1, len(pipelined.unwritten) + 1))
    if pipelined.unwritten:
        pipelined.write(len(pipelined.unwritten))
    assert pipelined.store.height == serial.store.height == len(blocks)
    assert_same_stores(serial, tmp_path / "serial", pipelined, tmp_path / "pipelined")


def assert_same_stores(
    first: PipelinedChain, first_path: Path, second: PipelinedChain, second_path: Path
) -> None:
    """The two chains' stores read the same certified view and, closed and reopened, hold
    the same bytes in every database."""
    # The last block's undo record is in both: the certified view reads the same.
    views = [
        chain.store.read_certified(lambda view: (view.height, view.app_hash))
        for chain in (first, second)
    ]
    assert views[0] == views[1] is not None
    # The tree database may lag in either (by other blocks: a batch writes it), with the undo
    # records of the blocks since; reopened, both hold the tree of the last height.
    first.store.close()
    second.store.close()
    stores = [
        Store(path, chain_id=CHAIN, genesis_hash=GENESIS_HASH, sync=False)
        for path in (first_path, second_path)
    ]
    assert dump(stores[0]) == dump(stores[1])
    for store in stores:
        store.close()


@pytest.mark.parametrize("seed", range(3))
def test_tree_groups_leave_the_store_as_one_at_a_time(tmp_path: Path, seed: int) -> None:
    """Blocks executed in groups of one to six without updating the tree (each vouched the
    app hash the one-at-a-time node computed), the tree updated once per group over the
    merged writes and each group written in one batch, sometimes with the group before:
    once reopened, every database byte for byte the one-at-a-time store's."""
    rng = random.Random(seed)
    blocks = blocks_of_writes(100 + seed, 30)
    serial = PipelinedChain(tmp_path / "serial")
    grouped = PipelinedChain(tmp_path / "grouped", tree_flush_blocks=1 + seed * 3)
    index = 0
    while index < len(blocks):
        size = min(rng.randrange(1, 7), len(blocks) - index)
        for transactions in blocks[index : index + size]:
            expected = serial.execute(transactions)
            serial.write(1)
            vouched = grouped.execute(transactions, vouched_app_hash=expected.app_hash)
            assert vouched.tree.records == ()
            assert vouched.receipts == expected.receipts
        grouped.close_group(size)
        index += size
        # A batch never ends inside a group: this one writes whole groups only.
        if len(grouped.unwritten) > 6 or rng.random() < 0.5:
            grouped.write(len(grouped.unwritten), defer_tree=True, tree_when_due=True)
    if grouped.unwritten:
        grouped.write(len(grouped.unwritten), defer_tree=True, tree_when_due=True)
    assert_same_stores(serial, tmp_path / "serial", grouped, tmp_path / "grouped")


def test_a_tree_is_completed_only_for_the_newest_block_and_only_once(tmp_path: Path) -> None:
    chain = PipelinedChain(tmp_path / "store")
    first = chain.execute([])
    vouched = chain.execute([], vouched_app_hash=bytes(32))
    tree = TreeUpdate(bytes(32), (), {})
    with pytest.raises(ValueError, match="block 1 is not the newest unwritten block"):
        chain.state.complete_tree(1, tree)
    with pytest.raises(ValueError, match="block 3 is not the newest unwritten block"):
        chain.state.complete_tree(3, tree)
    assert first.tree.changed
    assert vouched.tree.changed == {}
    changed: dict[bytes, bytes | None] = {b"record": b"value"}
    chain.state.complete_tree(2, TreeUpdate(bytes(32), ((b"record", b"value"),), changed))
    assert chain.state.tree_node(b"record") == b"value"
    with pytest.raises(ValueError, match="block 2 has its tree records already"):
        chain.state.complete_tree(2, tree)


def test_a_batch_with_one_bad_block_writes_nothing(tmp_path: Path) -> None:
    """``commit_blocks`` checks each block against the store as the blocks before it in the
    batch left it: a block that does not link, or whose certificate is another block's, fails
    the whole batch and the store keeps its height and content."""
    chain = PipelinedChain(tmp_path)
    for transactions in blocks_of_writes(7, 6):
        chain.execute(transactions)
    chain.write(2)
    before = dump(chain.store)
    entries = list(chain.unwritten)
    block, _, result = entries[2]
    # A gap: the third block of the batch is left out, so the fourth does not follow.
    with pytest.raises(StoreConsistencyError, match="does not follow"):
        chain.store.commit_blocks([*entries[:2], *entries[3:]])
    # Another block's certificate, in the middle of the batch.
    wrong = (block, entries[1][1], result)
    with pytest.raises(StoreConsistencyError, match="certificate is for another block"):
        chain.store.commit_blocks([*entries[:2], wrong, *entries[3:]])
    assert dump(chain.store) == before
    assert chain.store.height == 2
    chain.store.commit_blocks(entries)
    assert chain.store.height == 6
    chain.store.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        # Few keys, so later blocks overwrite and delete what earlier ones wrote.
        st.dictionaries(
            st.sampled_from([b"a", b"b", b"ba", b"c", b"d", b"\xff"]),
            st.one_of(st.none(), st.binary(max_size=2)),
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(min_value=0, max_value=4),
    st.sampled_from([b"", b"a", b"b", b"bb", b"c"]),
    st.one_of(st.none(), st.sampled_from([b"a", b"b", b"c", b"d"])),
    st.sampled_from([1, 2, READ_CACHE_ENTRIES_MAX]),
)
def test_unwritten_state_reads_as_every_block_applied(
    tmp_path_factory: pytest.TempPathFactory,
    layers: list[dict[bytes, bytes | None]],
    written: int,
    start: bytes,
    end: bytes | None,
    cache_entries_max: int,
) -> None:
    """The committed state (the first write set, in LMDB) with unwritten blocks on top reads
    (get, tree records, scans both ways across the store's scan batches) as the model with
    every block applied, before and after the oldest unwritten blocks are written away. Reads
    inside ``reading`` (as a block's execution reads) fill the read caches first: values a
    written block replaced must not be answered from there. With read caches of one or two
    entries, dropping the cached values over and over must never drop an unwritten write."""
    store = Store(
        tmp_path_factory.mktemp("unwritten"), chain_id=CHAIN, genesis_hash=GENESIS_HASH, sync=False
    )
    store.scan_batch_entries = 2
    committed = {key: value for key, value in layers[0].items() if value is not None}
    model = MemoryBackend(committed.items())
    store.init_genesis(tuple(sorted(committed.items())), model.app_hash)
    state = UnwrittenStateBackend(store.state_backend(), cache_entries_max=cache_entries_max)
    keys = {key for layer in layers for key in layer} | {b"\x00", b"\xff"}
    with state.reading():
        for key in keys:
            state.get(key)
            state.tree_node(b"t" + key)
    tree_model: dict[bytes, bytes | None] = {}
    for height, layer in enumerate(layers[1:], start=1):
        writes = tuple(sorted(layer.items()))
        tree_records = tuple((b"t" + key, value) for key, value in writes)
        tree = TreeUpdate(b"", tree_records, dict(tree_records))
        # With the write set's map handed over (as the node does) and without it.
        state.add(height, writes, tree, dict(writes) if height % 2 else None)
        model.apply(writes)
        tree_model.update(tree.records)

    def check() -> None:
        for key in keys:
            assert state.get(key) == model.get(key)
            assert state.tree_node(b"t" + key) == tree_model.get(b"t" + key)
        for reverse in (False, True):
            assert list(state.scan(start, end, reverse=reverse)) == list(
                model.scan(start, end, reverse=reverse)
            )

    check()
    with state.reading():
        check()
    # The oldest blocks are written (the store holds them, as the block writer leaves it) and
    # leave the view: the store and the caches answer for them now.
    count = min(written, len(layers) - 1)
    env: lmdb.Environment = store._env

    def write_to_store(written_layers: list[dict[bytes, bytes | None]]) -> None:
        """Put ``written_layers``' state writes and tree records in the store, in order."""
        with env.begin(write=True) as txn:
            for layer in written_layers:
                for key, value in layer.items():
                    for db, stored in ((store._db["state"], key), (store._db["tree"], b"t" + key)):
                        if value is None:
                            txn.delete(stored, db=db)
                        else:
                            txn.put(stored, value, db=db)

    write_to_store(layers[1 : 1 + count])
    state.written(count)
    assert len(state) == len(layers) - 1 - count
    check()
    with state.reading():
        check()
    if len(state):
        with pytest.raises(ValueError, match="does not follow"):
            state.add(len(layers) + 5, (), TreeUpdate(b"", (), {}))
    # The rest are written too: the store answers for every block, and no unwritten write is
    # left behind in the view's index of newest writes.
    write_to_store(layers[1 + count :])
    state.written(len(layers) - 1)
    assert len(state) == 0
    assert state.unwritten_records() == 0
    check()
    with state.reading():
        check()
    store.close()


def test_read_caches_fill_only_inside_reading_and_stay_bounded(tmp_path: Path) -> None:
    """Only reads inside ``reading`` on its thread fill the read caches (another thread's read
    may come from an older snapshot than a block removed meanwhile); past their bound they
    start afresh; ``clear`` empties them."""
    store = Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH, sync=False)
    genesis = tuple((bytes([i]), b"v") for i in range(8))
    store.init_genesis(genesis, MemoryBackend(genesis).app_hash)
    state = UnwrittenStateBackend(store.state_backend(), cache_entries_max=3)
    assert state.get(b"\x00") == b"v"
    assert state.cached_entries() == 0
    with state.reading():
        assert [state.get(bytes([i])) for i in range(3)] == [b"v"] * 3
        assert state.cached_entries() == 3
        assert state.get(bytes([3])) == b"v"  # the fourth starts afresh
        assert state.tree_node(b"t") is None  # absent, and remembered as such
        assert state.cached_entries() == 2
        other: list[bytes | None] = []
        thread = threading.Thread(target=lambda: other.append(state.get(bytes([5]))))
        thread.start()
        thread.join()
        assert other == [b"v"]
        assert state.cached_entries() == 2
    state.clear()
    assert state.cached_entries() == 0
    store.close()


def test_a_read_cache_started_afresh_keeps_the_newest_unwritten_writes(tmp_path: Path) -> None:
    """Two unwritten blocks write one key (and one tree record) with different values; reads
    of committed keys inside ``reading`` then start the one-entry read caches afresh again and
    again, and so does a block's removal: the newest unwritten write still answers, and the
    one a written block made answers once no unwritten block writes the key."""
    store = Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH, sync=False)
    genesis = tuple((bytes([i]), b"v") for i in range(8))
    store.init_genesis(genesis, MemoryBackend(genesis).app_hash)
    state = UnwrittenStateBackend(store.state_backend(), cache_entries_max=1)
    for height, value in ((1, b"old"), (2, b"new")):
        state.add(height, ((b"x", value),), TreeUpdate(b"", ((b"tx", value),), {b"tx": value}))
    with state.reading():
        for i in range(8):
            assert state.get(bytes([i])) == b"v"
            assert state.tree_node(b"t" + bytes([i])) is None
        assert state.cached_entries() <= 2
        assert (state.get(b"x"), state.tree_node(b"tx")) == (b"new", b"new")
    with store._env.begin(write=True) as txn:
        txn.put(b"x", b"old", db=store._db["state"])
        txn.put(b"tx", b"old", db=store._db["tree"])
    state.written(1)
    with state.reading():
        for i in range(8):
            state.get(bytes([i]))
            state.tree_node(b"t" + bytes([i]))
        assert (state.get(b"x"), state.tree_node(b"tx")) == (b"new", b"new")
    with store._env.begin(write=True) as txn:
        txn.put(b"x", b"new", db=store._db["state"])
        txn.put(b"tx", b"new", db=store._db["tree"])
    state.written(2)
    assert state.unwritten_records() == 0
    assert (state.get(b"x"), state.tree_node(b"tx")) == (b"new", b"new")
    store.close()
