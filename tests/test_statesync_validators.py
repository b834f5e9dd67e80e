"""State sync across validator-set changes.

A joining node trusts only genesis: the sets that certify later heights it learns by walking the
changes a peer names, each confirmed by the certified header before it. In this process, against
snapshot servers: a peer inventing a change, or claiming height 1 had another set, is refused
and named while the honest state installs from an honest peer. On a real testnet: validators 1
and 2 rotate their keys while running (each picks its next key up from its home), then a fifth
bank's validator, added by governance, joins by state sync from a snapshot taken after the
rotations (certified by keys genesis never knew) and votes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from consensus.types import Validator, ValidatorSet
from node.client.client import Client
from node.home import load_home, write_config
from node.snapshots import (
    StateSyncRequest,
    decode_validator_changes,
    encode_validator_changes,
    export_snapshot,
)
from node.statesync import StateSyncError
from node.testnet import reconfig
from node.testnet.testnet import Testnet, agreement_problems, create_testnet
from tests.audit_fixtures import NODE_KEYS, Committer, build_home, make_genesis
from tests.test_statesync import fast_chain, height
from tests.test_statesync_peers import (
    SNAPSHOT_HEIGHT,
    Handler,
    Liar,
    fresh_home,
    servers_over,
    sync,
)

PROGRESS_S = 180.0


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node home at height 12 with a snapshot of height 11 (as in the peers' tests)."""
    home = tmp_path_factory.mktemp("source")
    build_home(home, heights=SNAPSHOT_HEIGHT)
    committer = Committer(home)
    with committer.store.open_state_reader() as reader:
        export_snapshot(reader, home / "snapshots", committer.chain_id, entries_per_chunk=8)
    committer.commit([])
    committer.close()
    return home


def stranger_set() -> ValidatorSet:
    """Four keys that never validated this chain."""
    return ValidatorSet(
        tuple(Validator(f"x{i}", NODE_KEYS[i].public_key, bytes([i + 1]) * 32) for i in range(4))
    )


def invented_change(request: StateSyncRequest, answer: bytes) -> bytes:
    """Claims the strangers took over at height 5."""
    if request.kind != StateSyncRequest.VALIDATORS:
        return answer
    return encode_validator_changes([*decode_validator_changes(answer), (5, stranger_set())])


def other_genesis(request: StateSyncRequest, answer: bytes) -> bytes:
    """Claims the strangers were the set of height 1."""
    if request.kind != StateSyncRequest.VALIDATORS:
        return answer
    return encode_validator_changes([(1, stranger_set())])


async def test_a_peer_inventing_validator_changes_is_refused(tmp_path: Path, source: Path) -> None:
    source_store, honest = servers_over(source)
    assert decode_validator_changes(
        await honest.handle(b"x", StateSyncRequest(StateSyncRequest.VALIDATORS, 99).encode())
    ) == [(1, make_genesis().validator_set)]
    liars = {b"invented": Liar(honest, invented_change), b"other": Liar(honest, other_genesis)}
    handlers: dict[bytes, Handler] = {key: liar.handle for key, liar in liars.items()}
    handlers[b"z-honest"] = honest.handle  # asked last: the liars are asked first
    _, store, snapshots = fresh_home(tmp_path, source)
    syncer = await sync(store, snapshots, handlers)
    result = await syncer.run()
    assert store.app_hash == source_store.app_hash_at(SNAPSHOT_HEIGHT)
    named = set(result.bad_peers)
    assert b"z-honest" not in named
    assert {b"invented", b"other"} <= named, result.bad_peers
    store.close()
    source_store.close()


async def test_with_only_change_inventors_the_sync_fails(
    tmp_path: Path, source: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source_store, honest = servers_over(source)
    handlers: dict[bytes, Handler] = {b"invented": Liar(honest, invented_change).handle}
    _, store, snapshots = fresh_home(tmp_path, source)
    syncer = await sync(store, snapshots, handlers)
    with pytest.raises(StateSyncError, match="no peer could give certified blocks"):
        await syncer.run()
    assert syncer.progress.bad == [b"invented"]
    reasons = [getattr(r, "reason", "") for r in caplog.records]
    assert any("does not name the validator set" in reason for reason in reasons), reasons
    assert store.height == 0
    store.close()
    source_store.close()


def test_a_validator_added_after_a_key_rotation_joins_by_state_sync(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 4, chain_id="sync-reconf", config=fast_chain(10))
    network = Testnet(info)
    try:
        network.start_all()
        network.wait_serving()
        governance = reconfig.Governance(info)
        # Two of four keys rotate: every later certificate (3 signatures) carries a new key,
        # so none verifies against the genesis set alone. Each node picks its next key up
        # from its home at its next block.
        for node in (1, 2):
            key = reconfig.prepare_rotation(info, node)
            rotation = reconfig.rotate_validator_key(info, node, governance, key)
        with network.client(0, timeout_s=30.0) as client:
            # A snapshot is taken every 10 heights: wait for one certified by the rotated set.
            reconfig.wait_for_height(client, rotation.effective_height + 12, timeout_s=PROGRESS_S)
        info, index = reconfig.add_node(info)
        home = info.homes[index]
        write_config(home, load_home(home).config.with_changes("statesync", enabled=True))
        info, added = reconfig.add_validator(info, index, governance)
        network.adopt(info)
        network.start(index)
        with Client(info.api_addresses[index], timeout_s=30.0) as joined:
            deadline = time.monotonic() + PROGRESS_S
            while True:
                status = joined.status() if height(joined) >= 0 else {}
                at = status.get("height")
                if (
                    isinstance(at, int)
                    and at >= added.effective_height + 3
                    and status.get("role") == "validator"
                ):
                    break
                assert time.monotonic() < deadline, f"node{index} did not join: {status}"
                time.sleep(0.3)  # polling the node's status under a deadline
            synced = status["state_sync"]
            assert isinstance(synced, dict)
            synced_from = synced["synced_from"]
            assert isinstance(synced_from, int)
            assert synced_from > rotation.effective_height, synced
        clients = [network.client(i, timeout_s=30.0) for i in range(len(info.homes))]
        try:
            assert agreement_problems(clients) == []
        finally:
            for client in clients:
                client.close()
    finally:
        network.stop_all()
