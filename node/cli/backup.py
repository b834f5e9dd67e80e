"""``suanpan backup`` and ``suanpan restore``: a node's store copied while it runs, and put back.

Theory of operation
-------------------
``create_backup`` copies the home's LMDB environment with ``Environment.copyfd``, then compacts
that copy (``compact=True``) once its pages check (below): LMDB writes the pages of one read
transaction, so the copy is the store at one committed height
even while the node keeps committing, and compaction leaves out free pages. The home's vote
record (its own environment, ``node.store.REPLICA_DIR``) is read after the copy and put into
the copy's ``replica`` database, where a store opened from the archive adopts it. The copy, a
``suanpan-backup.json`` description (chain id, genesis hash, height, app hash, the validator
key of the home it came from) and the home's pinned snapshot (a state-synced store's audit
replays from it) go into one tar file, written under a temporary name and renamed when
complete.

A damaged store (LMDB has no checksums: a disk, a copy or a person may have changed its file) is
refused with a message naming the file, never copied into a backup or put in place: the copy
(and, on restore, the archive's store) has its page structure checked
(``node.audit.lmdbcheck``) before LMDB reads it. Damage inside a record's bytes passes that
check; ``suanpan audit`` finds it.

``restore_backup`` checks the archive (only the names it writes, no path leaves the home), that
it belongs to the home's chain and genesis, and that the restored store opens (a store of an
earlier schema is converted then) and matches its description, before it moves anything into
place. A home whose store already holds blocks is
only replaced with ``force``; the old ``data/`` is then kept as ``data.before-restore-<time>``
and its consensus vote record is carried into the restored store: it is newer than the
backup's, and a validator must never forget a vote it signed. A backup from another
validator's home has its vote record removed.

Restoring a backup rolls the node back to the backup's height; it block-syncs the rest from
its peers when started. If the home's own store (and so its vote record) is lost, the votes it
signed after the backup are lost with it: start the restored validator only once the chain has
committed past the height the node had reached, so it never votes twice at a height.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import click
import lmdb

from node.audit.lmdbcheck import check_lmdb_file
from node.audit.storeview import StoreView, StoreViewError
from node.genesis import Genesis, GenesisError, load_genesis
from node.home import DATA_DIR, GENESIS_FILE, SNAPSHOTS_DIR, VALIDATOR_KEY_FILE
from node.keys import KeyFileError, load_key_file
from node.store import (
    DATABASES,
    SCHEMA_VERSION,
    SCHEMAS_CONVERTED,
    Store,
    StoreDamagedError,
    StoreError,
    damaged_store_message,
    open_error,
    read_committed_height,
    read_vote_record,
)

__all__ = [
    "BackupError",
    "BackupInfo",
    "backup_command",
    "create_backup",
    "restore_backup",
    "restore_command",
]

BACKUP_FORMAT: Final = 1
_DESCRIPTION: Final = "suanpan-backup.json"
_DATA_FILE: Final = "data.mdb"
_MEMBER: Final = re.compile(
    r"(suanpan-backup\.json|data/data\.mdb|snapshots/[0-9]+/(manifest|pinned|chunk-[0-9]+))"
)
# The description is a few hundred bytes; anything bigger is not ours.
_DESCRIPTION_BYTES_MAX: Final = 64 * 1024


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What a backup holds."""

    chain_id: str
    genesis_hash: bytes
    height: int
    app_hash: bytes
    base_height: int
    validator: bytes
    size_bytes: int

    def to_json(self) -> dict[str, object]:
        """The ``suanpan-backup.json`` document."""
        return {
            "format": BACKUP_FORMAT,
            "chain_id": self.chain_id,
            "genesis_hash": self.genesis_hash.hex(),
            "height": self.height,
            "app_hash": self.app_hash.hex(),
            "base_height": self.base_height,
            "validator": self.validator.hex(),
            "store_bytes": self.size_bytes,
            "schema_version": SCHEMA_VERSION,
        }

    @classmethod
    def from_json(cls, document: object) -> BackupInfo:
        """Parse the description; ``BackupError`` when it is not one."""
        try:
            assert isinstance(document, dict)
            if document["format"] != BACKUP_FORMAT:
                raise BackupError(f"backup format {document['format']!r}, not {BACKUP_FORMAT}")
            # A store of an older schema this version converts is converted when opened.
            if document["schema_version"] not in (SCHEMA_VERSION, *SCHEMAS_CONVERTED):
                raise BackupError(
                    f"the backup's store has schema {document['schema_version']!r}; this "
                    f"version of suanpan reads {SCHEMA_VERSION} and converts "
                    f"{', '.join(map(str, SCHEMAS_CONVERTED))}"
                )
            return cls(
                chain_id=str(document["chain_id"]),
                genesis_hash=bytes.fromhex(document["genesis_hash"]),
                height=int(document["height"]),
                app_hash=bytes.fromhex(document["app_hash"]),
                base_height=int(document["base_height"]),
                validator=bytes.fromhex(document["validator"]),
                size_bytes=int(document["store_bytes"]),
            )
        except (AssertionError, KeyError, TypeError, ValueError) as error:
            raise BackupError(f"{_DESCRIPTION} is malformed: {error!r}") from None


def _store_facts(path: Path) -> tuple[str, bytes, int, bytes, int]:
    """(chain id, genesis hash, height, app hash, base height) of the store in ``path``."""
    try:
        with StoreView(path) as view:
            height = view.height
            app_hash = view.meta(b"app_hash")
            if view.chain_id is None or view.genesis_hash is None:
                raise BackupError(f"the store at {path} records no chain")
            if height is None or app_hash is None:
                raise BackupError(f"the store at {path} holds no genesis state")
            return view.chain_id, view.genesis_hash, height, app_hash, view.base_height
    except StoreViewError as error:
        raise BackupError(str(error)) from None


def create_backup(home: Path, destination: Path) -> BackupInfo:
    """Write a consistent, compacted copy of ``home``'s store (and its pinned snapshot) to the
    tar file ``destination``; works while the node runs."""
    data = home / DATA_DIR
    if not (data / _DATA_FILE).is_file():
        raise BackupError(f"{home} has no store ({data / _DATA_FILE} is missing)")
    try:
        validator = load_key_file(home / VALIDATOR_KEY_FILE).public_key
    except KeyFileError as error:
        raise BackupError(f"{home}: {error}") from None
    destination = destination.expanduser()
    if destination.exists():
        raise BackupError(f"{destination} exists; choose a new file")
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".suanpan-backup-", dir=destination.parent) as work:
        copy = Path(work) / DATA_DIR
        copy.mkdir()
        # LMDB's compacting copy walks every database and trusts each page: a damaged one can
        # crash it (SIGSEGV). So first a plain copy (the pages of one read transaction, as
        # they are), whose structure is checked, and the compacted copy made from that.
        whole = Path(work) / "whole"
        whole.mkdir()
        _copy_store(data, whole / _DATA_FILE, data, compact=False)
        _check_structure(data, whole / _DATA_FILE)
        _copy_store(whole, copy / _DATA_FILE, data, compact=True)
        shutil.rmtree(whole)
        _carry_vote_record(data, copy)
        chain_id, genesis_hash, height, app_hash, base = _store_facts(copy)
        info = BackupInfo(
            chain_id,
            genesis_hash,
            height,
            app_hash,
            base,
            validator,
            (copy / _DATA_FILE).stat().st_size,
        )
        description = Path(work) / _DESCRIPTION
        description.write_text(json.dumps(info.to_json(), indent=2) + "\n", "utf-8")
        partial = destination.with_name(destination.name + ".partial")
        with tarfile.open(partial, "w") as archive:
            archive.add(description, _DESCRIPTION)
            archive.add(copy / _DATA_FILE, f"{DATA_DIR}/{_DATA_FILE}")
            pinned = home / SNAPSHOTS_DIR / str(base)
            if base and pinned.is_dir():
                for item in sorted(pinned.iterdir()):
                    archive.add(item, f"{SNAPSHOTS_DIR}/{base}/{item.name}")
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, destination)
    return info


def restore_backup(source: Path, home: Path, *, force: bool = False) -> BackupInfo:
    """Put the backup ``source`` in place as ``home``'s store (see the module docstring)."""
    try:
        genesis = load_genesis(home / GENESIS_FILE)
        validator = load_key_file(home / VALIDATOR_KEY_FILE).public_key
    except (GenesisError, KeyFileError) as error:
        raise BackupError(
            f"{home} is not a node home ({error}); create it first (suanpan init, genesis.json)"
        ) from None
    data = home / DATA_DIR
    existing = data / _DATA_FILE
    if existing.is_file() and not force:
        # Read whatever the store's schema (a store of an earlier one is not refused here).
        try:
            height = read_committed_height(data)
        except StoreDamagedError as error:
            raise BackupError(
                f"{error}. --force replaces it (it is kept as data.before-restore-<time>)"
            ) from None
        except StoreError as error:
            raise BackupError(str(error)) from None
        if height:
            raise BackupError(
                f"{data} holds a store at height {height}; --force replaces it (it is kept "
                "as data.before-restore-<time>, and its vote record is carried over)"
            )
    with tempfile.TemporaryDirectory(prefix=".suanpan-restore-", dir=home) as work:
        staging = Path(work)
        try:
            with tarfile.open(source, "r") as archive:
                info = _extract(archive, staging)
        except (OSError, tarfile.TarError) as error:
            # One line: tarfile lists each compression it tried on a line of its own.
            reason = " ".join(str(error).split())
            raise BackupError(f"{source} is damaged or not a backup: {reason}") from None
        if info.chain_id != genesis.chain_id or info.genesis_hash != genesis.hash:
            raise BackupError(
                f"the backup is of chain {info.chain_id!r} (genesis {info.genesis_hash.hex()}), "
                f"{home} runs {genesis.chain_id!r} (genesis {genesis.hash.hex()})"
            )
        _check_structure(staging / DATA_DIR, staging / DATA_DIR / _DATA_FILE, source)
        vote_record = _vote_record(data) if existing.is_file() else None
        _open_restored(staging / DATA_DIR, genesis, vote_record, info, validator)
        facts = _store_facts(staging / DATA_DIR)
        if facts != (
            info.chain_id,
            info.genesis_hash,
            info.height,
            info.app_hash,
            info.base_height,
        ):
            raise BackupError("the backup's store does not match its description")
        if data.exists():
            kept = home / f"{DATA_DIR}.before-restore-{int(time.time())}"
            os.replace(data, kept)
        (staging / DATA_DIR).chmod(0o700)
        os.replace(staging / DATA_DIR, data)
        snapshots = staging / SNAPSHOTS_DIR
        if snapshots.is_dir():
            (home / SNAPSHOTS_DIR).mkdir(exist_ok=True)
            for snapshot in snapshots.iterdir():
                target = home / SNAPSHOTS_DIR / snapshot.name
                shutil.rmtree(target, ignore_errors=True)
                os.replace(snapshot, target)
    return info


def _extract(archive: tarfile.TarFile, staging: Path) -> BackupInfo:
    description: BackupInfo | None = None
    members = archive.getmembers()
    for member in members:
        if not member.isfile() or not _MEMBER.fullmatch(member.name):
            raise BackupError(f"the backup holds an unexpected entry {member.name!r}")
    for member in members:
        target = staging / member.name
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = archive.extractfile(member)
        assert handle is not None
        with handle, open(target, "wb") as out:
            shutil.copyfileobj(handle, out)
        if member.name == _DESCRIPTION:
            raw = target.read_bytes()
            if len(raw) > _DESCRIPTION_BYTES_MAX:
                raise BackupError(f"{_DESCRIPTION} is too large")
            try:
                description = BackupInfo.from_json(json.loads(raw))
            except ValueError as error:
                raise BackupError(f"{_DESCRIPTION} is not JSON: {error}") from None
    if description is None or not (staging / DATA_DIR / _DATA_FILE).is_file():
        raise BackupError(f"the archive lacks {_DESCRIPTION} or {DATA_DIR}/{_DATA_FILE}")
    return description


def _copy_store(source: Path, file: Path, store: Path, *, compact: bool) -> None:
    """Copy the LMDB environment in ``source`` to ``file`` (synced); errors name ``store``."""
    try:
        env = lmdb.open(str(source), readonly=True, max_dbs=len(DATABASES), readahead=False)
    except lmdb.Error as error:
        raise BackupError(str(open_error(store, error))) from None
    try:
        with open(file, "wb") as handle:
            env.copyfd(handle.fileno(), compact=compact)
            handle.flush()
            os.fsync(handle.fileno())
    except lmdb.Error as error:
        raise BackupError(str(open_error(store, error))) from None
    finally:
        env.close()


def _check_structure(store: Path, file: Path, archive: Path | None = None) -> None:
    """Refuse the LMDB file ``file`` (a copy of the store at ``store``, or the store of the
    backup ``archive``) when its pages are damaged (``node.audit.lmdbcheck``)."""
    problem = check_lmdb_file(file)
    if problem is None:
        return
    if archive is None:
        raise BackupError(damaged_store_message(store, f"its copy: {problem}"))
    raise BackupError(
        f"the backup {archive} holds a damaged store ({DATA_DIR}/{_DATA_FILE}: {problem}); "
        "use another backup"
    )


# Room past a compacted copy's end for the vote record's pages and the tree above them.
_COPY_ROOM_BYTES: Final = 16 * 1024 * 1024


def _carry_vote_record(data: Path, copy: Path) -> None:
    """Put the home's vote record (read after the copy, so as new as the copy or newer) in the
    copy's own ``replica`` database, where a store opened from the archive adopts it."""
    record = _vote_record(data)
    if record is None:
        return
    # A compacted copy has no free page, and LMDB maps a file opened without a map size at
    # the larger of its size and 10 MiB: the record's new pages need room past the file's end.
    room = (copy / _DATA_FILE).stat().st_size + len(record) + _COPY_ROOM_BYTES
    try:
        env = lmdb.open(str(copy), map_size=room, max_dbs=len(DATABASES), readahead=False)
    except lmdb.Error as error:
        raise BackupError(f"cannot open the copy of the store: {error}") from None
    try:
        with env.begin(write=True) as txn:
            txn.put(b"replica", record, db=env.open_db(b"replica", txn=txn))
    except lmdb.Error as error:
        raise BackupError(f"cannot put the vote record in the copy of the store: {error}") from None
    finally:
        env.close()


def _vote_record(data: Path) -> bytes | None:
    try:
        return read_vote_record(data)
    except StoreError as error:
        raise BackupError(str(error)) from None


def _open_restored(
    data: Path, genesis: Genesis, record: bytes | None, info: BackupInfo, validator: bytes
) -> None:
    """Open the restored store once: a store of an earlier schema is converted, and the vote
    record the archive carries moves to its own environment; then keep the home's own (newer)
    vote record, and never restore another validator's."""
    try:
        store = Store(data, chain_id=genesis.chain_id, genesis_hash=genesis.hash)
    except StoreError as error:
        raise BackupError(f"the backup's store does not open: {error}") from None
    with store:
        if record is not None:
            store.save_replica_state(record)
        elif info.validator != validator:
            store.clear_replica_state()


@click.command("backup", short_help="Copy a node's store into a tar file (it may run).")
@click.option("--home", "home", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--to", "destination", required=True, type=click.Path(path_type=Path))
def backup_command(home: Path, destination: Path) -> None:
    """Copy HOME's store (consistent and compacted, while the node runs) into a tar file."""
    started = time.monotonic()
    try:
        info = create_backup(home, destination)
    except BackupError as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"backup of {home} at height {info.height} (app hash {info.app_hash.hex()[:16]}) "
        f"written to {destination}: store {info.size_bytes:,} bytes, "
        f"{time.monotonic() - started:.1f} s"
    )


@click.command("restore", short_help="Put a backup in place as a home's store.")
@click.option("--from", "source", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--home", "home", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--force",
    is_flag=True,
    help="Replace a store that holds blocks (kept as data.before-restore-<time>).",
)
def restore_command(source: Path, home: Path, force: bool) -> None:
    """Put a backup in place as HOME's store; `suanpan audit --home HOME` checks it."""
    try:
        info = restore_backup(source, home, force=force)
    except BackupError as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"restored {home} to height {info.height} (app hash {info.app_hash.hex()[:16]}); "
        "it block-syncs the rest when started. If this node's own store was lost, start it "
        "only after the chain has passed the height it had reached (its later votes are lost)."
    )
