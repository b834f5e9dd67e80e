"""State sync against byzantine snapshot servers, in this process: a real store with a real
snapshot behind an honest ``SnapshotServer``, next to servers that lie (altered chunks, a
forged manifest, a snapshot no certificate backs, a forged certificate). The syncing store
ends with exactly the honest state, every bad chunk refetched from another peer and every liar
named; with liars only the sync fails. The synced home passes the audit, which replays from
the pinned snapshot, and fails it once that snapshot is damaged."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgpack
import pytest
import trio

from apps.merkle import EMPTY_ROOT
from consensus.types import CommitCertificate
from node.audit.audit import audit_home
from node.snapshots import (
    Manifest,
    SnapshotDirectory,
    SnapshotError,
    SnapshotServer,
    StateSyncRequest,
    decode_block_answer,
    decode_offers,
    encode_block_answer,
    encode_offers,
    export_snapshot,
)
from node.statesync import StateSync, StateSyncError, StateSyncLimits
from node.store import Store
from tests.audit_fixtures import Committer, build_home, flip_byte

Handler = Callable[[bytes, bytes], Awaitable[bytes]]
SNAPSHOT_HEIGHT = 11


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node home at height 12 with a snapshot of height 11 cut into many small chunks."""
    home = tmp_path_factory.mktemp("source")
    build_home(home, heights=SNAPSHOT_HEIGHT)
    committer = Committer(home)
    with committer.store.open_state_reader() as reader:
        manifest = export_snapshot(
            reader, home / "snapshots", committer.chain_id, entries_per_chunk=8
        )
    assert len(manifest.chunks) > 4
    committer.commit([])
    committer.close()
    return home


def fresh_home(tmp_path: Path, source: Path) -> tuple[Path, Store, SnapshotDirectory]:
    """A home with the source's genesis and a store at genesis."""
    home = tmp_path / "joining"
    home.mkdir()
    shutil.copy(source / "genesis.json", home / "genesis.json")
    committer = Committer(home)  # writes the genesis state
    committer.close()
    genesis = committer.genesis
    store = Store(home / "data", chain_id=genesis.chain_id, genesis_hash=genesis.hash, sync=False)
    return home, store, SnapshotDirectory(home / "snapshots", genesis.chain_id)


class Liar:
    """A snapshot server that answers like ``honest`` except where ``lie`` changes it."""

    def __init__(self, honest: SnapshotServer, lie: Callable[[StateSyncRequest, bytes], bytes]):
        self.honest = honest
        self.lie = lie
        self.lies_told = 0

    async def handle(self, peer: bytes, payload: bytes) -> bytes:
        request = StateSyncRequest.decode(payload)
        answer = await self.honest.handle(peer, payload)
        changed = self.lie(request, answer)
        if changed != answer:
            self.lies_told += 1
        return changed


def altered_chunks(request: StateSyncRequest, answer: bytes) -> bytes:
    if request.kind != StateSyncRequest.CHUNK:
        return answer
    entries = msgpack.unpackb(answer)
    key, value = entries[0]
    entries[0] = [key, flip_byte(value, 0) if value else b"\x01"]
    packed: bytes = msgpack.packb(entries, use_bin_type=True)
    return packed


def forged_manifest(request: StateSyncRequest, answer: bytes) -> bytes:
    if request.kind != StateSyncRequest.MANIFEST:
        return answer
    manifest = Manifest.decode(answer)
    first = manifest.chunks[0]
    chunks = (dataclasses.replace(first, slot=flip_byte(first.slot, 3)), *manifest.chunks[1:])
    return dataclasses.replace(manifest, chunks=chunks).encode()


def wrong_counts(request: StateSyncRequest, answer: bytes) -> bytes:
    """The right slots with made-up entry counts and sizes (not covered by the root)."""
    if request.kind != StateSyncRequest.MANIFEST:
        return answer
    manifest = Manifest.decode(answer)
    chunks = tuple(
        chunk
        if chunk.entries == 1
        else dataclasses.replace(chunk, entries=10**9, size_bytes=chunk.size_bytes + 7)
        for chunk in manifest.chunks
    )
    return dataclasses.replace(manifest, chunks=chunks).encode()


def uncertified_snapshot(request: StateSyncRequest, answer: bytes) -> bytes:
    """Offers the real snapshot under a made-up app hash."""
    if request.kind != StateSyncRequest.OFFERS:
        return answer
    offers = decode_offers(answer)
    return encode_offers([dataclasses.replace(offer, app_hash=EMPTY_ROOT) for offer in offers])


def forged_certificate(request: StateSyncRequest, answer: bytes) -> bytes:
    if request.kind != StateSyncRequest.BLOCK:
        return answer
    block, raw_certificate = decode_block_answer(answer)
    certificate = CommitCertificate.decode(raw_certificate)
    index, signature = certificate.signatures[0]
    signatures = ((index, flip_byte(signature, 0)), *certificate.signatures[1:])
    return encode_block_answer(
        block, dataclasses.replace(certificate, signatures=signatures).encode()
    )


def servers_over(source: Path) -> tuple[Store, SnapshotServer]:
    committer_store = Committer(source).store
    directory = SnapshotDirectory(source / "snapshots", committer_store.chain_id)
    return committer_store, SnapshotServer(
        directory, committer_store, serve_bytes_per_second=64 * 1024 * 1024
    )


async def sync(
    store: Store, snapshots: SnapshotDirectory, handlers: dict[bytes, Handler]
) -> StateSync:
    async def request(peer: bytes, payload: bytes) -> bytes:
        await trio.lowlevel.checkpoint()
        try:
            return await handlers[peer](b"joining-node", payload)
        except SnapshotError as error:  # what the network turns into an error status
            raise ConnectionError(str(error)) from None

    from tests.audit_fixtures import make_genesis

    genesis = make_genesis()
    syncer = StateSync(
        request=request,
        peers=lambda: list(handlers),
        store=store,
        snapshots=snapshots,
        validators=genesis.validator_set,
        chain_id=genesis.chain_id,
        limits=StateSyncLimits(peers_min=len(handlers), chunk_requests_max=4),
    )
    return syncer


async def test_liars_are_refused_their_chunks_refetched_and_the_honest_state_installed(
    tmp_path: Path, source: Path
) -> None:
    source_store, honest = servers_over(source)
    liars = {
        b"altered-chunks": Liar(honest, altered_chunks),
        b"forged-manifest": Liar(honest, forged_manifest),
        b"uncertified-snapshot": Liar(honest, uncertified_snapshot),
        b"forged-certificate": Liar(honest, forged_certificate),
    }
    handlers: dict[bytes, Handler] = {key: liar.handle for key, liar in liars.items()}
    handlers[b"honest"] = honest.handle
    home, store, snapshots = fresh_home(tmp_path, source)
    syncer = await sync(store, snapshots, handlers)
    result = await syncer.run()

    assert result.height == SNAPSHOT_HEIGHT
    assert store.height == SNAPSHOT_HEIGHT
    assert store.base_height == SNAPSHOT_HEIGHT
    assert store.app_hash == source_store.app_hash_at(SNAPSHOT_HEIGHT) == result.app_hash
    # The altered chunks were detected and fetched again, from the honest peer.
    assert liars[b"altered-chunks"].lies_told >= 1
    assert result.chunks_refetched >= 1
    named = set(result.bad_peers)
    assert b"honest" not in named
    assert {key for key, liar in liars.items() if liar.lies_told} <= named
    # The installed state is the source's state after the snapshot height: the next block
    # applies on top of it to the source's app hash (the chain goes on from here).
    block = source_store.block(SNAPSHOT_HEIGHT + 1)
    assert block is not None
    assert block.header.app_hash == store.app_hash
    store.close()
    source_store.close()

    report = audit_home(home)
    assert report.ok, report.render()
    assert report.height == SNAPSHOT_HEIGHT

    chunk = next((home / "snapshots" / str(SNAPSHOT_HEIGHT)).glob("chunk-*"))
    data = chunk.read_bytes()
    chunk.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    report = audit_home(home)
    assert not report.ok
    assert report.failure is not None
    assert report.failure.item == "snapshot"


async def test_with_only_liars_the_sync_fails_and_names_them(tmp_path: Path, source: Path) -> None:
    source_store, honest = servers_over(source)
    handlers: dict[bytes, Handler] = {
        b"altered-chunks": Liar(honest, altered_chunks).handle,
        b"forged-certificate-and-chunks": Liar(
            honest,
            lambda request, answer: forged_certificate(request, altered_chunks(request, answer)),
        ).handle,
    }
    _, store, snapshots = fresh_home(tmp_path, source)
    syncer = await sync(store, snapshots, handlers)
    with pytest.raises(StateSyncError):
        await syncer.run()
    assert set(syncer.progress.bad) == set(handlers)
    assert store.height == 0
    assert store.state_sync_pending in (None, SNAPSHOT_HEIGHT)
    store.close()
    source_store.close()


async def test_a_manifest_lying_only_where_the_root_does_not_look_blames_no_honest_peer(
    tmp_path: Path, source: Path
) -> None:
    source_store, honest = servers_over(source)
    liar = Liar(honest, wrong_counts)
    handlers: dict[bytes, Handler] = {b"wrong-counts": liar.handle, b"honest": honest.handle}
    _, store, snapshots = fresh_home(tmp_path, source)
    syncer = await sync(store, snapshots, handlers)
    result = await syncer.run()
    assert store.app_hash == source_store.app_hash_at(SNAPSHOT_HEIGHT)
    assert b"honest" not in result.bad_peers
    # The snapshot kept (and served on) holds what was received, not what the liar claimed.
    honest_manifest = SnapshotDirectory(source / "snapshots", store.chain_id).manifest(
        SNAPSHOT_HEIGHT
    )
    kept = snapshots.manifest(SNAPSHOT_HEIGHT)
    assert kept == honest_manifest
    assert result.entries == honest_manifest.entries
    store.close()
    source_store.close()
