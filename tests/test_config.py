"""Operator files: init, the genesis flow, and `config check` naming every problem at once."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import main
from node.config import (
    ConfigError,
    HostPort,
    NodeConfig,
    parse_config,
    render_config,
    with_settings,
)
from node.genesis import parse_genesis
from node.home import check_home
from node.testnet.testnet import free_ports


def make_network(tmp_path: Path, count: int = 4) -> list[Path]:
    runner = CliRunner()
    genesis = tmp_path / "genesis.json"
    result = runner.invoke(main, ["genesis", "init", str(genesis), "--chain-id", "bank-net"])
    assert result.exit_code == 0, result.output
    homes = []
    for i in range(count):
        home = tmp_path / f"node{i}"
        result = runner.invoke(main, ["init", "--home", str(home), "--moniker", f"bank{i}"])
        assert result.exit_code == 0, result.output
        result = runner.invoke(
            main, ["genesis", "add-validator", str(genesis), "--home", str(home), "--name", f"b{i}"]
        )
        assert result.exit_code == 0, result.output
        homes.append(home)
    seed_membership(tmp_path, genesis)
    for home in homes:
        (home / "genesis.json").write_bytes(genesis.read_bytes())
    return homes


def seed_membership(tmp_path: Path, genesis: Path) -> None:
    """One founding bank and its client key, through the CLI, as docs/operators.md does it."""
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "genesis",
            "add-institution",
            str(genesis),
            "--id",
            "bank-a",
            "--name",
            "Bank A",
            "--kind",
            "bank",
            "--jurisdiction",
            "SG",
        ],
    )
    assert result.exit_code == 0, result.output
    client = tmp_path / "bank-a-client.json"
    assert runner.invoke(main, ["keys", "new", str(client)]).exit_code == 0
    result = runner.invoke(
        main,
        [
            "genesis",
            "add-identity",
            str(genesis),
            "--institution",
            "bank-a",
            "--roles",
            "bank",
            "--key",
            str(client),
        ],
    )
    assert result.exit_code == 0, result.output


def test_genesis_flow_produces_a_valid_home_with_a_stable_hash(tmp_path: Path) -> None:
    homes = make_network(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["genesis", "validate", str(tmp_path / "genesis.json")])
    assert result.exit_code == 0, result.output
    assert "validators   4 (quorum 3)" in result.output
    result = runner.invoke(main, ["config", "check", "--home", str(homes[2])])
    assert result.exit_code == 0, result.output
    assert "validator 2 (b2)" in result.output
    # The genesis hash ignores formatting: re-indenting the file keeps the hash.
    raw = (tmp_path / "genesis.json").read_bytes()
    first, _ = parse_genesis(raw)
    second, _ = parse_genesis(json.dumps(json.loads(raw)).encode())
    assert first is not None
    assert second is not None
    assert first.hash == second.hash
    changed = json.loads(raw)
    changed["chain_id"] = "other-net"
    third, _ = parse_genesis(json.dumps(changed).encode())
    assert third is not None
    assert third.hash != first.hash


def test_default_config_round_trips_and_binds_loopback() -> None:
    config, problems = parse_config(render_config(NodeConfig(moniker="x")).encode())
    assert problems == []
    assert config == NodeConfig(moniker="x")
    assert config.p2p.listen_address.host == "127.0.0.1"
    assert config.rpc.listen_address.host == "127.0.0.1"


def test_config_check_names_every_problem_with_file_key_and_fix(tmp_path: Path) -> None:
    home = make_network(tmp_path, 1)[0]
    (home / "config.toml").write_text(
        'moniker = "has space"\n'
        'log_level = "loud"\n'
        "colour = 1\n"
        "[p2p]\n"
        'listen_address = "nowhere"\n'
        'persistent_peers = ["zz@127.0.0.1:1"]\n'
        "[rpc]\n"
        'listen_address = "127.0.0.1:99999"\n'
        "[mempool]\n"
        "transactions_max = 0\n"
        "[gossip]\n"
        "x = 1\n"
    )
    genesis = json.loads((home / "genesis.json").read_text())
    genesis["validators"][0]["public_key"] = "abcd"
    genesis["surprise"] = True
    (home / "genesis.json").write_text(json.dumps(genesis))
    (home / "node_key.json").chmod(0o644)

    result = CliRunner().invoke(main, ["config", "check", "--home", str(home)])
    assert result.exit_code == 1
    _, problems = check_home(home)
    found = {(Path(problem.file).name, problem.key) for problem in problems}
    assert found == {
        ("config.toml", "moniker"),
        ("config.toml", "log_level"),
        ("config.toml", "colour"),
        ("config.toml", "[gossip]"),
        ("config.toml", "[p2p] listen_address"),
        ("config.toml", "[p2p] persistent_peers"),
        ("config.toml", "[rpc] listen_address"),
        ("config.toml", "[mempool] transactions_max"),
        ("genesis.json", "surprise"),
        ("genesis.json", "validators[0].public_key"),
        ("node_key.json", "(file)"),
    }
    assert all(problem.fix for problem in problems)
    assert "chmod 600" in result.output
    assert "unknown key" in result.output
    assert f"{len(problems)} problem(s)" in result.output


def test_cross_file_checks_catch_limits_above_genesis_not_peers_the_chain_may_add(
    tmp_path: Path,
) -> None:
    """A persistent peer unknown to genesis may be a validator governance added (or a node key
    it rotated): only the chain knows, so the check leaves it to the handshake."""
    home = make_network(tmp_path, 2)[0]
    config, _ = parse_config((home / "config.toml").read_bytes())
    assert config is not None
    text = render_config(
        config.with_changes("block", proposal_transactions_max=99_999).with_changes(
            "p2p", persistent_peers=()
        )
    ).replace("persistent_peers = []", f'persistent_peers = ["{"ab" * 32}@127.0.0.1:5"]')
    (home / "config.toml").write_text(text)
    _, problems = check_home(home)
    assert {problem.key for problem in problems} == {"[block] proposal_transactions_max"}


def test_config_check_validates_the_statesync_section(tmp_path: Path) -> None:
    home = make_network(tmp_path, 2)[0]
    config, _ = parse_config((home / "config.toml").read_bytes())
    assert config is not None
    text = render_config(config.with_changes("statesync", enabled=True, peers_min=3))
    text = text.replace("snapshot_retention = 2", "snapshot_retention = 0")
    text = text.replace("serve_bytes_per_second = 33554432", 'serve_bytes_per_second = "fast"')
    (home / "config.toml").write_text(text + "")
    result = CliRunner().invoke(main, ["config", "check", "--home", str(home)])
    assert result.exit_code == 1
    _, problems = check_home(home)
    assert {problem.key for problem in problems} == {
        "[statesync] snapshot_retention",
        "[statesync] serve_bytes_per_second",
    }
    # With the values fixed, the cross-check: two validators leave one peer to sync from.
    (home / "config.toml").write_text(
        render_config(config.with_changes("statesync", enabled=True, peers_min=3))
    )
    _, problems = check_home(home)
    assert [(problem.key, problem.fix) for problem in problems] == [
        ("[statesync] peers_min", "set it to at most 1")
    ]
    (home / "config.toml").write_text(
        render_config(config.with_changes("statesync", enabled=True, peers_min=1))
    )
    assert check_home(home)[1] == []


def test_a_genesis_the_apps_reject_fails_validate_and_config_check_not_start(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    genesis = tmp_path / "genesis.json"
    runner.invoke(main, ["genesis", "init", str(genesis), "--chain-id", "bank-net"])
    home = tmp_path / "bank-a"
    runner.invoke(main, ["init", "--home", str(home), "--moniker", "bank-a"])
    runner.invoke(
        main, ["genesis", "add-validator", str(genesis), "--home", str(home), "--name", "a"]
    )
    # No institution yet: membership needs a bank, and both checks say so before any start.
    result = runner.invoke(main, ["genesis", "validate", str(genesis)])
    assert result.exit_code == 1
    assert "at least one bank" in result.output
    assert "suanpan genesis add-institution" in result.output
    (home / "genesis.json").write_bytes(genesis.read_bytes())
    result = runner.invoke(main, ["config", "check", "--home", str(home)])
    assert result.exit_code == 1
    assert "at least one bank" in result.output
    # An app that is not installed is named too.
    document = json.loads(genesis.read_text())
    document["apps"].append("no-such-app")
    (tmp_path / "other.json").write_text(json.dumps(document))
    result = runner.invoke(main, ["genesis", "validate", str(tmp_path / "other.json")])
    assert result.exit_code == 1
    assert "unknown app 'no-such-app'" in result.output
    seed_membership(tmp_path, genesis)
    result = runner.invoke(main, ["genesis", "validate", str(genesis)])
    assert result.exit_code == 0, result.output
    document = json.loads(genesis.read_text())
    assert document["app_state"]["membership"]["institutions"][0]["id"] == "bank-a"


def test_genesis_and_init_refuse_bad_values_before_writing(tmp_path: Path) -> None:
    runner = CliRunner()
    genesis = tmp_path / "genesis.json"
    runner.invoke(main, ["genesis", "init", str(genesis), "--chain-id", "bank-net"])
    before = genesis.read_bytes()
    result = runner.invoke(
        main,
        [
            "genesis",
            "add-validator",
            str(genesis),
            "--name",
            "x",
            "--public-key",
            "zz",
            "--node-key",
            "ab" * 32,
        ],
    )
    assert result.exit_code == 2
    assert "'zz' is not a public key" in result.output
    result = runner.invoke(
        main,
        [
            "genesis",
            "add-identity",
            str(genesis),
            "--institution",
            "bank-a",
            "--roles",
            "bank",
            "--public-key",
            "12",
        ],
    )
    assert result.exit_code == 2
    result = runner.invoke(
        main,
        [
            *("genesis", "add-institution", str(genesis), "--id", "maker", "--name", "M"),
            *("--kind", "enterprise", "--jurisdiction", "SG"),
        ],
    )
    assert result.exit_code == 2
    assert "an enterprise needs --sponsor" in result.output
    assert genesis.read_bytes() == before
    result = runner.invoke(
        main, ["init", "--home", str(tmp_path / "bad"), "--moniker", "has space"]
    )
    assert result.exit_code == 1
    assert "'has space' is not a moniker" in result.output
    assert not (tmp_path / "bad").exists()


def test_start_names_a_listen_address_already_in_use(tmp_path: Path) -> None:
    home = make_network(tmp_path, 1)[0]
    config, _ = parse_config((home / "config.toml").read_bytes())
    assert config is not None
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        changed = (
            config.with_changes("p2p", listen_address=HostPort("127.0.0.1", free_ports(1)[0]))
            .with_changes("rpc", listen_address=HostPort("127.0.0.1", taken))
            .with_changes("metrics", enabled=False)
        )
        (home / "config.toml").write_text(render_config(changed))
        result = CliRunner().invoke(main, ["start", "--home", str(home)])
    assert result.exit_code == 1
    assert f"[rpc] listen_address 127.0.0.1:{taken}: already in use" in result.output
    assert "Traceback" not in result.output
    assert not (home / "data" / "data.mdb").exists()  # refused before the store was opened


def test_settings_change_keys_checked_as_the_file_would_check_them() -> None:
    config = with_settings(NodeConfig(), ["mempool.admission_budget_ms=300"])
    assert config.mempool.admission_budget_ms == 300
    assert config.mempool.verify_workers == NodeConfig().mempool.verify_workers
    assert with_settings(config, ["log_level=debug"]).log_level == "debug"  # a bare word
    assert with_settings(config, ['log_level="warning"']).log_level == "warning"
    trusted = with_settings(config, ["consensus.trust_certified_blocks=true"])
    assert trusted.consensus.trust_certified_blocks
    # Settings that only make sense together come in either order: the keys are checked
    # against each other once all are applied.
    together = ["consensus.block_interval_ms=5000", "consensus.empty_block_interval_ms=9000"]
    for settings in (together, together[::-1]):
        changed = with_settings(NodeConfig(), settings)
        assert changed.consensus.block_interval_ms == 5000
        assert changed.consensus.empty_block_interval_ms == 9000
    refused = {
        "mempool.nope=1": "[mempool] nope: unknown key",
        "nosuch.key=1": "[nosuch] key: unknown section",
        "mempool.admission_budget_ms=0": "0 is outside 1..600000",
        "mempool.admission_budget_ms=3\nverify_workers = 9": "is not an integer",
        "consensus.trust_certified_blocks=yes": "'yes' is not true or false",
        "metrics.loop_task_cpu=on": "'on' is not true or false",
        "mempool.verify_workers": "not section.key=value",
        "mempool.verify_inline_max=-1": "-1 is outside 0..100000",
        "mempool.verify_inline_max=100001": "100001 is outside 0..100000",
        "mempool.verify_inline_busy_max=-1": "-1 is outside 0..100000",
        "mempool.verify_inline_busy_max=100001": "100001 is outside 0..100000",
        "mempool.verify_inline_busy_max=many": "is not an integer",
        "[mempool] x=1": "not section.key=value",
        # The result's keys are checked against each other.
        "consensus.block_interval_ms=5000": "[consensus] empty_block_interval_ms",
    }
    for setting, problem in refused.items():
        with pytest.raises(ConfigError) as raised:
            with_settings(NodeConfig(), [setting])
        assert problem in str(raised.value), (setting, str(raised.value))
    # Every problem is named at once.
    with pytest.raises(ConfigError) as raised:
        with_settings(NodeConfig(), ["mempool.nope=1", "mempool.verify_workers=0"])
    assert len(raised.value.problems) == 2


def test_bench_set_refuses_a_bad_setting_before_starting_anything() -> None:
    result = CliRunner().invoke(main, ["bench", "--set", "mempool.verify_workers=0", "--json"])
    assert result.exit_code == 2
    assert "--set" in result.output
    assert "[mempool] verify_workers: 0 is outside 1..64" in result.output
