"""Nodes in their own Linux network namespaces, one veth pair per node pair.

Real traffic decides: datagrams sent between namespaces arrive over a whole link, not over a
cut one, and over a one-way cut only in the other direction. A run interrupted while building
(Ctrl-C) leaves nothing behind; a run killed outright leaves its namespaces to the next run's
sweep. And a chaos run under load keeps committing while one link between two validators is
cut, then heals a one-way (partial) partition, with every node agreeing.

These tests need root and `ip netns`; elsewhere they skip, naming why.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import main
from node.testnet import netns
from node.testnet.chaos import run_chaos
from node.testnet.chaos_scenario import Perturbation, Scenario, random_scenario
from node.testnet.netns import (
    LOCK_DIRECTORY,
    NetnsError,
    Topology,
    netns_unavailable_reason,
    run_ip,
    sweep_stale,
)
from tests.test_chaos import explain

# A subprocess in a namespace gets this long to start, answer or clean up: a busy machine is
# slow, and the kernel's namespace teardown slows with every other run deleting namespaces.
_PROCESS_TIMEOUT_S = 180.0
_PROBE_PORT = 47_000
# The probes need only the standard library: isolated mode without site-packages starts fastest.
_PYTHON = (sys.executable, "-I", "-S", "-c")


@functools.cache
def _unavailable() -> str | None:
    return netns_unavailable_reason()


@pytest.fixture(autouse=True)
def _needs_netns() -> None:
    reason = _unavailable()
    if reason is not None:
        pytest.skip(f"needs Linux network namespaces (root, iproute2): {reason}")


# ------------------------------------------------------------------------- real traffic

_RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
got = set()
while True:
    data, _ = s.recvfrom(64)
    if data == b"stop":
        break
    got.add(data.decode())
print(",".join(sorted(got)), flush=True)
"""

_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for target in sys.argv[2:]:
    label, address = target.split("=")
    for _ in range(3):
        try:
            s.sendto(label.encode(), (address, int(sys.argv[1])))
        except OSError:
            pass  # a cut link: no route (link down) or a blackhole (one way)
"""


def delivered(topology: Topology) -> set[tuple[int, int]]:
    """Every (sender, receiver) pair whose datagrams arrived over their link: a receiver in
    each namespace, then a sender in each namespace addressing every other node on its link;
    the receivers are stopped through the host-side veth, which no cut touches."""
    receivers = []
    for index in range(topology.nodes):
        process = subprocess.Popen(
            [*topology.command_prefix(index), *_PYTHON, _RECEIVER, str(_PROBE_PORT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        receivers.append(process)
    try:
        for sender in range(topology.nodes):
            targets = [
                f"{sender}>{receiver}={topology.peer_host(sender, receiver)}"
                for receiver in range(topology.nodes)
                if receiver != sender
            ]
            prefix = topology.command_prefix(sender)
            subprocess.run(
                [*prefix, *_PYTHON, _SENDER, str(_PROBE_PORT), *targets],
                check=True,
                timeout=_PROCESS_TIMEOUT_S,
            )
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stopper:
            for index in range(topology.nodes):
                stopper.sendto(b"stop", (topology.api_host(index), _PROBE_PORT))
        arrived = set()
        for process in receivers:
            output, _ = process.communicate(timeout=_PROCESS_TIMEOUT_S)
            for label in output.strip().split(","):
                if label:
                    source, target = label.split(">")
                    arrived.add((int(source), int(target)))
        return arrived
    finally:
        for process in receivers:
            if process.poll() is None:
                process.kill()
                process.wait()


def every_pair(nodes: int) -> set[tuple[int, int]]:
    return set(itertools.permutations(range(nodes), 2))


def test_links_carry_traffic_and_cuts_stop_it_both_ways_or_one_way() -> None:
    with Topology(3) as topology:
        namespaces = set(run_ip("netns", "list").split())
        assert set(topology.namespaces) <= namespaces
        assert (LOCK_DIRECTORY / f"{topology.prefix}.lock").exists()
        everything = every_pair(3)
        assert delivered(topology) == everything

        topology.cut(0, 1)
        assert topology.is_cut(1, 0)
        assert delivered(topology) == everything - {(0, 1), (1, 0)}
        with pytest.raises(ValueError, match="already cut"):
            topology.cut(1, 0, one_way=True)
        topology.heal(0, 1)
        assert delivered(topology) == everything

        before = topology.received_packets(2, 1), topology.received_packets(1, 2)
        topology.cut(1, 2, one_way=True)  # node1's packets to node2 are dropped
        assert delivered(topology) == everything - {(1, 2)}
        after = topology.received_packets(2, 1), topology.received_packets(1, 2)
        assert after[0] == before[0]  # nothing from node1 reached node2 on their link
        assert after[1] > before[1]  # node2's datagrams reached node1
        topology.heal(2, 1)
        topology.heal(2, 1)  # healing a whole link does nothing
        assert delivered(topology) == everything
        with pytest.raises(ValueError, match="no link between node1 and node1"):
            topology.cut(1, 1)
        with pytest.raises(NetnsError) as caught:
            run_ip("netns", "add", topology.namespace(0))
        assert f"`ip netns add {topology.namespace(0)}` failed (exit 1)" in str(caught.value)
    assert topology.leftovers() == []
    assert not (LOCK_DIRECTORY / f"{topology.prefix}.lock").exists()
    assert set(run_ip("netns", "list").split()).isdisjoint(topology.namespaces)


# ------------------------------------------------------------------------- clean-up

_BUILDER = """
import sys, time
from node.testnet.netns import Topology
topology = Topology(int(sys.argv[1]))
with topology:
    print(topology.prefix, flush=True)
    time.sleep(600)
"""


def _namespace_names() -> set[str]:
    # `ip netns list` prints "name" or "name (id: N)" per line.
    return {line.split()[0] for line in run_ip("netns", "list").splitlines() if line.strip()}


def _prefix_locked_by(pid: int) -> str | None:
    """The run prefix whose lock file process ``pid`` holds (``/proc/locks`` names the holder's
    pid and the file's inode), or None."""
    held = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[4] == str(pid):
            held.add(int(fields[5].rsplit(":", 1)[1]))
    for lock_file in LOCK_DIRECTORY.glob("spn*.lock"):
        try:
            if lock_file.stat().st_ino in held:
                return lock_file.stem
        except FileNotFoundError:
            continue
    return None


@pytest.fixture
def builder() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes that build a topology; killed if a test leaves one running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=_PROCESS_TIMEOUT_S)  # reaps it and closes its pipes


def _start_builder(builder: list[subprocess.Popen[str]], nodes: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _BUILDER, str(nodes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    builder.append(process)
    return process


def test_ctrl_c_while_building_leaves_nothing_behind(
    builder: list[subprocess.Popen[str]],
) -> None:
    process = _start_builder(builder, 12)  # 66 links: long enough to be caught half-built
    deadline = time.monotonic() + _PROCESS_TIMEOUT_S
    prefix = None
    while prefix is None or f"{prefix}-node1" not in _namespace_names():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the builder built no namespace"
        prefix = prefix or _prefix_locked_by(process.pid)
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=_PROCESS_TIMEOUT_S)
    assert process.returncode != 0
    assert "KeyboardInterrupt" in errors
    assert ", in create" in errors  # it was interrupted while building
    namespaces = run_ip("netns", "list")
    links = run_ip("-o", "link", "show")
    assert prefix not in namespaces
    assert prefix not in links
    assert not (LOCK_DIRECTORY / f"{prefix}.lock").exists()


def test_ctrl_c_that_lands_where_it_would_be_dropped_still_stops_the_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C raised inside code that drops it (as Python drops an exception raised in an
    object's clean-up, such as a finished `ip` command's process object) still stops the
    build at its next step, which removes what was built."""
    calls = [0]

    def ip_then_ctrl_c(*arguments: str, timeout_s: float = 30.0) -> str:
        output = run_ip(*arguments, timeout_s=timeout_s)
        calls[0] += 1
        if calls[0] == 12:  # inside the building of the namespaces
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)
            except KeyboardInterrupt:
                pass  # dropped here
        return output

    monkeypatch.setattr(netns, "run_ip", ip_then_ctrl_c)
    topology = Topology(3)
    try:
        with pytest.raises(KeyboardInterrupt):
            topology.create()
    finally:
        topology.close()  # a no-op when the build removed what it built
    prefix = topology.prefix
    assert prefix  # it was interrupted after claiming its names
    monkeypatch.undo()
    assert not [name for name in _namespace_names() if name.startswith(prefix)]
    assert prefix not in run_ip("-o", "link", "show")
    assert not (LOCK_DIRECTORY / f"{prefix}.lock").exists()


def test_a_killed_run_is_swept_by_the_next(builder: list[subprocess.Popen[str]]) -> None:
    process = _start_builder(builder, 3)
    assert process.stdout is not None
    prefix = process.stdout.readline().strip()
    assert prefix.startswith("spn")
    process.kill()  # SIGKILL: no clean-up ran
    process.wait()
    assert prefix in run_ip("netns", "list")
    assert f"{prefix}h0" in run_ip("-o", "link", "show")
    assert prefix in sweep_stale()
    assert prefix not in run_ip("netns", "list")
    assert prefix not in run_ip("-o", "link", "show")
    assert not (LOCK_DIRECTORY / f"{prefix}.lock").exists()


def test_a_live_run_is_never_swept(builder: list[subprocess.Popen[str]]) -> None:
    process = _start_builder(builder, 2)
    assert process.stdout is not None
    prefix = process.stdout.readline().strip()
    assert prefix not in sweep_stale()
    assert prefix in run_ip("netns", "list")
    process.send_signal(signal.SIGINT)  # unwinds through the `with`: removes everything
    process.wait(timeout=_PROCESS_TIMEOUT_S)
    assert prefix not in run_ip("netns", "list")
    assert prefix not in run_ip("-o", "link", "show")


# ------------------------------------------------------------------------- chaos on links


def test_chain_commits_through_a_cut_link_and_heals_a_one_way_partition(
    tmp_path: Path,
) -> None:
    scenario = Scenario(
        name="links",
        validators=4,
        duration_s=12,
        load_tps=30,
        perturbations=(
            Perturbation(at_s=1, node=0, kind="cut", duration_s=5, peer=1),
            Perturbation(
                at_s=7, node=2, kind="cut", duration_s=4, peer=3, direction="node_to_peer"
            ),
        ),
    )
    lines: list[str] = []
    report = run_chaos(scenario, tmp_path / "net", netns=True, progress=lines.append)
    assert report.ok, explain(report)
    both, one_way = report.faults
    # While node0 and node1 could not reach each other, the others committed new blocks.
    assert both.applied_height is not None
    assert both.target_height is not None
    assert both.target_height > both.applied_height, explain(report)
    # The cuts were real: nothing crossed a cut direction, and the one-way cut let the other
    # direction through.
    assert both.cut_record is not None
    assert both.cut_record.node_to_peer_packets == 0
    assert both.cut_record.peer_to_node_packets == 0
    assert one_way.cut_record is not None
    assert one_way.cut_record.node_to_peer_packets == 0
    assert one_way.cut_record.peer_to_node_packets > 0
    # Both ends of each link caught up once it healed, and everything agrees.
    assert all(fault.recovery_s is not None for fault in report.faults), explain(report)
    assert report.acknowledged > 0
    assert all(node.height >= report.target_height for node in report.nodes)
    assert report.exit_codes == [0, 0, 0, 0]
    assert any("cut node0<->node1" in line for line in lines)
    assert any("cut node2->node3" in line for line in lines)
    # Every namespace and veth of the run is gone.
    assert report.netns is not None
    assert report.netns["left_behind"] == []
    prefix = report.netns["prefix"]
    assert isinstance(prefix, str)
    assert prefix not in run_ip("netns", "list")
    assert prefix not in run_ip("-o", "link", "show")
    # Nodes listened inside their namespaces and dialled their peers on the pair links.
    node0 = (report.directory / "node0" / "config.toml").read_text()
    assert '"0.0.0.0:26656"' in node0
    assert "@10.0.1.2:26656" in node0


@pytest.mark.slow
def test_random_link_faults_leave_no_violation(tmp_path: Path) -> None:
    """Schedules drawn with link faults (cuts both ways and one way, flaps) and node faults."""
    for seed in (21, 22):
        scenario = random_scenario(seed, validators=4, duration_s=60, load_tps=60, links=True)
        assert scenario.needs_netns
        report = run_chaos(scenario, tmp_path / f"net{seed}", netns=True)
        assert report.ok, explain(report)
        assert all(fault.recovery_s is not None for fault in report.faults)


@pytest.mark.slow
def test_cli_testnet_up_netns_stops_on_ctrl_c_and_restarts_on_the_same_chain(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "net"
    command = [sys.executable, "-m", "node", "testnet", "up", "--netns", "--no-demo"]
    command += ["--validators", "4", "--dir", str(directory), "--load", "20"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "nodes in network namespaces" in line:
                break
        prefix = lines[-1].split("network namespaces ")[1].split("-node0")[0]
        time.sleep(8)  # a few seconds of traffic before the Ctrl-C (not a synchronisation)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, "".join(lines) + output
    assert "all nodes agree" in output
    assert prefix not in run_ip("netns", "list")
    assert prefix not in run_ip("-o", "link", "show")
    # Again on the same directory: new namespaces and API addresses, the same chain.
    again = CliRunner().invoke(
        main, ["testnet", "up", "--netns", "--dir", str(directory), "--duration", "3", "--json"]
    )
    assert again.exit_code == 0, again.output
    document = json.loads(again.stdout.strip().splitlines()[-1])
    assert document["agree"] is True
    assert min(node["height"] for node in document["nodes"]) > 0
    refused = CliRunner().invoke(main, ["testnet", "up", "--dir", str(directory)])
    assert refused.exit_code == 1
    assert "was generated with --netns; add --netns" in refused.output
