"""A demo testnet's files: the genesis holds the validators' banks and the demo consortium and
initialises all four apps; every party's key file matches the consortium; testnet.json reads
back as it was written. Files only: no process is started."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from apps.demo import demo_consortium
from apps.host import AppHost
from apps.state import MemoryBackend
from node.apploader import load_apps
from node.cli import main
from node.genesis import load_genesis
from node.keys import load_key_file
from node.testnet.testnet import DEMO_APPS, create_testnet, load_testnet


def test_demo_testnet_genesis_initialises_every_app_and_writes_party_keys(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 2, chain_id="demo-files", demo_seed=5)
    consortium = demo_consortium(5, "demo-files")
    genesis = load_genesis(tmp_path / "net" / "genesis.json")
    assert genesis.apps == DEMO_APPS
    backend = MemoryBackend()
    host = AppHost(load_apps(genesis.apps), backend, chain_id=genesis.chain_id)
    writes, _ = host.init_genesis(genesis.app_state)
    backend.apply(writes)
    for party in consortium.parties:
        assert load_key_file(info.party(party.name).key_file).public_key == party.public_key
        identity = host.query("membership", "identity", {"public_key": party.public_key})
        assert isinstance(identity, dict)
        assert identity["institution"] == party.institution
    for index in range(2):  # the validators' own bank clients are still members
        client = info.client_key(index).public_key
        assert host.query("membership", "identity", {"public_key": client}) is not None
    currencies = host.query("payments", "currencies", {})
    assert isinstance(currencies, tuple)
    assert [dict(entry)["code"] for entry in currencies if isinstance(entry, dict)] == [
        "CNY",
        "HKD",
        "SGD",
    ]
    assert load_testnet(tmp_path / "net") == info
    assert info.consortium() == consortium


def test_bare_testnet_has_no_demo(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1)
    assert info.consortium() is None
    assert info.parties == ()
    assert load_genesis(tmp_path / "net" / "genesis.json").apps == ("membership",)
    assert load_testnet(tmp_path / "net") == info


def test_every_generated_command_has_help() -> None:
    runner = CliRunner()
    for group in ("tx", "query"):
        for app in ("payments", "scf", "assets", "membership"):
            listing = runner.invoke(main, [group, app, "--help"])
            assert listing.exit_code == 0, listing.output
            commands = [
                line.split()[0]
                for line in listing.output.split("Commands:")[1].splitlines()
                if line.startswith("  ") and not line.startswith("   ")
            ]
            assert commands
            for command in commands:
                shown = runner.invoke(main, [group, app, command, "--help"])
                assert shown.exit_code == 0, (group, app, command, shown.output)
                assert "--node" in shown.output


def test_a_testnet_is_never_written_into_a_directory_holding_something_else(
    tmp_path: Path,
) -> None:
    # A real node home given as --dir by mistake keeps its genesis.json untouched.
    home = tmp_path / "bank-a"
    home.mkdir()
    (home / "genesis.json").write_text('{"chain_id": "bank-net-1"}')
    runner = CliRunner()
    for command in (["testnet", "init", "--dir", str(home)], ["testnet", "up", "--dir", str(home)]):
        result = runner.invoke(main, command)
        assert result.exit_code == 1, result.output
        assert "is not empty and holds no testnet" in result.output
        assert "Traceback" not in result.output
    result = runner.invoke(main, ["testnet", "chaos", "--dir", str(home), "--duration", "3"])
    assert result.exit_code == 1, result.output
    assert "is not an empty directory" in result.output
    assert (home / "genesis.json").read_text() == '{"chain_id": "bank-net-1"}'
    assert sorted(path.name for path in home.iterdir()) == ["genesis.json"]
    # An empty directory is fine.
    (tmp_path / "empty").mkdir()
    assert create_testnet(tmp_path / "empty", 1).homes
