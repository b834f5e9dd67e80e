"""Blocks may reuse the caller's decoded transactions (``execute_block(..., known=...)``)
instead of decoding the block's bytes again: the results must be exactly those of decoding,
even when an app mutates the arguments it is handed, and a transaction built by a local
caller (not decoded from the wire) is still decoded from the block's bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pytest

from apps.base import ROLE_BANK, App, AppError, AppState, ReadState, TxContext
from apps.host import AppHost
from apps.transaction import Transaction
from consensus.codec import Value, encode
from tests.host_fixtures import CHAIN, Chain, key


class MutatingApp(App):
    """Writes what it was given, then vandalises its arguments (a badly written plugin)."""

    name: ClassVar[str] = "mutant"
    operations: ClassVar[Mapping[str, frozenset[str]]] = {"op": frozenset({ROLE_BANK})}

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        return None

    def check(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> None:
        self._vandalise(arguments)

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        ctx.state.put(ctx.transaction_hash, encode(dict(arguments)))
        self._vandalise(arguments)
        return dict(arguments)

    @staticmethod
    def _vandalise(arguments: Mapping[str, Value]) -> None:
        assert isinstance(arguments, dict)
        nested = arguments["nested"]
        assert isinstance(nested, dict)
        nested["seen"] = True
        arguments["extra"] = 1

    def query(self, state: ReadState, path: str, arguments: Mapping[str, Value]) -> Value:
        raise AppError("unknown_query", path)


def test_reused_transactions_execute_exactly_like_decoded_ones() -> None:
    chain = Chain.start([MutatingApp()])
    signed = [
        chain.sign(key("bank_a"), "mutant", "op", {"nested": {"n": n}, "list": ((n, {"k": n}),)})
        for n in range(3)
    ]
    raw = [tx.encoded for tx in signed]
    decoded = {tx.hash: Transaction.decode(tx.encoded, chain_id=CHAIN) for tx in signed}
    for tx in decoded.values():
        chain.host.check_transaction(tx, expected_nonce=tx.nonce)  # the check mutates too
    reference = chain.host.execute_block(chain.context(), raw)
    # Validation, then the commit's execution, from the same decoded objects.
    first = chain.host.execute_block(chain.context(), raw, known=decoded)
    second = chain.host.execute_block(chain.context(), raw, known=decoded)
    assert first == reference == second
    assert first.app_hash == reference.app_hash == second.app_hash
    assert [receipt.encode() for receipt in first.receipts] == [
        receipt.encode() for receipt in reference.receipts
    ]
    # Nothing the app did reached the caller's transactions.
    for tx, original in zip(decoded.values(), signed, strict=True):
        assert tx.arguments == {
            "nested": {"n": original.nonce},
            "list": ((original.nonce, {"k": original.nonce}),),
        }


def test_a_locally_built_transaction_holds_the_decoded_values() -> None:
    """``sign_transaction`` decodes what it signed: a list the caller passed is a tuple in the
    transaction, as in every node's decoding of the block, and the caller's objects are not
    kept."""
    chain = Chain.start([MutatingApp()])
    caller_list: list[Value] = [1, 2]
    local = chain.sign(key("bank_a"), "mutant", "op", {"nested": {}, "list": caller_list})
    assert local.arguments["list"] == (1, 2)
    caller_list.append(3)
    assert local.arguments["list"] == (1, 2)
    result = chain.host.execute_block(chain.context(), [local.encoded], known={local.hash: local})
    reference = chain.host.execute_block(chain.context(), [local.encoded])
    assert result == reference
    assert result.receipts[0].result == {"nested": {"seen": True}, "list": (1, 2), "extra": 1}


def test_a_host_over_other_bytes_ignores_a_known_entry_for_them() -> None:
    chain = Chain.start([MutatingApp()])
    one, two = (chain.sign(key("bank_a"), "mutant", "op", {"nested": {"n": n}}) for n in (0, 1))
    wrong = {one.hash: Transaction.decode(two.encoded, chain_id=CHAIN)}
    host: AppHost = chain.host
    assert host.execute_block(chain.context(), [one.encoded], known=wrong) == host.execute_block(
        chain.context(), [one.encoded]
    )


def test_hashes_from_the_caller_give_the_results_the_host_computes_itself() -> None:
    # The node hands the host its block's transaction hashes (``Block.transaction_hashes``)
    # instead of letting it hash every transaction again.
    chain = Chain.start([MutatingApp()])
    signed = [chain.sign(key("bank_a"), "mutant", "op", {"nested": {"n": n}}) for n in range(3)]
    raw = [tx.encoded for tx in signed]
    decoded = {tx.hash: Transaction.decode(tx.encoded, chain_id=CHAIN) for tx in signed}
    reference = chain.host.execute_block(chain.context(), raw, known=decoded)
    hashed = chain.host.execute_block(
        chain.context(), raw, known=decoded, hashes=[tx.hash for tx in signed]
    )
    assert hashed == reference
    assert [receipt.transaction_hash for receipt in hashed.receipts] == [tx.hash for tx in signed]
    with pytest.raises(AssertionError, match="one hash per transaction"):
        chain.host.execute_block(chain.context(), raw, hashes=[signed[0].hash])
