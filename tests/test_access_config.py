"""``[rpc] access`` and the other API settings: open access is for loopback, and anything else
is said loudly (``config check``, ``/status`` warnings, the node's start log)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner

from apps.access import ReadRules
from apps.payments import PaymentsApp
from consensus.codec import Value
from consensus.crypto import PrivateKey
from node.access import AccessControl, AccessDenied, Principal
from node.auth import RequestVerifier
from node.cli import main
from node.config import HostPort, NodeConfig, config_warnings, is_loopback, parse_config
from node.home import load_home, write_config
from node.testnet.testnet import create_testnet

ALICE = PrivateKey(bytes(32)).public_key


def with_rpc(**changes: object) -> NodeConfig:
    config = NodeConfig()
    return replace(config, rpc=replace(config.rpc, **changes))  # type: ignore[arg-type]


def test_open_access_off_loopback_and_clear_text_off_loopback_are_warned() -> None:
    assert config_warnings(NodeConfig()) == []
    assert config_warnings(with_rpc(access="open")) == []  # a loopback development chain
    exposed = config_warnings(with_rpc(access="open", listen_address=HostPort("0.0.0.0", 26657)))
    assert any("anyone who reaches it reads every account's data" in text for text in exposed)
    assert any("TLS is off" in text for text in exposed)
    scoped = config_warnings(
        with_rpc(
            listen_address=HostPort("10.0.0.7", 26657),
            tls_certificate_file="cert.pem",
            tls_key_file="key.pem",
        )
    )
    assert scoped == []
    assert is_loopback("127.0.0.2")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("10.0.0.7")


def test_the_access_key_is_checked_and_scoped_is_the_default() -> None:
    config, problems = parse_config(b'[rpc]\naccess = "everyone"\n')
    assert config is None
    assert [problem.key for problem in problems] == ["[rpc] access"]
    config, problems = parse_config(b"")
    assert config is not None
    assert config.rpc.access == "scoped"
    config, problems = parse_config(
        b"[rpc]\nconnections_max = 10\nconnections_per_address_max = 20\n"
    )
    assert [problem.key for problem in problems] == ["[rpc] connections_per_address_max"]


def test_config_check_prints_the_warning_for_an_exposed_open_api(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1)
    home = info.homes[0]
    config = load_home(home).config
    write_config(
        home,
        replace(
            config,
            rpc=replace(config.rpc, access="open", listen_address=HostPort("0.0.0.0", 29999)),
        ),
    )
    result = CliRunner().invoke(main, ["config", "check", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert 'warning: [rpc] access = "open" on 0.0.0.0:29999' in result.output
    assert "access=open (no TLS)" in result.output


def test_open_access_lets_an_unsigned_caller_read_what_scoped_access_refuses() -> None:
    def no_member(app: str, path: str, arguments: Mapping[str, Value]) -> Value:
        return None

    def rules_of(app: str) -> ReadRules | None:
        return PaymentsApp.read_rules

    for mode, allowed in (("open", True), ("scoped", False)):
        access = AccessControl(
            mode=mode,
            verifier=RequestVerifier("c"),
            query=no_member,
            rules_of=rules_of,
            node_keys=frozenset(),
            height=lambda: 1,
        )
        try:
            access.check_query(
                Principal("anonymous"), "payments", "balances", {"account": ALICE}, {"SGD": 5}
            )
            outcome = True
        except AccessDenied:
            outcome = False
        assert outcome is allowed, mode


def test_a_node_key_the_chain_adds_reads_everything_from_that_height_without_a_restart() -> None:
    """The node keys that read everything follow the committed height: a validator governance
    adds at height 5 is a node from then on (and a removed one stops being one)."""

    def no_member(app: str, path: str, arguments: Mapping[str, Value]) -> Value:
        return None

    newcomer = PrivateKey(bytes([7]) * 32).public_key
    height = [4]
    asked: list[int] = []

    def node_keys() -> frozenset[bytes]:
        asked.append(height[0])
        return frozenset({newcomer}) if 5 <= height[0] < 9 else frozenset()

    access = AccessControl(
        mode="scoped",
        verifier=RequestVerifier("c"),
        query=no_member,
        rules_of=lambda app: PaymentsApp.read_rules,
        node_keys=node_keys,
        height=lambda: height[0],
    )
    assert access.principal_of(newcomer).kind == "stranger"
    height[0] = 5
    assert access.principal_of(newcomer).kind == "node"
    assert access.sees_everything(access.principal_of(newcomer))
    assert access.principal_of(newcomer).kind == "node"
    assert asked == [4, 5], "asked once per height, not per request"
    height[0] = 9
    assert access.principal_of(newcomer).kind == "stranger"
