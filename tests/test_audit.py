"""`suanpan audit`: a real chain passes; each kind of damage is named at its first height.

The chain (tests/audit_fixtures.py): 12 blocks of signed demo traffic through membership,
payments, scf and assets, committed through node.store with quorum certificates, one repeated
transaction (block 9 repeats block 3's first) and one stored equivocation (height 4). Each test
damages its own copy of the store through LMDB directly, then audits it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import lmdb
import pytest
from click.testing import CliRunner

from apps.base import Event
from apps.demo import DemoTraffic, demo_consortium
from apps.host import end_block_record
from consensus.codec import Limits, Value, decode, encode
from consensus.crypto import PrivateKey, hash_bytes
from consensus.evidence import Evidence, SignedStatement
from consensus.types import CommitCertificate
from node.audit import audit as audit_module
from node.audit.audit import AuditReport, audit_home
from node.audit.storeview import StoreView
from node.cli import main
from node.genesis import save_genesis
from node.store import TREE_FLUSH_BLOCKS, undo_chunk_key
from tests.audit_fixtures import (
    EQUIVOCATION_HEIGHT,
    EQUIVOCATOR,
    HEIGHTS,
    REPEAT_AT,
    REPEAT_FROM,
    BuiltChain,
    Committer,
    build_home,
    corrupt,
    flip_byte,
    height_key,
    make_genesis,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> BuiltChain:
    return build_home(tmp_path_factory.mktemp("template"))


@pytest.fixture
def chain(template: BuiltChain, tmp_path: Path) -> BuiltChain:
    """A private copy of the template home."""
    home = tmp_path / "home"
    shutil.copytree(template.home, home)
    return BuiltChain(home, template.genesis, template.blocks, template.results)


def failure_of(home: Path) -> tuple[int, str, str]:
    report = audit_home(home)
    assert report.failure is not None, "the audit must fail"
    assert not report.ok
    return report.failure.height, report.failure.item, report.failure.detail


def replace_value(home: Path, db: str, key: bytes, change: Callable[[bytes], bytes]) -> None:
    def work(txn: lmdb.Transaction, handle: lmdb._Database) -> None:
        old = txn.get(key, db=handle)
        assert old is not None, f"{db} has no {key.hex()}"
        txn.put(key, change(bytes(old)), db=handle)

    corrupt(home, db, work)


# -- the intact chain -------------------------------------------------------------------------


def test_intact_chain_passes_every_check(chain: BuiltChain) -> None:
    report = audit_home(chain.home)
    assert report.failure is None
    assert report.ok
    assert report.height == HEIGHTS
    assert report.heights_checked == HEIGHTS
    assert report.transactions == sum(len(block.transactions) for block in chain.blocks.values())
    assert report.evidence == 1
    assert report.state_keys > 0


def test_cli_reports_ok_as_text_and_json(chain: BuiltChain) -> None:
    runner = CliRunner()
    text = runner.invoke(main, ["audit", "--home", str(chain.home)])
    assert text.exit_code == 0, text.output
    assert "OK: every check passed" in text.output
    result = runner.invoke(main, ["audit", "--home", str(chain.home), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["ok"] is True
    assert document["heights_checked"] == HEIGHTS
    assert document["failure"] is None
    assert set(document["timing"]) == {"total_seconds", "replay_seconds", "certificate_seconds"}


def test_cli_names_the_failure_and_exits_non_zero(chain: BuiltChain) -> None:
    replace_value(chain.home, "app_hashes", height_key(8), lambda old: flip_byte(old, 0))
    runner = CliRunner()
    result = runner.invoke(main, ["audit", "--home", str(chain.home), "--json"])
    assert result.exit_code == 1
    document = json.loads(result.output)
    assert document["ok"] is False
    assert document["failure"]["height"] == 8
    assert document["failure"]["item"] == "app hash"
    assert document["heights_checked"] == 7
    text = runner.invoke(main, ["audit", "--home", str(chain.home)])
    assert text.exit_code == 1
    assert "FAILED at height 8: app hash: stored" in text.output


# -- blocks -----------------------------------------------------------------------------------


def test_flipped_byte_in_a_transaction_of_a_stored_block_is_the_body(chain: BuiltChain) -> None:
    tx = chain.blocks[7].transactions[1]

    def flip(old: bytes) -> bytes:
        offset = old.index(tx) + len(tx) - 10  # inside the transaction's signature
        return flip_byte(old, offset)

    replace_value(chain.home, "blocks", height_key(7), flip)
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (7, "body")
    assert "transactions_root" in detail or "root" in detail


def test_flipped_byte_in_a_parent_hash_is_the_link(chain: BuiltChain) -> None:
    parent = chain.blocks[6].header.parent_hash
    replace_value(
        chain.home, "blocks", height_key(6), lambda old: flip_byte(old, old.index(parent) + 5)
    )
    assert failure_of(chain.home)[:2] == (6, "link")


def test_flipped_byte_in_a_header_timestamp_breaks_the_certificate(chain: BuiltChain) -> None:
    block = chain.blocks[3]
    timestamp = encode(block.header.timestamp_ms)

    def flip(old: bytes) -> bytes:
        offset = old.index(timestamp) + len(timestamp) - 1
        return flip_byte(old, offset)

    replace_value(chain.home, "blocks", height_key(3), flip)
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (3, "certificate")
    assert "different block hash" in detail


def test_garbage_block_does_not_decode(chain: BuiltChain) -> None:
    replace_value(chain.home, "blocks", height_key(10), lambda old: b"\xc1" + old[1:])
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (10, "block")
    assert "does not decode" in detail


def test_missing_block(chain: BuiltChain) -> None:
    corrupt(chain.home, "blocks", lambda txn, db: txn.delete(height_key(5), db=db))
    assert failure_of(chain.home)[:3] == (5, "block", "missing from the store")


def test_block_beyond_the_committed_height(chain: BuiltChain) -> None:
    extra = chain.blocks[HEIGHTS].encode()
    corrupt(chain.home, "blocks", lambda txn, db: txn.put(height_key(HEIGHTS + 1), extra, db=db))
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (HEIGHTS + 1, "block")
    assert "beyond the committed height" in detail


# -- certificates -----------------------------------------------------------------------------


def test_flipped_signature_in_a_certificate_names_the_validator(chain: BuiltChain) -> None:
    def flip_validator_2(old: bytes) -> bytes:
        certificate = CommitCertificate.decode(old)
        signatures = tuple(
            (index, flip_byte(signature, 3) if index == 2 else signature)
            for index, signature in certificate.signatures
        )
        assert any(index == 2 for index, _ in signatures)
        return CommitCertificate(
            certificate.height, certificate.view, certificate.block_hash, signatures
        ).encode()

    replace_value(chain.home, "certificates", height_key(5), flip_validator_2)
    assert failure_of(chain.home) == (5, "certificate", "signature of validator 2 does not verify")


def test_certificate_without_a_quorum(chain: BuiltChain) -> None:
    def drop_one(old: bytes) -> bytes:
        certificate = CommitCertificate.decode(old)
        return CommitCertificate(
            certificate.height, certificate.view, certificate.block_hash, certificate.signatures[1:]
        ).encode()

    replace_value(chain.home, "certificates", height_key(2), drop_one)
    assert failure_of(chain.home) == (2, "certificate", "2 signatures, quorum is 3")


def test_genesis_naming_other_validators_is_another_chain(chain: BuiltChain) -> None:
    """A genesis.json naming other validators is another chain: the store refuses it."""
    other = make_genesis([PrivateKey(bytes([index + 50]) * 32) for index in range(4)])
    save_genesis(chain.home / "genesis.json", other)
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (0, "store")
    assert "created from genesis" in detail


# -- indexes ----------------------------------------------------------------------------------


def test_missing_tx_index_entry(chain: BuiltChain) -> None:
    tx_hash = hash_bytes(chain.blocks[6].transactions[1])
    corrupt(chain.home, "transactions", lambda txn, db: txn.delete(tx_hash, db=db))
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (6, "tx index")
    assert detail == f"transaction 1 ({tx_hash.hex()}) is not indexed"


def test_tx_index_entry_pointing_elsewhere(chain: BuiltChain) -> None:
    tx_hash = hash_bytes(chain.blocks[8].transactions[2])
    corrupt(chain.home, "transactions", lambda txn, db: txn.put(tx_hash, encode((2, 0)), db=db))
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (8, "tx index")
    assert "holds another transaction" in detail


def test_flipped_byte_in_a_tx_index_entry(chain: BuiltChain) -> None:
    tx_hash = hash_bytes(chain.blocks[4].transactions[0])
    replace_value(chain.home, "transactions", tx_hash, lambda old: flip_byte(old, len(old) - 1))
    assert failure_of(chain.home)[:2] == (4, "tx index")


def test_repeated_transaction_keeps_its_first_inclusion(chain: BuiltChain) -> None:
    """The intact chain repeats a transaction; pointing the index at the repeat is a failure
    at the first inclusion (its entry names a later position)."""
    repeated_height, repeated_index = REPEAT_FROM
    tx_hash = hash_bytes(chain.blocks[repeated_height].transactions[repeated_index])
    position = len(chain.blocks[REPEAT_AT].transactions) - 1
    corrupt(
        chain.home,
        "transactions",
        lambda txn, db: txn.put(tx_hash, encode((REPEAT_AT, position)), db=db),
    )
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (repeated_height, "tx index")
    assert "later position" in detail


def test_stray_tx_index_entry_is_found(chain: BuiltChain) -> None:
    stray = hash_bytes(b"never committed")
    corrupt(chain.home, "transactions", lambda txn, db: txn.put(stray, encode((3, 1)), db=db))
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (3, "tx index")
    assert stray.hex() in detail


def test_missing_block_hash_index_entry(chain: BuiltChain) -> None:
    block_hash = chain.blocks[9].hash
    corrupt(chain.home, "block_hashes", lambda txn, db: txn.delete(block_hash, db=db))
    assert failure_of(chain.home)[:2] == (9, "block index")


# -- replay -----------------------------------------------------------------------------------


def test_flipped_byte_in_a_stored_app_hash(chain: BuiltChain) -> None:
    replace_value(chain.home, "app_hashes", height_key(5), lambda old: flip_byte(old, 31))
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (5, "app hash")
    assert detail.startswith("stored ")


def test_changed_receipt(chain: BuiltChain) -> None:
    key = height_key(REPEAT_AT) + (len(chain.blocks[REPEAT_AT].transactions) - 1).to_bytes(4, "big")

    def claim_success(old: bytes) -> bytes:
        fields = decode(old)
        assert isinstance(fields, tuple)
        return encode((*fields[:2], "ok", "", "", None, ()))

    replace_value(chain.home, "receipts", key, claim_success)
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (REPEAT_AT, "receipt")
    assert "stale_nonce" in detail


# -- state ------------------------------------------------------------------------------------


def payments_key_written_at(chain: BuiltChain, low: int) -> tuple[bytes, int]:
    """A payments state key with a non-empty value (a byte to flip; index entries are empty)
    last written at a height >= ``low``, and that height."""
    for height in range(low, HEIGHTS + 1):
        for key, value in chain.writes(height):
            if key.startswith(b"payments\x00") and value:
                last = chain.last_write_height(key)
                if last >= low:
                    return key, last
    raise AssertionError("no payments write")


def test_changed_state_entry_is_named_at_the_height_that_wrote_it(chain: BuiltChain) -> None:
    key, written_at = payments_key_written_at(chain, 3)
    replace_value(chain.home, "state", key, lambda old: flip_byte(old, len(old) - 1))
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (written_at, "state")
    shown = key[len(b"payments\x00") :].decode("ascii")
    assert detail.startswith(f"key payments/{shown} differs: stored ")


def test_deleted_and_added_state_entries(chain: BuiltChain) -> None:
    key, written_at = payments_key_written_at(chain, 1)
    corrupt(chain.home, "state", lambda txn, db: txn.delete(key, db=db))
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (written_at, "state")
    assert "missing from the store" in detail

    corrupt(chain.home, "state", lambda txn, db: txn.put(key, chain_value(chain, key), db=db))
    assert audit_home(chain.home).ok
    corrupt(chain.home, "state", lambda txn, db: txn.put(b"zzz\x00extra", b"\x01", db=db))
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (HEIGHTS, "state")
    assert "key zzz/extra is in the store" in detail


def test_a_changed_or_stray_tree_record_is_the_tree(chain: BuiltChain) -> None:
    records: list[bytes] = []
    corrupt(chain.home, "tree", lambda txn, db: records.extend(bytes(k) for k, _ in txn.cursor(db)))
    deep = max(records[:-1], key=len)  # a node record below the root (not the root slot)
    replace_value(chain.home, "tree", deep, lambda old: flip_byte(old, len(old) - 1))
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (HEIGHTS, "tree")
    assert deep.hex() in detail

    replace_value(chain.home, "tree", deep, lambda old: flip_byte(old, len(old) - 1))
    assert audit_home(chain.home).ok
    corrupt(chain.home, "tree", lambda txn, db: txn.put(b"\x05stray", b"\x00" * 4, db=db))
    assert failure_of(chain.home)[:2] == (HEIGHTS, "tree")


def _change_undo(chain: BuiltChain, database: str, change: Callable[[list[Value]], None]) -> None:
    """Decode the last block's undo record in ``database``, ``change`` its flat
    ``[key, value, ...]`` list, and write it back encoded."""

    def edit(old: bytes) -> bytes:
        items: list[Value] = list(decode_undo_list(old))
        change(items)
        return encode(items)

    replace_value(chain.home, database, undo_chunk_key(height_key(HEIGHTS), 0), edit)


def decode_undo_list(raw: bytes) -> tuple[Value, ...]:
    items = decode(raw, Limits(array_len_max=1 << 20))
    assert isinstance(items, tuple)
    return items


def test_an_undo_record_that_is_not_what_the_last_block_replaced_is_the_undo(
    chain: BuiltChain,
) -> None:
    def changed_value(items: list[Value]) -> None:
        old = items[1]
        items[1] = old + b"!" if isinstance(old, bytes) else b"!"

    _change_undo(chain, "state_undo", changed_value)
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (HEIGHTS, "undo")
    assert "state_undo" in detail
    assert "stored" in detail


@pytest.mark.parametrize(
    ("database", "change", "expected"),
    [
        ("state_undo", lambda items: items.extend([b"kv/never", None]), "(nothing: not written)"),
        ("state_undo", lambda items: items.__delitem__(slice(0, 2)), "(not listed)"),
    ],
)
def test_an_undo_record_listing_other_keys_than_the_last_block_wrote_is_the_undo(
    chain: BuiltChain, database: str, change: Callable[[list[Value]], None], expected: str
) -> None:
    _change_undo(chain, database, change)
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (HEIGHTS, "undo")
    assert database in detail
    assert expected in detail


def test_an_undo_record_that_does_not_decode_or_is_not_the_last_blocks_is_the_undo(
    chain: BuiltChain,
) -> None:
    first = undo_chunk_key(height_key(HEIGHTS), 0)
    replace_value(chain.home, "state_undo", first, lambda old: old[:-1])
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (HEIGHTS, "undo")
    assert "state_undo" in detail
    assert "does not decode" in detail

    for stray in (
        undo_chunk_key(height_key(HEIGHTS - 1), 0),  # an older block's
        undo_chunk_key(height_key(HEIGHTS), 1),  # chunk 0 missing
    ):

        def moved(txn: lmdb.Transaction, db: lmdb._Database, stray: bytes = stray) -> None:
            txn.drop(db, delete=False)
            txn.put(stray, encode([]), db=db)

        corrupt(chain.home, "state_undo", moved)
        height, item, detail = failure_of(chain.home)
        assert (height, item) == (HEIGHTS, "undo")
        assert "expected chunks 0.. under height" in detail


def chain_value(chain: BuiltChain, key: bytes) -> bytes:
    for height in range(HEIGHTS, 0, -1):
        for written, value in chain.writes(height):
            if written == key:
                assert value is not None
                return value
    raise AssertionError("key never written")


def test_changed_metadata(chain: BuiltChain) -> None:
    replace_value(chain.home, "meta", b"app_hash", lambda old: flip_byte(old, 0))
    assert failure_of(chain.home)[:2] == (HEIGHTS, "meta")


# -- evidence ---------------------------------------------------------------------------------


def test_forged_evidence_is_named(chain: BuiltChain) -> None:
    def forge(txn: lmdb.Transaction, db: lmdb._Database) -> None:
        cursor = txn.cursor(db=db)
        assert cursor.first()
        key, data = bytes(cursor.key()), bytes(cursor.value())
        evidence = Evidence.decode(data)
        second = evidence.second
        forged = Evidence.of(
            evidence.first,
            SignedStatement(
                second.kind,
                second.height,
                second.view,
                second.block_hash,
                second.validator,
                flip_byte(second.signature, 0),
            ),
        ).encode()
        txn.delete(key, db=db)
        txn.put(key[:8] + hash_bytes(forged), forged, db=db)

    corrupt(chain.home, "evidence", forge)
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (EQUIVOCATION_HEIGHT, "evidence")
    assert detail.endswith(f"commit signature of validator {EQUIVOCATOR} does not verify")


def test_evidence_filed_under_another_hash(chain: BuiltChain) -> None:
    def move(txn: lmdb.Transaction, db: lmdb._Database) -> None:
        cursor = txn.cursor(db=db)
        assert cursor.first()
        key, data = bytes(cursor.key()), bytes(cursor.value())
        txn.put(key[:8] + flip_byte(key[8:], 0), data, db=db)
        txn.delete(key, db=db)

    corrupt(chain.home, "evidence", move)
    height, item, _ = failure_of(chain.home)
    assert (height, item) == (EQUIVOCATION_HEIGHT, "evidence")


# -- unreadable homes -------------------------------------------------------------------------


def test_home_without_a_store_or_genesis(tmp_path: Path) -> None:
    report: AuditReport = audit_home(tmp_path)
    assert report.failure is not None
    assert report.failure.item == "home"
    result = CliRunner().invoke(main, ["audit", "--home", str(tmp_path / "nowhere"), "--json"])
    assert result.exit_code == 2
    assert json.loads(result.output)["failure"]["item"] == "home"


@pytest.mark.slow
def test_long_chain_is_audited_in_one_pass(tmp_path: Path) -> None:
    """600 blocks of 20 transactions; a missing tx index entry near the top is still named."""
    save_genesis(tmp_path / "genesis.json", make_genesis(seed=2))
    (tmp_path / "data").mkdir()
    committer = Committer(tmp_path)
    traffic = DemoTraffic(demo_consortium(2))  # seed 1's generator stops after ~140 txs
    last = b""
    for height in range(1, 601):
        transactions = [tx.encoded for tx in traffic.batch(20, committer.time_of(height))]
        committer.commit(transactions)
        last = transactions[7]
    committer.close()
    report = audit_home(tmp_path)
    assert report.ok, report.failure
    assert (report.heights_checked, report.transactions) == (600, 12_000)
    corrupt(tmp_path, "transactions", lambda txn, db: txn.delete(hash_bytes(last), db=db))
    assert failure_of(tmp_path)[:2] == (600, "tx index")


def test_forged_end_of_block_events(chain: BuiltChain) -> None:
    """Events the apps' end-of-block work never produced, planted in the store, are caught by
    the replay like a changed receipt."""
    planted = end_block_record(
        chain.genesis.chain_id,
        5,
        len(chain.blocks[5].transactions),
        (Event("payments", "fx_cancelled"),),
    ).encode()
    corrupt(chain.home, "block_events", lambda txn, db: txn.put(height_key(5), planted, db=db))
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (5, "receipt")
    assert "end-of-block events differ from the replay" in detail


def test_the_fixture_store_holds_its_last_blocks_tree_records_in_memory_only(
    chain: BuiltChain,
) -> None:
    # The store writes the tree every TREE_FLUSH_BLOCKS blocks: after 12 it is at 8, with
    # the undo records of 8 to 12, and the audit applies 9 to 12 as a restart would.
    assert TREE_FLUSH_BLOCKS == 8 < HEIGHTS
    # The index entries of 9 to 12 were held with the tree records (block 9's repeat of a
    # transaction of block 3 is indexed at its first inclusion).
    with StoreView(chain.home / "data") as view:
        assert view.meta(b"tree_height") == height_key(8)
        heights = {int.from_bytes(key[:8], "big") for key, _ in view.scan("state_undo")}
        indexed = {
            height: [view.transaction_location_bytes(h) for h in block.transaction_hashes()]
            for height, block in chain.blocks.items()
        }
    assert heights == set(range(8, HEIGHTS + 1))
    assert all(None not in indexed[height] for height in range(1, 9))
    repeated_height, repeated_index = REPEAT_FROM
    assert indexed[REPEAT_AT][-1] == encode((repeated_height, repeated_index))
    assert all(location is None for location in indexed[REPEAT_AT][:-1])
    assert all(set(indexed[height]) == {None} for height in range(10, HEIGHTS + 1))
    assert audit_home(chain.home).ok


def test_a_tree_recorded_further_behind_than_any_store_holds_is_the_tree(
    chain: BuiltChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_module, "TREE_LAG_MAX", 3)
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (HEIGHTS, "tree")
    assert "4 blocks behind the committed height: more than the 3" in detail


@pytest.mark.parametrize("recorded", [HEIGHTS, HEIGHTS + 3, 2**64 - 1])
def test_a_recorded_tree_height_not_below_the_committed_one_is_the_tree(
    chain: BuiltChain, recorded: int
) -> None:
    replace_value(chain.home, "meta", b"tree_height", lambda old: recorded.to_bytes(8, "big"))
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (HEIGHTS, "tree")
    assert f"tree is recorded at height {recorded}" in detail


def indexing(
    chain: BuiltChain, heights: Sequence[int]
) -> Callable[[lmdb.Transaction, lmdb._Database], None]:
    """A change of the transaction index (for ``corrupt``) that puts the entries of the blocks
    at ``heights``, keeping any entry it has (as the store writes them)."""

    def put_entries(txn: lmdb.Transaction, db: lmdb._Database) -> None:
        for height in heights:
            for index, tx_hash in enumerate(chain.blocks[height].transaction_hashes()):
                txn.put(tx_hash, encode((height, index)), db=db, overwrite=False)

    return put_entries


def test_held_blocks_indexed_at_their_first_inclusions_pass(chain: BuiltChain) -> None:
    # A store converted from schema 8 indexed every block at once: entries of the blocks after
    # the tree's height are allowed when they name first inclusions, and counted.
    corrupt(chain.home, "transactions", indexing(chain, range(9, HEIGHTS + 1)))
    report = audit_home(chain.home)
    assert report.ok, report.failure
    # One of them at a later position than its first inclusion is still the tx index.
    tx_hash = chain.blocks[11].transaction_hashes()[0]
    corrupt(chain.home, "transactions", lambda txn, db: txn.put(tx_hash, encode((12, 0)), db=db))
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (11, "tx index")
    assert "later position" in detail


def test_a_tree_height_above_blocks_not_indexed_is_the_tx_index(chain: BuiltChain) -> None:
    # Recorded one height later than the tree is: block 9's index entries were held with the
    # tree records, so its transactions are missing from an index said to hold them.
    replace_value(chain.home, "meta", b"tree_height", lambda old: height_key(9))
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (9, "tx index")
    assert "transaction 0" in detail
    assert "is not indexed" in detail


def test_a_tree_height_that_misses_blocks_writes_is_the_tree(chain: BuiltChain) -> None:
    # Recorded one height later than the tree is (with block 9's index entries, as a store
    # whose tree is at 9 holds them): block 9's writes are not applied, so the tree the node
    # would rebuild differs from the replayed one.
    replace_value(chain.home, "meta", b"tree_height", lambda old: height_key(9))
    corrupt(chain.home, "transactions", indexing(chain, [9]))
    corrupt(
        chain.home,
        "state_undo",
        lambda txn, db: txn.delete(undo_chunk_key(height_key(8), 0), db=db),
    )
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (HEIGHTS, "tree")
    assert "stored (the tree of height 9 with the writes since)" in detail


def test_a_held_blocks_undo_record_that_is_wrong_is_the_undo_at_its_height(
    chain: BuiltChain,
) -> None:
    def changed_value(old: bytes) -> bytes:
        items: list[Value] = list(decode_undo_list(old))
        items.extend([b"kv\x00never", None])
        return encode(items)

    replace_value(chain.home, "state_undo", undo_chunk_key(height_key(10), 0), changed_value)
    height, item, detail = failure_of(chain.home)
    assert (height, item) == (10, "undo")
    assert "(nothing: not written)" in detail
