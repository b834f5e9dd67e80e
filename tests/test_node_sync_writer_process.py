"""``[store] sync_writer_process``: a node that syncs a long way behind (holding at least
``_SYNC_WRITER_PROCESS_BLOCKS`` synced blocks to apply) starts a block writer process, hands it
the writes, and takes them back when it has been out of sync for a while; a shorter sync never
starts one. The store it leaves is the one a node writing on its thread leaves."""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from consensus.types import Block, CommitCertificate
from node import runtime
from node.audit.audit import audit_home
from node.home import Home, load_home
from node.jsonvalue import JsonType
from node.store import Store
from node.testnet.testnet import create_testnet
from tests.node_fixtures import (
    NEVER_MS,
    registrations_chain,
    synced,
    with_consensus,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the writer process is Linux's")

DEADLINE_S = 120.0
# More than ``_SYNC_WRITER_PROCESS_BLOCKS`` blocks of one registration each.
BLOCKS = 44

Entries = list[tuple[Block, CommitCertificate]]


def _home(path: Path, *, sync_writer_process: bool = True) -> Home:
    home = with_consensus(load_home(path), block_ms=NEVER_MS)
    config = home.config.with_changes("store", sync_writer_process=sync_writer_process)
    return replace(home, config=config)


async def _sync(
    home: Home, entries: Entries, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, JsonType], list[int], list[int]]:
    """Hand the node of ``home`` ``entries`` as one answer; once applied, wait until any block
    writer process started for the sync has stopped. Returns the node's status then, the pids
    of the processes that took over the writes, and the heights written while one did."""
    attached: list[int] = []
    by_process: list[int] = []
    attach = Store.attach_writer_process
    commit_blocks = Store.commit_blocks

    def attach_recorded(self: Store) -> None:
        attach(self)
        assert self.writer_process_pid is not None
        attached.append(self.writer_process_pid)

    def commit_recorded(self: Store, batch: Entries, **options: bool) -> None:
        commit_blocks(self, batch, **options)  # type: ignore[arg-type]
        if self.writer_process_pid is not None:
            by_process.extend(block.height for block, *_ in batch)

    monkeypatch.setattr(Store, "attach_writer_process", attach_recorded)
    monkeypatch.setattr(Store, "commit_blocks", commit_recorded)
    monkeypatch.setattr(runtime, "_SYNC_WRITER_PROCESS_LINGER_S", 0.3)

    async def after_the_sync(node: runtime.Node) -> dict[str, JsonType]:
        while node.store.writer_process_pid is not None or node.syncing:  # noqa: ASYNC110
            await trio.sleep(0.05)
        return node.status()

    status = await synced(home, entries, after_the_sync, deadline_s=DEADLINE_S)
    monkeypatch.undo()
    return status, attached, by_process


async def test_a_long_sync_writes_through_a_process_started_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="sync-writer", observers=1)
    homes = {name: tmp_path / name for name in ("process", "thread", "short")}
    for path in homes.values():
        shutil.copytree(info.homes[1], path)
    source = with_consensus(load_home(Path(info.homes[0])), block_ms=20)
    with trio.fail_after(DEADLINE_S):
        entries, app_hash = await registrations_chain(
            source, info.client_key(0), BLOCKS, deadline_s=DEADLINE_S, block_every=1
        )
    top = entries[-1][0].height
    assert top >= BLOCKS

    status, attached, by_process = await _sync(_home(homes["process"]), entries, monkeypatch)
    # One process, started as the node began to apply the answer; it wrote the blocks from
    # its start to the top, and stopped once the sync was over (its peak RSS kept).
    assert len(attached) == 1
    assert by_process == list(range(by_process[0], top + 1))
    assert by_process[0] < top - runtime._SYNC_WRITER_PROCESS_BLOCKS
    assert status["block_writer_pid"] is None
    peak = status["block_writer_rss_peak_bytes"]
    assert isinstance(peak, int)
    assert peak > 0
    assert status["app_hash"] == app_hash.hex()

    status, attached, by_process = await _sync(
        _home(homes["thread"], sync_writer_process=False), entries, monkeypatch
    )
    assert attached == by_process == []
    assert status["block_writer_rss_peak_bytes"] is None
    assert status["app_hash"] == app_hash.hex()

    # A sync shorter than the threshold starts no process.
    short = entries[: runtime._SYNC_WRITER_PROCESS_BLOCKS - 2]
    _, attached, by_process = await _sync(_home(homes["short"]), short, monkeypatch)
    assert attached == by_process == []

    def stored(path: Path) -> list[bytes | None]:
        home = load_home(path)
        genesis = home.genesis
        with Store(home.data_dir, chain_id=genesis.chain_id, genesis_hash=genesis.hash) as store:
            return [store.app_hash_at(height) for height in range(1, top + 1)]

    assert stored(homes["process"]) == stored(homes["thread"])
    report = audit_home(homes["process"])
    assert report.ok, report.failure
