"""``suanpan testnet add-validator``, ``rotate-key`` and ``remove-validator`` on a running
``suanpan testnet up``: the commands decide each change by the banks' votes and edit
``testnet.json``; ``testnet up`` starts the added node and stops the retired one, and at the end
every node it still runs agrees."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from node.cli import main
from node.client.client import ApiError, Client
from node.testnet.testnet import create_testnet, load_testnet

STARTUP_S = 180.0


def _serving(address: str) -> bool:
    with Client(address, timeout_s=5.0) as client:
        try:
            client.health()
        except ApiError:
            return False
    return True


def test_grow_rotate_and_shrink_a_running_testnet_from_the_command_line(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    info = create_testnet(directory, 4, chain_id="reconfigure-cli")
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node",
            "testnet",
            "up",
            "--dir",
            str(directory),
            "--json",
            "--duration",
            "600",
            "--load",
            "10",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + STARTUP_S
        while not all(_serving(address) for address in info.api_addresses):
            assert up.poll() is None, "testnet up exited early"
            assert time.monotonic() < deadline, "the testnet did not start"
            time.sleep(0.3)  # polling the APIs under a deadline
        runner = CliRunner()
        added = runner.invoke(main, ["testnet", "add-validator", "--dir", str(directory)])
        assert added.exit_code == 0, added.output
        assert "node4 (bank4) is validator 4 from height" in added.output
        rotated = runner.invoke(
            main, ["testnet", "rotate-key", "--dir", str(directory), "--node", "1"]
        )
        assert rotated.exit_code == 0, rotated.output
        assert "signs with its new key" in rotated.output
        removed = runner.invoke(
            main, ["testnet", "remove-validator", "--dir", str(directory), "--node", "4"]
        )
        assert removed.exit_code == 0, removed.output
        assert load_testnet(directory).role(4) == "retired"
        refused = runner.invoke(
            main, ["testnet", "remove-validator", "--dir", str(directory), "--node", "4"]
        )
        assert refused.exit_code == 2
        assert "node4 is not a validator" in refused.output
    finally:
        up.send_signal(2)  # Ctrl-C: testnet up stops every node and prints its summary
        output, _ = up.communicate(timeout=120)
    summary = json.loads(output.decode().strip().splitlines()[-1])
    assert summary["agree"] is True, summary
    assert summary["failures"] == [], summary
    assert [node["node"] for node in summary["nodes"]] == [f"node{i}" for i in range(5)]
    assert all(node["exit_code"] == 0 for node in summary["nodes"]), summary
