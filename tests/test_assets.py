"""Digital-asset scenarios on the real host: compliance rules, freezes, forced transfers, DvP."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from apps._records import STATE_LIMITS, as_int, key
from apps.assets import dvp_offer_id
from apps.demo import BANK_LIQUIDITY, CUSTOMER_FUNDS
from apps.state import namespace_prefix
from consensus.codec import Value, decode, encode
from tests.apps_fixtures import DAY_MS, Network

ISSUER = "lion-bank"
AGENT = "harbour-bank"  # a separate agent key for freezes and forced transfers


@pytest.fixture
def net() -> Network:
    network = Network.start()
    create(network)
    return network


def _map(value: Value) -> Mapping[str, Value]:
    assert isinstance(value, Mapping)
    return value  # type: ignore[return-value]


def create(net: Network, symbol: str = "BOND", **change: Value) -> None:
    args: dict[str, Value] = {
        "symbol": symbol,
        "name": "Lion bond 2030",
        "decimals": 0,
        "supply_cap": 1_000,
        "eligible_roles": ["enterprise", "bank"],
        "eligible_jurisdictions": ["SG", "HK"],
        "max_holders": 3,
        "holder_cap": 600,
        "agent": net.pk(AGENT),
    }
    args.update(change)
    net.ok(ISSUER, "assets", "create_asset", **args)


def mint(net: Network, to: str, amount: int, symbol: str = "BOND") -> None:
    net.ok(ISSUER, "assets", "mint", symbol=symbol, to=net.pk(to), amount=amount)


def send(net: Network, source: str, to: str, amount: int, symbol: str = "BOND") -> str:
    tx = net.sign(source, "assets", "transfer", symbol=symbol, to=net.pk(to), amount=amount)
    receipt = net.chain.run([tx]).receipts[0]
    return "ok" if receipt.ok else receipt.code


# ---------------------------------------------------------------------- issuance
def test_create_mint_burn_within_the_cap(net: Network) -> None:
    assert (
        net.rejected(ISSUER, "assets", "create_asset", symbol="BOND", decimals=0, supply_cap=1)
        == "asset_exists"
    )
    assert (
        net.rejected("alice", "assets", "create_asset", symbol="ALC", decimals=0, supply_cap=1)
        == "not_authorised"
    )
    mint(net, "straits-funds", 600)
    mint(net, "kowloon-parts", 400)
    assert _map(net.query("assets", "asset", symbol="BOND"))["supply"] == 1_000
    assert (
        net.rejected(ISSUER, "assets", "mint", symbol="BOND", to=net.pk(ISSUER), amount=1)
        == "supply_cap"
    )
    assert (
        net.rejected(
            "straits-funds", "assets", "mint", symbol="BOND", to=net.pk("straits-funds"), amount=1
        )
        == "not_issuer"
    )
    net.ok(ISSUER, "assets", "burn", symbol="BOND", holder=net.pk("kowloon-parts"), amount=100)
    assert net.units("kowloon-parts", "BOND") == 300
    assert (
        net.rejected(
            ISSUER, "assets", "burn", symbol="BOND", holder=net.pk("kowloon-parts"), amount=301
        )
        == "insufficient_balance"
    )
    mint(net, ISSUER, 100)
    holders = net.query("assets", "holders", symbol="BOND")
    assert isinstance(holders, tuple)
    assert len(holders) == 3
    balances = net.query("assets", "balances", holder=net.pk("straits-funds"))
    assert balances == {"BOND": 600}


@pytest.mark.parametrize(
    ("to", "amount", "code"),
    [
        ("alice", 1, "receiver_role"),  # a customer; the bond is for banks and enterprises
        ("dragon-motors", 1, "receiver_jurisdiction"),  # CN is not eligible
        ("straits-funds", 601, "holder_cap"),
    ],
)
def test_mint_lands_only_with_eligible_holders(
    net: Network, to: str, amount: int, code: str
) -> None:
    assert (
        net.rejected(ISSUER, "assets", "mint", symbol="BOND", to=net.pk(to), amount=amount) == code
    )


def test_max_holders_counts_distinct_holders(net: Network) -> None:
    mint(net, "straits-funds", 100)
    mint(net, "kowloon-parts", 100)
    mint(net, ISSUER, 100)
    assert (
        net.rejected(ISSUER, "assets", "mint", symbol="BOND", to=net.pk("merlion-metals"), amount=1)
        == "max_holders"
    )
    # Moving a whole balance to a new holder keeps the count: allowed.
    assert send(net, "kowloon-parts", "merlion-metals", 100) == "ok"
    assert _map(net.query("assets", "asset", symbol="BOND"))["holders"] == 3


# ---------------------------------------------------------------------- transfers
def test_transfer_rules_in_order(net: Network) -> None:
    mint(net, "straits-funds", 500)
    assert send(net, "straits-funds", "straits-funds", 1) == "self_transfer"
    assert send(net, "straits-funds", "kowloon-parts", 501) == "insufficient_balance"
    assert send(net, "straits-funds", "alice", 1) == "receiver_role"
    assert send(net, "straits-funds", "kowloon-parts", 100) == "ok"
    net.ok(
        AGENT, "assets", "freeze_partial", symbol="BOND", holder=net.pk("straits-funds"), amount=350
    )
    assert send(net, "straits-funds", "kowloon-parts", 51) == "frozen_amount"
    assert send(net, "straits-funds", "kowloon-parts", 50) == "ok"
    net.ok(
        AGENT, "assets", "freeze_partial", symbol="BOND", holder=net.pk("straits-funds"), amount=0
    )
    net.ok(AGENT, "assets", "freeze", symbol="BOND", holder=net.pk("kowloon-parts"), frozen=True)
    assert send(net, "kowloon-parts", "straits-funds", 1) == "sender_frozen"
    assert send(net, "straits-funds", "kowloon-parts", 1) == "receiver_frozen"
    net.ok(AGENT, "assets", "freeze", symbol="BOND", holder=net.pk("kowloon-parts"), frozen=False)
    net.ok(ISSUER, "assets", "pause", symbol="BOND", paused=True)
    assert send(net, "kowloon-parts", "straits-funds", 1) == "asset_paused"
    # Either the issuer or the agent may pause: the code names both powers.
    assert net.rejected("straits-funds", "assets", "pause", symbol="BOND", paused=False) == (
        "not_issuer_or_agent"
    )
    assert (
        net.rejected(
            "straits-funds", "assets", "freeze", symbol="BOND", holder=net.pk(ISSUER), frozen=True
        )
        == "not_issuer_or_agent"
    )
    net.ok(ISSUER, "assets", "pause", symbol="BOND", paused=False)
    assert send(net, "kowloon-parts", "straits-funds", 1) == "ok"
    assert (
        net.rejected(
            AGENT,
            "assets",
            "freeze_partial",
            symbol="BOND",
            holder=net.pk("kowloon-parts"),
            amount=10_000,
        )
        == "exceeds_balance"
    )


def test_lock_up_blocks_transfers_until_its_time(net: Network) -> None:
    create(net, "LOCK", lockup_until_ms=net.now_ms + DAY_MS, max_holders=0, holder_cap=0)
    mint(net, "straits-funds", 10, "LOCK")
    assert send(net, "straits-funds", "kowloon-parts", 1, "LOCK") == "locked_up"
    net.advance(DAY_MS)
    assert send(net, "straits-funds", "kowloon-parts", 1, "LOCK") == "ok"


def test_can_transfer_dry_run_reports_reason_codes(net: Network) -> None:
    mint(net, "straits-funds", 100)
    base: dict[str, Value] = {
        "symbol": "BOND",
        "from": net.pk("straits-funds"),
        "to": net.pk("kowloon-parts"),
        "amount": 10,
        "now_ms": net.now_ms,
    }
    verdict = _map(net.query("assets", "can_transfer", **base))
    assert verdict["code"] == "ok"
    assert verdict["identity_rules_evaluated"] is False
    verdict = _map(
        net.query("assets", "can_transfer", **base, to_roles=["customer"], to_jurisdiction="SG")
    )
    assert (verdict["code"], verdict["identity_rules_evaluated"]) == ("receiver_role", True)
    verdict = _map(net.query("assets", "can_transfer", **{**base, "amount": 101}))
    assert verdict["code"] == "insufficient_balance"
    assert "balance" in str(verdict["message"])
    verdict = _map(net.query("assets", "can_transfer", **{**base, "symbol": "NOPE"}))
    assert verdict["code"] == "unknown_asset"


def test_forced_transfer_by_the_agent_is_recorded(net: Network) -> None:
    mint(net, "straits-funds", 100)
    net.ok(AGENT, "assets", "freeze", symbol="BOND", holder=net.pk("straits-funds"), frozen=True)
    args: dict[str, Value] = {
        "symbol": "BOND",
        "from": net.pk("straits-funds"),
        "to": net.pk("kowloon-parts"),
        "amount": 60,
        "reason": "lost key recovery",
    }
    assert net.rejected(ISSUER, "assets", "force_transfer", **args) == "not_agent"
    assert net.rejected(AGENT, "assets", "force_transfer", **{**args, "to": net.pk("alice")}) == (
        "receiver_role"
    )
    net.ok(AGENT, "assets", "force_transfer", **args)
    assert net.units("kowloon-parts", "BOND") == 60
    history = net.query("assets", "history", symbol="BOND", holder=net.pk("kowloon-parts"))
    assert isinstance(history, tuple)
    record = _map(history[0])
    assert (record["kind"], record["note"], record["by"]) == (
        "forced",
        "lost key recovery",
        net.pk(AGENT),
    )
    everything = net.query("assets", "history", symbol="BOND")
    assert isinstance(everything, tuple)
    assert [_map(item)["kind"] for item in everything] == ["forced", "mint"]


# ---------------------------------------------------------------------- DvP
def dvp(net: Network, maker: str, side: str, **change: Value) -> str:
    args: dict[str, Value] = {
        "symbol": "BOND",
        "side": side,
        "amount": 50,
        "currency": "SGD",
        "price": 5_000,
        "expires_ms": net.now_ms + DAY_MS,
    }
    args.update(change)
    tx = net.sign(maker, "assets", "offer_dvp", **args)
    result = _map(net.chain.run_one(tx))
    assert result["offer"] == dvp_offer_id(tx.hash)
    return str(result["offer"])


def test_dvp_sell_offer_settles_asset_and_cash_together(net: Network) -> None:
    mint(net, ISSUER, 100)
    offer = dvp(net, ISSUER, "sell")
    assert net.units(ISSUER, "BOND") == 50  # escrowed
    assert [_map(o)["id"] for o in net.query("assets", "offers", symbol="BOND")] == [offer]  # type: ignore[union-attr]
    net.ok("merlion-metals", "assets", "accept_dvp", offer=offer)
    assert net.units("merlion-metals", "BOND") == 50
    assert net.balance(ISSUER, "SGD") == BANK_LIQUIDITY + 5_000
    assert _map(net.query("assets", "offer", id=offer))["status"] == "settled"
    assert net.rejected("kowloon-parts", "assets", "accept_dvp", offer=offer) == "offer_closed"


def test_dvp_buy_offer_escrows_cash_in_payments(net: Network) -> None:
    mint(net, "kowloon-parts", 100)
    offer = dvp(net, "merlion-metals", "buy")
    escrow = _map(net.query("payments", "escrow", app="assets", id=offer))
    assert escrow["amount"] == 5_000
    net.ok("kowloon-parts", "assets", "accept_dvp", offer=offer)
    assert net.units("merlion-metals", "BOND") == 50
    assert net.balance("kowloon-parts", "SGD") == 5_000
    assert net.query("payments", "escrow", app="assets", id=offer) is None


def test_a_dvp_offer_does_not_settle_out_of_a_holding_frozen_since(net: Network) -> None:
    # A sell offer's units are still its maker's: frozen by the agent after the offer was
    # made, they cannot leave for the taker.
    mint(net, "kowloon-parts", 100)
    offer = dvp(net, "kowloon-parts", "sell")
    net.ok(AGENT, "assets", "freeze", symbol="BOND", holder=net.pk("kowloon-parts"), frozen=True)
    assert net.rejected("merlion-metals", "assets", "accept_dvp", offer=offer) == "sender_frozen"
    assert net.units("merlion-metals", "BOND") == 0
    net.ok("kowloon-parts", "assets", "cancel_dvp", offer=offer)
    assert net.units("kowloon-parts", "BOND") == 100
    # A buy offer's cash is still its maker's: frozen by the currency's issuer after it went
    # into escrow, it cannot leave for the taker.
    cash = net.balance("merlion-metals", "SGD")
    offer = dvp(net, "merlion-metals", "buy")
    net.set_controls("lion-bank", "merlion-metals", "SGD", frozen=True)
    mint(net, "straits-funds", 100)
    assert net.rejected("straits-funds", "assets", "accept_dvp", offer=offer) == "account_frozen"
    assert net.units("straits-funds", "BOND") == 100
    net.ok("merlion-metals", "assets", "cancel_dvp", offer=offer)
    assert net.balance("merlion-metals", "SGD") == cash


def test_the_agent_reaches_units_a_holder_keeps_in_an_offer(net: Network) -> None:
    # A holder parks its units in a sell offer nobody else may take, open for ever: the agent
    # cannot force them out of escrow, but may cancel the offer and then recover them.
    mint(net, "kowloon-parts", 100)
    offer = dvp(
        net,
        "kowloon-parts",
        "sell",
        amount=100,
        counterparty=net.pk("kowloon-parts"),
        expires_ms=2**62,
    )
    recovery: dict[str, Value] = {
        "symbol": "BOND",
        "from": net.pk("kowloon-parts"),
        "to": net.pk("straits-funds"),
        "amount": 100,
        "reason": "court order",
    }
    assert net.rejected(AGENT, "assets", "force_transfer", **recovery) == "insufficient_balance"
    assert net.rejected("straits-funds", "assets", "cancel_dvp", offer=offer) == "not_offer_maker"
    net.ok(AGENT, "assets", "cancel_dvp", offer=offer)
    assert _map(net.query("assets", "offer", id=offer))["status"] == "cancelled"
    net.ok(AGENT, "assets", "force_transfer", **recovery)
    assert net.units("straits-funds", "BOND") == 100
    assert net.units("kowloon-parts", "BOND") == 0
    # A buy offer escrows the maker's cash, not units: the agent has nothing to recover there.
    bid = dvp(net, "straits-funds", "buy", amount=10, expires_ms=2**62)
    assert net.rejected(AGENT, "assets", "cancel_dvp", offer=bid) == "not_offer_maker"
    net.ok("straits-funds", "assets", "cancel_dvp", offer=bid)


def test_dvp_never_settles_one_leg_alone(net: Network) -> None:
    mint(net, ISSUER, 100)
    # alice cannot hold the bond: the cash leg must not move either.
    offer = dvp(net, ISSUER, "sell", price=CUSTOMER_FUNDS)
    assert net.rejected("alice", "assets", "accept_dvp", offer=offer) == "receiver_role"
    assert net.balance("alice", "SGD") == CUSTOMER_FUNDS
    # merlion-metals is eligible but cannot pay: the asset stays in escrow.
    expensive = dvp(net, ISSUER, "sell", price=10**15)
    assert net.rejected("merlion-metals", "assets", "accept_dvp", offer=expensive) == (
        "insufficient_funds"
    )
    assert net.units("merlion-metals", "BOND") == 0
    assert _map(net.query("assets", "offer", id=expensive))["status"] == "open"


def test_dvp_expiry_cancel_and_counterparty(net: Network) -> None:
    mint(net, ISSUER, 100)
    offer = dvp(
        net, ISSUER, "sell", counterparty=net.pk("kowloon-parts"), expires_ms=net.now_ms + 5_000
    )
    assert net.rejected("merlion-metals", "assets", "accept_dvp", offer=offer) == (
        "not_counterparty"
    )
    assert net.rejected(ISSUER, "assets", "accept_dvp", offer=offer) == "own_offer"
    assert net.rejected("merlion-metals", "assets", "cancel_dvp", offer=offer) == (
        "not_offer_maker"
    )
    net.advance(10_000)
    assert net.rejected("kowloon-parts", "assets", "accept_dvp", offer=offer) == "offer_expired"
    # That block's end released the escrow: the offer is expired and the units are back.
    assert _map(net.query("assets", "offer", id=offer))["status"] == "expired"
    assert net.units(ISSUER, "BOND") == 100
    assert net.rejected("merlion-metals", "assets", "cancel_dvp", offer=offer) == ("offer_expired")
    assert net.units(ISSUER, "BOND") == 100
    buy = dvp(net, "merlion-metals", "buy")
    net.ok("merlion-metals", "assets", "cancel_dvp", offer=buy)
    assert net.balance("merlion-metals", "SGD") == 1_000_000_00
    assert (
        net.rejected(
            ISSUER,
            "assets",
            "offer_dvp",
            symbol="BOND",
            side="sell",
            amount=1,
            currency="SGD",
            price=1,
            expires_ms=1,
        )
        == "offer_expiry"
    )
    assert (
        net.rejected(
            ISSUER,
            "assets",
            "offer_dvp",
            symbol="BOND",
            side="hold",
            amount=1,
            currency="SGD",
            price=1,
            expires_ms=net.now_ms + 1,
        )
        == "bad_argument"
    )
    # The cash leg's currency is checked when the offer is made, on either side.
    for side in ("sell", "buy"):
        assert (
            net.rejected(
                ISSUER,
                "assets",
                "offer_dvp",
                symbol="BOND",
                side=side,
                amount=1,
                currency="XAU",
                price=1,
                expires_ms=net.now_ms + DAY_MS,
            )
            == "unknown_currency"
        )
    assert net.units(ISSUER, "BOND") == 100


def test_an_expired_buy_offer_returns_the_cash_escrow(net: Network) -> None:
    start = net.balance("merlion-metals", "SGD")
    offer = dvp(net, "merlion-metals", "buy", expires_ms=net.now_ms + 5_000)
    price = _map(net.query("assets", "offer", id=offer))["price"]
    assert isinstance(price, int)
    assert net.balance("merlion-metals", "SGD") == start - price
    assert _map(net.query("payments", "escrow", app="assets", id=offer))["amount"] == price
    net.advance(10_000)
    result = net.chain.run([])
    # The sweep refunds the escrow through payments, inside the same end-of-block step.
    assert [(event.app, event.kind) for event in result.block_events] == [
        ("payments", "escrow_refund"),
        ("assets", "dvp_cancelled"),
    ]
    assert net.balance("merlion-metals", "SGD") == start
    assert net.query("payments", "escrow", app="assets", id=offer) is None
    assert _map(net.query("assets", "offer", id=offer))["status"] == "expired"
    assert net.query("assets", "offers") == ()


# ---------------------------------------------------------------------- escrow in holdings
def _holders(net: Network) -> int:
    holders = _map(net.query("assets", "asset", symbol="BOND"))["holders"]
    assert isinstance(holders, int)
    return holders


def test_units_in_a_makers_sell_offer_count_toward_its_holder_cap(net: Network) -> None:
    mint(net, ISSUER, 302)
    mint(net, "straits-funds", 299)
    offer = dvp(net, ISSUER, "sell", amount=2, expires_ms=net.now_ms + 5_000)
    assert (net.units(ISSUER, "BOND"), net.escrowed(ISSUER, "BOND")) == (300, 2)
    # 300 + 2 escrowed + 299 is over the cap of 600, though the balance alone is not.
    assert (
        net.rejected(ISSUER, "assets", "mint", symbol="BOND", to=net.pk(ISSUER), amount=299)
        == "holder_cap"
    )
    assert (
        _map(
            net.query(
                "assets",
                "can_transfer",
                symbol="BOND",
                to=net.pk(ISSUER),
                **{"from": net.pk("straits-funds")},
                amount=299,
                now_ms=net.now_ms,
            )
        )["code"]
        == "holder_cap"
    )
    assert send(net, "straits-funds", ISSUER, 299) == "holder_cap"
    mint(net, ISSUER, 298)
    # The offer expires: its escrow comes back without taking the maker over the cap.
    net.advance(10_000)
    net.chain.run([])
    assert _map(net.query("assets", "offer", id=offer))["status"] == "expired"
    assert (net.units(ISSUER, "BOND"), net.escrowed(ISSUER, "BOND")) == (600, 0)


def test_a_maker_with_everything_in_escrow_is_still_a_holder(net: Network) -> None:
    mint(net, "straits-funds", 100)
    mint(net, "kowloon-parts", 100)
    mint(net, ISSUER, 100)
    offer = dvp(net, ISSUER, "sell", amount=100)
    assert net.units(ISSUER, "BOND") == 0
    assert _holders(net) == 3
    holders = net.query("assets", "holders", symbol="BOND")
    assert isinstance(holders, tuple)
    assert {"holder": net.pk(ISSUER).hex(), "balance": 0, "escrowed": 100} in holders
    # A fourth holder would be one too many while the maker's units wait in escrow.
    assert (
        net.rejected(ISSUER, "assets", "mint", symbol="BOND", to=net.pk("merlion-metals"), amount=1)
        == "max_holders"
    )
    # Cancelled, the escrow goes back and the count stays.
    net.ok(ISSUER, "assets", "cancel_dvp", offer=offer)
    assert (net.units(ISSUER, "BOND"), net.escrowed(ISSUER, "BOND"), _holders(net)) == (100, 0, 3)


def test_settling_a_makers_whole_holding_makes_room_for_the_taker(net: Network) -> None:
    mint(net, "straits-funds", 100)
    mint(net, "kowloon-parts", 100)
    mint(net, ISSUER, 100)
    offer = dvp(net, ISSUER, "sell", amount=100)
    # The taker is a fourth party, but the maker leaves as it arrives: allowed.
    net.ok("merlion-metals", "assets", "accept_dvp", offer=offer)
    assert net.units("merlion-metals", "BOND") == 100
    assert (net.units(ISSUER, "BOND"), net.escrowed(ISSUER, "BOND"), _holders(net)) == (0, 0, 3)
    assert net.query("assets", "balances", holder=net.pk(ISSUER)) == {}


def _as_made_before_escrow_was_counted(net: Network, offer: str, maker: str, amount: int) -> None:
    """Rewrite an open sell offer's state as an earlier release left it: the offer without
    ``escrow_held`` and no escrow counted for its maker (who keeps a balance, so the holder
    count was the same)."""
    prefix = namespace_prefix("assets")
    stored = prefix + key("dvp", offer)
    backend = net.chain.backend
    raw = backend.get(stored)
    assert raw is not None
    record = dict(_map(decode(raw, STATE_LIMITS)))
    assert record.pop("escrow_held") is True
    escrowed = prefix + key("esc", "BOND", net.pk(maker))
    counted = backend.get(escrowed)
    assert counted is not None
    left = as_int(decode(counted, STATE_LIMITS)) - amount
    writes = [(escrowed, encode(left, STATE_LIMITS) if left else None)]
    backend.apply(tuple(sorted([*writes, (stored, encode(record, STATE_LIMITS))])))


def test_a_sell_offer_made_before_escrow_was_counted_closes_as_it_did(net: Network) -> None:
    mint(net, ISSUER, 100)
    returned = dvp(net, ISSUER, "sell", amount=30)
    settled = dvp(net, ISSUER, "sell", amount=20)
    for offer, amount in ((returned, 30), (settled, 20)):
        _as_made_before_escrow_was_counted(net, offer, ISSUER, amount)
    assert (net.units(ISSUER, "BOND"), net.escrowed(ISSUER, "BOND")) == (50, 0)
    net.ok(ISSUER, "assets", "cancel_dvp", offer=returned)
    net.ok("merlion-metals", "assets", "accept_dvp", offer=settled)
    assert (net.units(ISSUER, "BOND"), net.escrowed(ISSUER, "BOND")) == (80, 0)
    assert net.units("merlion-metals", "BOND") == 20
    assert _holders(net) == 2
