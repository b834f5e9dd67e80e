"""Junk in an operator's files: loading a home, and `config check`, either succeed or name the
problem (``HomeError`` / exit 1 with ``ConfigProblem`` lines), never another exception.

One valid home is built once; each example copies it, replaces one value of ``config.toml``
(any section and key, or an unknown one), ``genesis.json`` or a key file with a junk value,
or garbles a whole file, then loads it in-process (no node is started)."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from node.cli import main
from node.config import SCHEMA, RPCConfig, parse_config
from node.genesis import load_genesis, parse_genesis
from node.home import (
    CONFIG_FILE,
    GENESIS_FILE,
    NODE_KEY_FILE,
    VALIDATOR_KEY_FILE,
    HomeError,
    check_home,
    load_home,
)
from node.keys import KeyFileError, load_key_file
from node.tls import TlsError, server_context
from tests.test_config import make_network

FILES = (CONFIG_FILE, GENESIS_FILE, NODE_KEY_FILE, VALIDATOR_KEY_FILE)
HUGE_DIGITS = "9" * 4301


class Raw:
    """Text written into the file as it is (a number too long for ``int()``, say)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"


@pytest.fixture(scope="module")
def valid_home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        home = make_network(Path(directory), 1)[0]
        assert check_home(home)[1] == []
        yield home


# --- junk values -------------------------------------------------------------------------------

ADDRESSES = (
    "host:",
    ":99999",
    ":0",
    "[::1",
    "::1]:5",
    "[::1]:",
    "127.0.0.1:65536",
    "127.0.0.1:-1",
    "127.0.0.1:²",
    "127.0.0.1:١٢",
    f"127.0.0.1:{HUGE_DIGITS}",
    "a" * 64 + ":80",
    "a..b:80",
    "ホスト:80",
    "\x00:80",
    "\u200b:80",
    "@",
    "ab" * 32 + "@",
    "ab" * 32 + "@host:",
    "zz@127.0.0.1:1",
)
PATHS = (
    "",
    ".",
    "data",
    "does/not/exist.pem",
    "/",
    "~nosuchuser_zz/x.pem",
    "~/x",
    "a" * 300,
    "/" + "a/" * 3000,
    "a\x00b",
    "config.toml/x",
    "genesis.json",
    "node_key.json",
)
NUMBER_TEXT = (
    "-1",
    "0",
    "1e9",
    "0x10",
    "١٢",
    HUGE_DIGITS,
    "-" + HUGE_DIGITS,
    "9" * 20,
)

scalars = st.one_of(
    st.text(max_size=20),
    st.sampled_from(ADDRESSES + PATHS + NUMBER_TEXT),
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
junk = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=2),
    st.just([]),
    st.just({}),
    st.just(Raw(HUGE_DIGITS)),
    st.just(Raw("[" * 5000)),
)


# --- writing the files back ---------------------------------------------------------------------


def toml_value(value: object) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(
            f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c
            for c in value
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def render_toml(document: dict[str, object]) -> str:
    lines = [f"{toml_value(k)} = {toml_value(v)}" for k, v in document.items() if not is_table(v)]
    for name, table in document.items():
        if is_table(table):
            assert isinstance(table, dict)
            lines.append(f"[{toml_value(name)}]")
            lines.extend(f"{toml_value(k)} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def is_table(value: object) -> bool:
    return isinstance(value, dict) and not any(isinstance(v, Raw) for v in value.values())


def render_json(document: object) -> str:
    raws: list[str] = []

    def default(value: object) -> object:
        assert isinstance(value, Raw)
        raws.append(value.text)
        return f"@@raw{len(raws) - 1}@@"

    text = json.dumps(document, default=default)
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@raw{i}@@"', raw)
    return text


# --- edits --------------------------------------------------------------------------------------

CONFIG_KEYS = [(section, key.name) for section, keys in SCHEMA.items() for key in keys] + [
    ("", "colour"),
    ("p2p", "surprise"),
    ("nosuchsection", "x"),
]
GENESIS_PATHS: list[tuple[str | int, ...]] = [
    ("chain_id",),
    ("genesis_time",),
    ("consensus_params",),
    ("consensus_params", "block_transactions_max"),
    ("consensus_params", "block_bytes_max"),
    ("consensus_params", "timestamp_skew_ms_max"),
    ("consensus_params", "surprise"),
    ("validators",),
    ("validators", 0),
    ("validators", 0, "name"),
    ("validators", 0, "public_key"),
    ("validators", 0, "node_key"),
    ("apps",),
    ("apps", 0),
    ("app_state",),
    ("app_state", "membership"),
    ("app_state", "membership", "institutions"),
    ("surprise",),
]
KEY_FIELDS = ("type", "address", "public_key", "private_key", "surprise")
GENESIS_TIMES = (
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59+00:00",
    "0001-01-01T00:00:00+01:00",
    "1969-12-31T23:59:59Z",
    "2025-13-01T00:00:00Z",
    "2025-01-01",
    "2025-01-01T00:00:00",
)


def set_path(document: object, path: tuple[str | int, ...], value: object) -> None:
    for step in path[:-1]:
        if isinstance(document, list) and isinstance(step, int) and step < len(document):
            document = document[step]
        elif isinstance(document, dict) and isinstance(step, str):
            document = document.setdefault(step, {})
        else:
            return
    last = path[-1]
    if isinstance(document, list) and isinstance(last, int) and last < len(document):
        document[last] = value
    if isinstance(document, dict) and isinstance(last, str):
        document[last] = value


@st.composite
def edits(draw: st.DrawFn) -> tuple[str, str, object]:
    """(file, what, junk): one change to one file of a home."""
    kind = draw(st.sampled_from(["config", "config", "genesis", "genesis", "key", "garble"]))
    if kind == "config":
        section, key = draw(st.sampled_from(CONFIG_KEYS))
        value = draw(junk) if draw(st.integers(0, 4)) else draw(st.none())
        return CONFIG_FILE, f"{section}.{key}", value
    if kind == "genesis":
        path = draw(st.sampled_from(GENESIS_PATHS))
        value = draw(st.sampled_from(GENESIS_TIMES)) if path == ("genesis_time",) else None
        if value is None or draw(st.booleans()):
            value = draw(junk)
        return GENESIS_FILE, json.dumps(path), value
    if kind == "key":
        name = draw(st.sampled_from([NODE_KEY_FILE, VALIDATOR_KEY_FILE]))
        return name, draw(st.sampled_from(KEY_FIELDS)), draw(junk)
    name = draw(st.sampled_from(FILES))
    how = draw(st.sampled_from(["truncate", "flip", "utf8", "empty", "dir", "nest", "chmod"]))
    return name, how, draw(st.integers(0, 10_000))


def apply_edit(home: Path, file: str, what: str, value: object) -> None:
    path = home / file
    if file == CONFIG_FILE and "." in what and not what.startswith("["):
        section, key = what.split(".", 1)
        document: dict[str, object] = tomllib.loads(path.read_text("utf-8"))
        holder = document if not section else document.setdefault(section, {})
        assert isinstance(holder, dict)
        if value is None:
            holder.pop(key, None)
        else:
            holder[key] = value
        path.write_text(render_toml(document), "utf-8")
    elif file == GENESIS_FILE and what.startswith("["):
        genesis = json.loads(path.read_text("utf-8"))
        set_path(genesis, tuple(json.loads(what)), value)
        path.write_text(render_json(genesis), "utf-8")
    elif what in KEY_FIELDS:
        key_document = json.loads(path.read_text("utf-8"))
        key_document[what] = value
        path.write_text(render_json(key_document), "utf-8")
        path.chmod(0o600)
    else:
        garble(path, what, value if isinstance(value, int) else 0)


def garble(path: Path, how: str, number: int) -> None:
    raw = path.read_bytes()
    if how == "truncate":
        path.write_bytes(raw[: number % max(len(raw), 1)])
    elif how == "flip":
        at = number % len(raw)
        path.write_bytes(raw[:at] + bytes([raw[at] ^ (1 << (number % 8))]) + raw[at + 1 :])
    elif how == "utf8":
        at = number % len(raw)
        path.write_bytes(raw[:at] + b"\xff\xc3(" + raw[at:])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "dir":
        path.unlink()
        path.mkdir()
    elif how == "nest":
        opener = b"a = " + b"[" * 4000 if path.suffix == ".toml" else b"[" * 4000
        path.write_bytes(opener)
    else:
        path.chmod(0o644)


# --- the property -------------------------------------------------------------------------------


def check_loads_or_names_the_problem(home: Path, file: str) -> None:
    loaded, problems = check_home(home)
    if loaded is not None:
        assert problems == []
        assert load_home(home) == loaded
    else:
        assert problems
        with pytest.raises(HomeError) as raised:
            load_home(home)
        assert raised.value.problems == problems
        for problem in problems:
            assert problem.key, problem
            assert problem.problem, problem
            assert problem.fix, problem
            assert Path(problem.file).name in FILES or Path(problem.file) == home / "data"
        named = {Path(problem.file).name for problem in problems}
        # A genesis limit may also show as a config.toml cross-check against it.
        assert file in named or (file == GENESIS_FILE and CONFIG_FILE in named), named
    result = CliRunner().invoke(main, ["config", "check", "--home", str(home)])
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )


@settings(deadline=None, max_examples=150)
@given(edit=edits())
def test_junk_in_one_value_or_file_is_named_never_raised(
    valid_home: Path, edit: tuple[str, str, object]
) -> None:
    file, what, value = edit
    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory) / "home"
        shutil.copytree(valid_home, home)
        apply_edit(home, file, what, value)
        check_loads_or_names_the_problem(home, file)


# --- regressions (each found by the property above) ----------------------------------------------


def test_config_with_an_integer_too_long_for_int_is_a_config_problem() -> None:
    _, problems = parse_config(b"[p2p]\ninbound_peers_max = " + HUGE_DIGITS.encode() + b"\n")
    assert [(p.key, p.problem.startswith("not valid TOML")) for p in problems] == [("(file)", True)]


def test_config_nested_too_deeply_is_a_config_problem() -> None:
    for opener in (b"[", b"{a="):
        _, problems = parse_config(b"moniker = " + opener * 5000)
        assert [(p.key, p.problem) for p in problems] == [
            ("(file)", "not valid TOML: nested too deeply")
        ]


def test_listen_address_port_and_host_that_getaddrinfo_cannot_take_are_named() -> None:
    for address, problem in [
        ("127.0.0.1:²", "port must be 1..65535"),
        (f"127.0.0.1:{HUGE_DIGITS}", "port must be 1..65535"),
        ("a" * 64 + ":80", "is not a valid host name"),
        ("a..b:80", "is not a valid host name"),
        ("\x00:80", "host contains control characters"),
    ]:
        text = f"[p2p]\nlisten_address = {toml_value(address)}\n"
        _, problems = parse_config(text.encode())
        assert [p.key for p in problems] == ["[p2p] listen_address"], address
        assert problem in problems[0].problem, (address, problems)


def test_genesis_with_an_integer_too_long_for_int_is_a_genesis_problem() -> None:
    _, problems = parse_genesis(b'{"chain_id": ' + HUGE_DIGITS.encode() + b"}")
    assert [(p.key, p.problem.startswith("not valid JSON")) for p in problems] == [("(file)", True)]


def test_genesis_nested_too_deeply_is_a_genesis_problem() -> None:
    _, problems = parse_genesis(b"[" * 100_000)
    assert [(p.key, p.problem) for p in problems] == [
        ("(file)", "not valid JSON: nested too deeply")
    ]


def test_genesis_time_after_year_9999_in_utc_is_a_genesis_problem(valid_home: Path) -> None:
    document = json.loads((valid_home / GENESIS_FILE).read_text())
    document["genesis_time"] = "9999-12-31T23:59:59-01:00"
    _, problems = parse_genesis(json.dumps(document).encode())
    assert [p.key for p in problems] == ["genesis_time"]
    assert "after year 9999" in problems[0].problem
    with pytest.raises(Exception, match="after year 9999"):
        load_genesis_text(json.dumps(document))


def load_genesis_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / GENESIS_FILE
        path.write_text(text)
        load_genesis(path)


def test_key_file_nested_too_deeply_is_a_key_file_error(tmp_path: Path) -> None:
    path = tmp_path / NODE_KEY_FILE
    path.write_bytes(b"[" * 4000)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="nested too deeply"):
        load_key_file(path)


def test_tls_file_of_an_unknown_user_or_too_long_a_name_is_a_tls_error(tmp_path: Path) -> None:
    for name, problem in [
        ("~nosuchuser_zz/cert.pem", "no such user's home directory"),
        ("a" * 300, "File name too long"),
    ]:
        with pytest.raises(TlsError, match=problem) as raised:
            server_context(tmp_path, RPCConfig(tls_certificate_file=name, tls_key_file="k.pem"))
        assert raised.value.key == "[rpc] tls_certificate_file"


@pytest.mark.parametrize("log_file", [".", "data", "config.toml/node.log", "a\x00b"])
def test_a_log_file_the_node_cannot_open_is_named_by_config_check(
    valid_home: Path, tmp_path: Path, log_file: str
) -> None:
    home = tmp_path / "home"
    shutil.copytree(valid_home, home)
    text = (home / CONFIG_FILE).read_text()
    (home / CONFIG_FILE).write_text(
        text.replace('log_file = ""', f"log_file = {toml_value(log_file)}")
    )
    _, problems = check_home(home)
    assert [(Path(p.file).name, p.key) for p in problems] == [(CONFIG_FILE, "log_file")]
