"""``suanpan backup`` / ``restore`` on real stores: a restored home audits clean; a home that
holds blocks is only replaced with ``--force`` (its data kept aside, its vote record carried
over); another validator's vote record is dropped; archives of another chain, with foreign
entries or damaged are refused. (The live backup -> restore -> rejoin on a running testnet is
in ``test_statesync.py``.)"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import lmdb
import pytest
from click.testing import CliRunner

from node.audit.audit import audit_home
from node.audit.storeview import StoreView
from node.cli import main
from node.cli.backup import BackupError, create_backup, restore_backup
from node.keys import save_key_file
from node.store import DATABASES, SCHEMA_VERSION, read_vote_record
from tests.audit_fixtures import VALIDATOR_KEYS, build_home, extend_home, make_genesis

HEIGHTS = 6


def vote_record(home: Path) -> bytes | None:
    return read_vote_record(home / "data")


def set_vote_record(home: Path, record: bytes) -> None:
    from node.store import Store

    genesis = make_genesis()
    with Store(home / "data", chain_id=genesis.chain_id, genesis_hash=genesis.hash) as store:
        store.save_replica_state(record)


def validator_home(path: Path, key_index: int, *, heights: int = HEIGHTS) -> Path:
    path.mkdir()
    build_home(path, heights=heights)
    save_key_file(path / "validator_key.json", VALIDATOR_KEYS[key_index])
    return path


def empty_home(path: Path, source: Path, key_index: int) -> Path:
    path.mkdir()
    shutil.copy(source / "genesis.json", path / "genesis.json")
    save_key_file(path / "validator_key.json", VALIDATOR_KEYS[key_index])
    return path


def test_backup_then_restore_into_an_empty_home_audits_clean(tmp_path: Path) -> None:
    source = validator_home(tmp_path / "source", 0)
    set_vote_record(source, b"votes of validator 0")
    archive = tmp_path / "backup.tar"
    result = CliRunner().invoke(main, ["backup", "--home", str(source), "--to", str(archive)])
    assert result.exit_code == 0, result.output
    assert f"height {HEIGHTS}" in result.output

    same = empty_home(tmp_path / "same", source, 0)
    result = CliRunner().invoke(main, ["restore", "--from", str(archive), "--home", str(same)])
    assert result.exit_code == 0, result.output
    report = audit_home(same)
    assert report.ok, report.render()
    assert report.height == HEIGHTS
    assert vote_record(same) == b"votes of validator 0"

    # Another validator's home never gets validator 0's votes.
    other = empty_home(tmp_path / "other", source, 1)
    restore_backup(archive, other)
    assert audit_home(other).ok
    assert vote_record(other) is None


def test_a_store_with_blocks_is_replaced_only_with_force_keeping_its_votes(tmp_path: Path) -> None:
    home = validator_home(tmp_path / "home", 0)
    archive = tmp_path / "backup.tar"
    create_backup(home, archive)
    extend_home(home, 3)
    set_vote_record(home, b"newer votes")

    with pytest.raises(BackupError, match="--force"):
        restore_backup(archive, home)
    info = restore_backup(archive, home, force=True)
    assert info.height == HEIGHTS
    assert audit_home(home).height == HEIGHTS
    assert vote_record(home) == b"newer votes"
    kept = list(home.glob("data.before-restore-*"))
    assert len(kept) == 1
    with StoreView(kept[0]) as view:
        assert view.height == HEIGHTS + 3


def test_an_archive_of_the_previous_schema_restores_with_its_vote_record(tmp_path: Path) -> None:
    # Schema 7 kept the vote record in the store itself, and so did its backups: restoring one
    # converts the store and moves the record to its own environment.
    source = validator_home(tmp_path / "source", 0)
    set_vote_record(source, b"votes of the previous schema")
    archive = tmp_path / "backup.tar"
    create_backup(source, archive)
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    env = lmdb.open(str(unpacked / "data"), max_dbs=len(DATABASES))
    with env.begin(write=True) as txn:
        assert txn.get(b"replica", db=env.open_db(b"replica", txn=txn)) == (
            b"votes of the previous schema"
        )
        txn.put(b"schema_version", b"7", db=env.open_db(b"meta", txn=txn))
    env.close()
    description = unpacked / "suanpan-backup.json"
    document = json.loads(description.read_text())
    description.write_text(json.dumps({**document, "schema_version": 7}))
    old = tmp_path / "old.tar"
    with tarfile.open(old, "w") as tar:
        tar.add(description, "suanpan-backup.json")
        tar.add(unpacked / "data" / "data.mdb", "data/data.mdb")

    # A home whose own store is of the previous schema is refused for holding blocks (not for
    # its schema), and with --force keeps its vote record.
    upgraded = validator_home(tmp_path / "upgraded", 0)
    set_vote_record(upgraded, b"the home's own votes")
    shutil.rmtree(upgraded / "data" / "replica")
    env = lmdb.open(str(upgraded / "data"), max_dbs=len(DATABASES))
    with env.begin(write=True) as txn:
        txn.put(b"replica", b"the home's own votes", db=env.open_db(b"replica", txn=txn))
        txn.put(b"schema_version", b"7", db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(BackupError, match=f"height {HEIGHTS}; --force replaces it"):
        restore_backup(old, upgraded)
    restore_backup(old, upgraded, force=True)
    assert vote_record(upgraded) == b"the home's own votes"

    same = empty_home(tmp_path / "same", source, 0)
    assert restore_backup(old, same).height == HEIGHTS
    assert audit_home(same).ok
    assert vote_record(same) == b"votes of the previous schema"
    with StoreView(same / "data") as view:
        assert view.meta(b"schema_version") == str(SCHEMA_VERSION).encode()
        assert view.get("replica", b"replica") is None
    other = empty_home(tmp_path / "other", source, 1)
    restore_backup(old, other)
    assert vote_record(other) is None


def test_foreign_damaged_or_other_chain_archives_are_refused(tmp_path: Path) -> None:
    source = validator_home(tmp_path / "source", 0)
    archive = tmp_path / "backup.tar"
    create_backup(source, archive)
    with pytest.raises(BackupError, match="exists"):
        create_backup(source, archive)

    evil = tmp_path / "evil.tar"
    shutil.copy(archive, evil)
    with tarfile.open(evil, "a") as tar:
        payload = b"owned"
        member = tarfile.TarInfo("../escape")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    target = empty_home(tmp_path / "target", source, 0)
    with pytest.raises(BackupError, match="unexpected entry"):
        restore_backup(evil, target)
    assert not (tmp_path / "escape").exists()

    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(archive.read_bytes()[:2048])
    with pytest.raises(BackupError):
        restore_backup(damaged, target)

    other_chain = tmp_path / "other-chain"
    other_chain.mkdir()
    genesis = make_genesis(seed=2)
    from node.genesis import save_genesis

    save_genesis(other_chain / "genesis.json", genesis)
    save_key_file(other_chain / "validator_key.json", VALIDATOR_KEYS[0])
    with pytest.raises(BackupError, match="chain"):
        restore_backup(archive, other_chain)
    assert not (target / "data").exists()


def test_a_backup_of_a_store_this_version_converts_is_accepted_and_an_older_one_refused() -> None:
    from node.cli.backup import BACKUP_FORMAT, BackupInfo
    from node.store import SCHEMA_VERSION, SCHEMAS_CONVERTED

    document: dict[str, object] = {
        "format": BACKUP_FORMAT,
        "chain_id": "chain",
        "genesis_hash": "00" * 32,
        "height": 3,
        "app_hash": "11" * 32,
        "base_height": 0,
        "validator": "22" * 32,
        "store_bytes": 4096,
    }
    for version in (SCHEMA_VERSION, *SCHEMAS_CONVERTED):
        assert BackupInfo.from_json({**document, "schema_version": version}).height == 3
    with pytest.raises(BackupError, match="has schema 3; this version of suanpan reads"):
        BackupInfo.from_json({**document, "schema_version": 3})


def test_a_store_larger_than_lmdbs_default_map_is_backed_up_with_its_vote_record(
    tmp_path: Path,
) -> None:
    """A compacted copy has no free page; LMDB maps a file opened without a map size at the
    larger of its size and 10 MiB, so putting the vote record into the copy of a store past
    10 MiB once failed with MDB_MAP_FULL (a traceback). A database of filler stands in for a
    grown ledger."""
    source = validator_home(tmp_path / "source", 0)
    set_vote_record(source, b"votes of validator 0")
    env = lmdb.open(str(source / "data"), max_dbs=len(DATABASES) + 1, map_size=1 << 30)
    with env.begin(write=True) as txn:
        filler = env.open_db(b"filler", txn=txn)
        for number in range(12 * 256):  # 12 MiB in 4 KiB values
            txn.put(number.to_bytes(4, "big"), bytes(4096), db=filler)
    env.close()
    assert (source / "data" / "data.mdb").stat().st_size > 12 * 1024 * 1024
    archive = tmp_path / "backup.tar"
    result = CliRunner().invoke(main, ["backup", "--home", str(source), "--to", str(archive)])
    assert result.exit_code == 0, result.output
    same = empty_home(tmp_path / "same", source, 0)
    restore_backup(archive, same)
    assert vote_record(same) == b"votes of validator 0"
