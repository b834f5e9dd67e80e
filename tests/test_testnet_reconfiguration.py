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

from apps.proofs import QueryProof, certifying_validators, verify_query_proof
from node.cli import main
from node.client.client import ApiError, Client
from node.home import load_home
from node.keys import load_key_file
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
        # A client trusting only genesis still verifies a proven answer: the node's proof walks
        # the three changes from the genesis set to the set of the certifying block.
        proven = runner.invoke(
            main,
            [
                *("query", "membership", "institution", "--id", "bank0"),
                *("--key", str(directory / "clients" / "governor-bank0.json")),
                *("--node", str(directory), "--prove"),
            ],
        )
        assert proven.exit_code == 0, proven.output
        assert "proof verified against block" in proven.output
        governor = load_key_file(directory / "clients" / "governor-bank0.json")
        request = {"app": "membership", "path": "institution", "arguments": {"id": "bank0"}}
        with Client(info.api_addresses[0], key=governor) as client:
            status, body = client.request_raw(
                "POST", "/query", json.dumps({**request, "prove": True}).encode()
            )
        assert status == 200, body
        encoded = json.loads(body)["proof"]["encoded"]
        proof = QueryProof.decode(bytes.fromhex(encoded))
        genesis = load_home(directory / "node0").genesis
        # The join and the rotation are in force (each command waited for it): two links at
        # least, and the set they lead to is not genesis's.
        assert len(proof.links) >= 2, proof.links
        reached = certifying_validators(proof, genesis.validator_set, genesis.chain_id)
        assert reached != genesis.validator_set
        verify_query_proof(proof, genesis.validator_set, genesis.chain_id)
    finally:
        up.send_signal(2)  # Ctrl-C: testnet up stops every node and prints its summary
        output, _ = up.communicate(timeout=120)
    summary = json.loads(output.decode().strip().splitlines()[-1])
    assert summary["agree"] is True, summary
    assert summary["failures"] == [], summary
    assert [node["node"] for node in summary["nodes"]] == [f"node{i}" for i in range(5)]
    assert all(node["exit_code"] == 0 for node in summary["nodes"]), summary
