"""The client command tables match the apps exactly, and argument texts parse into the canonical
types (or fail naming the argument).

Drift check: for every operation and query in a table, the real app is run (``check`` for an
operation, ``query`` for a path) on the demo consortium's genesis state with the table's example
arguments, through a mapping that records every argument name the app reads. The names the app
reads must be exactly the table's names, over a few variants (all arguments, only the required
ones, each optional one left out, each alternative example).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import product

import pytest

from apps.assets import AssetsApp
from apps.base import App, AppError, BlockContext, Event
from apps.demo import demo_consortium
from apps.host import AppHost
from apps.membership import MembershipApp
from apps.payments import PaymentsApp
from apps.scf import ScfApp
from apps.state import MemoryBackend, NamespacedState, StateOverlay
from consensus.codec import Value
from consensus.crypto import hash_bytes
from node.cli.app_commands import (
    APP_COMMANDS,
    ArgumentError,
    CommandSpec,
    Kind,
    commands_of,
    parse_arguments,
    parse_value,
)
from node.keys import save_key_file

NOW_MS = 1_704_067_200_000
APPS: dict[str, App] = {
    app.name: app for app in (MembershipApp(), PaymentsApp(), ScfApp(), AssetsApp())
}


class Recording(Mapping[str, Value]):
    """Arguments that remember every name the app asked about."""

    def __init__(self, values: Mapping[str, Value], asked: set[str]) -> None:
        self._values = dict(values)
        self.asked = asked

    def __getitem__(self, name: str) -> Value:
        self.asked.add(name)
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.asked.add(name)
        return name in self._values

    def get(self, name: str, default: Value = None) -> Value:  # type: ignore[override]
        self.asked.add(name)
        return self._values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class CheckContext:
    """A transaction context over the genesis state (what the host gives ``check``)."""

    def __init__(self, host: AppHost, backend: MemoryBackend, app: str, sender: bytes) -> None:
        self._host = host
        self._state = NamespacedState(StateOverlay(backend), app, writable=True)
        self._sender = sender
        self.events: list[Event] = []

    @property
    def block(self) -> BlockContext:
        return BlockContext(1, NOW_MS, b"", "suanpan-demo")

    @property
    def sender(self) -> bytes:
        return self._sender

    @property
    def transaction_hash(self) -> bytes:
        return hash_bytes(b"drift-check")

    @property
    def state(self) -> NamespacedState:
        return self._state

    def emit(self, kind: str, attributes: Mapping[str, Value]) -> None:
        self.events.append(Event("test", kind, dict(attributes)))

    def call(self, app: str, operation: str, arguments: Mapping[str, Value]) -> Value:
        raise AppError("not_callable", "calls are not part of the drift check")

    def query(self, app: str, path: str, arguments: Mapping[str, Value]) -> Value:
        return self._host.query(app, path, arguments)


@pytest.fixture(scope="module")
def genesis() -> tuple[AppHost, MemoryBackend, bytes]:
    consortium = demo_consortium(0)
    backend = MemoryBackend()
    host = AppHost(list(APPS.values()), backend, chain_id=consortium.chain_id)
    writes, app_hash = host.init_genesis(consortium.app_genesis)
    backend.apply(writes)
    host.committed(0, app_hash)
    return host, backend, consortium.party("lion-bank").public_key


def variants(spec: CommandSpec) -> Iterator[dict[str, Value]]:
    """Argument maps: every combination of examples, then without each optional argument and
    with only the required ones."""
    names = [argument.name for argument in spec.arguments]
    choices = [
        [parse_value(argument, text, lambda: NOW_MS) for text in argument.examples]
        for argument in spec.arguments
    ]
    for combination in product(*choices):
        full = dict(zip(names, combination, strict=True))
        yield full
        for argument in spec.arguments:
            if not argument.required:
                yield {name: value for name, value in full.items() if name != argument.name}
        yield {name: value for name, value in full.items() if spec.argument(name).required}


def names_read(
    genesis: tuple[AppHost, MemoryBackend, bytes], app: str, spec: CommandSpec, *, query: bool
) -> set[str]:
    host, backend, sender = genesis
    asked: set[str] = set()
    refusals: list[str] = []
    for arguments in variants(spec):
        recording = Recording(arguments, asked)
        try:
            if query:
                APPS[app].query(NamespacedState(backend, app, writable=False), spec.name, recording)
            else:
                APPS[app].check(CheckContext(host, backend, app, sender), spec.name, recording)
        except AppError as error:
            refusals.append(error.code)
    assert not {"unknown_operation", "unknown_query"} & set(refusals), (app, spec.name)
    return asked


def test_every_app_has_a_table_matching_its_operations() -> None:
    assert {table.app for table in APP_COMMANDS} == set(APPS)
    for table in APP_COMMANDS:
        assert [spec.name for spec in table.operations] != []
        assert {spec.name for spec in table.operations} == set(APPS[table.app].operations)


@pytest.mark.parametrize(
    ("app", "operation"),
    [(table.app, spec.name) for table in APP_COMMANDS for spec in table.operations],
)
def test_operation_arguments_are_exactly_what_the_app_reads(
    genesis: tuple[AppHost, MemoryBackend, bytes], app: str, operation: str
) -> None:
    spec = commands_of(app).operation(operation)
    assert names_read(genesis, app, spec, query=False) == {a.name for a in spec.arguments}


@pytest.mark.parametrize(
    ("app", "path"),
    [(table.app, spec.name) for table in APP_COMMANDS for spec in table.queries],
)
def test_query_arguments_are_exactly_what_the_app_reads(
    genesis: tuple[AppHost, MemoryBackend, bytes], app: str, path: str
) -> None:
    spec = commands_of(app).query(path)
    assert names_read(genesis, app, spec, query=True) == {a.name for a in spec.arguments}


def test_an_unknown_query_path_is_refused_by_the_app(
    genesis: tuple[AppHost, MemoryBackend, bytes],
) -> None:
    """The drift check relies on apps refusing unknown paths with ``unknown_query``."""
    _, backend, _ = genesis
    for app in APPS.values():
        with pytest.raises(AppError) as refused:
            app.query(NamespacedState(backend, app.name, writable=False), "no_such_path", {})
        assert refused.value.code == "unknown_query"


def clock() -> int:
    return NOW_MS


def test_values_parse_into_canonical_types(tmp_path: object) -> None:
    transfer = commands_of("payments").operation("transfer")
    arguments = parse_arguments(
        transfer,
        {
            "to": "ab" * 32,
            "currency": "SGD",
            "amount": "1_250",
            "end_to_end_id": "E2E-1",
            "originator": "name=Alice, country=SG",
            "purpose": None,
        },
        clock=clock,
    )
    assert arguments == {
        "to": bytes.fromhex("ab" * 32),
        "currency": "SGD",
        "amount": 1250,
        "end_to_end_id": "E2E-1",
        "originator": {"name": "Alice", "country": "SG"},
    }
    split = commands_of("scf").operation("split")
    assert parse_arguments(split, {"receivable": "rc-1", "amounts": "600, 400"}, clock=clock)[
        "amounts"
    ] == (600, 400)
    issue = commands_of("scf").operation("issue")
    due = parse_value(issue.argument("due_ms"), "+90d", clock)
    assert due == NOW_MS + 90 * 86_400_000
    assert parse_value(issue.argument("due_ms"), "2024-01-02", clock) == NOW_MS + 86_400_000
    assert parse_value(issue.argument("invoice_hash"), "sha256:INV-1", clock) == hash_bytes(
        b"INV-1"
    )
    create = commands_of("assets").operation("create_asset")
    assert parse_value(create.argument("eligible_roles"), "bank,enterprise", clock) == (
        "bank",
        "enterprise",
    )
    freeze = commands_of("assets").operation("freeze")
    assert parse_value(freeze.argument("frozen"), "no", clock) is False


def test_a_key_file_names_its_public_key(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    from consensus.crypto import PrivateKey

    key = PrivateKey(bytes(range(32)))
    path = Path(str(tmp_path)) / "alice.json"
    save_key_file(path, key)
    spec = commands_of("payments").query("balances")
    assert parse_arguments(spec, {"account": str(path)}, clock=clock) == {"account": key.public_key}


@pytest.mark.parametrize(
    ("app", "operation", "argument", "text", "complaint"),
    [
        ("payments", "transfer", "amount", "12.50", "not a whole number"),
        ("payments", "transfer", "to", "bob", "neither 64 hex digits nor a key file"),
        ("scf", "issue", "due_ms", "tomorrow", "not a time"),
        ("scf", "issue", "invoice_hash", "abc", "not a hash"),
        ("scf", "record_milestone", "milestone", "lost", "not allowed"),
        ("assets", "freeze", "frozen", "maybe", "not true or false"),
        ("assets", "offer_dvp", "price", "-5", "not a whole number"),
        ("membership", "propose", "institution", "{oops", "not JSON"),
        ("payments", "set_controls", "transaction_limit", "ten", "not an integer"),
    ],
)
def test_a_bad_value_names_the_argument(
    app: str, operation: str, argument: str, text: str, complaint: str
) -> None:
    spec = commands_of(app).operation(operation)
    with pytest.raises(ArgumentError) as error:
        parse_value(spec.argument(argument), text, clock)
    assert error.value.argument == argument
    assert complaint in str(error.value)
    assert f"--{argument.replace('_', '-')}" in str(error.value)


def test_a_missing_required_argument_is_named() -> None:
    spec = commands_of("payments").operation("transfer")
    with pytest.raises(ArgumentError) as error:
        parse_arguments(spec, {"to": "ab" * 32, "currency": "SGD"}, clock=clock)
    assert error.value.argument == "amount"
    assert "required" in str(error.value)


def test_a_default_fills_a_required_argument() -> None:
    spec = commands_of("assets").query("can_transfer")
    arguments = parse_arguments(
        spec,
        {"symbol": "LCB-2030", "from": "11" * 32, "to": "22" * 32, "amount": "5"},
        clock=clock,
    )
    assert arguments["now_ms"] == NOW_MS


def test_base_arguments_fill_what_options_leave_out() -> None:
    spec = commands_of("payments").operation("issue")
    arguments = parse_arguments(
        spec, {"amount": "5"}, base={"currency": "SGD", "to": b"\x01" * 32}, clock=clock
    )
    assert arguments == {"currency": "SGD", "to": b"\x01" * 32, "amount": 5}


def test_every_kind_has_a_help_text_and_every_argument_an_example() -> None:
    for table in APP_COMMANDS:
        for spec in (*table.operations, *table.queries):
            assert spec.help
            for argument in spec.arguments:
                assert argument.type_help
                assert argument.examples, (table.app, spec.name, argument.name)
                assert argument.kind in Kind
