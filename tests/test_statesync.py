"""State sync, backup and restore on a real 4-process testnet.

Three validators commit blocks and take snapshots; the fourth starts with an empty store and
``[statesync] enabled``, installs the latest certified snapshot instead of replaying,
block-syncs the rest, agrees on the app hash, and votes (with one of the three stopped, the
chain only moves on with its votes); it answers proven queries. Then an operator backs up a
running validator, loses its data, restores the backup, audits it and starts it: it rejoins.
Every store passes the audit, the state-synced one replaying from the snapshot it synced from.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from node.audit.audit import audit_home
from node.cli import main
from node.client.client import ApiError, Client
from node.config import NodeConfig
from node.home import load_home, write_config
from node.testnet.testnet import Testnet, TestnetInfo, agreement_problems, create_testnet

STARTUP_S = 120.0
PROGRESS_S = 180.0


def fast_chain(snapshot_interval: int) -> NodeConfig:
    """Empty blocks as fast as consensus goes, a snapshot every ``snapshot_interval``."""
    return (
        NodeConfig()
        .with_changes(
            "consensus", block_interval_ms=10, empty_block_interval_ms=10, view_timeout_ms=500
        )
        .with_changes("statesync", snapshot_interval=snapshot_interval, peers_min=2)
    )


def height(client: Client) -> int:
    try:
        value = client.status()["height"]
    except ApiError:
        return -1
    assert isinstance(value, int)
    return value


def enable_state_sync(info: TestnetInfo, index: int) -> None:
    home = info.homes[index]
    config = load_home(home).config
    write_config(home, config.with_changes("statesync", enabled=True))


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[Testnet, TestnetInfo]]:
    info = create_testnet(
        tmp_path / "net", 4, chain_id="sync-net", demo_seed=7, config=fast_chain(10)
    )
    network = Testnet(info)
    try:
        yield network, info
    finally:
        codes = network.stop_all()
        for home in info.homes:
            log = home / "process.log"
            if log.exists() and any(code not in (0, None) for code in codes):
                print(home.name, log.read_text()[-3000:])


def join_by_state_sync(
    network: Testnet, info: TestnetInfo, target: int, timeout_s: float = PROGRESS_S
) -> dict[str, Any]:
    """Run nodes 0-2 to ``target``, then start node 3 by state sync; return its status."""
    for index in range(3):
        network.start(index)
    clients = [network.client(index, timeout_s=10) for index in range(4)]
    network.wait_until(
        "node0 at the target height", lambda: height(clients[0]) >= target, timeout_s
    )
    enable_state_sync(info, 3)
    started = time.monotonic()
    network.start(3)
    network.wait_until(
        "node3 caught up",
        lambda: height(clients[3]) >= height(clients[0]) - 1 > target,
        PROGRESS_S,
    )
    print(f"node3 joined at height {height(clients[3])} in {time.monotonic() - started:.1f} s")
    status = clients[3].status()
    for client in clients:
        client.close()
    return status


def test_state_sync_join_then_backup_restore_audit_rejoin(
    chain: tuple[Testnet, TestnetInfo],
) -> None:
    network, info = chain
    status = join_by_state_sync(network, info, target=50)
    state_sync = status["state_sync"]
    assert isinstance(state_sync, dict)
    synced_from = state_sync["synced_from"]
    assert isinstance(synced_from, int)
    assert synced_from >= 40
    assert synced_from % 10 == 0
    assert state_sync["base_height"] == synced_from

    clients = [network.client(index, timeout_s=10) for index in range(4)]
    # Not a replay: the blocks below the snapshot were never fetched.
    with pytest.raises(ApiError) as missing:
        clients[3].block(1)
    assert missing.value.status == 404
    assert clients[3].block(synced_from + 1)["height"] == synced_from + 1
    assert agreement_problems(clients) == []

    # With node0 stopped, a quorum (3 of 4) needs node3's votes: the chain moving on proves it
    # votes, and its signature is in the certificates.
    network.stop(0)
    before = height(clients[1])
    network.wait_until("blocks without node0", lambda: height(clients[1]) >= before + 5, PROGRESS_S)
    top = height(clients[1])
    certificate: Any = clients[1].block(top)["certificate"]
    signers = {index for index, _ in certificate["signatures"]}
    assert 3 in signers
    assert agreement_problems(clients[1:]) == []

    # A proven query answered by the state-synced node verifies against genesis.
    alice = info.party("alice")
    result = CliRunner().invoke(
        main,
        [
            *("query", "payments", "balance", "--account", str(alice.key_file)),
            *("--currency", "SGD", "--prove", "--node", info.api_addresses[3]),
            *("--genesis", str(info.homes[3] / "genesis.json")),
            *("--key", str(alice.key_file)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "proof verified against block" in result.output
    assert "of 4)" in result.output

    # Backup while running, data lost, restore, audit, rejoin.
    network.start(0)
    backup = info.homes[0].parent / "node1.backup"
    result = CliRunner().invoke(main, ["backup", "--home", str(info.homes[1]), "--to", str(backup)])
    assert result.exit_code == 0, result.output
    # The height the backup holds, as it reports it: the node's height read afterwards may be
    # blocks later on a slow machine.
    reported = re.search(r"at height (\d+)", result.output)
    assert reported is not None, result.output
    backed_up_at = int(reported.group(1))
    assert backed_up_at <= height(clients[1])
    network.wait_until(
        "blocks after the backup", lambda: height(clients[2]) >= backed_up_at + 3, PROGRESS_S
    )
    network.stop(1)
    shutil.rmtree(info.homes[1] / "data")
    result = CliRunner().invoke(
        main, ["restore", "--from", str(backup), "--home", str(info.homes[1])]
    )
    assert result.exit_code == 0, result.output
    restored = audit_home(info.homes[1])
    assert restored.ok, restored.render()
    assert restored.height == backed_up_at
    # A second restore over a store with blocks needs --force.
    again = CliRunner().invoke(
        main, ["restore", "--from", str(backup), "--home", str(info.homes[1])]
    )
    assert again.exit_code == 1
    assert "--force" in again.output
    network.start(1)
    network.wait_until(
        "node1 rejoined",
        lambda: height(clients[1]) >= height(clients[2]) - 1 > backed_up_at + 3,
        PROGRESS_S,
    )
    assert agreement_problems(clients) == []
    for client in clients:
        client.close()

    network.stop_all()
    for index in (1, 3):
        report = audit_home(info.homes[index])
        assert report.ok, report.render()
    assert audit_home(info.homes[3]).height > synced_from


@pytest.mark.slow
def test_a_fresh_validator_joins_a_chain_of_thousands_of_blocks_by_state_sync(
    tmp_path: Path,
) -> None:
    info = create_testnet(
        tmp_path / "net", 4, chain_id="long-net", demo_seed=9, config=fast_chain(500)
    )
    network = Testnet(info)
    try:
        status = join_by_state_sync(network, info, target=3000, timeout_s=3600)
        synced_from = status["state_sync"]["synced_from"]
        assert synced_from >= 2500
        clients = [network.client(index, timeout_s=10) for index in range(4)]
        with pytest.raises(ApiError):
            clients[3].block(1)
        assert agreement_problems(clients) == []
        log = (info.homes[3] / "node.log").read_text()
        finished = [line for line in log.splitlines() if "statesync_finished" in line]
        print(finished[0])
        # It votes: without node0, only its votes make a quorum.
        network.stop(0)
        before = height(clients[1])
        network.wait_until(
            "blocks without node0", lambda: height(clients[1]) >= before + 5, PROGRESS_S
        )
        assert agreement_problems(clients[1:]) == []
        for client in clients:
            client.close()
    finally:
        network.stop_all()
