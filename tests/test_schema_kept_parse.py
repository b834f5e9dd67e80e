"""An admission check that passes leaves its parse with the operation (``Operation.keep``), and
the execution of the same transaction's arguments on that node takes it instead of parsing
them again. The check reads the parse through copies of its maps and lists, so whatever it
does to them never reaches the execution: a node that checked a transaction and one that never
saw it before its block give the same results."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import ClassVar

import pytest
from hypothesis import given

from apps.base import ROLE_BANK, AppError, AppState, ReadState, TxContext
from apps.host import STATUS_OK, BlockResult, TransactionRejected
from apps.schema import (
    KEPT_PARSES_MAX,
    AppSchema,
    Argument,
    Arguments,
    DispatchingApp,
    Identifier,
    Operation,
    Uncopyable,
    _CheckedArguments,
    unshared_value,
)
from apps.transaction import Transaction
from consensus.codec import Value, encode
from tests.host_fixtures import (
    ARGUMENT_VALUES,
    CHAIN,
    NAME_FIELDS,
    SHAPED_ARGUMENTS,
    Chain,
    key,
    shaped_arguments,
    vandalise,
)

OPERATION = Operation(
    "op",
    frozenset({ROLE_BANK}),
    "Record the arguments.",
    (
        *SHAPED_ARGUMENTS,
        Argument("refuse", Identifier(), "refused by the check when 'yes'", required=False),
    ),
)
SCHEMA = AppSchema(
    help="Changes what its check reads, records what it executes.", operations=(OPERATION,)
)
# The parses the executions were handed, in order.
EXECUTED: list[Arguments] = []


class Vandal(DispatchingApp):
    """Its check changes every map and list it can reach through each accessor; its execution
    records what it parsed."""

    name: ClassVar[str] = "vandal"
    schema: ClassVar[AppSchema] = SCHEMA

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        return None

    def _op(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        if execute:
            EXECUTED.append(a)
            recorded = encode(a.as_dict())
            ctx.state.put(ctx.transaction_hash, recorded)
            return recorded
        for value in (
            a.value("party"),
            a.map("party"),
            a.optional_map("entry"),
            *a.maps("entries"),
            *a.as_dict().values(),
            a.require("entry", "to mark it"),
        ):
            if isinstance(value, dict):
                value["name"] = "vandalised"
                value["added"] = "yes"
            elif isinstance(value, list):
                value.append("added")
        if a.optional_text("refuse") == "yes":
            raise AppError("refused", "the check refuses it")
        return None

    def query(self, state: ReadState, path: str, arguments: Mapping[str, Value]) -> Value:
        raise AppError("unknown_query", path)


def _arguments(n: int, refuse: bool = False) -> dict[str, Value]:
    return {**shaped_arguments(n), "refuse": "yes" if refuse else None}


def _signed(count: int) -> tuple[Chain, list[bytes], dict[bytes, Transaction]]:
    chain = Chain.start([Vandal()])
    signed = [chain.sign(key("bank_a"), "vandal", "op", _arguments(n)) for n in range(count)]
    decoded = {tx.hash: Transaction.decode(tx.encoded, chain_id=CHAIN) for tx in signed}
    return chain, [tx.encoded for tx in signed], decoded


def _checked(count: int) -> tuple[Chain, list[bytes], dict[bytes, Transaction], list[Arguments]]:
    """``_signed``, every transaction checked, and the parses the checks kept (in order);
    no execution recorded yet."""
    chain, raw, decoded = _signed(count)
    for tx in decoded.values():
        chain.host.check_transaction(tx, expected_nonce=tx.nonce)
    EXECUTED.clear()
    return chain, raw, decoded, [OPERATION._kept[tx_hash][1] for tx_hash in decoded]


def _never_checked(raw: list[bytes]) -> BlockResult:
    """The block on a chain whose host never checked its transactions."""
    fresh = Chain.start([Vandal()])
    return fresh.host.execute_block(fresh.context(), raw)


def _same(first: BlockResult, second: BlockResult) -> bool:
    return first == second and [r.encode() for r in first.receipts] == [
        r.encode() for r in second.receipts
    ]


def test_the_execution_takes_the_checks_parse_and_gives_what_a_fresh_parse_gives() -> None:
    chain, raw, decoded, kept = _checked(3)
    result = chain.host.execute_block(chain.context(), raw, known=decoded)
    assert all(receipt.status == STATUS_OK for receipt in result.receipts), result.receipts
    # Each execution was handed the very parse its check left, and took it.
    assert len(EXECUTED) == 3
    assert all(a is b for a, b in zip(EXECUTED, kept, strict=True))
    assert not any(tx_hash in OPERATION._kept for tx_hash in decoded)
    # The check's changes reached neither that parse nor the transaction.
    assert _same(result, _never_checked(raw))
    for n, tx in enumerate(decoded.values()):
        assert tx.arguments == _arguments(n)
    # Executed again (a block executed twice), it parses anew: the same result.
    assert _same(chain.host.execute_block(chain.context(), raw, known=decoded), result)


def test_the_comparison_is_seen_failing_when_a_kept_parse_was_changed() -> None:
    chain, raw, decoded, kept = _checked(1)
    party = kept[0].value("party")
    assert isinstance(party, dict)
    party["name"] = "changed"  # what a check handed the kept parse itself could have done
    result = chain.host.execute_block(chain.context(), raw, known=decoded)
    assert not _same(result, _never_checked(raw))


def test_other_arguments_with_the_same_hash_are_parsed_anew() -> None:
    chain, raw, decoded, kept = _checked(2)
    # Decoded again from the block's bytes (no ``known``): other argument objects.
    result = chain.host.execute_block(chain.context(), raw)
    assert not any(a is b for a, b in zip(EXECUTED, kept, strict=True))
    assert not any(tx_hash in OPERATION._kept for tx_hash in decoded)  # not kept either
    assert _same(result, _never_checked(raw))


def test_a_refused_check_keeps_nothing() -> None:
    chain = Chain.start([Vandal()])
    tx = Transaction.decode(
        chain.sign(key("bank_a"), "vandal", "op", _arguments(0, refuse=True)).encoded,
        chain_id=CHAIN,
    )
    with pytest.raises(Exception, match="refused"):
        chain.host.check_transaction(tx, expected_nonce=tx.nonce)
    assert tx.hash not in OPERATION._kept


def test_an_operation_keeps_at_most_the_bound_dropping_the_oldest() -> None:
    operation = Operation("op", frozenset({ROLE_BANK}), "Nothing.")
    values: dict[str, Value] = {}
    parsed = operation.parse(values)
    for n in range(KEPT_PARSES_MAX + 5):
        operation.keep(n.to_bytes(8, "big"), values, parsed)
    assert len(operation._kept) == KEPT_PARSES_MAX
    assert operation.take_kept((4).to_bytes(8, "big"), values) is None  # dropped
    assert operation.take_kept((5).to_bytes(8, "big"), values) is parsed
    assert operation.take_kept((5).to_bytes(8, "big"), values) is None  # taken once
    assert operation.take_kept((6).to_bytes(8, "big"), {}) is None  # another object


def test_a_value_that_cannot_be_copied_is_handed_as_it_is_and_marks_the_parse() -> None:
    proxy = MappingProxyType({"name": "a"})
    with pytest.raises(Uncopyable):
        unshared_value(proxy)
    with pytest.raises(Uncopyable):
        unshared_value(({"name": "a"}, proxy))
    checked = _CheckedArguments({"plain": ("a", 1), "proxy": proxy})
    assert checked.value("plain") == ("a", 1)
    assert not checked.leaked
    assert checked.value("proxy") is proxy
    assert checked.leaked


@given(value=ARGUMENT_VALUES)
def test_a_copy_equals_the_value_and_shares_no_map_or_list_with_it(value: Value) -> None:
    assert _copy_is_equal_and_its_own(unshared_value, value)


def test_the_copy_property_is_seen_failing_on_a_copy_that_shares() -> None:
    def shallow(value: object) -> object:
        return tuple(value) if isinstance(value, tuple) else value

    assert not _copy_is_equal_and_its_own(shallow, ({"name": "a"},))
    assert not _copy_is_equal_and_its_own(shallow, {"name": "a"})
    assert _copy_is_equal_and_its_own(shallow, ("a", 1))


def _copy_is_equal_and_its_own(copy: Callable[[Value], object], value: Value) -> bool:
    """Whether ``copy(value)`` equals ``value`` (and is of its type), and changing every map
    and list in the copy leaves ``value`` as it was."""
    before = repr(value)
    copied = copy(value)
    if repr(copied) != before or type(copied) is not type(value):
        return False
    vandalise(copied)
    return repr(value) == before


class Ghost(DispatchingApp):
    """Declares an operation it has no method for (a broken app)."""

    name: ClassVar[str] = "ghost"
    schema: ClassVar[AppSchema] = AppSchema(
        help="Declares op without a method.",
        operations=(Operation("op", frozenset({ROLE_BANK}), "Nothing.", NAME_FIELDS),),
    )

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        return None


def test_arguments_are_parsed_before_the_operations_method_is_looked_up() -> None:
    """Bad arguments are refused as such even by an app missing the operation's method (then
    a well-formed transaction is the app's fault), in the check and in the execution."""
    chain = Chain.start([Ghost()])
    bad = chain.sign(key("bank_a"), "ghost", "op", {"name": "no spaces"})
    good = chain.sign(key("bank_a"), "ghost", "op", {"name": "fine"})
    codes = []
    for tx in (bad, good):
        with pytest.raises(TransactionRejected) as refused:
            chain.host.check_transaction(tx, expected_nonce=tx.nonce)
        codes.append(refused.value.code)
    assert codes == ["bad_argument", "app_fault"]
    receipts = chain.run([bad, good]).receipts
    assert [receipt.code for receipt in receipts] == ["bad_argument", "app_fault"]
