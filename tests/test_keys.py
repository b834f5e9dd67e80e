"""Key files: written 0600, and every malformed or exposed file is a clear error."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import main
from node.keys import (
    KeyFileError,
    generate_private_key,
    load_key_file,
    load_public_key_file,
    save_key_file,
)


def test_key_file_round_trip_with_private_permissions(tmp_path: Path) -> None:
    key = generate_private_key()
    path = tmp_path / "validator_key.json"
    save_key_file(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_file(path) == key
    assert load_public_key_file(path) == key.public_key
    document = json.loads(path.read_text())
    assert set(document) == {"type", "address", "public_key", "private_key"}


def test_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    save_key_file(path, generate_private_key())
    with pytest.raises(KeyFileError, match="already exists"):
        save_key_file(path, generate_private_key())


def test_world_readable_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    save_key_file(path, generate_private_key())
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key_file(path)


def test_truncated_key_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    save_key_file(path, generate_private_key())
    text = path.read_bytes()
    path.write_bytes(text[: len(text) // 2])
    with pytest.raises(KeyFileError, match="truncated"):
        load_key_file(path)


def test_wrong_key_length_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    save_key_file(path, generate_private_key())
    document = json.loads(path.read_text())
    document["private_key"] = "AAAA"
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match="expected 32"):
        load_key_file(path)


def test_mismatched_public_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    other = tmp_path / "other.json"
    save_key_file(path, generate_private_key())
    save_key_file(other, generate_private_key())
    document = json.loads(path.read_text())
    document["public_key"] = json.loads(other.read_text())["public_key"]
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match="does not belong"):
        load_key_file(path)


def test_a_readable_file_that_is_not_a_key_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    path.write_text('{"chain_id": "x"}')
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="type must be"):
        load_key_file(path)


def test_missing_file_and_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such key file"):
        load_key_file(tmp_path / "absent.json")
    path = tmp_path / "key.json"
    path.write_text('{"type": "rsa"}')
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="type must be"):
        load_key_file(path)


def test_cli_keys_new_and_show(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "k.json"
    created = runner.invoke(main, ["keys", "new", str(path)])
    assert created.exit_code == 0, created.output
    shown = runner.invoke(main, ["keys", "show", str(path)])
    assert shown.exit_code == 0
    assert created.output.splitlines()[0] == shown.output.splitlines()[0]
    path.chmod(0o644)
    refused = runner.invoke(main, ["keys", "show", str(path)])
    assert refused.exit_code != 0
    assert "readable by group or others" in refused.output


def test_keys_new_into_a_missing_directory_creates_it(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "alice.json"
    result = CliRunner().invoke(main, ["keys", "new", str(path)])
    assert result.exit_code == 0, result.output
    assert load_key_file(path).public_key.hex() in result.output


@pytest.mark.parametrize("where", ["under_a_file", "a_directory", "unwritable"])
def test_keys_new_where_no_file_can_be_written_is_a_clear_error(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a directory")
    target = {
        "under_a_file": blocker / "alice.json",
        "a_directory": tmp_path,
        # /proc refuses new files even to root, unlike a chmod-ed directory.
        "unwritable": Path("/proc/suanpan-test-key.json"),
    }[where]
    result = CliRunner().invoke(main, ["keys", "new", str(target)])
    # 1: the command's own error; 2: click's, for a path that names a directory.
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "Error:" in result.output
    assert str(target) in result.output
    with pytest.raises(KeyFileError, match=r"cannot write key file|is a directory"):
        save_key_file(target, generate_private_key())
