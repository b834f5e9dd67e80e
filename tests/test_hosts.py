"""Homes for one node per machine (`suanpan testnet init --hosts`): the host list is checked
and every problem named; each home dials the other hosts and listens where the operator chose;
the homes pass `config check`; and four nodes started from such homes, each on its own loopback
address (127.0.0.2..5 stand in for four machines), commit and agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import main
from node.client.client import ApiError, Client
from node.config import (
    HostPort,
    NodeConfig,
    parse_config,
    parse_host_port,
    parse_peer,
    render_config,
)
from node.genesis import load_genesis
from node.home import load_home
from node.testnet.hosts import (
    SYSTEMD_UNIT_FILE,
    HostsError,
    hosts_layout,
    parse_hosts,
    systemd_unit,
)
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import (
    Testnet,
    agreement_problems,
    apply_layout,
    create_testnet,
    free_ports,
    load_testnet,
    local_layout,
)

# Deadlines for a busy 2-core machine; typical times are far shorter.
STARTUP_S = 120.0
PROGRESS_S = 120.0


def test_host_lists_are_normalised_and_every_problem_is_named() -> None:
    assert parse_hosts(" 10.0.0.1, Bank-B.Example.com ,[fd00::3], fd00::0:4 ") == (
        "10.0.0.1",
        "bank-b.example.com",
        "fd00::3",
        "fd00::4",
    )
    with pytest.raises(HostsError) as caught:
        parse_hosts(
            "10.0.0.1,,0.0.0.0,224.0.0.1,bad_name,10.0.0.256,-dash.example,10.0.0.1,[nope],a b,::"
        )
    problems = "\n".join(caught.value.problems)
    for expected in (
        "entry 2 is empty",
        "'0.0.0.0' means 'any address'",
        "'224.0.0.1' is a multicast or broadcast address",
        "'bad_name' is neither an IP address nor a host name",
        "'10.0.0.256' is not a valid IPv4 address",
        "'-dash.example' is neither",
        "'10.0.0.1' is listed twice (entries 1 and 8); one node per host",
        "'[nope]' is not an IPv6 address",
        "entry 10 'a b' contains spaces",
        "'::' means 'any address'",
    ):
        assert expected in problems, problems
    assert len(caught.value.problems) == 10
    with pytest.raises(HostsError, match="3 host\\(s\\) for 4 validators"):
        parse_hosts("a.example,b.example,c.example", validators=4)
    assert parse_hosts("a.example,b.example", validators=2) == ("a.example", "b.example")


def test_layout_dials_the_other_hosts_and_listens_where_asked() -> None:
    hosts = ("10.0.0.1", "10.0.0.2", "fd00::3")
    layout = hosts_layout(hosts)
    assert layout.kind == "hosts"
    assert layout.hosts == hosts
    assert [node.p2p_listen for node in layout.nodes] == [
        HostPort("0.0.0.0", 26656),
        HostPort("0.0.0.0", 26656),
        HostPort("::", 26656),
    ]
    assert [node.rpc_listen for node in layout.nodes] == [
        HostPort("127.0.0.1", 26657),
        HostPort("127.0.0.1", 26657),
        HostPort("::1", 26657),
    ]
    assert layout.dial[0] == (None, HostPort("10.0.0.2", 26656), HostPort("fd00::3", 26656))
    assert layout.dial[2][0] == HostPort("10.0.0.1", 26656)
    exposed = hosts_layout(
        hosts, p2p_listen="host", api_listen="host", p2p_port=7000, api_port=7001
    )
    assert exposed.nodes[1].p2p_listen == HostPort("10.0.0.2", 7000)
    assert exposed.nodes[1].rpc_listen == HostPort("10.0.0.2", 7001)
    assert exposed.nodes[1].metrics_listen == HostPort("10.0.0.2", 26660)
    assert exposed.api_address(2) == "[fd00::3]:7001"
    with pytest.raises(ValueError, match="must all differ"):
        hosts_layout(hosts, p2p_port=26657)
    with pytest.raises(ValueError, match="p2p listen 'everywhere'"):
        hosts_layout(hosts, p2p_listen="everywhere")


def test_ipv6_addresses_round_trip_through_config_files() -> None:
    assert str(HostPort("fd00::1", 26656)) == "[fd00::1]:26656"
    assert parse_host_port("[fd00::1]:26656") == HostPort("fd00::1", 26656)
    assert parse_host_port("fd00::1:26656") == HostPort("fd00::1", 26656)  # last colon: port
    peer = parse_peer("ab" * 32 + "@[fd00::2]:26656")
    assert peer.address == HostPort("fd00::2", 26656)
    assert str(peer).endswith("@[fd00::2]:26656")
    for bad in ("[fd00::1:26656", "fd00::1]:26656"):
        with pytest.raises(ValueError, match="write an IPv6 host as"):
            parse_host_port(bad)
    with pytest.raises(ValueError, match="is not host:port"):
        parse_host_port("[]:26656")
    client = Client("[::1]:26657")
    assert (client.host, client.port) == ("::1", 26657)


def test_init_hosts_writes_homes_for_separate_machines(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    hosts = "10.0.0.1,10.0.0.2,bank-c.example.com,fd00::4"
    result = CliRunner().invoke(
        main, ["testnet", "init", "--dir", str(directory), "--hosts", hosts, "--no-demo"]
    )
    assert result.exit_code == 0, result.output
    assert "node2 -> bank-c.example.com" in result.output
    assert "allow TCP 26656 between these hosts only" in result.output
    info = load_testnet(directory)
    assert info.layout == "hosts"
    assert info.hosts == ("10.0.0.1", "10.0.0.2", "bank-c.example.com", "fd00::4")
    assert info.api_addresses == ("127.0.0.1:26657",) * 3 + ("[::1]:26657",)
    genesis = load_genesis(directory / "genesis.json")
    for index, home in enumerate(info.homes):
        loaded = load_home(home)  # what `config check` and `start` check
        config = loaded.config
        assert config.p2p.listen_address.port == 26656
        assert config.rpc.listen_address.host in ("127.0.0.1", "::1")
        assert config.p2p.advertised_address == HostPort(info.hosts[index], 26656)
        expected = {
            (validator.node_key, HostPort(host, 26656))
            for j, (validator, host) in enumerate(zip(genesis.validators, info.hosts, strict=True))
            if j != index
        }
        assert {(p.node_key, p.address) for p in config.p2p.persistent_peers} == expected
        # What was written parses back to the same thing.
        assert parse_config(render_config(config).encode())[0] == config
    unit = (directory / SYSTEMD_UNIT_FILE).read_text()
    assert unit == systemd_unit()
    assert "ExecStart=/opt/suanpan/.venv/bin/suanpan start --home /var/lib/suanpan/%i" in unit
    assert "KillSignal=SIGTERM" in unit
    # `testnet up` refuses a directory meant for other machines, naming what to do instead.
    refused = CliRunner().invoke(main, ["testnet", "up", "--dir", str(directory)])
    assert refused.exit_code == 1
    assert "was written for separate hosts" in refused.output


def test_apply_layout_moves_addresses_and_keeps_every_other_setting(tmp_path: Path) -> None:
    base = NodeConfig().with_changes("testnet", fault_hooks=True)
    info = create_testnet(tmp_path / "net", 3, config=base)
    moved_layout = local_layout(3)
    moved = apply_layout(info, moved_layout)
    assert moved.api_addresses == tuple(moved_layout.api_address(i) for i in range(3))
    assert load_testnet(info.directory) == moved
    keys = [v.node_key for v in load_genesis(info.directory / "genesis.json").validators]
    for index, home in enumerate(info.homes):
        config = load_home(home).config
        assert config.testnet.fault_hooks  # kept
        assert config.moniker == f"node{index}"
        assert config.rpc.listen_address == moved_layout.nodes[index].rpc_listen
        assert config.p2p.listen_address == moved_layout.nodes[index].p2p_listen
        assert {(p.node_key, p.address) for p in config.p2p.persistent_peers} == {
            (keys[j], moved_layout.nodes[j].p2p_listen) for j in range(3) if j != index
        }
    with pytest.raises(ValueError, match="is a local testnet of 3 nodes"):
        apply_layout(info, hosts_layout(("a.example", "b.example", "c.example")))
    with pytest.raises(ValueError, match="cannot apply a local layout of 2"):
        apply_layout(info, local_layout(2))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--hosts", "a.example,a.example"], "listed twice"),
        (["--hosts", "a.example,b.example", "-n", "3"], "2 host(s) for 3 validators"),
        (["--hosts", "a.example,", "-n", "1"], "entry 2 is empty"),
        (["--hosts", "a.example,b.example", "--api-port", "26656"], "must all differ"),
        (["--p2p-listen", "host"], "--p2p-listen only apply with --hosts"),
        (["--api-port", "9000", "--metrics-port", "9001"], "--api-port, --metrics-port only"),
    ],
)
def test_init_hosts_refuses_bad_arguments_before_writing(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    directory = tmp_path / "net"
    result = CliRunner().invoke(main, ["testnet", "init", "--dir", str(directory), *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not directory.exists()


def _height(client: Client) -> int:
    try:
        value = client.status()["height"]
    except ApiError:
        return -1
    assert isinstance(value, int)
    return value


def test_nodes_started_from_hosts_homes_connect_commit_and_agree(tmp_path: Path) -> None:
    """Four 'machines' on one: 127.0.0.2..5 are distinct loopback addresses, so each node binds
    its own address exactly as written for a real host (--p2p-listen host --api-listen host)."""
    p2p_port, api_port, metrics_port = free_ports(3)
    directory = tmp_path / "net"
    hosts = [f"127.0.0.{i}" for i in range(2, 6)]
    result = CliRunner().invoke(
        main,
        [
            *("testnet", "init", "--dir", str(directory), "--no-demo"),
            *("--hosts", ",".join(hosts), "--p2p-listen", "host", "--api-listen", "host"),
            *("--p2p-port", str(p2p_port), "--api-port", str(api_port)),
            *("--metrics-port", str(metrics_port)),
        ],
    )
    assert result.exit_code == 0, result.output
    info = load_testnet(directory)
    assert info.api_addresses == tuple(f"{host}:{api_port}" for host in hosts)
    testnet = Testnet(info)
    testnet.start_all()
    clients = [testnet.client(i, timeout_s=60) for i in range(4)]
    try:
        testnet.wait_serving()
        testnet.wait_until(
            "every node connected to the 3 others",
            lambda: all(client.status()["peers"] == 3 for client in clients),
            PROGRESS_S,
        )
        heights = []
        for i, client in enumerate(clients):
            key = info.client_key(i)
            nonce = client.next_nonce(key.public_key)
            data = register_identity_transaction(key, info.chain_id, info.institutions[i], nonce)
            outcome = client.submit(data, wait=True, timeout_ms=60_000)
            assert outcome["status"] == "committed", outcome
            height = outcome["height"]
            assert isinstance(height, int)
            heights.append(height)
        top = max(heights)
        testnet.wait_until(
            f"every node at height {top}",
            lambda: all(_height(client) >= top for client in clients),
            PROGRESS_S,
        )
        assert agreement_problems(clients) == []
        # Each node really listens on its own host's address only.
        for host, home in zip(hosts, info.homes, strict=True):
            events = [json.loads(line) for line in (home / "node.log").read_text().splitlines()]
            listening = [e for e in events if e.get("event") == "network_listening"]
            assert [e["host"] for e in listening] == [host]
    finally:
        for client in clients:
            client.close()
        assert testnet.stop_all() == [0, 0, 0, 0]
