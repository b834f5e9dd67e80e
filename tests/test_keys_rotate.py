"""``suanpan keys rotate``: the two file steps of a key rotation around the governance vote."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from node.cli import main
from node.home import (
    NEXT_NODE_KEY_FILE,
    NEXT_VALIDATOR_KEY_FILE,
    NODE_KEY_FILE,
    VALIDATOR_KEY_FILE,
    check_home,
)
from node.keys import load_key_file
from node.testnet.testnet import create_testnet


def test_a_rotation_writes_the_next_key_then_promotes_it(tmp_path: Path) -> None:
    home = create_testnet(tmp_path / "net", 1, chain_id="rotate").homes[0]
    runner = CliRunner()
    old = load_key_file(home / VALIDATOR_KEY_FILE).public_key
    started = runner.invoke(main, ["keys", "rotate", "--home", str(home)])
    assert started.exit_code == 0, started.output
    upcoming = load_key_file(home / NEXT_VALIDATOR_KEY_FILE).public_key
    assert f"next validator key {upcoming.hex()}" in started.output
    assert "--action rotate_validator_key" in started.output
    loaded, problems = check_home(home)
    assert problems == []
    assert loaded is not None
    assert loaded.next_validator_key is not None
    assert loaded.next_validator_key.public_key == upcoming
    # One rotation at a time: a second start refuses to overwrite the pending key.
    again = runner.invoke(main, ["keys", "rotate", "--home", str(home)])
    assert again.exit_code == 1
    assert "refusing to overwrite" in again.output
    finished = runner.invoke(main, ["keys", "rotate", "--home", str(home), "--finish"])
    assert finished.exit_code == 0, finished.output
    assert load_key_file(home / VALIDATOR_KEY_FILE).public_key == upcoming != old
    assert not (home / NEXT_VALIDATOR_KEY_FILE).exists()
    nothing = runner.invoke(main, ["keys", "rotate", "--home", str(home), "--finish"])
    assert nothing.exit_code == 1  # no rotation in progress


def test_a_node_key_rotation_tells_the_operator_to_restart(tmp_path: Path) -> None:
    home = create_testnet(tmp_path / "net", 1, chain_id="rotate").homes[0]
    runner = CliRunner()
    assert runner.invoke(main, ["keys", "rotate", "--home", str(home), "--node-key"]).exit_code == 0
    upcoming = load_key_file(home / NEXT_NODE_KEY_FILE).public_key
    finished = runner.invoke(
        main, ["keys", "rotate", "--home", str(home), "--node-key", "--finish"]
    )
    assert finished.exit_code == 0, finished.output
    assert "restart the node" in finished.output
    assert load_key_file(home / NODE_KEY_FILE).public_key == upcoming


def test_a_next_key_equal_to_the_current_one_is_a_home_problem(tmp_path: Path) -> None:
    home = create_testnet(tmp_path / "net", 1, chain_id="rotate").homes[0]
    (home / NEXT_VALIDATOR_KEY_FILE).write_bytes((home / VALIDATOR_KEY_FILE).read_bytes())
    (home / NEXT_VALIDATOR_KEY_FILE).chmod(0o600)
    loaded, problems = check_home(home)
    assert loaded is None
    assert [p.problem for p in problems] == ["holds the same key as validator_key.json"]
