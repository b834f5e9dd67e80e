"""State sync on a node whose own disk refuses what it received: the sync ends with
``StateSyncWriteError`` naming what was not written and why, blames no peer, and does not
fetch the snapshot again (a node that retried would download a whole snapshot from its peers
on every attempt, and meet the same disk). Once the disk takes writes again, a new sync starts
over from the half-installed store and installs the certified state. The node turns the error
into a stop that names the cause (``statesync_write_failed``).

The disks refuse for real where a test runs the sync alone: the store's file meets the
process's file size limit (``RLIMIT_FSIZE``, in a child process: CPython ignores SIGXFSZ, so
the write fails with EFBIG), and the snapshot directory is a path the kernel cannot make a
directory of. A running node's store has LMDB's commit refused as a full disk refuses it, the
store's own path turning that into its error.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Final

import lmdb
import pytest
import trio

from node import runtime
from node.snapshots import StateSyncRequest
from node.statesync import StateSyncWriteError
from node.store import (
    Store,
    StoreDamagedError,
    StoreDiskFullError,
    StoreWriteError,
    damaged_store_message,
)
from tests.test_peer_fuzz import Joining, joining_node
from tests.test_statesync_peers import (
    SNAPSHOT_HEIGHT,
    Handler,
    fresh_home,
    servers_over,
    source,
    sync,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses Linux's RLIMIT_FSIZE")

REPOSITORY: Final = Path(__file__).resolve().parent.parent

__all__ = ["source"]  # the module-scoped source home, shared with the peers' tests


class CountingServer:
    """The honest server, counting the chunk requests it answers."""

    def __init__(self, handle: Handler) -> None:
        self.handle_honestly = handle
        self.chunk_requests = 0

    async def handle(self, peer: bytes, payload: bytes) -> bytes:
        if StateSyncRequest.decode(payload).kind == StateSyncRequest.CHUNK:
            self.chunk_requests += 1
        return await self.handle_honestly(peer, payload)


def sync_onto_full_disk(source_home: Path, joining_parent: Path) -> dict[str, object]:
    """Runs in a child process: a home at genesis syncs from an honest server over
    ``source_home`` with the file size limit at its store file's size once the sync has
    begun, so the first write that grows the file fails; then with the limit lifted a new sync
    runs on the same store. Reports both."""
    source_store, honest = servers_over(source_home)
    _, store, snapshots = fresh_home(joining_parent, source_home)
    server = CountingServer(honest.handle)
    data_file = store.path / "data.mdb"
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    begin = store.begin_state_sync

    def begin_then_limit(height: int) -> None:
        begin(height)
        resource.setrlimit(resource.RLIMIT_FSIZE, (data_file.stat().st_size, hard))

    store.begin_state_sync = begin_then_limit  # type: ignore[method-assign]
    report: dict[str, object] = {}

    async def first() -> None:
        syncer = await sync(store, snapshots, {b"honest": server.handle})
        try:
            await syncer.run()
        except StateSyncWriteError as error:
            report.update(
                error=str(error),
                what=error.what,
                cause=type(error.error).__name__,
                stopped=str(runtime._state_sync_write_failed(error)),
                bad_peers=[peer.decode() for peer in syncer.progress.bad],
                chunks_done=syncer.progress.chunks_done,
                chunks_total=syncer.progress.chunks_total,
            )

    trio.run(first)
    report["chunk_requests"] = server.chunk_requests
    report["height_when_refused"] = store.height
    report["pending_when_refused"] = store.state_sync_pending
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    store.begin_state_sync = begin  # type: ignore[method-assign]

    async def again() -> None:
        syncer = await sync(store, snapshots, {b"honest": honest.handle})
        result = await syncer.run()
        report["synced_height"] = result.height
        report["synced_app_hash"] = result.app_hash.hex()

    trio.run(again)
    report["store_height"] = store.height
    report["store_app_hash"] = store.app_hash.hex()
    certified = source_store.app_hash_at(SNAPSHOT_HEIGHT)
    assert certified is not None
    report["source_app_hash"] = certified.hex()
    store.close()
    source_store.close()
    return report


_CHILD: Final = (
    "import json, sys; from pathlib import Path; "
    "from tests.test_statesync_local_disk import sync_onto_full_disk; "
    "print(json.dumps(sync_onto_full_disk(Path(sys.argv[1]), Path(sys.argv[2]))))"
)


def test_a_chunk_the_full_disk_refuses_stops_the_sync_and_the_next_one_starts_over(
    tmp_path: Path, source: Path
) -> None:
    """The store's file reaches the file size limit while chunks install: the sync ends with
    ``StateSyncWriteError`` naming the chunk and the limit (the store's ``StoreDiskFullError``
    behind it), the honest peer is not blamed, and no chunk is asked for again (at most the
    requests in flight when the write failed beyond the chunks installed). The node's stop
    names the cause and says the sync starts over. With the limit lifted, a new sync on the
    same store installs the certified state."""
    joining = tmp_path / "joining-parent"
    joining.mkdir()
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(source), str(joining)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.splitlines()[-1])
    assert report["cause"] == StoreDiskFullError.__name__, report
    assert str(report["what"]).startswith("chunk "), report
    assert f"of snapshot {SNAPSHOT_HEIGHT}" in str(report["what"]), report
    assert "file size limit" in str(report["error"]), report
    assert report["bad_peers"] == [], report
    chunks_done = report["chunks_done"]
    assert isinstance(chunks_done, int)
    assert chunks_done < report["chunks_total"], report
    # Every request answered was for a chunk not yet installed, and none was repeated.
    assert report["chunk_requests"] <= chunks_done + 4, report  # chunk_requests_max in flight
    assert report["height_when_refused"] == 0, report
    assert report["pending_when_refused"] == SNAPSHOT_HEIGHT, report
    assert str(report["stopped"]).startswith("state sync could not write chunk "), report
    assert "the node stopped" in str(report["stopped"]), report
    assert "the sync starts over" in str(report["stopped"]), report
    assert report["synced_height"] == SNAPSHOT_HEIGHT, report
    assert report["synced_app_hash"] == report["source_app_hash"], report
    assert report["store_app_hash"] == report["source_app_hash"], report
    assert report["store_height"] == SNAPSHOT_HEIGHT, report


async def test_a_snapshot_directory_that_cannot_be_made_stops_the_sync(
    tmp_path: Path, source: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The received snapshot's directory cannot be created (a file stands where it goes, as
    a damaged or foreign directory would leave one): the sync ends with
    ``StateSyncWriteError`` carrying the system's error, before any chunk is asked for, and
    the node's stop logs ``statesync_write_failed``."""
    source_store, honest = servers_over(source)
    _, store, snapshots = fresh_home(tmp_path, source)
    partial = snapshots.partial_path(SNAPSHOT_HEIGHT)
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"not a directory")
    server = CountingServer(honest.handle)
    syncer = await sync(store, snapshots, {b"honest": server.handle})
    try:
        with pytest.raises(StateSyncWriteError) as raised:
            await syncer.run()
        assert isinstance(raised.value.error, OSError)
        assert not isinstance(raised.value.error, StoreWriteError)
        assert raised.value.what == f"the start of snapshot {SNAPSHOT_HEIGHT}"
        assert server.chunk_requests == 0
        assert syncer.progress.bad == []
        with caplog.at_level(logging.CRITICAL, logger="suanpan.node"):
            stopped = runtime._state_sync_write_failed(raised.value)
        assert isinstance(stopped, runtime.NodeStoppedError)
        assert str(stopped).startswith(
            f"state sync could not write the start of snapshot {SNAPSHOT_HEIGHT}: "
        )
        events = [record for record in caplog.records if record.msg == "statesync_write_failed"]
        assert len(events) == 1
        assert events[0].__dict__["disk_full"] is False
    finally:
        store.close()
        source_store.close()


async def served_until_stopped(joining: Joining) -> None:
    """Serve the joining node truly until a node task raises; then check that the node asks
    nothing more over ten of its retry intervals (a retry would start the download over)."""
    joining.server.honest = True
    joining.server.queued.set()
    with trio.fail_after(60):
        while not joining.errors:  # noqa: ASYNC110
            await trio.sleep(0.05)
    answered = joining.server.answered
    await trio.sleep(10 * runtime._STATE_SYNC_RETRY_SECONDS)
    assert joining.server.answered == answered


async def test_a_joining_node_whose_disk_refuses_a_chunk_stops_instead_of_fetching_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A node joining by state sync from an honest peer, whose store refuses the first chunk
    as a full disk refuses a write: the node stops with ``NodeStoppedError`` naming the chunk
    and the full disk (``statesync_write_failed`` with ``disk_full``), and asks its peer for
    nothing more, where a retry would have started the download over within 50 ms."""
    monkeypatch.setattr(runtime, "_STATE_SYNC_RETRY_SECONDS", 0.05)
    refused: list[int] = []

    def refusing_install(self: Store, items: object, records: object) -> None:
        def commit_refused(txn: lmdb.Transaction) -> None:
            raise lmdb.Error("mdb_txn_commit: No space left on device")

        refused.append(1)
        self._write(commit_refused)

    caplog.set_level(logging.CRITICAL, logger="suanpan.node")
    async with joining_node(tmp_path) as joining:
        monkeypatch.setattr(Store, "install_state_chunk", refusing_install)
        await served_until_stopped(joining)
        stopped = runtime.stopped_error(joining.errors[0])
        assert isinstance(stopped, runtime.NodeStoppedError), joining.errors
        assert str(stopped).startswith("state sync could not write chunk "), stopped
        assert "the disk is full" in str(stopped), stopped
        assert "the sync starts over" in str(stopped), stopped
        assert refused == [1]
        home = joining.node.home
        joining.errors.clear()  # the stop is what this test expects
    store = Store(home.data_dir, chain_id=home.genesis.chain_id, genesis_hash=home.genesis.hash)
    try:
        assert store.height == 0
        assert store.state_sync_pending is not None  # started again, the sync starts over
    finally:
        store.close()
    events = [record for record in caplog.records if record.msg == "statesync_write_failed"]
    assert len(events) == 1
    assert events[0].__dict__["disk_full"] is True


async def test_a_joining_node_whose_store_is_found_damaged_stops_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damage the store reports while a chunk installs stops the joining node with that
    ``StoreDamagedError`` (what ``suanpan start`` turns into ``store_damaged``) instead of a
    retry that would download the snapshot again onto a store it cannot read."""
    monkeypatch.setattr(runtime, "_STATE_SYNC_RETRY_SECONDS", 0.05)

    def damaged_install(self: Store, items: object, records: object) -> None:
        raise StoreDamagedError(damaged_store_message(self.path, "LMDB: MDB_CORRUPTED"))

    async with joining_node(tmp_path) as joining:
        monkeypatch.setattr(Store, "install_state_chunk", damaged_install)
        await served_until_stopped(joining)
        damage = runtime.raised_in(joining.errors[0], StoreDamagedError)
        assert damage is not None, joining.errors
        assert "MDB_CORRUPTED" in str(damage)
        assert runtime.stopped_error(joining.errors[0]) is None
        joining.errors.clear()  # the stop is what this test expects
