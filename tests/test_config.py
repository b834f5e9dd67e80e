"""Operator files: init, the genesis flow, and `config check` naming every problem at once."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from node.cli import main
from node.config import NodeConfig, parse_config, render_config
from node.genesis import parse_genesis
from node.home import check_home


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
    for home in homes:
        (home / "genesis.json").write_bytes(genesis.read_bytes())
    return homes


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


def test_cross_file_checks_catch_limits_above_genesis_and_unknown_peers(tmp_path: Path) -> None:
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
    assert {problem.key for problem in problems} == {
        "[block] proposal_transactions_max",
        "[p2p] persistent_peers[0]",
    }
