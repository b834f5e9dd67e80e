"""Apps that parse their arguments through a schema are handed the transaction's decoded
arguments without a copy (``App.arguments_left_intact``): parsing builds new maps and tuples,
so whatever a handler does to what it parsed never reaches the transaction, the next check or
the next execution. An app that overrides ``check`` or ``apply`` gets copies again unless it
says otherwise, and a host handing copies and one handing the arguments as they are give the
same results."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

import pytest
from hypothesis import given

from apps.assets import AssetsApp
from apps.base import ROLE_BANK, App, AppError, AppState, ReadState, TxContext
from apps.host import STATUS_OK
from apps.membership import MembershipApp
from apps.payments import PaymentsApp
from apps.scf import ScfApp
from apps.schema import (
    Amounts,
    AppSchema,
    Arguments,
    DispatchingApp,
    Identifier,
    Operation,
    Party,
    Records,
    Strings,
)
from apps.transaction import Transaction
from consensus.codec import Value, encode
from tests.host_fixtures import (
    ARGUMENT_VALUES,
    CHAIN,
    ENTRY,
    NAME_FIELDS,
    SHAPED_ARGUMENTS,
    Chain,
    key,
    shaped_arguments,
    vandalise,
)

SCHEMA = AppSchema(
    help="Marks what it parsed, then records it.",
    operations=(
        Operation("op", frozenset({ROLE_BANK}), "Record the arguments.", SHAPED_ARGUMENTS),
    ),
)


class Marking(DispatchingApp):
    """Records what it parsed, then changes every map it was handed (careless, but its own)."""

    name: ClassVar[str] = "marking"
    schema: ClassVar[AppSchema] = SCHEMA

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        return None

    def _op(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        party = a.value("party")
        entry = a.value("entry")
        entries = a.value("entries")
        assert isinstance(party, dict)
        assert isinstance(entry, dict)
        assert isinstance(entries, tuple)
        recorded = encode({name: a.value(name) for name in ("party", "entry", "entries", "tags")})
        if execute:
            ctx.state.put(ctx.transaction_hash, recorded)
        party["marked"] = "yes"
        entry["name"] = "changed"
        for item in entries:
            assert isinstance(item, dict)
            item["name"] = "changed"
        return recorded if execute else None

    def query(self, state: ReadState, path: str, arguments: Mapping[str, Value]) -> Value:
        raise AppError("unknown_query", path)


class RawMarking(Marking):
    """Overrides ``apply`` to change the raw arguments before parsing them: handed copies."""

    name: ClassVar[str] = "raw_marking"

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        assert isinstance(arguments, dict)
        party = arguments["party"]
        assert isinstance(party, dict)
        party["raw"] = "changed"
        return super().apply(ctx, operation, arguments)


class DeclaredMarking(Marking):
    """Overrides ``apply`` without touching the arguments and says so."""

    name: ClassVar[str] = "declared_marking"
    arguments_left_intact: ClassVar[bool] = True

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        return super().apply(ctx, operation, arguments)


def test_which_apps_are_handed_their_arguments_as_they_are() -> None:
    assert not App.arguments_left_intact
    for built_in in (DispatchingApp, MembershipApp, PaymentsApp, ScfApp, AssetsApp, Marking):
        assert built_in.arguments_left_intact, built_in
    # Overriding apply (or check) without declaring it again: copies.
    assert not RawMarking.arguments_left_intact
    assert DeclaredMarking.arguments_left_intact


@pytest.mark.parametrize("app", [Marking(), RawMarking(), DeclaredMarking()])
def test_changes_to_what_an_app_was_handed_never_reach_the_transaction_or_the_next_run(
    app: Marking,
) -> None:
    chain = Chain.start([app])
    signed = [chain.sign(key("bank_a"), app.name, "op", shaped_arguments(n)) for n in range(3)]
    raw = [tx.encoded for tx in signed]
    decoded = {tx.hash: Transaction.decode(tx.encoded, chain_id=CHAIN) for tx in signed}
    for tx in decoded.values():
        chain.host.check_transaction(tx, expected_nonce=tx.nonce)
    reference = chain.host.execute_block(chain.context(), raw)
    first = chain.host.execute_block(chain.context(), raw, known=decoded)
    second = chain.host.execute_block(chain.context(), raw, known=decoded)
    assert first == reference == second
    assert [receipt.encode() for receipt in first.receipts] == [
        receipt.encode() for receipt in reference.receipts
    ]
    assert all(receipt.status == STATUS_OK for receipt in first.receipts), first.receipts
    for n, tx in enumerate(decoded.values()):
        assert tx.arguments == shaped_arguments(n)
        assert first.receipts[n].result == encode(
            {
                # What ``RawMarking`` added before parsing, once (its copy), not once per run.
                "party": {"name": f"p{n}", "country": "CH"}
                | ({"raw": "changed"} if isinstance(app, RawMarking) else {}),
                "entry": {"name": f"e{n}"},
                "entries": ({"name": f"a{n}"}, {"name": f"b{n}"}),
                "tags": ("y", "z"),
            }
        )


def test_a_host_that_copies_every_time_gives_the_same_results() -> None:
    chain = Chain.start([Marking()])
    signed = [chain.sign(key("bank_a"), "marking", "op", shaped_arguments(n)) for n in range(3)]
    raw = [tx.encoded for tx in signed]
    decoded = {tx.hash: Transaction.decode(tx.encoded, chain_id=CHAIN) for tx in signed}
    handed_as_is = chain.host.execute_block(chain.context(), raw, known=decoded)
    chain.host._arguments_intact = frozenset()  # every app handed copies
    copied = chain.host.execute_block(chain.context(), raw, known=decoded)
    assert handed_as_is == copied


@given(value=ARGUMENT_VALUES)
def test_parsing_shares_no_map_with_what_it_parsed(value: Value) -> None:
    """Every argument type, given anything, returns a value whose maps are its own (or
    refuses it): changing them leaves the input as it was."""
    types = (
        Party(),
        ENTRY,
        Records(NAME_FIELDS, items_max=4),
        Strings(items_max=4),
        Amounts(items_max=4),
        Identifier(),
    )
    for argument_type in types:
        assert _leaves_its_input_intact(argument_type.parse, value), argument_type


def test_the_parsing_property_is_seen_failing_on_a_parser_that_hands_its_input_back() -> None:
    assert not _leaves_its_input_intact(lambda name, value: value, {"name": "a"})
    assert not _leaves_its_input_intact(lambda name, value: value, ({"name": "a"},))
    assert _leaves_its_input_intact(lambda name, value: value, ("a", 1))


def _leaves_its_input_intact(parse: Callable[[str, Value], Value], value: Value) -> bool:
    """Whether changing every map ``parse`` returned for ``value`` leaves ``value`` as it was
    (True also when ``parse`` refuses it)."""
    before = repr(value)
    try:
        parsed = parse("x", value)
    except AppError:
        return True
    vandalise(parsed)
    return repr(value) == before
