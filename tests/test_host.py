"""The app host: gates, nonces, atomic transactions across apps, receipts, the app hash."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.base import ANY_ROLE, ROLE_BANK, App, AppError, AppState, ReadState, TxContext
from apps.host import (
    CODE_INVALID_TRANSACTION,
    RECEIPT_LIMITS,
    STATUS_OK,
    STATUS_REJECTED,
    AppHost,
    GenesisError,
    Receipt,
    TransactionRejected,
    end_block_hash,
)
from apps.membership import MembershipApp
from apps.payments import PaymentsApp
from apps.state import MemoryBackend, StateOverlay, app_hash_of
from consensus.codec import Value, decode, encode
from consensus.crypto import hash_bytes
from tests.host_fixtures import CHAIN, Chain, genesis_config, key

BANK = key("bank_a")
OTHER_BANK = key("bank_b")
STRANGER = key("stranger")


def _int(value: Value) -> int:
    assert isinstance(value, int)
    return value


class VaultApp(App):
    """Offers ``deposit`` to other apps; fails when asked to."""

    name: ClassVar[str] = "vault"
    operations: ClassVar[Mapping[str, frozenset[str]]] = {"touch": ANY_ROLE}

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        state.put(b"total", encode(0))

    def check(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> None:
        return None

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        ctx.state.put(b"touched", b"1")
        return None

    def call(
        self, ctx: TxContext, caller: str, operation: str, arguments: Mapping[str, Value]
    ) -> Value:
        if operation == "deposit":
            total = _int(decode(ctx.state.get(b"total") or encode(0)))
            total += _int(arguments["amount"])
            ctx.state.put(b"total", encode(total))
            ctx.emit("deposited", {"amount": arguments["amount"], "caller": caller})
            if arguments.get("fail"):
                raise AppError("vault_closed", "the vault refuses")
            return total
        if operation == "recurse":
            return ctx.call("vault", "recurse", {})
        return super().call(ctx, caller, operation, arguments)

    def query(self, state: ReadState, path: str, arguments: Mapping[str, Value]) -> Value:
        if path == "total":
            return decode(state.get(b"total") or encode(0))
        raise AppError("unknown_query", path)


class KvApp(App):
    """A key-value app whose operations exercise every host path."""

    name: ClassVar[str] = "kv"
    operations: ClassVar[Mapping[str, frozenset[str]]] = {
        "write": frozenset({ROLE_BANK}),
        "regulate": frozenset({"regulator"}),
    }

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        if config.get("bad"):
            raise AppError("bad_genesis", "bad config")

    def check(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> None:
        if arguments.get("refuse"):
            raise AppError("refused", "check refuses")
        ctx.state.put(b"check-wrote", b"1")  # must never survive

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        puts = arguments.get("puts", ())
        assert isinstance(puts, tuple)
        for pair in puts:
            assert isinstance(pair, tuple)
            k, v = pair
            assert isinstance(k, bytes)
            assert isinstance(v, bytes)
            ctx.state.put(k, v)
        deletes = arguments.get("deletes", ())
        assert isinstance(deletes, tuple)
        for k in deletes:
            assert isinstance(k, bytes)
            ctx.state.delete(k)
        ctx.emit("written", {"count": len(puts)})
        result: Value = None
        if "deposit" in arguments:
            deposit = arguments["deposit"]
            assert isinstance(deposit, dict)
            try:
                result = ctx.call("vault", "deposit", deposit)
            except AppError as error:
                if not arguments.get("catch"):
                    raise
                result = f"caught {error.code}"
        if "call" in arguments:
            result = ctx.call("vault", str(arguments["call"]), {})
        if arguments.get("read"):
            read = arguments["read"]
            assert isinstance(read, bytes)
            result = ctx.state.get(read)
        if arguments.get("scan"):
            result = tuple(k for k, _ in ctx.state.scan())
        if arguments.get("fail"):
            raise AppError("asked_to_fail", "the transaction asked to fail")
        if arguments.get("crash"):
            raise ZeroDivisionError("bug")
        if arguments.get("float"):
            return 1.5  # type: ignore[return-value]
        if arguments.get("query_vault"):
            return ctx.query("vault", "total", {})
        return result

    def query(self, state: ReadState, path: str, arguments: Mapping[str, Value]) -> Value:
        if path == "get":
            k = arguments.get("key")
            if not isinstance(k, bytes):
                raise AppError("bad_argument", "key must be bytes")
            return state.get(k)
        if path == "all":
            return tuple((k, v) for k, v in state.scan())
        if path == "crash":
            raise KeyError("bug")
        raise AppError("unknown_query", path)


def chain() -> Chain:
    return Chain.start([KvApp(), VaultApp()])


def write(c: Chain, *puts: tuple[bytes, bytes], signer: object = BANK, **extra: Value) -> bytes:
    tx = c.sign(signer, "kv", "write", {"puts": list(puts), **extra})  # type: ignore[arg-type]
    return tx.encoded


# -- genesis ------------------------------------------------------------------------------------


def test_genesis_is_deterministic_and_its_app_hash_is_the_state_root() -> None:
    first, second = chain(), chain()
    assert first.host.app_hash == second.host.app_hash
    assert first.backend.items() == second.backend.items()
    state = tuple(first.backend.items())
    assert first.host.app_hash == app_hash_of(MemoryBackend(), state).root
    assert first.host.app_hash == MemoryBackend(state).app_hash
    assert first.host.query("vault", "total", {}) == 0


def test_genesis_rejects_unknown_sections_and_bad_configs() -> None:
    host = AppHost([MembershipApp(), KvApp()], MemoryBackend(), chain_id=CHAIN)
    with pytest.raises(GenesisError, match="not enabled"):
        host.init_genesis({"payments": {}})
    with pytest.raises(GenesisError, match="rejected its genesis"):
        host.init_genesis({"kv": {"bad": True}})
    with pytest.raises(GenesisError, match="at least one bank"):
        host.init_genesis({"membership": {}})
    with pytest.raises(GenesisError, match="must be a map"):
        host.init_genesis({"kv": 5})


def test_host_requires_membership_and_unique_names() -> None:
    with pytest.raises(ValueError, match="membership"):
        AppHost([KvApp()], MemoryBackend(), chain_id=CHAIN)
    with pytest.raises(ValueError, match="twice"):
        AppHost([MembershipApp(), KvApp(), KvApp()], MemoryBackend(), chain_id=CHAIN)


# -- admission ----------------------------------------------------------------------------------


def rejection(c: Chain, tx: object, **kwargs: int) -> str:
    with pytest.raises(TransactionRejected) as info:
        c.host.check_transaction(tx, **kwargs)  # type: ignore[arg-type]
    return info.value.code


def test_check_transaction_gates() -> None:
    c = chain()
    ok = c.sign(BANK, "kv", "write", {})
    c.host.check_transaction(ok)
    assert rejection(c, c.sign(BANK, "payments", "transfer", {}, nonce=0)) == "unknown_app"
    assert rejection(c, c.sign(BANK, "kv", "erase", {}, nonce=0)) == "unknown_operation"
    assert rejection(c, c.sign(STRANGER, "kv", "write", {}, nonce=0)) == "unknown_sender"
    assert rejection(c, c.sign(BANK, "kv", "regulate", {}, nonce=0)) == "not_authorised"
    assert rejection(c, c.sign(BANK, "kv", "write", {}, nonce=3)) == "bad_nonce"
    assert rejection(c, c.sign(BANK, "kv", "write", {"refuse": True}, nonce=0)) == "refused"
    # The mempool may admit later nonces while earlier ones are pending.
    later = c.sign(BANK, "kv", "write", {}, nonce=1)
    c.host.check_transaction(later, expected_nonce=1)
    c.run([ok])
    assert rejection(c, ok) == "stale_nonce"
    assert c.host.next_nonce(BANK.public_key) == 1
    # check never leaves writes behind
    assert c.host.query("kv", "get", {"key": b"check-wrote"}) is None


def test_check_transaction_refuses_other_chains() -> None:
    c = chain()
    from apps.transaction import sign_transaction

    tx = sign_transaction(
        BANK, chain_id="other", app="kv", operation="write", arguments={}, nonce=0
    )
    assert rejection(c, tx) == "invalid_transaction"


# -- execution ----------------------------------------------------------------------------------


def test_receipts_and_block_order_visibility() -> None:
    c = chain()
    result = c.run(
        [
            write(c, (b"a", b"1")),
            write(c, read=b"a"),  # sees the block's earlier write
            write(c, (b"b", b"2"), fail=True),  # discarded
            write(c, read=b"b"),
            b"\x93garbage",
        ]
    )
    statuses = [(r.status, r.code) for r in result.receipts]
    assert statuses == [
        (STATUS_OK, ""),
        (STATUS_OK, ""),
        (STATUS_REJECTED, "asked_to_fail"),
        (STATUS_OK, ""),
        (STATUS_REJECTED, "invalid_transaction"),
    ]
    assert result.receipts[1].result == b"1"
    assert result.receipts[3].result is None
    assert result.receipts[0].events[0].app == "kv"
    assert result.receipts[2].events == ()
    assert [r.index for r in result.receipts] == [0, 1, 2, 3, 4]
    # The failed transaction still consumed its nonce: 4 valid envelopes passed the gates.
    assert c.host.next_nonce(BANK.public_key) == 4
    keys = [k for k, _ in result.writes]
    assert keys == sorted(keys)
    assert result.write_map == dict(result.writes)
    assert c.host.query("kv", "all", {}) == ((b"a", b"1"),)


def test_replays_and_nonce_gaps_fail_without_consuming_the_nonce() -> None:
    c = chain()
    first = write(c, (b"k", b"v"))
    gap = c.sign(BANK, "kv", "write", {}, nonce=5).encoded
    result = c.run([first, first, gap])
    assert [r.code for r in result.receipts] == ["", "stale_nonce", "bad_nonce"]
    assert c.host.next_nonce(BANK.public_key) == 1
    again = c.run([first])
    assert again.receipts[0].code == "stale_nonce"


def test_unauthorised_and_suspended_senders_never_reach_the_app() -> None:
    c = chain()
    stranger = c.sign(STRANGER, "kv", "write", {"puts": [(b"x", b"1")]}).encoded
    regulator_write = c.sign(key("regulator_sg"), "kv", "write", {"puts": [(b"x", b"1")]}).encoded
    result = c.run([stranger, regulator_write])
    assert [r.code for r in result.receipts] == ["unknown_sender", "not_authorised"]
    assert c.host.query("kv", "get", {"key": b"x"}) is None
    assert c.host.next_nonce(STRANGER.public_key) == 0


def test_failures_roll_back_every_app_the_transaction_touched() -> None:
    c = chain()
    result = c.run(
        [
            # the callee fails and the caller lets it propagate: nothing survives
            write(c, (b"a", b"1"), deposit={"amount": 5, "fail": True}),
            # the callee succeeds, the caller fails afterwards: nothing survives either
            write(c, (b"b", b"1"), deposit={"amount": 7}, fail=True),
            # the caller catches the callee's rejection: its own writes stay, the callee's go
            write(c, (b"c", b"1"), deposit={"amount": 11, "fail": True}, catch=True),
            # a clean composition
            write(c, (b"d", b"1"), deposit={"amount": 13}),
        ]
    )
    codes = [r.code for r in result.receipts]
    assert codes == ["vault_closed", "asked_to_fail", "", ""]
    assert result.receipts[2].result == "caught vault_closed"
    assert [e.kind for e in result.receipts[2].events] == ["written"]
    assert result.receipts[3].result == 13
    assert [(e.app, e.kind) for e in result.receipts[3].events] == [
        ("kv", "written"),
        ("vault", "deposited"),
    ]
    assert c.host.query("vault", "total", {}) == 13
    assert c.host.query("kv", "all", {}) == ((b"c", b"1"), (b"d", b"1"))


def test_app_bugs_and_bad_results_are_deterministic_rejections() -> None:
    c = chain()
    result = c.run(
        [
            write(c, (b"a", b"1"), crash=True),
            write(c, (b"b", b"1"), float=True),
            write(c, call="recurse"),
            write(c, call="withdraw"),
        ]
    )
    assert [r.code for r in result.receipts] == [
        "app_fault",
        "bad_result",
        "call_depth",
        "not_callable",
    ]
    assert "ZeroDivisionError" in result.receipts[0].message
    assert c.host.query("kv", "all", {}) == ()


def test_namespaces_are_isolated_and_queries_see_in_transaction_state() -> None:
    c = chain()
    result = c.run([write(c, (b"total", b"x"), deposit={"amount": 3}, query_vault=True)])
    assert result.receipts[0].result == 3
    assert c.host.query("kv", "get", {"key": b"total"}) == b"x"
    assert c.host.query("vault", "total", {}) == 3
    scan = c.run([write(c, scan=True)]).receipts[0].result
    assert scan == (b"total",)


def test_queries_reject_unknown_apps_and_wrap_bugs() -> None:
    c = chain()
    with pytest.raises(AppError, match="unknown_app"):
        c.host.query("payments", "x", {})
    with pytest.raises(AppError, match="app_fault"):
        c.host.query("kv", "crash", {})


def test_app_hash_chains_and_every_block_changes_it() -> None:
    c = chain()
    hashes = [c.host.app_hash, *(c.run([]).app_hash for _ in range(3))]
    assert len(set(hashes)) == 4
    assert c.host.last_block_time_ms() == c.time_ms + 3000


def test_receipt_round_trip() -> None:
    c = chain()
    receipt = c.run([write(c, (b"a", b"1"), deposit={"amount": 2})]).receipts[0]
    assert Receipt.decode(receipt.encode()) == receipt


def test_execute_block_is_pure_until_committed() -> None:
    c = chain()
    tx = write(c, (b"a", b"1"))
    first = c.host.execute_block(c.context(), [tx])
    second = c.host.execute_block(c.context(), [tx])
    assert first == second
    assert c.host.query("kv", "all", {}) == ()


def test_known_transactions_skip_decoding_but_must_match_bytes() -> None:
    c = chain()
    tx = c.sign(BANK, "kv", "write", {"puts": [(b"a", b"1")]})
    result = c.host.execute_block(c.context(), [tx.encoded], known={tx.hash: tx})
    assert result.receipts[0].ok


def test_a_forged_signature_is_checked_even_beside_its_verified_twin() -> None:
    """The verified-transaction fast path is keyed by the whole encoded transaction. A copy of
    a verified transaction with its signature replaced is other bytes, so it is verified (and
    refused); and a ``known`` entry whose transaction does not match the block's bytes is
    ignored, so not even a caller's wrong map lets a forged signature through."""
    c = chain()
    tx = c.sign(BANK, "kv", "write", {"puts": [(b"a", b"1")]})
    forged = tx.encoded[:-64] + bytes(64)
    assert forged != tx.encoded
    for known in ({tx.hash: tx}, {hash_bytes(forged): tx}):
        result = c.host.execute_block(c.context(), [forged], known=known)
        assert result.receipts[0].code == CODE_INVALID_TRANSACTION
        assert "signature" in result.receipts[0].message


# -- the overlay and the atomicity property -------------------------------------------------------


def test_overlay_scan_merges_layers_in_order_and_reverse() -> None:
    backend = MemoryBackend([(b"a", b"0"), (b"c", b"0"), (b"e", b"0")])
    overlay = StateOverlay(backend)
    overlay.put(b"b", b"1")
    overlay.delete(b"c")
    overlay.savepoint()
    overlay.put(b"a", b"2")
    overlay.put(b"d", b"2")
    overlay.delete(b"b")
    assert list(overlay.scan()) == [(b"a", b"2"), (b"d", b"2"), (b"e", b"0")]
    assert list(overlay.scan(reverse=True)) == [(b"e", b"0"), (b"d", b"2"), (b"a", b"2")]
    assert list(overlay.scan(b"b", b"e")) == [(b"d", b"2")]
    overlay.rollback()
    assert list(overlay.scan()) == [(b"a", b"0"), (b"b", b"1"), (b"e", b"0")]
    assert overlay.writes() == ((b"b", b"1"), (b"c", None))


_keys = st.binary(min_size=1, max_size=2)
Operation = tuple[list[tuple[bytes, bytes]], list[bytes], bool, tuple[int, bool] | None]
OPERATION = st.tuples(
    st.lists(st.tuples(_keys, st.binary(max_size=3)), max_size=4),
    st.lists(_keys, max_size=2),
    st.booleans(),
    st.none() | st.tuples(st.integers(0, 9), st.booleans()),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(OPERATION, max_size=6), min_size=1, max_size=4))
def test_state_matches_a_model_of_atomic_transactions(blocks: list[list[Operation]]) -> None:
    """Random blocks of transactions, some failing in the caller or in a nested call: the
    committed state is always the model with exactly the successful transactions applied."""
    c = chain()
    model: dict[bytes, bytes] = {}
    vault = 0
    for block in blocks:
        raw = []
        for puts, deletes, fail, deposit in block:
            arguments: dict[str, Value] = {"puts": list(puts), "deletes": list(deletes)}
            if fail:
                arguments["fail"] = True
            if deposit is not None:
                arguments["deposit"] = {"amount": deposit[0], "fail": deposit[1]}
            raw.append(c.sign(BANK, "kv", "write", arguments).encoded)
        result = c.run(raw)
        for (puts, deletes, fail, deposit), receipt in zip(block, result.receipts, strict=True):
            fails = fail or (deposit is not None and deposit[1])
            assert receipt.ok is not fails
            if fails:
                continue
            staged = dict(model)
            staged.update(puts)
            for k in deletes:
                staged.pop(k, None)
            model = staged
            if deposit is not None:
                vault += deposit[0]
        assert c.host.query("kv", "all", {}) == tuple(sorted(model.items()))
        assert c.host.query("vault", "total", {}) == vault


def test_receipt_status_values() -> None:
    assert Receipt(b"x" * 32, 0, STATUS_OK).ok
    assert not Receipt(b"x" * 32, 0, STATUS_REJECTED, "c", "m").ok


# -- end of block -------------------------------------------------------------------------------


class ClockApp(App):
    """Counts blocks in ``end_block``; ``arm`` makes its next ``end_block`` fail after writing."""

    name: ClassVar[str] = "clock"
    operations: ClassVar[Mapping[str, frozenset[str]]] = {"arm": ANY_ROLE}

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        return None

    def check(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> None:
        return None

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        ctx.state.put(b"armed", encode(str(arguments["mode"])))
        return None

    def end_block(self, ctx: TxContext) -> None:
        ticks = _int(decode(ctx.state.get(b"ticks") or encode(0))) + 1
        ctx.state.put(b"ticks", encode(ticks))
        ctx.emit("ticked", {"sender": ctx.sender, "hash": ctx.transaction_hash})
        armed = ctx.state.get(b"armed")
        if armed == encode("fail"):
            raise AppError("clock_stopped", "the clock refuses")
        if armed == encode("crash"):
            raise ZeroDivisionError("bug")
        if armed == encode("flood"):
            # More events than one stored record holds (the node stores them like a receipt).
            for index in range(RECEIPT_LIMITS.array_len_max + 1):
                ctx.emit("ticked", {"index": index})
        if armed == encode("debit"):
            # No signer: an end-of-block step cannot debit anyone's account.
            ctx.call(
                "payments",
                "transfer",
                {
                    "from": BANK.public_key,
                    "to": OTHER_BANK.public_key,
                    "currency": "SGD",
                    "amount": 1,
                    "end_to_end_id": "tick",
                },
            )

    def query(self, state: ReadState, path: str, arguments: Mapping[str, Value]) -> Value:
        return decode(state.get(b"ticks") or encode(0))


class SecondClockApp(ClockApp):
    name: ClassVar[str] = "clock_b"


def test_end_block_runs_every_block_in_app_order_with_no_sender() -> None:
    c = Chain.start([ClockApp(), SecondClockApp(), KvApp()])
    result = c.run([])
    assert [(e.app, e.kind) for e in result.block_events] == [
        ("clock", "ticked"),
        ("clock_b", "ticked"),
    ]
    event = result.block_events[0].attributes
    assert event == {"sender": b"", "hash": end_block_hash(CHAIN, 1)}
    assert end_block_hash(CHAIN, 1) != end_block_hash(CHAIN, 2)
    assert c.host.query("clock", "ticks", {}) == 1
    assert c.host.query("clock_b", "ticks", {}) == 1


@pytest.mark.parametrize(
    ("mode", "code"),
    [("fail", "clock_stopped"), ("crash", "app_fault"), ("flood", "app_fault")],
)
def test_a_failing_end_block_loses_only_its_own_writes(mode: str, code: str) -> None:
    c = Chain.start([ClockApp(), SecondClockApp()])
    armed = c.run([c.sign(BANK, "clock", "arm", {"mode": mode})])
    assert armed.receipts[0].ok  # the transaction itself stands
    assert [(e.app, e.kind) for e in armed.block_events] == [
        ("_host", "end_block_fault"),
        ("clock_b", "ticked"),
    ]
    assert armed.block_events[0].attributes["app"] == "clock"
    assert armed.block_events[0].attributes["code"] == code
    assert c.host.height == 1  # the block committed
    assert c.host.query("clock", "ticks", {}) == 0  # the failing step's write was discarded
    assert c.host.query("clock_b", "ticks", {}) == 1


def test_an_end_block_step_cannot_debit_an_account() -> None:
    payments: dict[str, Value] = {
        "currencies": [{"code": "SGD", "digits": 2, "issuer": "bank_a"}],
        "balances": [{"account": BANK.public_key, "currency": "SGD", "amount": 100}],
    }
    genesis: dict[str, Value] = {"membership": genesis_config(), "payments": payments}
    c = Chain.start([ClockApp(), PaymentsApp()], app_genesis=genesis)
    result = c.run([c.sign(BANK, "clock", "arm", {"mode": "debit"})])
    assert [(e.kind, e.attributes["code"]) for e in result.block_events] == [
        ("end_block_fault", "unauthorised_debit")
    ]
    balance = c.host.query("payments", "balance", {"account": BANK.public_key, "currency": "SGD"})
    assert balance == 100
