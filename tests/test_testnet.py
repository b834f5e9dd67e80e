"""Four real node processes on loopback: commit through the API, agree, survive a restart with
block sync, and shrug off malformed API requests.

One scenario shares the start-up cost; every wait polls with a generous deadline (the machine
is busy), never a fixed sleep.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import main
from node.client.client import ApiError, Client
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import Testnet, agreement_problems, create_testnet

# Deadlines for a 2-core machine shared with other test runs; typical times are far shorter.
STARTUP_S = 120.0
PROGRESS_S = 120.0


@pytest.fixture
def testnet(tmp_path: Path) -> Iterator[Testnet]:
    info = create_testnet(tmp_path / "net", 4, chain_id="test-net")
    network = Testnet(info)
    network.start_all()
    try:
        yield network
    finally:
        codes = network.stop_all()
        for home in info.homes:
            log = home / "process.log"
            if log.exists() and any(code not in (0, None) for code in codes):
                print(home.name, log.read_text()[-3000:])


def height(client: Client) -> int:
    try:
        value = client.status()["height"]
    except ApiError:
        return -1
    assert isinstance(value, int)
    return value


def healthy(client: Client) -> bool:
    try:
        client.health()
    except ApiError:
        return False
    return True


def raw_request(address: str, method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_four_processes_commit_agree_restart_and_survive_bad_requests(testnet: Testnet) -> None:
    info = testnet.info
    clients = [testnet.client(i, timeout_s=60) for i in range(4)]
    testnet.wait_until("all APIs up", lambda: all(healthy(c) for c in clients), STARTUP_S)

    # `testnet up` on the same directory while it runs is refused, naming the running node.
    again = CliRunner().invoke(main, ["testnet", "up", "--dir", str(info.directory)])
    assert again.exit_code == 1, again.output
    assert "node0 of" in again.output
    assert "is already running" in again.output

    # Transactions submitted through different nodes' APIs commit, with receipts.
    committed_heights = []
    for i in range(4):
        key = info.client_key(i)
        nonce = clients[i].next_nonce(key.public_key)
        data = register_identity_transaction(key, info.chain_id, info.institutions[i], nonce)
        result = clients[i].submit(data, wait=True, timeout_ms=60_000)
        assert result["status"] == "committed", result
        receipt = result["receipt"]
        assert isinstance(receipt, dict)
        assert receipt["status"] == "ok", receipt
        assert isinstance(result["height"], int)
        committed_heights.append(result["height"])
    top = max(committed_heights)
    testnet.wait_until(
        f"every node at height {top}", lambda: all(height(c) >= top for c in clients), PROGRESS_S
    )
    assert agreement_problems(clients) == []
    # Each transaction is visible, committed at the same place, on every node.
    reference = clients[0].block(top)
    for client in clients[1:]:
        block = client.block(top)
        assert block["hash"] == reference["hash"]
        assert block["header"] == reference["header"]

    # Malformed API requests get 4xx and leave the node serving.
    address = info.api_addresses[1]
    json_headers = {"Content-Type": "application/json"}
    bad_requests = [
        ("POST", "/tx", b"", json_headers),
        ("POST", "/tx", b"{not json", json_headers),
        ("POST", "/tx", b"[1, 2]", json_headers),
        ("POST", "/tx", b'{"tx": 5}', json_headers),
        ("POST", "/tx", b'{"tx": "zz"}', json_headers),
        ("POST", "/tx", b'{"tx": "00ff"}', json_headers),
        ("POST", "/tx", b'{"tx": "00", "wait": "yes"}', json_headers),
        ("POST", "/tx", b'{"tx": "00", "extra": 1}', json_headers),
        ("POST", "/tx", json.dumps({"tx": "a" * 4_000_000}).encode(), json_headers),
        ("POST", "/tx", b"\xff\xfe\x00", json_headers),
        ("POST", "/query", b'{"app": "nope", "path": "x"}', json_headers),
        ("POST", "/query", b'{"app": "membership", "path": "identity", "arguments": 1.5}', {}),
        ("POST", "/query", b'{"app": "membership", "path": "identity", "arguments": {}}', {}),
        ("GET", "/tx/xyz", b"", {}),
        ("GET", "/block/0", b"", {}),
        ("GET", "/block/99999999", b"", {}),
        ("GET", "/block/hash/12", b"", {}),
        ("GET", "/blocks?from=abc", b"", {}),
        ("GET", "/nowhere", b"", {}),
        ("DELETE", "/status", b"", {}),
        ("POST", "/tx", b"[" * 100_000, json_headers),
    ]
    for method, path, body, headers in bad_requests:
        status = raw_request(address, method, path, body, headers)
        assert 400 <= status < 500, (method, path, body[:40], status)
    assert healthy(clients[1])

    # SIGTERM stops a node cleanly.
    before_stop = height(clients[2])
    assert testnet.stop(2) == 0
    testnet.start(2)
    testnet.wait_until("node2 back", lambda: height(clients[2]) >= before_stop, PROGRESS_S)

    # Node 3 is killed (SIGKILL); the others keep committing; node 3 restarts with everything
    # it had committed and catches up by block sync.
    killed_at = height(clients[3])
    testnet.stop(3, kill=True)
    stopped_at = height(clients[0])
    for i in range(3):
        key = info.client_key(i)
        nonce = clients[i].next_nonce(key.public_key)
        data = register_identity_transaction(key, info.chain_id, info.institutions[i], nonce)
        assert clients[i].submit(data, wait=True, timeout_ms=60_000)["status"] == "committed"
    target = stopped_at + 3
    testnet.wait_until(
        f"three nodes past height {target}",
        lambda: all(height(c) >= target for c in clients[:3]),
        PROGRESS_S,
    )
    testnet.start(3)
    testnet.wait_until("node3 API", lambda: healthy(clients[3]), STARTUP_S)
    assert height(clients[3]) >= killed_at
    testnet.wait_until(
        f"node3 caught up to {target}", lambda: height(clients[3]) >= target, PROGRESS_S
    )
    assert agreement_problems(clients) == []
    assert testnet.died() == []
    for client in clients:
        client.close()
