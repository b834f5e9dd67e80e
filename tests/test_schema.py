"""Schemas as the single statement of an app's arguments: parsing rules, what is derived from a
schema (the role table, client-side checks), and the checks that keep a schema and its app's
read rules consistent, each shown firing."""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.metadata import EntryPoint
from types import MappingProxyType
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

import node.apploader as apploader
from apps.access import ReadRules, account_data, public
from apps.assets import AssetsApp
from apps.base import ROLE_BANK, App, AppError, AppState, ReadState, TxContext
from apps.membership import MembershipApp
from apps.payments import PaymentsApp
from apps.scf import ScfApp
from apps.schema import (
    ID_PATTERN,
    Amount,
    AppSchema,
    Argument,
    Arguments,
    Call,
    DispatchingApp,
    Identifier,
    Operation,
    Party,
    PublicKey,
    Query,
    parse_arguments,
    read_rule_problems,
)
from consensus.codec import Value
from consensus.crypto import PrivateKey
from node.apploader import ENTRY_POINT_GROUP, AppLoadError, load_apps
from node.client.client import ArgumentsRefused, Client, check_arguments
from tests.plugin_example import NotesApp

BUILT_IN: tuple[type[App], ...] = (MembershipApp, PaymentsApp, ScfApp, AssetsApp)
ARGUMENTS = (
    Argument("to", PublicKey(), "beneficiary"),
    Argument("amount", Amount(), "amount"),
    Argument("memo", Identifier(), "memo", required=False, default="none"),
    Argument("party", Party(), "details", required=False, default={}),
)


def test_the_role_table_is_derived_from_the_schema() -> None:
    every: tuple[type[App], ...] = (*BUILT_IN, NotesApp)
    for app in every:
        assert app.schema is not None
        assert dict(app.operations) == {
            operation.name: operation.roles for operation in app.schema.operations
        }


def test_an_app_cannot_declare_its_roles_twice() -> None:
    with pytest.raises(TypeError, match="roles come from there"):

        class Twice(DispatchingApp):  # pragma: no cover - refused while the class is made
            name: ClassVar[str] = "twice"
            schema: ClassVar[AppSchema] = AppSchema(
                "x", (Operation("op", frozenset({"bank"}), "Op."),)
            )
            operations: ClassVar[Mapping[str, frozenset[str]]] = {"op": frozenset({"bank"})}

            def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
                return None


def test_a_schema_refuses_unknown_roles_and_repeated_names() -> None:
    with pytest.raises(AssertionError, match="unknown roles"):
        Operation("op", frozenset({"banker"}), "Op.")
    with pytest.raises(AssertionError, match="declared twice"):
        Operation("op", frozenset({ROLE_BANK}), "Op.", (ARGUMENTS[0], ARGUMENTS[0]))
    with pytest.raises(AssertionError, match="declared twice"):
        AppSchema("x", (Operation("op", frozenset({ROLE_BANK}), "Op."),) * 2)


def test_parsing_follows_the_declaration() -> None:
    key = b"\x01" * 32
    parsed = parse_arguments(ARGUMENTS, {"to": key.hex(), "amount": 5, "extra": "ignored"})
    assert parsed.as_dict() == {"to": key, "amount": 5, "memo": "none", "party": {}}
    # Null is absent; the first failure in declaration order wins.
    with pytest.raises(AppError) as refused:
        parse_arguments(ARGUMENTS, {"to": None, "amount": -1})
    assert (refused.value.code, refused.value.message) == (
        "bad_argument",
        "argument 'to' is required",
    )
    with pytest.raises(AppError, match="argument 'amount' must be a positive whole number"):
        parse_arguments(ARGUMENTS, {"to": key, "amount": True})
    with pytest.raises(AppError, match="arguments must be a map"):
        parse_arguments(ARGUMENTS, ("to", key))  # type: ignore[arg-type]
    # Any mapping parses as the same dict does.
    values: dict[str, Value] = {"to": key.hex(), "amount": 5, "extra": "ignored"}
    assert parse_arguments(ARGUMENTS, MappingProxyType(values)).as_dict() == parsed.as_dict()


def test_a_default_map_is_a_fresh_copy_every_time() -> None:
    first = parse_arguments(ARGUMENTS, {"to": b"\x01" * 32, "amount": 1})
    first.map("party")["name"] = "changed"
    second = parse_arguments(ARGUMENTS, {"to": b"\x01" * 32, "amount": 1})
    assert second.map("party") == {}


def test_reading_an_undeclared_argument_or_the_wrong_type_is_a_bug() -> None:
    parsed = parse_arguments(ARGUMENTS, {"to": b"\x01" * 32, "amount": 1})
    with pytest.raises(KeyError):
        parsed.text("currency")
    with pytest.raises(AssertionError):
        parsed.text("amount")
    assert isinstance(parsed, Arguments)


@given(value=st.one_of(st.none(), st.booleans(), st.integers(), st.text(), st.binary()))
def test_every_refusal_of_a_built_in_argument_names_it(value: Value) -> None:
    for app in BUILT_IN:
        assert app.schema is not None
        specs: tuple[Operation | Query | Call, ...] = (
            *app.schema.operations,
            *app.schema.queries,
            *app.schema.calls,
        )
        for spec in specs:
            for argument in spec.arguments:
                if value is None:
                    continue
                refusal: AppError | None = None
                try:
                    argument.type.parse(argument.name, value)
                except AppError as error:
                    refusal = error
                if refusal is not None:
                    assert refusal.code == "bad_argument"
                    assert refusal.message.startswith(f"argument {argument.name!r} ")


# ---------------------------------------------------------------------- read rules vs schema
class _Badly(NotesApp):
    """NotesApp with read rules that disagree with its schema."""

    read_rules: ClassVar[ReadRules] = ReadRules(
        queries={
            "note": public("notes"),
            "about": account_data("holder"),
            "missing": public("nothing"),
        }
    )


def test_read_rules_that_disagree_with_the_schema_are_found() -> None:
    assert NotesApp.schema is not None
    assert read_rule_problems(NotesApp.schema, NotesApp.read_rules) == []
    for app in BUILT_IN:
        assert app.schema is not None
        assert read_rule_problems(app.schema, app.read_rules) == [], app.name
    assert read_rule_problems(NotesApp.schema, _Badly.read_rules) == [
        "read rule for query 'about' names argument 'holder', which it does not have",
        "read rule for query 'missing', which the schema does not declare",
    ]


def test_the_app_loader_refuses_an_app_whose_rules_disagree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    point = EntryPoint(name="notes", value=f"{__name__}:_Badly", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(apploader, "available_apps", lambda: {"notes": point})
    with pytest.raises(AppLoadError, match="names argument 'holder'"):
        load_apps(["notes"])
    good = EntryPoint(name="notes", value="tests.plugin_example:NotesApp", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(apploader, "available_apps", lambda: {"notes": good})
    assert isinstance(load_apps(["notes"])[0], NotesApp)


# ---------------------------------------------------------------------- the Python client
def test_the_client_checks_arguments_before_anything_is_sent() -> None:
    """Nothing listens at the address: a refusal can only come from the schema."""
    client = Client("127.0.0.1:9", timeout_s=1.0)
    key = PrivateKey(bytes(range(32)))
    arguments: dict[str, Value] = {
        "to": b"\x02" * 32,
        "currency": "SGD",
        "amount": -5,
        "end_to_end_id": "E2E-1",
    }
    with pytest.raises(ArgumentsRefused) as refused:
        client.send("payments", "transfer", arguments, key)
    assert refused.value.code == "bad_argument"
    assert "argument 'amount'" in refused.value.message
    with pytest.raises(ArgumentsRefused, match="unknown_operation"):
        client.send("payments", "teleport", {}, key)
    with pytest.raises(ArgumentsRefused, match="unknown_query"):
        client.query("scf", "no_such_path", {})
    with pytest.raises(ArgumentsRefused, match="argument 'account' is required"):
        client.query_app("payments", "balances")
    # Well-formed arguments pass the check (and then need a node).
    assert check_arguments("payments", {**arguments, "amount": 5}, operation="transfer")
    assert not check_arguments("no_such_app", {}, operation="anything")


class _Quiet(App):
    """An app without a schema still works as before (no checks, no CLI options)."""

    name: ClassVar[str] = "quiet"
    operations: ClassVar[Mapping[str, frozenset[str]]] = {"op": frozenset({ROLE_BANK})}

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        return None

    def check(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> None:
        return None

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        return None

    def query(self, state: ReadState, path: str, arguments: Mapping[str, Value]) -> Value:
        return path


def test_an_app_without_a_schema_keeps_its_hand_written_roles() -> None:
    assert _Quiet.schema is None
    assert dict(_Quiet.operations) == {"op": frozenset({ROLE_BANK})}
    assert Query("path", "A path.").parse({}).as_dict() == {}


class _Text(str):
    """A str subclass: never remembered by an identifier's memo."""


@given(
    st.lists(
        st.one_of(
            st.sampled_from(["USD", "EUR", "name", "bic", "e2e-1", "a/b", "", "é"]),
            st.text(alphabet="AZaz09_.:-/ é", max_size=70),
        ),
        max_size=40,
    ),
    st.sampled_from([ID_PATTERN, re.compile(r"[A-Z]{3}")]),
)
def test_an_identifier_remembers_matches_without_changing_a_verdict(
    texts: list[str], pattern: re.Pattern[str]
) -> None:
    identifier = Identifier(pattern)
    for text in texts * 2 + [_Text(text) for text in texts]:
        expected = pattern.fullmatch(text) is not None
        assert identifier.matches(text) == expected
        if expected:
            assert identifier.parse("id", text) == text
        else:
            with pytest.raises(AppError, match="must be"):
                identifier.parse("id", text)
    assert all(type(text) is str for text in identifier._matched)


def test_an_identifiers_memory_of_matches_is_bounded() -> None:
    identifier = Identifier()
    for number in range(3000):
        assert identifier.matches(f"e2e-{number}")
    assert 0 < len(identifier._matched) <= 1024
    assert identifier.matches("e2e-5")
    assert not identifier.matches("e2e/5")
