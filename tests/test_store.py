"""The LMDB store: atomic block commits, reads, identity checks, map growth, state scans."""

from __future__ import annotations

import dataclasses
import shutil
import threading
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps import merkle
from apps.membership import MembershipApp
from apps.merkle import EMPTY_ROOT
from apps.state import MemoryBackend
from apps.transaction import sign_transaction
from consensus.codec import Value, encode
from consensus.crypto import hash_bytes
from consensus.types import Block
from node import store as node_store
from node.store import (
    DATABASES,
    REPLICA_DIR,
    SCHEMA_VERSION,
    TREE_FLUSH_BLOCKS,
    TREE_PENDING_RECORDS_MAX,
    CertifiedView,
    Store,
    StoreConsistencyError,
    StoreError,
    StoreMismatchError,
    height_key,
    read_vote_record,
    undo_chunk_key,
    undo_record,
    verify_chain,
)
from tests.host_fixtures import CHAIN, Chain, key
from tests.store_fixtures import GENESIS_HASH, VALIDATORS, NodeChain, certify
from tests.test_host import OPERATION, KvApp, Operation, VaultApp

BANK = key("bank_a")


class Signer:
    def __init__(self) -> None:
        self.nonce = 0

    def write(
        self, *puts: tuple[bytes, bytes], fail: bool = False, deletes: tuple[bytes, ...] = ()
    ) -> bytes:
        arguments: dict[str, Value] = {"puts": list(puts), "fail": fail}
        if deletes:
            arguments["deletes"] = list(deletes)
        tx = sign_transaction(
            BANK,
            chain_id=CHAIN,
            app="kv",
            operation="write",
            arguments=arguments,
            nonce=self.nonce,
        )
        self.nonce += 1
        return tx.encoded


def node(
    path: Path,
    *,
    map_size_bytes: int = 64 * 1024 * 1024,
    sync: bool = True,
    tree_flush_blocks: int = TREE_FLUSH_BLOCKS,
    tree_pending_records_max: int = TREE_PENDING_RECORDS_MAX,
) -> NodeChain:
    return NodeChain(
        path,
        [KvApp(), VaultApp()],
        map_size_bytes=map_size_bytes,
        sync=sync,
        tree_flush_blocks=tree_flush_blocks,
        tree_pending_records_max=tree_pending_records_max,
    )


def test_commit_and_read_back_everything(tmp_path: Path) -> None:
    chain = node(tmp_path)
    signer = Signer()
    first = signer.write((b"a", b"1"))
    replay = first
    failing = signer.write((b"b", b"2"), fail=True)
    result = chain.commit([first, failing])
    chain.commit([replay, signer.write((b"c", b"3"))])
    store = chain.store
    assert store.height == 2
    assert store.app_hash == chain.host.app_hash
    assert verify_chain(store, VALIDATORS) == 2
    block = store.block(1)
    assert block is not None
    assert block.transactions == (first, failing)
    assert store.block_by_hash(block.hash) == block
    assert store.height_of(block.hash) == 1
    certificate = store.certificate(1)
    assert certificate is not None
    assert certificate.block_hash == block.hash
    assert store.app_hash_at(1) == result.app_hash
    # The replay in block 2 is a rejected receipt; the index keeps the first inclusion.
    location = store.transaction_location(hash_bytes(first))
    assert location is not None
    assert (location.height, location.index) == (1, 0)
    assert store.receipt_of(hash_bytes(first)) == result.receipts[0]
    second = store.receipt(2, 0)
    assert second is not None
    assert second.code == "stale_nonce"
    failed = store.receipt_of(hash_bytes(failing))
    assert failed is not None
    assert failed.code == "asked_to_fail"
    assert chain.host.query("kv", "all", {}) == ((b"a", b"1"), (b"c", b"3"))
    assert store.block(3) is None
    assert store.certificate(3) is None
    assert store.transaction_location(b"\x00" * 32) is None
    chain.close()


def test_reopen_resumes_at_the_committed_height(tmp_path: Path) -> None:
    chain = node(tmp_path)
    signer = Signer()
    chain.commit([signer.write((b"a", b"1"))])
    app_hash = chain.host.app_hash
    chain.close()
    again = node(tmp_path)
    assert again.store.height == 1
    assert again.host.app_hash == app_hash
    assert again.host.next_nonce(BANK.public_key) == 1
    again.commit([signer.write((b"b", b"2"))])
    assert verify_chain(again.store, VALIDATORS) == 2
    again.close()


def test_a_store_from_another_chain_or_schema_is_refused(tmp_path: Path) -> None:
    node(tmp_path).close()
    with pytest.raises(StoreMismatchError, match="belongs to chain 'suanpan-test', not 'other'"):
        Store(tmp_path, chain_id="other", genesis_hash=GENESIS_HASH)
    with pytest.raises(StoreMismatchError, match="genesis"):
        Store(tmp_path, chain_id=CHAIN, genesis_hash=b"\x01" * 32)
    store = Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    store._write(lambda txn: txn.put(b"schema_version", b"999", db=store._db["meta"]))
    store.close()
    with pytest.raises(StoreMismatchError, match=f"needs {SCHEMA_VERSION}"):
        Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)


def _all_state(store: Store) -> dict[bytes, bytes]:
    return dict(store.state_scan())


def _certified(store: Store, keys: set[bytes]) -> tuple[int, bytes, dict[bytes, bytes | None]]:
    """The certified view's height, its tree's root, and the values of ``keys`` in it; every
    key's Merkle proof is checked against the view's app hash."""

    def read(view: CertifiedView) -> tuple[int, bytes, dict[bytes, bytes | None]]:
        values = {state_key: view.state.get(state_key) for state_key in keys}
        for state_key, value in values.items():
            merkle.verify(view.app_hash, state_key, value, merkle.prove(view.tree, state_key))
        return view.height, merkle.root_hash(view.tree), values

    answer = store.read_certified(read)
    assert answer is not None
    return answer


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from([b"a", b"b", b"c", b"d", b"e"]), st.booleans()),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_the_certified_view_is_the_state_one_block_back(
    tmp_path_factory: pytest.TempPathFactory, blocks: list[list[tuple[bytes, bool]]]
) -> None:
    """After each commit the certified view (the committed state with the last block's undo
    record applied) holds exactly the state before that block: every value, deletions and
    new keys included, and a tree whose root is the previous app hash."""
    chain = node(tmp_path_factory.mktemp("certified"))
    signer = Signer()
    for number, writes in enumerate(blocks):
        before = _all_state(chain.store)
        app_hash_before = chain.store.app_hash
        transactions = [
            signer.write(deletes=(name,)) if delete else signer.write((name, b"%d" % number))
            for name, delete in writes
        ]
        chain.commit(transactions)
        keys = set(before) | set(_all_state(chain.store))
        height, root, values = _certified(chain.store, keys)
        assert height == chain.store.height - 1
        assert root == app_hash_before
        assert values == {key: before.get(key) for key in keys}
    chain.close()


def _rewrite_as_version(path: Path, version: int) -> None:
    """Turn a store whose tree is at its height back into what a node of schema ``version``
    (4 to 7) left: 4 and 5 kept a tree undo database (here with one entry in that version's
    form), and version 4 kept its state undo record as one entry per key; 7 differs only in
    the vote record's place (``test_a_schema_7_store_moves_its_vote_record_...``)."""
    env = lmdb.open(str(path), max_dbs=len(DATABASES) + 1)
    with env.begin(write=True) as txn:
        meta = env.open_db(b"meta", txn=txn)
        undo_height = txn.get(b"undo_height", db=meta)
        state_undo = env.open_db(b"state_undo", txn=txn)
        chunks = [bytes(value) for _, value in txn.cursor(db=state_undo)]
        assert (undo_height is None) == (not chunks)
        assert txn.get(b"tree_height", db=meta) is None
        tree_undo = env.open_db(b"tree_undo", txn=txn) if version < 6 else None
        if tree_undo is None:
            pass
        elif version == 4:
            undone = undo_record(chunks)
            txn.drop(state_undo, delete=False)
            for key, value in undone.items():
                txn.put(key, b"\x00" if value is None else b"\x01" + value, db=state_undo)
            txn.put(merkle.ROOT_KEY, b"\x00", db=tree_undo)
        elif undo_height is not None:
            txn.put(undo_chunk_key(bytes(undo_height), 0), encode([]), db=tree_undo)
        txn.put(b"schema_version", str(version).encode(), db=meta)
    env.close()


def _has_database(store: Store, name: bytes) -> bool:
    with store._env.begin() as txn:
        return txn.get(name) is not None


@pytest.mark.parametrize("version", [4, 5, 6, 7])
def test_a_store_of_an_earlier_version_is_converted_when_opened(
    tmp_path: Path, version: int
) -> None:
    # Stores of those versions always held the tree of their height.
    chain = node(tmp_path, tree_flush_blocks=1)
    signer = Signer()
    chain.commit([signer.write((b"a", b"1"), (b"b", b"1"))])
    chain.commit([signer.write((b"a", b"2"), (b"c", b"1"), deletes=(b"b",))])
    keys = set(_all_state(chain.store)) | {b"kv/b"}
    expected = _certified(chain.store, keys)
    chain.close()
    _rewrite_as_version(tmp_path, version)

    again = node(tmp_path)
    assert again.store._get("meta", b"schema_version") == str(SCHEMA_VERSION).encode()
    with again.store._env.begin(db=again.store._db["state_undo"]) as txn:
        assert [bytes(key) for key, _ in txn.cursor()] == [undo_chunk_key(height_key(2), 0)]
    assert not _has_database(again.store, b"tree_undo")
    assert _certified(again.store, keys) == expected
    again.commit([signer.write((b"d", b"1"))])
    assert verify_chain(again.store, VALIDATORS) == 3
    again.close()

    # A store at genesis (no undo height) converts to an empty undo database.
    fresh = tmp_path / "fresh"
    node(fresh, tree_flush_blocks=1).close()
    _rewrite_as_version(fresh, version)
    opened = node(fresh)
    assert opened.store.read_certified(lambda view: view.height) is None
    opened.commit([signer.write((b"e", b"1"))])
    assert opened.store.read_certified(lambda view: view.height) == 0
    opened.close()

    # Older schemas are still refused.
    store = Store(fresh, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    store._write(lambda txn: txn.put(b"schema_version", b"3", db=store._db["meta"]))
    store.close()
    with pytest.raises(StoreMismatchError, match="schema version b'3'"):
        Store(fresh, chain_id=CHAIN, genesis_hash=GENESIS_HASH)


def test_the_vote_record_is_written_while_a_store_write_holds_the_writer_lock(
    tmp_path: Path,
) -> None:
    # The vote record has its own environment: a vote is not held up by a block or tree write
    # in progress (here one that waits until the vote is written, so sharing the store's one
    # writer would never finish).
    store = Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    holding = threading.Event()
    voted = threading.Event()

    def long_write(txn: lmdb.Transaction) -> None:
        txn.put(b"long", b"write", db=store._db["evidence"])
        holding.set()
        voted.wait(timeout=60)

    writer = threading.Thread(target=store._write, args=(long_write,))
    writer.start()
    assert holding.wait(timeout=60)

    def vote() -> None:
        store.save_replica_state(b"view=9")
        voted.set()

    voter = threading.Thread(target=vote)
    voter.start()
    voter.join(timeout=60)
    finished_first = voted.is_set()
    voted.set()
    writer.join(timeout=60)
    assert finished_first, "the vote record waited for the store's write transaction"
    assert store.load_replica_state() == b"view=9"
    store.close()
    assert read_vote_record(tmp_path) == b"view=9"


def _put_legacy_vote_record(path: Path, record: bytes, *, schema: int | None = None) -> None:
    """Where schema 7 and earlier kept the vote record: the store's own ``replica`` database."""
    env = lmdb.open(str(path), max_dbs=len(DATABASES) + 1)
    with env.begin(write=True) as txn:
        txn.put(b"replica", record, db=env.open_db(b"replica", txn=txn))
        if schema is not None:
            txn.put(b"schema_version", str(schema).encode(), db=env.open_db(b"meta", txn=txn))
    env.close()


def test_a_schema_7_store_moves_its_vote_record_to_its_own_environment(tmp_path: Path) -> None:
    chain = node(tmp_path)
    chain.commit([Signer().write((b"a", b"1"))])
    chain.close()
    shutil.rmtree(tmp_path / REPLICA_DIR)
    _put_legacy_vote_record(tmp_path, b"view=5", schema=7)
    # Read as it is, before any node opens it (a restore reads the home's record so).
    assert read_vote_record(tmp_path) == b"view=5"
    # A node of schema 7 would not see the record: the store says a later version.
    again = node(tmp_path)
    assert again.store._get("meta", b"schema_version") == str(SCHEMA_VERSION).encode() == b"9"
    assert again.store.load_replica_state() == b"view=5"
    assert again.store._get("replica", b"replica") is None
    again.store.save_replica_state(b"view=6")
    again.close()
    assert read_vote_record(tmp_path) == b"view=6"


def test_a_vote_record_left_in_both_places_keeps_the_one_the_node_wrote(tmp_path: Path) -> None:
    # A crash between the copy and the delete leaves both; the environment's is the newer.
    store = Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    store.save_replica_state(b"view=7")
    store.close()
    _put_legacy_vote_record(tmp_path, b"view=2")
    assert read_vote_record(tmp_path) == b"view=7"
    store = Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    assert store.load_replica_state() == b"view=7"
    assert store._get("replica", b"replica") is None
    store.clear_replica_state()
    store.close()
    assert read_vote_record(tmp_path) is None
    assert read_vote_record(tmp_path / "nothing-here") is None


def test_the_vote_record_environment_grows_for_a_large_record(tmp_path: Path) -> None:
    store = Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH, sync=False)
    big = bytes(range(256)) * (3 * node_store._REPLICA_MAP_SIZE_INITIAL_BYTES // 256)
    store.save_replica_state(big)
    assert store.load_replica_state() == big
    store.close()
    assert read_vote_record(tmp_path) == big


def test_a_large_block_undo_record_is_stored_in_chunks_and_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block replacing more than ``UNDO_CHUNK_BYTES`` of values stores its undo record in
    numbered chunks of about that size; the certified view reads all of them, and a store
    missing one refuses to answer rather than answer from part of the record."""
    chunk_bytes = 64 * 1024  # a block of transactions of at most 32 KiB reaches it quickly
    monkeypatch.setattr(node_store, "UNDO_CHUNK_BYTES", chunk_bytes)
    chain = node(tmp_path)
    signer = Signer()
    names = [b"key-%03d" % number for number in range(120)]
    groups = [names[start : start + 10] for start in range(0, len(names), 10)]
    for value in (b"x" * 2000, b"y" * 2000):
        chain.commit([signer.write(*[(name, value) for name in group]) for group in groups])
    before = _all_state(chain.store)
    chain.commit(
        [signer.write(*[(name, b"z" * 100) for name in group]) for group in groups]
        + [signer.write(deletes=(b"key-000",))]
    )
    keys = set(before) | set(_all_state(chain.store))
    with chain.store._env.begin(db=chain.store._db["state_undo"]) as txn:
        chunks = [
            (bytes(key), len(value))
            for key, value in txn.cursor()
            if bytes(key[:8]) == height_key(3)  # earlier blocks' are kept while the tree waits
        ]
    assert len(chunks) >= 3
    assert [key for key, _ in chunks] == [
        undo_chunk_key(height_key(3), index) for index in range(len(chunks))
    ]
    assert all(size < chunk_bytes + 4096 for _, size in chunks)
    height, root, values = _certified(chain.store, keys)
    assert height == 2
    assert root == chain.store.app_hash_at(2)
    assert values == {state_key: before.get(state_key) for state_key in keys}
    chain.close()

    reopened = Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    reopened._write(
        lambda txn: txn.delete(undo_chunk_key(height_key(3), 1), db=reopened._db["state_undo"])
    )
    with pytest.raises(StoreError, match="misses a state_undo chunk"):
        reopened.read_certified(lambda view: view.height)
    reopened.close()


def test_an_undo_record_that_does_not_lead_back_to_the_previous_app_hash_is_refused(
    tmp_path: Path,
) -> None:
    # The tree of h-1 is derived from the state's undo record; a record that names a wrong
    # earlier value (or misses a key) derives another root, and no proof is answered from it.
    chain = node(tmp_path)
    signer = Signer()
    chain.commit([signer.write((b"a", b"1"), (b"b", b"1"))])
    chain.commit([signer.write((b"a", b"2"), deletes=(b"b",))])
    assert _certified(chain.store, {b"kv\x00a", b"kv\x00b"})[1] == chain.store.app_hash_at(1)
    store = chain.store
    chunk = undo_chunk_key(height_key(2), 0)

    def forge(txn: lmdb.Transaction) -> None:
        raw = txn.get(chunk, db=store._db["state_undo"])
        assert raw is not None
        record = undo_record([bytes(raw)])
        assert record[b"kv\x00a"] == b"1"
        record[b"kv\x00a"] = b"forged"
        txn.put(
            chunk,
            encode([item for pair in record.items() for item in pair]),
            db=store._db["state_undo"],
        )

    store._write(forge)
    store._undo_cache = None
    with pytest.raises(StoreError, match="does not lead back to the app hash of height 1"):
        store.read_certified(lambda view: view.height)
    chain.close()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"\xc1", "does not decode"),
        (encode({"a": 1}), "not a list"),
        (encode([b"k"]), "not a list of key and value pairs"),
        (encode([b"k", 1]), "entry 0"),
        (encode(["k", b"v"]), "entry 0"),
        (encode([b"k", b"v", b"k2", "v"]), "entry 1"),
    ],
)
def test_an_undo_record_that_is_not_pairs_of_bytes_is_refused(raw: bytes, problem: str) -> None:
    with pytest.raises(StoreError, match=problem):
        undo_record([raw])
    assert undo_record([encode([b"k", None, b"j", b"v", b"k", b"later"])]) == {
        b"k": None,
        b"j": b"v",
    }


def test_a_store_whose_genesis_was_never_written_takes_the_corrected_genesis(
    tmp_path: Path,
) -> None:
    # A first start that failed on an app's genesis left only the identity behind; the
    # operator fixes genesis.json (new hash, even a new chain id) and starts again.
    Store(tmp_path, chain_id=CHAIN, genesis_hash=b"\x01" * 32).close()
    store = Store(tmp_path, chain_id="fixed-chain", genesis_hash=GENESIS_HASH)
    assert not store.initialised
    store.init_genesis((), EMPTY_ROOT)
    store.close()
    with pytest.raises(StoreMismatchError, match="genesis"):
        Store(tmp_path, chain_id="fixed-chain", genesis_hash=b"\x01" * 32)


def test_commits_that_do_not_extend_the_chain_are_refused_and_write_nothing(
    tmp_path: Path,
) -> None:
    chain = node(tmp_path)
    signer = Signer()
    chain.commit([signer.write((b"a", b"1"))])
    store = chain.store
    good = Block.build(
        chain_id=CHAIN,
        height=2,
        view=0,
        parent_hash=store.last_block_hash,
        app_hash=store.app_hash,
        next_validators_hash=VALIDATORS.hash(),
        proposer=0,
        timestamp_ms=5,
        transactions=[],
    )
    from apps.base import BlockContext

    result = chain.host.execute_block(BlockContext(2, 5, b"", CHAIN), [])
    for block, message in (
        (_variant(good, height=3), "does not follow"),
        (_variant(good, parent_hash=b"\x09" * 32), "does not link"),
        (_variant(good, app_hash=b"\x09" * 32), "app hash"),
    ):
        with pytest.raises(StoreConsistencyError, match=message):
            store.commit_block(
                block, certify(block), dataclasses.replace(result, height=block.height)
            )
    with pytest.raises(StoreConsistencyError, match="certificate"):
        store.commit_block(good, certify(_variant(good, view=1)), result)
    assert store.height == 1
    store.commit_block(good, certify(good), result)
    with pytest.raises(StoreConsistencyError, match="already written"):
        store.init_genesis((), EMPTY_ROOT)
    assert verify_chain(store, VALIDATORS) == 2
    chain.close()


def _variant(block: Block, **changes: int | bytes) -> Block:
    header = dataclasses.replace(block.header, **changes)  # type: ignore[arg-type]
    return Block(header, block.transactions)


def test_verify_chain_detects_a_forged_certificate(tmp_path: Path) -> None:
    chain = node(tmp_path)
    chain.commit([])
    block = chain.store.block(1)
    assert block is not None
    forged = certify(block)
    bad = type(forged)(forged.height, forged.view, forged.block_hash, forged.signatures[:1])
    chain.store._write(
        lambda txn: txn.put(
            (1).to_bytes(8, "big"), bad.encode(), db=chain.store._db["certificates"]
        )
    )
    with pytest.raises(StoreConsistencyError, match="certificate 1"):
        verify_chain(chain.store, VALIDATORS)
    chain.close()


def test_the_map_grows_instead_of_failing(tmp_path: Path) -> None:
    chain = node(tmp_path, map_size_bytes=64 * 1024, sync=False)
    signer = Signer()
    for block in range(12):
        chain.commit(
            [signer.write(*[(bytes([block, i]), bytes(900)) for i in range(20)]) for _ in range(2)]
        )
    statistics = chain.store.statistics()
    assert statistics["map_size_bytes"] > 64 * 1024
    assert statistics["height"] == 12
    assert verify_chain(chain.store, VALIDATORS) == 12
    assert len(list(chain.store.state_scan(b"kv\x00", b"kv\x01"))) == 12 * 20
    chain.close()


def test_committed_among_names_the_indexed_transactions_of_a_batch(tmp_path: Path) -> None:
    chain = node(tmp_path)
    signer = Signer()
    first, second = signer.write((b"a", b"1")), signer.write((b"b", b"1"))
    chain.commit([first, second])
    unknown = signer.write((b"c", b"1"))
    hashes = [hash_bytes(tx) for tx in (unknown, second, first, second)]
    assert chain.store.committed_among(hashes) == {hash_bytes(first), hash_bytes(second)}
    assert chain.store.committed_among([hash_bytes(unknown)]) == set()
    assert chain.store.committed_among([]) == set()
    chain.close()


def test_replica_state_and_evidence(tmp_path: Path) -> None:
    store = Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    assert store.load_replica_state() is None
    store.save_replica_state(b"view=3")
    store.save_replica_state(b"view=4")
    assert store.add_evidence(7, b"double vote A")
    assert not store.add_evidence(7, b"double vote A")
    assert store.add_evidence(2, b"double vote B")
    store.close()
    store = Store(tmp_path, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    assert store.load_replica_state() == b"view=4"
    assert store.evidence() == [(2, b"double vote B"), (7, b"double vote A")]
    assert store.evidence(from_height=3) == [(7, b"double vote A")]
    assert not store.initialised
    store.close()


def test_same_blocks_on_two_stores_reach_the_same_app_hashes(tmp_path: Path) -> None:
    """Determinism across environments: two LMDB stores and the in-memory backend."""
    left = node(tmp_path / "left")
    right = node(tmp_path / "right")
    memory = Chain.start([KvApp(), VaultApp()])
    signer = Signer()
    for block in range(6):
        transactions = [
            signer.write((f"k{block}".encode(), b"v"), fail=block % 3 == 0),
            signer.write((b"shared", bytes([block]))),
        ]
        a = left.commit(transactions)
        b = right.commit(transactions)
        m = memory.run(transactions)
        assert a == b
        assert a.app_hash == m.app_hash
    assert list(left.store.state_scan()) == list(right.store.state_scan()) == memory.backend.items()
    left.close()
    right.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.booleans(), st.binary(max_size=3), st.binary(max_size=2)),
        max_size=60,
    ),
    st.binary(max_size=3),
    st.one_of(st.none(), st.binary(max_size=3)),
)
def test_state_scans_match_a_sorted_model(
    tmp_path_factory: pytest.TempPathFactory,
    operations: list[tuple[bool, bytes, bytes]],
    start: bytes,
    end: bytes | None,
) -> None:
    """Batched cursor scans (forward and reverse, across batch boundaries) equal the model."""
    store = Store(
        tmp_path_factory.mktemp("scan"), chain_id=CHAIN, genesis_hash=GENESIS_HASH, sync=False
    )
    store.scan_batch_entries = 3
    model = MemoryBackend()
    writes: dict[bytes, bytes | None] = {}
    for put, k, v in operations:
        if k:
            writes[k] = v if put else None
    write_set = tuple(sorted(writes.items()))
    model.apply(write_set)
    store.init_genesis(write_set, model.app_hash)
    for reverse in (False, True):
        assert list(store.state_scan(start, end, reverse=reverse)) == list(
            model.scan(start, end, reverse=reverse)
        )
    store.close()


def test_host_over_lmdb_matches_host_over_memory_for_membership(tmp_path: Path) -> None:
    chain = NodeChain(tmp_path)
    memory = Chain.start()
    tx = sign_transaction(
        BANK,
        chain_id=CHAIN,
        app="membership",
        operation="onboard_enterprise",
        arguments={"id": "acme", "name": "Acme", "jurisdiction": "SG"},
        nonce=0,
    )
    assert chain.commit([tx.encoded]).app_hash == memory.run([tx]).app_hash
    assert chain.host.query("membership", "institution", {"id": "acme"}) == memory.host.query(
        "membership", "institution", {"id": "acme"}
    )
    assert isinstance(chain.host.app("membership"), MembershipApp)
    chain.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.lists(OPERATION, max_size=5), min_size=1, max_size=4))
def test_lmdb_state_matches_a_model_of_atomic_transactions(
    tmp_path_factory: pytest.TempPathFactory, blocks: list[list[Operation]]
) -> None:
    """Random blocks (some transactions failing in the caller or in a nested cross-app call)
    committed to LMDB: the stored state is the model with exactly the successful transactions
    applied, and equals the in-memory host's state and app hash."""
    chain = NodeChain(tmp_path_factory.mktemp("atomic"), [KvApp(), VaultApp()], sync=False)
    memory = Chain.start([KvApp(), VaultApp()])
    model: dict[bytes, bytes] = {}
    nonce = 0
    for block in blocks:
        raw = []
        for puts, deletes, fail, deposit in block:
            arguments: dict[str, Value] = {"puts": list(puts), "deletes": list(deletes)}
            if fail:
                arguments["fail"] = True
            if deposit is not None:
                arguments["deposit"] = {"amount": deposit[0], "fail": deposit[1]}
            raw.append(
                sign_transaction(
                    BANK,
                    chain_id=CHAIN,
                    app="kv",
                    operation="write",
                    arguments=arguments,
                    nonce=nonce,
                ).encoded
            )
            nonce += 1
            if not (fail or (deposit is not None and deposit[1])):
                model.update(puts)
                for k in deletes:
                    model.pop(k, None)
        result = chain.commit(raw)
        assert result.app_hash == memory.run(raw).app_hash
        stored = [(k[len(b"kv\x00") :], v) for k, v in chain.store.state_scan(b"kv\x00", b"kv\x01")]
        assert stored == sorted(model.items())
    assert list(chain.store.state_scan()) == memory.backend.items()
    chain.close()


def test_a_block_reads_one_snapshot_while_other_threads_read_and_commit(tmp_path: Path) -> None:
    """Inside ``reading`` (a block executing) this thread reads one snapshot: a commit landing
    meanwhile on another thread is not seen until the context ends, while other threads (and
    the store's own reads) see it at once."""
    chain = node(tmp_path, sync=False)
    signer = Signer()
    chain.commit([signer.write((b"k", b"old"))])
    block, certificate, result = chain.execute([signer.write((b"k", b"new"))])
    backend = chain.store.state_backend()
    seen_by_other_thread: list[bytes | None] = []
    with backend.reading():
        assert backend.get(b"kv\x00k") == b"old"
        writer = threading.Thread(
            target=chain.store.commit_block, args=(block, certificate, result)
        )
        writer.start()
        writer.join()
        reader = threading.Thread(
            target=lambda: seen_by_other_thread.append(backend.get(b"kv\x00k"))
        )
        reader.start()
        reader.join()
        assert seen_by_other_thread == [b"new"]
        assert backend.get(b"kv\x00k") == b"old", "the snapshot holds for this thread"
        # Its scans read the same snapshot (in the context's transaction).
        assert list(backend.scan(b"kv\x00", b"kv\x01")) == [(b"kv\x00k", b"old")]
        assert chain.store.state_get(b"kv\x00k") == b"new", "the store's own reads are fresh"
    assert backend.get(b"kv\x00k") == b"new"
    assert list(backend.scan(b"kv\x00", b"kv\x01")) == [(b"kv\x00k", b"new")]
    chain.close()


def test_a_scan_begun_inside_a_block_read_goes_on_in_batches_after_it_ends(
    tmp_path: Path,
) -> None:
    """A scan longer than a batch, begun inside ``reading``: its first batch comes from the
    context's transaction, the rest from batches of their own, and the iterator still works
    once the context has ended."""
    chain = node(tmp_path, sync=False)
    chain.store.scan_batch_entries = 2
    signer = Signer()
    chain.commit([signer.write(*[(bytes([ord("a") + i]), bytes([i])) for i in range(5)])])
    backend = chain.store.state_backend()
    expected = list(chain.store.state_scan(b"kv\x00", b"kv\x01"))
    assert len(expected) == 5
    for reverse in (False, True):
        with backend.reading():
            whole = list(backend.scan(b"kv\x00", b"kv\x01", reverse=reverse))
            unfinished = backend.scan(b"kv\x00", b"kv\x01", reverse=reverse)
            first = next(unfinished)
        assert whole == (expected[::-1] if reverse else expected)
        assert [first, *unfinished] == whole
    chain.close()


def test_a_commit_that_must_grow_the_map_waits_for_a_block_read_to_end(tmp_path: Path) -> None:
    """No resize under an open read: the commit waits until ``reading`` ends, then completes
    (nothing waits in a circle)."""
    chain = node(tmp_path, map_size_bytes=64 * 1024, sync=False)
    signer = Signer()
    chain.commit([signer.write((b"k", b"old"))])
    # Enough data that this commit cannot fit the 64 KiB map without growing it.
    big = [signer.write(*[(bytes([i, j]), bytes(900)) for j in range(20)]) for i in range(4)]
    block, certificate, result = chain.execute(big)
    size_before = chain.store.statistics()["map_size_bytes"]
    backend = chain.store.state_backend()
    with backend.reading():
        writer = threading.Thread(
            target=chain.store.commit_block, args=(block, certificate, result)
        )
        writer.start()
        assert backend.get(b"kv\x00k") == b"old"
        assert chain.store.height == block.height - 1
    writer.join(timeout=120)
    assert not writer.is_alive(), "the commit finished once the read ended"
    assert chain.store.height == block.height
    assert chain.store.statistics()["map_size_bytes"] > size_before
    chain.close()
