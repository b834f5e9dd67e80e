"""Bad command-line arguments get a clear error, never a traceback: every command that runs
without a network or a long-running process is invoked with junk in each argument (client
commands against a closed port on 127.0.0.1)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.cli import main

JUNK = st.sampled_from(
    [
        "",
        " ",
        "-1",
        "0",
        "1e9999",
        "nan",
        "inf",
        "1" * 4400,
        "9" * 30,
        "²",
        "١٢",
        "x",
        "é中",
        "host:",
        ":99999",
        "127.0.0.1:0",
        "[::1",
        "ab" * 32,
        "ab" * 33,
        "{}",
        "[]",
        '{"a":',
        "null",
        "-",
        "=",
        ",",
        "~",
        "/",
        "/dev/null",
        "@missing",
        "@dir",
        "@file",
    ]
) | st.text(max_size=12).filter(lambda text: "\x00" not in text)  # argv holds no NUL


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "file").write_text("hello")
    (root / "dir").mkdir()
    runner = CliRunner()
    for argv in (
        ["keys", "new", str(root / "k.json")],
        ["genesis", "init", str(root / "g.json"), "--chain-id", "c"],
        ["init", "--home", str(root / "home"), "--moniker", "m"],
    ):
        assert runner.invoke(main, argv).exit_code == 0
    world = {
        "root": str(root),
        "node": f"127.0.0.1:{_closed_port()}",
        "key": str(root / "k.json"),
        "genesis": str(root / "g.json"),
        "home": str(root / "home"),
    }
    # Junk is often a relative path a command writes to: keep it out of the working tree.
    with pytest.MonkeyPatch.context() as patch:
        (root / "cwd").mkdir()
        patch.chdir(root / "cwd")
        yield world


# Each command with a base command line that gets that far; "{x}" fills from ``world``.
COMMANDS: dict[str, list[str]] = {
    "keys new": ["{root}/new.json"],
    "keys show": ["{key}"],
    "keys rotate": ["--home", "{home}"],
    "init": ["--home", "{root}/h2", "--moniker", "m"],
    "genesis init": ["{root}/g2.json", "--chain-id", "c", "--app", "payments", "--overwrite"],
    "genesis add-validator": ["{genesis}", "--name", "v", "--home", "{home}"],
    "genesis add-institution": ["{genesis}", "--id", "b1", "--name", "B", "--kind", "bank"],
    "genesis add-identity": ["{genesis}", "--institution", "b1", "--roles", "admin"],
    "genesis validate": ["{genesis}"],
    "config check": ["--home", "{home}"],
    "testnet init": ["-n", "1", "--dir", "{root}/tn", "--api-port", "1"],
    "testnet add-validator": ["--dir", "{root}/dir"],
    "testnet remove-validator": ["--dir", "{root}/dir", "--node", "0"],
    "testnet rotate-key": ["--dir", "{root}/dir", "--node", "0"],
    "status": ["--node", "{node}"],
    "tx send": [
        *("--node", "{node}", "--key", "{key}"),
        *("--app", "payments", "--op", "transfer", "--args", "{}"),
    ],
    "tx show": ["--node", "{node}", "ab"],
    "block": ["--node", "{node}", "1", "--hash", "ab"],
    "events": ["--node", "{node}", "--from", "1", "--app", "payments", "--account", "x"],
    "openapi": ["-o", "{root}/o.json", "--genesis", "{genesis}"],
    "audit": ["--home", "{home}"],
    "backup": ["--home", "{home}", "--to", "{root}/bk"],
    "restore": ["--from", "{root}/file", "--home", "{root}/h3"],
    "debug state-diff": ["--home", "{home}", "--home", "{home}", "--height", "1"],
    "query": ["--node", "{node}", "payments", "balances"],
    "monitor files": ["--testnet", "{root}/dir", "--out", "{root}/mon"],
}


def _invoke(argv: list[str]) -> Result:
    env = {"SUANPAN_NODE": None, "SUANPAN_KEY": None, "SUANPAN_GENESIS": None}
    return CliRunner().invoke(main, argv, env=env)


def _assert_clear(result: Result, argv: list[str]) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        argv,
        result.exc_info,
    )
    assert result.exit_code in (0, 1, 2), (argv, result.output)
    assert "Traceback" not in result.output, (argv, result.output)


@pytest.mark.parametrize("name", sorted(COMMANDS))
@settings(
    deadline=None, max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_junk_arguments_get_a_clear_error(
    world: dict[str, str], name: str, data: st.DataObject
) -> None:
    named = {"@missing": "{root}/missing", "@dir": "{root}/dir", "@file": "{root}/file"}

    def fill(text: str) -> str:
        """The ``@`` names as paths in ``world``; any other junk as it is."""
        if text in named:
            return named[text].format(**world)
        return text

    argv = [
        item.format(**world) if "{" in item and item != "{}" else item for item in COMMANDS[name]
    ]
    junk = fill(data.draw(JUNK, label="junk"))
    where = data.draw(st.sampled_from(["replace", "append", "option"]), label="where")
    if where == "replace":
        argv[data.draw(st.sampled_from(range(len(argv))), label="slot")] = junk
    elif where == "option":
        options = [item for item in argv if item.startswith("-")] or ["--help"]
        argv += [data.draw(st.sampled_from(options), label="option"), junk]
    else:
        argv.append(junk)
    _assert_clear(_invoke([*name.split(), *argv]), argv)


# Regressions: each of these raised before its fix.
@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "new", "1" * 4400],  # OSError: File name too long
        ["init", "--home", "/dev/null/x", "--moniker", "m"],  # NotADirectoryError
        ["config", "check", "--home", "1" * 4400],  # OSError: File name too long
        ["genesis", "init", "", "--chain-id", "c", "--overwrite"],  # ValueError: empty name
        ["status", "--node", "9" * 30],  # OverflowError: port too large
        ["status", "--node", "1" * 4400],  # OSError in resolve_node
        ["block", "--node", "{node}", "²"],  # ValueError: int('²')
        ["block", "--node", "{node}", "1" * 4400],  # ValueError: over 4,300 digits
        ["block", "--node", "{node}", "--hash", "²"],  # UnicodeEncodeError in the URL
        ["tx", "show", "--node", "{node}", "²"],  # UnicodeEncodeError in the URL
        [
            *("tx", "send", "--node", "{node}", "--key", "{key}"),
            *("--app", "a", "--op", "transfer", "--args", "1" * 4400),
        ],
        ["query", "--node", "{node}", "payments", "balances", "--account", "1" * 4400],
        ["query", "--node", "{node}", "payments", ""],  # ArgumentsRefused: no query ''
    ],
    ids=lambda argv: " ".join(item[:12] for item in argv),
)
def test_regression_clear_error(world: dict[str, str], argv: list[str]) -> None:
    filled = [item.format(**world) if "{" in item else item for item in argv]
    result = _invoke(filled)
    _assert_clear(result, filled)
    assert result.exit_code in (1, 2)
