"""Payments scenarios on the real host: issuance, payments, controls, FX PvP, app calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pytest

from apps._records import EXPIRY_SWEEP_MAX
from apps.base import ANY_ROLE, App, AppState, ReadState, TxContext
from apps.demo import BANK_LIQUIDITY, CUSTOMER_FUNDS
from apps.payments import fx_offer_id
from consensus.codec import Value
from tests.apps_fixtures import DAY_MS, Network


@pytest.fixture
def net() -> Network:
    return Network.start()


def _map(value: Value) -> Mapping[str, Value]:
    assert isinstance(value, Mapping)
    return value  # type: ignore[return-value]


def supply(net: Network, code: str) -> int:
    value = _map(net.query("payments", "currency", code=code))["supply"]
    assert isinstance(value, int)
    return value


def pay(net: Network, source: str, to: str, amount: int, e2e: str, code: str = "SGD") -> Value:
    return net.ok(
        source,
        "payments",
        "transfer",
        to=net.pk(to),
        currency=code,
        amount=amount,
        end_to_end_id=e2e,
        purpose="invoice 42",
        originator={"name": source},
        beneficiary={"name": to, "country": "SG"},
    )


# ---------------------------------------------------------------------- issuance
def test_issuer_issues_to_a_bank_and_redeems_changing_supply(net: Network) -> None:
    before = supply(net, "SGD")
    net.ok("lion-bank", "payments", "issue", currency="SGD", to=net.pk("harbour-bank"), amount=500)
    assert supply(net, "SGD") == before + 500
    assert net.balance("harbour-bank", "SGD") == BANK_LIQUIDITY + 500
    net.ok("lion-bank", "payments", "redeem", currency="SGD", amount=300)
    assert supply(net, "SGD") == before + 200
    assert net.balance("lion-bank", "SGD") == BANK_LIQUIDITY - 300


def test_only_the_issuing_bank_issues_or_redeems(net: Network) -> None:
    args: dict[str, Value] = {"currency": "SGD", "to": net.pk("pearl-bank"), "amount": 1}
    assert net.rejected("harbour-bank", "payments", "issue", **args) == "not_issuer"
    assert net.rejected("harbour-bank", "payments", "redeem", currency="SGD", amount=1) == (
        "not_issuer"
    )
    # The host refuses non-bank roles before the app sees them.
    assert net.rejected("alice", "payments", "issue", **args) == "not_authorised"


def test_currency_is_issued_only_to_participating_banks(net: Network) -> None:
    code = net.rejected(
        "lion-bank", "payments", "issue", currency="SGD", to=net.pk("alice"), amount=1
    )
    assert code == "not_participating_bank"


def test_redeem_cannot_exceed_the_issuers_balance(net: Network) -> None:
    code = net.rejected(
        "lion-bank", "payments", "redeem", currency="SGD", amount=BANK_LIQUIDITY + 1
    )
    assert code == "insufficient_funds"


def test_create_currency_makes_the_sender_institution_issuer(net: Network) -> None:
    record = _map(net.ok("harbour-bank", "payments", "create_currency", code="USD", digits=2))
    assert record["issuer"] == "harbour-bank"
    net.ok("harbour-bank", "payments", "issue", currency="USD", to=net.pk("lion-bank"), amount=7)
    assert net.balance("lion-bank", "USD") == 7
    assert net.rejected("lion-bank", "payments", "create_currency", code="USD", digits=2) == (
        "currency_exists"
    )
    assert net.rejected("lion-bank", "payments", "create_currency", code="usd", digits=2) == (
        "bad_argument"
    )


# ---------------------------------------------------------------------- payments
def test_transfer_moves_funds_and_records_the_payment_fields(net: Network) -> None:
    result = _map(pay(net, "alice", "merlion-metals", 1_250, "INV-0001"))
    assert net.balance("alice", "SGD") == CUSTOMER_FUNDS - 1_250
    payment = _map(
        net.query("payments", "payment", sender=net.pk("alice"), end_to_end_id="INV-0001")
    )
    assert payment["id"] == result["payment"]
    assert payment["amount"] == 1_250
    assert payment["purpose"] == "invoice 42"
    assert _map(payment["beneficiary"])["country"] == "SG"
    by_id = net.query("payments", "payment", id=result["payment"])
    assert by_id == payment
    history = net.query("payments", "history", account=net.pk("merlion-metals"))
    assert isinstance(history, tuple)
    assert _map(history[0])["end_to_end_id"] == "INV-0001"


def test_history_is_newest_first_and_pages(net: Network) -> None:
    for index in range(3):
        pay(net, "alice", "bob", 10 + index, f"E-{index}")
    history = net.query("payments", "history", account=net.pk("alice"), limit=2)
    assert isinstance(history, tuple)
    assert [_map(item)["amount"] for item in history] == [12, 11]
    older = net.query("payments", "history", account=net.pk("alice"), before=_map(history[1])["id"])
    assert isinstance(older, tuple)
    assert [_map(item)["amount"] for item in older] == [10]


def test_end_to_end_id_is_unique_per_sender(net: Network) -> None:
    pay(net, "alice", "bob", 1, "SAME-ID")
    code = net.rejected(
        "alice",
        "payments",
        "transfer",
        to=net.pk("bob"),
        currency="SGD",
        amount=1,
        end_to_end_id="SAME-ID",
    )
    assert code == "duplicate_end_to_end_id"
    # Another sender may use the same id.
    pay(net, "merlion-metals", "bob", 1, "SAME-ID")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"amount": CUSTOMER_FUNDS + 1}, "insufficient_funds"),
        ({"currency": "HKD"}, "no_account"),
        ({"currency": "EUR"}, "unknown_currency"),
        ({"to": "alice"}, "self_payment"),
        ({"to": "stranger"}, "unknown_party"),
        ({"amount": 0}, "bad_argument"),
        ({"amount": -5}, "bad_argument"),
        ({"end_to_end_id": "has/slash"}, "bad_argument"),
        ({"purpose": "x" * 300}, "bad_argument"),
    ],
)
def test_transfer_rejections_name_the_rule(
    net: Network, change: dict[str, Value], code: str
) -> None:
    args: dict[str, Value] = {
        "to": net.pk("bob"),
        "currency": "SGD",
        "amount": 5,
        "end_to_end_id": "E2E-1",
    }
    args.update(change)
    if change.get("to") == "alice":
        args["to"] = net.pk("alice")
    elif change.get("to") == "stranger":
        args["to"] = b"\x09" * 32
    assert net.rejected("alice", "payments", "transfer", **args) == code
    assert net.balance("alice", "SGD") == CUSTOMER_FUNDS


def test_an_account_opens_with_its_first_credit_and_stays_open_at_zero(net: Network) -> None:
    # alice banks in SGD only: an HKD payment names the missing account, not a zero balance.
    args: dict[str, Value] = {"to": net.pk("bob"), "currency": "HKD", "amount": 1}
    tx = net.sign("alice", "payments", "transfer", end_to_end_id="HK-1", **args)
    receipt = net.chain.run([tx]).receipts[0]
    assert receipt.code == "no_account"
    assert "holds no HKD account" in receipt.message
    assert net.query("payments", "balances", account=net.pk("alice")) == {"SGD": CUSTOMER_FUNDS}
    # An incoming payment opens the account; spent down to zero, it stays open.
    pay(net, "bob", "alice", 300, "TO-ALICE", code="HKD")
    pay(net, "alice", "bob", 300, "BACK", code="HKD")
    assert net.query("payments", "balances", account=net.pk("alice")) == {
        "HKD": 0,
        "SGD": CUSTOMER_FUNDS,
    }
    assert net.rejected("alice", "payments", "transfer", end_to_end_id="HK-2", **args) == (
        "insufficient_funds"
    )


def test_every_debit_names_a_missing_account(net: Network) -> None:
    # The sell leg of an FX offer, the buy leg of an acceptance, an issuer's redemption.
    assert (
        net.rejected(
            "alice",
            "payments",
            "offer_fx",
            sell_currency="HKD",
            sell_amount=1,
            buy_currency="SGD",
            buy_amount=1,
            expires_ms=net.now_ms + DAY_MS,
        )
        == "no_account"
    )
    offer_id = offer(net, maker="merlion-metals", buy_currency="CNY", buy_amount=1)
    assert net.rejected("alice", "payments", "accept_fx", offer=offer_id) == "no_account"
    assert _map(net.query("payments", "offer", id=offer_id))["status"] == "open"
    net.ok("harbour-bank", "payments", "create_currency", code="USD", digits=2)
    assert net.rejected("harbour-bank", "payments", "redeem", currency="USD", amount=1) == (
        "no_account"
    )


def test_regulators_cannot_move_money(net: Network) -> None:
    code = net.rejected(
        "regulator",
        "payments",
        "transfer",
        to=net.pk("bob"),
        currency="SGD",
        amount=1,
        end_to_end_id="R-1",
    )
    assert code == "not_authorised"


# ---------------------------------------------------------------------- controls
def test_account_bank_freezes_a_customer_account(net: Network) -> None:
    net.set_controls("lion-bank", "alice", "SGD", frozen=True)
    assert (
        net.rejected(
            "alice",
            "payments",
            "transfer",
            to=net.pk("bob"),
            currency="SGD",
            amount=1,
            end_to_end_id="F-1",
        )
        == "account_frozen"
    )
    assert (
        net.rejected(
            "merlion-metals",
            "payments",
            "transfer",
            to=net.pk("alice"),
            currency="SGD",
            amount=1,
            end_to_end_id="F-2",
        )
        == "beneficiary_frozen"
    )
    controls = _map(net.query("payments", "controls", account=net.pk("alice")))
    assert _map(controls["SGD"])["frozen"] is True
    net.set_controls("lion-bank", "alice", "SGD", frozen=False)
    pay(net, "alice", "bob", 1, "F-3")


def test_controls_are_set_only_by_issuer_or_own_bank(net: Network) -> None:
    # bob banks with harbour-bank; pearl-bank neither issues SGD nor holds bob's account.
    assert (
        net.rejected(
            "pearl-bank",
            "payments",
            "set_controls",
            account=net.pk("bob"),
            currency="SGD",
            frozen=True,
        )
        == "not_controller"
    )
    # The SGD issuer may freeze anyone's SGD.
    net.ok(
        "lion-bank", "payments", "set_controls", account=net.pk("bob"), currency="SGD", frozen=True
    )


def test_an_enterprises_sponsor_bank_is_its_accounts_own_bank(net: Network) -> None:
    # kowloon-parts was onboarded by harbour-bank: harbour-bank sets the holder's bank's
    # controls on its SGD account, which the SGD issuer (lion-bank) adds to but cannot lift.
    account = net.pk("kowloon-parts")
    net.set_controls("harbour-bank", "kowloon-parts", "SGD", frozen=True)
    net.set_controls("lion-bank", "kowloon-parts", "SGD", frozen=False)
    controls = _map(_map(net.query("payments", "controls", account=account))["SGD"])
    assert controls["frozen"] is True
    # pearl-bank neither issues SGD nor sponsors kowloon-parts.
    tried: dict[str, Value] = {"account": account, "currency": "SGD", "frozen": False}
    assert net.rejected("pearl-bank", "payments", "set_controls", **tried) == "not_controller"
    assert (
        net.rejected(
            "harbour-bank",
            "payments",
            "set_controls",
            **{
                **tried,
                "account": bytes(32),
            },
        )
        == "unknown_party"
    )


def test_a_suspended_holders_account_may_be_frozen_before_it_is_reinstated(
    net: Network,
) -> None:
    # harbour-bank suspends bob, freezes his SGD meanwhile, then reinstates him: frozen.
    bob = net.pk("bob")
    pay(net, "merlion-metals", "bob", 500, "S-0")
    net.ok("harbour-bank", "membership", "suspend_identity", public_key=bob)
    net.set_controls("harbour-bank", "bob", "SGD", frozen=True)
    net.ok("harbour-bank", "membership", "reinstate_identity", public_key=bob)
    payment: dict[str, Value] = {
        "to": net.pk("alice"),
        "currency": "SGD",
        "amount": 1,
        "end_to_end_id": "S-1",
    }
    assert net.rejected("bob", "payments", "transfer", **payment) == "account_frozen"


def test_the_holders_bank_cannot_lift_controls_the_issuer_set(net: Network) -> None:
    # lion-bank issues SGD; harbour-bank is bob's bank and its own. Each may set controls,
    # but the holder's bank only adds to what the issuer set: it cannot unfreeze an account
    # the issuer froze, nor raise or remove the issuer's limits.
    pay(net, "merlion-metals", "bob", 500, "I-0")
    for account in ("harbour-bank", "bob"):
        net.set_controls(
            "lion-bank", account, "SGD", frozen=True, transaction_limit=100, daily_limit=150
        )
        net.set_controls(
            "harbour-bank", account, "SGD", frozen=False, transaction_limit=0, daily_limit=0
        )
    for account in ("harbour-bank", "bob"):
        controls = _map(_map(net.query("payments", "controls", account=net.pk(account)))["SGD"])
        assert (controls["frozen"], controls["transaction_limit"], controls["daily_limit"]) == (
            True,
            100,
            150,
        )
        payment: dict[str, Value] = {
            "to": net.pk("alice"),
            "currency": "SGD",
            "amount": 1,
            "end_to_end_id": "I-1",
        }
        assert net.rejected(account, "payments", "transfer", **payment) == "account_frozen"
        assert (
            net.rejected("alice", "payments", "transfer", **{**payment, "to": net.pk(account)})
            == "beneficiary_frozen"
        )
    # Unfrozen by the issuer, the issuer's limits still hold, and the bank's own tighter
    # limit adds to them.
    net.ok(
        "lion-bank", "payments", "set_controls", account=net.pk("bob"), currency="SGD", frozen=False
    )
    net.set_controls("harbour-bank", "bob", "SGD", transaction_limit=80)
    pay_bob: dict[str, Value] = {"to": net.pk("alice"), "currency": "SGD"}
    assert (
        net.rejected("bob", "payments", "transfer", **pay_bob, amount=81, end_to_end_id="I-3")
        == "account_transaction_limit"
    )
    net.ok("bob", "payments", "transfer", **pay_bob, amount=80, end_to_end_id="I-4")
    assert (
        net.rejected("bob", "payments", "transfer", **pay_bob, amount=80, end_to_end_id="I-5")
        == "account_daily_limit"
    )


def test_per_transaction_and_daily_account_limits(net: Network) -> None:
    net.set_controls("lion-bank", "alice", "SGD", transaction_limit=1_000, daily_limit=1_500)
    assert (
        net.rejected(
            "alice",
            "payments",
            "transfer",
            to=net.pk("bob"),
            currency="SGD",
            amount=1_001,
            end_to_end_id="L-1",
        )
        == "account_transaction_limit"
    )
    pay(net, "alice", "bob", 1_000, "L-2")
    assert (
        net.rejected(
            "alice",
            "payments",
            "transfer",
            to=net.pk("bob"),
            currency="SGD",
            amount=501,
            end_to_end_id="L-3",
        )
        == "account_daily_limit"
    )
    pay(net, "alice", "bob", 500, "L-4")
    net.advance(DAY_MS)
    pay(net, "alice", "bob", 1_000, "L-5")


def test_issuer_sets_a_currency_wide_transaction_limit(net: Network) -> None:
    assert (
        net.rejected(
            "harbour-bank", "payments", "set_currency_limit", currency="SGD", transaction_limit=10
        )
        == "not_issuer"
    )
    net.ok("lion-bank", "payments", "set_currency_limit", currency="SGD", transaction_limit=100)
    assert (
        net.rejected(
            "merlion-metals",
            "payments",
            "transfer",
            to=net.pk("bob"),
            currency="SGD",
            amount=101,
            end_to_end_id="C-1",
        )
        == "currency_transaction_limit"
    )
    pay(net, "merlion-metals", "bob", 100, "C-2")


# ---------------------------------------------------------------------- FX PvP
def offer(net: Network, maker: str = "merlion-metals", **change: Value) -> str:
    args: dict[str, Value] = {
        "sell_currency": "SGD",
        "sell_amount": 10_000,
        "buy_currency": "HKD",
        "buy_amount": 58_000,
        "expires_ms": net.now_ms + DAY_MS,
    }
    args.update(change)
    tx = net.sign(maker, "payments", "offer_fx", **args)
    result = _map(net.chain.run_one(tx))
    assert result["offer"] == fx_offer_id(tx.hash)
    return str(result["offer"])


def test_fx_offer_escrows_and_accept_settles_both_legs(net: Network) -> None:
    start_sgd = net.balance("merlion-metals", "SGD")
    offer_id = offer(net)
    assert net.balance("merlion-metals", "SGD") == start_sgd - 10_000
    open_offers = net.query("payments", "offers", currency="HKD")
    assert isinstance(open_offers, tuple)
    assert [_map(item)["id"] for item in open_offers] == [offer_id]
    net.ok("harbour-bank", "payments", "accept_fx", offer=offer_id)
    assert net.balance("merlion-metals", "HKD") == 58_000
    assert net.balance("harbour-bank", "SGD") == BANK_LIQUIDITY + 10_000
    assert net.balance("harbour-bank", "HKD") == BANK_LIQUIDITY - 58_000
    assert net.query("payments", "offers") == ()
    assert _map(net.query("payments", "offer", id=offer_id))["status"] == "settled"
    assert net.rejected("pearl-bank", "payments", "accept_fx", offer=offer_id) == "offer_closed"


def test_an_fx_offer_does_not_settle_out_of_an_account_frozen_since(net: Network) -> None:
    start_sgd = net.balance("merlion-metals", "SGD")
    offer_id = offer(net)
    # The SGD issuer freezes the maker's account after the sell leg went into escrow: the
    # escrowed SGD cannot leave for the taker, but the maker may still take it back.
    net.set_controls("lion-bank", "merlion-metals", "SGD", frozen=True)
    assert net.rejected("harbour-bank", "payments", "accept_fx", offer=offer_id) == (
        "account_frozen"
    )
    assert net.balance("harbour-bank", "SGD") == BANK_LIQUIDITY
    net.ok("merlion-metals", "payments", "cancel_fx", offer=offer_id)
    assert net.balance("merlion-metals", "SGD") == start_sgd


def test_fx_accept_without_funds_settles_neither_leg(net: Network) -> None:
    offer_id = offer(net, buy_amount=CUSTOMER_FUNDS + 1)
    # bob holds HKD 10,000.00 only: the buy leg fails, so the sell leg must not move either.
    assert net.rejected("bob", "payments", "accept_fx", offer=offer_id) == "insufficient_funds"
    assert net.balance("bob", "SGD") == 0
    assert _map(net.query("payments", "offer", id=offer_id))["status"] == "open"


def test_an_expired_fx_offer_is_reported_expired_and_its_escrow_released(net: Network) -> None:
    start_sgd = net.balance("merlion-metals", "SGD")
    offer_id = offer(net, expires_ms=net.now_ms + 5_000)
    assert net.rejected("pearl-bank", "payments", "cancel_fx", offer=offer_id) == (
        "not_offer_maker"
    )
    net.advance(10_000)
    # The first block past the expiry: the acceptance is refused, then the block's end
    # releases the escrow. Nobody had to cancel.
    result = net.chain.run([net.sign("pearl-bank", "payments", "accept_fx", offer=offer_id)])
    assert result.receipts[0].code == "offer_expired"
    assert [(event.app, event.kind) for event in result.block_events] == [
        ("payments", "fx_cancelled")
    ]
    record = _map(net.query("payments", "offer", id=offer_id))
    assert record["status"] == "expired"
    assert record["closed_ms"] == net.now_ms - 1000
    assert net.query("payments", "offers") == ()
    assert net.balance("merlion-metals", "SGD") == start_sgd
    history = net.query("payments", "history", account=net.pk("merlion-metals"), limit=1)
    assert isinstance(history, tuple)
    assert _map(history[0])["kind"] == "fx_release"
    # Once released, accepting or cancelling says it expired (and moves nothing again).
    assert net.rejected("pearl-bank", "payments", "accept_fx", offer=offer_id) == "offer_expired"
    assert net.rejected("merlion-metals", "payments", "cancel_fx", offer=offer_id) == (
        "offer_expired"
    )
    assert net.balance("merlion-metals", "SGD") == start_sgd


def test_cancelling_in_the_expiry_block_releases_the_escrow_once(net: Network) -> None:
    start_sgd = net.balance("merlion-metals", "SGD")
    offer_id = offer(net, expires_ms=net.now_ms + 5_000)
    net.advance(10_000)
    # The next operation that touches the expired offer releases it; the block's end then
    # finds nothing left to release.
    result = net.chain.run([net.sign("pearl-bank", "payments", "cancel_fx", offer=offer_id)])
    assert _map(result.receipts[0].result)["status"] == "expired"
    assert result.block_events == ()
    assert net.balance("merlion-metals", "SGD") == start_sgd


def test_a_backlog_of_expired_offers_drains_and_is_reported_expired(net: Network) -> None:
    count = EXPIRY_SWEEP_MAX + 3
    expires_ms = net.now_ms + 5_000
    start_sgd = net.balance("merlion-metals", "SGD")
    txs = [
        net.sign(
            "merlion-metals",
            "payments",
            "offer_fx",
            sell_currency="SGD",
            sell_amount=1,
            buy_currency="HKD",
            buy_amount=1,
            expires_ms=expires_ms,
        )
        for _ in range(count)
    ]
    assert all(receipt.ok for receipt in net.chain.run(txs).receipts)
    offers = net.query("payments", "offers", limit=500)
    assert isinstance(offers, tuple)
    assert len(offers) == count
    net.advance(10_000)
    first = net.chain.run([])
    assert len(first.block_events) == EXPIRY_SWEEP_MAX
    # Three are still waiting for the next block, yet none is reported open.
    assert net.balance("merlion-metals", "SGD") == start_sgd - 3
    assert net.query("payments", "offers", limit=500) == ()
    statuses = {
        _map(net.query("payments", "offer", id=fx_offer_id(tx.hash)))["status"] for tx in txs
    }
    assert statuses == {"expired"}
    assert len(net.chain.run([]).block_events) == 3
    assert net.balance("merlion-metals", "SGD") == start_sgd
    assert net.chain.run([]).block_events == ()


def test_fx_maker_cancels_and_offer_rules(net: Network) -> None:
    offer_id = offer(net, counterparty=net.pk("pearl-bank"))
    assert net.rejected("harbour-bank", "payments", "accept_fx", offer=offer_id) == (
        "not_counterparty"
    )
    assert net.rejected("merlion-metals", "payments", "accept_fx", offer=offer_id) == "own_offer"
    net.ok("merlion-metals", "payments", "cancel_fx", offer=offer_id)
    assert net.rejected("merlion-metals", "payments", "cancel_fx", offer=offer_id) == (
        "offer_closed"
    )
    assert net.rejected("pearl-bank", "payments", "accept_fx", offer="fx-nothing") == (
        "unknown_offer"
    )
    bad: dict[str, Value] = {
        "sell_currency": "SGD",
        "sell_amount": 1,
        "buy_currency": "SGD",
        "buy_amount": 1,
        "expires_ms": net.now_ms + DAY_MS,
    }
    assert net.rejected("merlion-metals", "payments", "offer_fx", **bad) == "same_currency"
    bad.update(buy_currency="HKD", expires_ms=net.now_ms)
    assert net.rejected("merlion-metals", "payments", "offer_fx", **bad) == "offer_expiry"


# ---------------------------------------------------------------------- calls from apps
class ThiefApp(App):
    """A test app that tries to move money the transaction's sender did not authorise."""

    name: ClassVar[str] = "thief"
    operations: ClassVar[Mapping[str, frozenset[str]]] = {"steal": ANY_ROLE, "lock": ANY_ROLE}

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        return None

    def check(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> None:
        return None

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        if operation == "lock":
            return ctx.call(
                "payments",
                "escrow_lock",
                {"from": ctx.sender, "currency": "SGD", "amount": 10, "escrow_id": "mine"},
            )
        return ctx.call(
            "payments",
            "transfer",
            {
                "from": arguments["victim"],
                "to": ctx.sender,
                "currency": "SGD",
                "amount": 10,
                "end_to_end_id": "theft",
            },
        )

    def query(self, state: ReadState, path: str, arguments: Mapping[str, Value]) -> Value:
        return None


def test_a_calling_app_moves_only_the_senders_funds() -> None:
    net = Network.start([ThiefApp()])
    code = net.rejected("bob", "thief", "steal", victim=net.pk("alice"))
    assert code == "unauthorised_debit"
    assert net.balance("alice", "SGD") == CUSTOMER_FUNDS
    # An escrow belongs to the app that locked it: another app cannot release it.
    net.ok("alice", "thief", "lock")
    escrow = _map(net.query("payments", "escrow", app="thief", id="mine"))
    assert escrow["amount"] == 10
    assert net.query("payments", "escrow", app="assets", id="mine") is None


def test_unknown_query_and_operation_are_errors(net: Network) -> None:
    from apps.base import AppError

    with pytest.raises(AppError) as raised:
        net.query("payments", "nope")
    assert raised.value.code == "unknown_query"
    assert net.query("payments", "currencies") != ()


@pytest.mark.parametrize("caller", ["payments", "scf"])
def test_a_transfers_record_is_built_in_canonical_key_order_with_every_field(caller: str) -> None:
    from apps.payments import _transfer_record
    from consensus.codec import decode, encode

    payer, payee, transaction = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    originator: dict[str, Value] = {"name": "Alice", "country": "SG"}
    beneficiary: dict[str, Value] = {"country": "SG", "name": "Merlion Metals"}
    record = _transfer_record(
        7,
        payer,
        payee,
        "SGD",
        1_250,
        1_700_000_000_000,
        42,
        transaction,
        end_to_end_id="INV-0001",
        purpose="invoice 42",
        originator=originator,
        beneficiary=beneficiary,
        remittance="ref 9",
        caller=caller,
    )
    # The fields every movement has, the transfer's details, and the calling app if another.
    expected: dict[str, Value] = {
        "id": 7,
        "kind": "transfer",
        "from": payer,
        "to": payee,
        "currency": "SGD",
        "amount": 1_250,
        "time_ms": 1_700_000_000_000,
        "height": 42,
        "transaction": transaction,
        "end_to_end_id": "INV-0001",
        "purpose": "invoice 42",
        "originator": originator,
        "beneficiary": beneficiary,
        "remittance": "ref 9",
    }
    if caller != "payments":
        expected["app"] = caller
    assert record == expected
    assert encode(record) == encode(expected)
    # Built in the order canonical bytes decode in, so the codec packs it without a copy.
    assert list(record) == list(decode(encode(expected)))  # type: ignore[arg-type]
