"""The command line's app commands are derived from the apps' schemas: every operation and
query has a command whose ``--help`` lists every argument with its type and help, option texts
become the canonical values the app reads, and a text the app would refuse is refused before
anything is sent, naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from apps.assets import AssetsApp
from apps.base import App
from apps.membership import MembershipApp
from apps.payments import PaymentsApp
from apps.scf import ScfApp
from apps.schema import Argument, Operation, Query
from consensus.crypto import PrivateKey, hash_bytes
from node.cli import main
from node.cli.arguments import ArgumentError, option_name, parse_options, parse_text, type_help
from node.keys import save_key_file

NOW_MS = 1_704_067_200_000
APPS: tuple[App, ...] = (MembershipApp(), PaymentsApp(), ScfApp(), AssetsApp())


def clock() -> int:
    return NOW_MS


def operation(app: App, name: str) -> Operation:
    assert app.schema is not None
    found = app.schema.operation(name)
    assert found is not None
    return found


def query(app: App, name: str) -> Query:
    assert app.schema is not None
    found = app.schema.query(name)
    assert found is not None
    return found


def argument(spec: Operation | Query, name: str) -> Argument:
    return next(item for item in spec.arguments if item.name == name)


PAYMENTS, SCF, ASSETS, MEMBERSHIP = APPS[1], APPS[2], APPS[3], APPS[0]


def options_of(help_text: str) -> dict[str, str]:
    """Each option of a ``--help`` text with its (unwrapped) description."""
    entries: dict[str, str] = {}
    current = ""
    for line in help_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-"):
            current = stripped.split()[0].rstrip(",")
            entries[current] = stripped
        elif current and stripped:
            entries[current] += " " + stripped
        else:
            current = ""
    return entries


@pytest.mark.parametrize("app", APPS, ids=lambda app: app.name)
def test_every_operation_and_query_has_a_command_listing_its_arguments(app: App) -> None:
    runner = CliRunner()
    assert app.schema is not None
    for group, specs in (("tx", app.schema.operations), ("query", app.schema.queries)):
        for spec in specs:
            result = runner.invoke(main, [group, app.name, spec.name, "--help"], terminal_width=200)
            assert result.exit_code == 0, result.output
            assert spec.help in result.output
            entries = options_of(result.output)
            for declared in spec.arguments:
                line = entries.get(option_name(declared.name))
                assert line is not None, (app.name, spec.name, declared.name)
                assert declared.help in line
                assert type_help(declared.type) in line
                assert ("(required)" in line) == (
                    declared.required and declared.client_default is None
                )


def test_values_parse_into_canonical_types() -> None:
    transfer = operation(PAYMENTS, "transfer")
    arguments = parse_options(
        transfer.arguments,
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
    split = operation(SCF, "split")
    assert parse_options(
        split.arguments, {"receivable": "rc-1", "amounts": "600, 400"}, clock=clock
    )["amounts"] == (600, 400)
    issue = operation(SCF, "issue")
    assert parse_text(argument(issue, "due_ms"), "+90d", clock) == NOW_MS + 90 * 86_400_000
    assert parse_text(argument(issue, "due_ms"), "2024-01-02", clock) == NOW_MS + 86_400_000
    assert parse_text(argument(issue, "invoice_hash"), "sha256:INV-1", clock) == hash_bytes(
        b"INV-1"
    )
    create = operation(ASSETS, "create_asset")
    assert parse_text(argument(create, "eligible_roles"), "bank,enterprise", clock) == (
        "bank",
        "enterprise",
    )
    assert parse_text(argument(operation(ASSETS, "freeze"), "frozen"), "no", clock) is False


def test_key_files_name_their_public_keys_also_inside_records(tmp_path: Path) -> None:
    key = PrivateKey(bytes(range(32)))
    path = tmp_path / "alice.json"
    save_key_file(path, key)
    balances = query(PAYMENTS, "balances")
    assert parse_options(balances.arguments, {"account": str(path)}, clock=clock) == {
        "account": key.public_key
    }
    propose = operation(MEMBERSHIP, "propose")
    identities = parse_text(
        argument(propose, "identities"),
        f'[{{"public_key": "{path}", "roles": ["bank"]}}]',
        clock,
    )
    assert identities == ({"public_key": key.public_key, "roles": ("bank",)},)


@pytest.mark.parametrize(
    ("app", "name", "argument_name", "text", "complaint"),
    [
        (PAYMENTS, "transfer", "amount", "12.50", "not a whole number"),
        (PAYMENTS, "transfer", "amount", "-5", "'-5' must be positive"),
        (PAYMENTS, "transfer", "amount", "0", "'0' must be positive"),
        (PAYMENTS, "transfer", "amount", str(2**63), "must be a positive whole number of minor"),
        (PAYMENTS, "set_controls", "transaction_limit", "-1", "'-1' must be non-negative"),
        (PAYMENTS, "transfer", "to", "bob", "neither 64 hex digits nor a key file"),
        (PAYMENTS, "transfer", "currency", "usd", "must be an ISO 4217 code like 'USD'"),
        (PAYMENTS, "transfer", "purpose", "x" * 281, "at most 280 bytes"),
        (SCF, "issue", "due_ms", "tomorrow", "not a time"),
        (SCF, "issue", "invoice_hash", "abc", "not a hash"),
        (SCF, "record_milestone", "milestone", "lost", "not allowed"),
        (SCF, "offer_financing", "rate_bps", "10001", "must be an integer in [0, 10000]"),
        (ASSETS, "freeze", "frozen", "maybe", "not true or false"),
        (ASSETS, "offer_dvp", "price", "-5", "'-5' must be positive"),
        (ASSETS, "create_asset", "symbol", "lower", "must be a symbol matching"),
        (MEMBERSHIP, "propose", "institution", "{oops", "not JSON"),
        (MEMBERSHIP, "propose", "institution", '{"id": "x"}', "'institution.name' is required"),
        (PAYMENTS, "set_controls", "transaction_limit", "ten", "not a whole number"),
    ],
)
def test_a_bad_value_names_the_option(
    app: App, name: str, argument_name: str, text: str, complaint: str
) -> None:
    spec = operation(app, name)
    with pytest.raises(ArgumentError) as error:
        parse_text(argument(spec, argument_name), text, clock)
    assert error.value.argument == argument_name
    assert complaint in str(error.value)
    assert option_name(argument_name) in str(error.value)


def test_a_missing_required_argument_is_named() -> None:
    spec = operation(PAYMENTS, "transfer")
    with pytest.raises(ArgumentError) as error:
        parse_options(spec.arguments, {"to": "ab" * 32, "currency": "SGD"}, clock=clock)
    assert error.value.argument == "amount"
    assert "required" in str(error.value)


def test_a_client_default_fills_a_required_argument() -> None:
    spec = query(ASSETS, "can_transfer")
    arguments = parse_options(
        spec.arguments,
        {"symbol": "LCB-2030", "from": "11" * 32, "to": "22" * 32, "amount": "5"},
        clock=clock,
    )
    assert arguments["now_ms"] == NOW_MS


def test_base_arguments_fill_what_options_leave_out_and_are_checked_too() -> None:
    spec = operation(PAYMENTS, "issue")
    arguments = parse_options(
        spec.arguments, {"amount": "5"}, base={"currency": "SGD", "to": b"\x01" * 32}, clock=clock
    )
    assert arguments == {"currency": "SGD", "to": b"\x01" * 32, "amount": 5}
    with pytest.raises(ArgumentError, match="'currency'"):
        parse_options(spec.arguments, {"amount": "5"}, base={"currency": 7}, clock=clock)


def test_the_command_line_refuses_a_negative_amount_before_sending(tmp_path: Path) -> None:
    """Nothing listens at the address: the refusal comes from the schema, not a node."""
    key = tmp_path / "alice.json"
    save_key_file(key, PrivateKey(bytes(range(32))))
    result = CliRunner().invoke(
        main,
        [
            "tx",
            "payments",
            "issue",
            "--currency",
            "SGD",
            "--to",
            "ab" * 32,
            "--amount",
            "-5",
            "--key",
            str(key),
            "--node",
            "127.0.0.1:9",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "'-5' must be positive" in result.output
    assert "not a whole number" not in result.output
    assert "--amount" in result.output


def test_a_validator_change_takes_the_node_homes_key_files(tmp_path: Path) -> None:
    """The README's add_validator proposal: keys given as a home's key files become the
    32-byte keys membership stores, and the proposal's arguments pass its schema."""
    validator_key, node_key = PrivateKey(bytes([1]) * 32), PrivateKey(bytes([2]) * 32)
    save_key_file(tmp_path / "validator_key.json", validator_key)
    save_key_file(tmp_path / "node_key.json", node_key)
    propose = operation(MEMBERSHIP, "propose")
    given: dict[str, str | None] = {
        "action": "add_validator",
        "validator_name": "bank-e",
        "validator_key": str(tmp_path / "validator_key.json"),
        "node_key": str(tmp_path / "node_key.json"),
        "institution_id": "bank-e",
    }
    arguments = parse_options(propose.arguments, given, clock=clock)
    assert arguments["validator_key"] == validator_key.public_key
    assert arguments["node_key"] == node_key.public_key
    parsed = propose.parse(arguments)
    assert parsed.text("validator_name") == "bank-e"
    with pytest.raises(ArgumentError, match=r"'validator_name' \(--validator-name\): must be"):
        parse_options(propose.arguments, {**given, "validator_name": "bank e"}, clock=clock)
