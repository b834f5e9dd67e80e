"""Digital-asset invariants under random operation sequences (hypothesis, real host): supply
never exceeds the cap, no unit lands with an ineligible holder or above the holder cap, the
holder count stays within its limit, a DvP settles both legs or neither, a rejected operation
changes nothing, no offer is still open (or escrowed) once a block has passed its expiry, no
unit or cash leg leaves or enters a frozen account (escrowed ones included), and only the maker
or, for a sell offer, the asset's agent cancels an offer before it expires."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from consensus.codec import Value
from tests.apps_fixtures import DAY_MS, Network, as_record
from tests.hypothesis_profiles import machine_settings

ISSUER = "lion-bank"
PARTIES = (
    "lion-bank",
    "harbour-bank",
    "merlion-metals",
    "kowloon-parts",
    "dragon-motors",
    "alice",
    "bob",
)
ELIGIBLE = {
    "lion-bank",
    "harbour-bank",
    "merlion-metals",
    "kowloon-parts",
}  # bank/enterprise in SG/HK
CAP, HOLDER_CAP, MAX_HOLDERS = 1_000, 600, 3
parties = st.sampled_from(PARTIES)
units = st.integers(min_value=1, max_value=700)


class AssetsMachine(RuleBasedStateMachine):
    offers = Bundle("offers")

    def __init__(self) -> None:
        super().__init__()
        self.net = Network.start()
        self.frozen: set[str] = set()  # holders frozen in the asset
        self.cash_frozen: set[str] = set()  # accounts frozen in SGD by its issuer

    def _name(self, key: bytes) -> str:
        return next(name for name in self.net.consortium.party_names() if self.net.pk(name) == key)

    @initialize()
    def create(self) -> None:
        self.net.ok(
            ISSUER,
            "assets",
            "create_asset",
            symbol="BOND",
            decimals=0,
            supply_cap=CAP,
            eligible_roles=["bank", "enterprise"],
            eligible_jurisdictions=["SG", "HK"],
            max_holders=MAX_HOLDERS,
            holder_cap=HOLDER_CAP,
        )

    def _run(self, name: str, app: str, operation: str, **arguments: Value) -> tuple[bool, Value]:
        # Each operation runs alone in a block; a rejection is checked to change nothing.
        outcome = self.net.attempt(name, app, operation, **arguments)
        return outcome.ok, outcome.receipt.result

    @rule(to=parties, amount=units)
    def mint(self, to: str, amount: int) -> None:
        self._run(ISSUER, "assets", "mint", symbol="BOND", to=self.net.pk(to), amount=amount)

    @rule(source=parties, to=parties, amount=units)
    def transfer(self, source: str, to: str, amount: int) -> None:
        self._run(source, "assets", "transfer", symbol="BOND", to=self.net.pk(to), amount=amount)

    @rule(source=parties, to=parties, amount=units)
    def force_transfer(self, source: str, to: str, amount: int) -> None:
        self._run(
            ISSUER,
            "assets",
            "force_transfer",
            symbol="BOND",
            **{"from": self.net.pk(source)},
            to=self.net.pk(to),
            amount=amount,
            reason="recovery",
        )

    @rule(holder=parties, amount=units)
    def burn(self, holder: str, amount: int) -> None:
        self._run(
            ISSUER, "assets", "burn", symbol="BOND", holder=self.net.pk(holder), amount=amount
        )

    @rule(holder=parties, frozen=st.booleans())
    def freeze(self, holder: str, frozen: bool) -> None:
        ok, _ = self._run(
            ISSUER, "assets", "freeze", symbol="BOND", holder=self.net.pk(holder), frozen=frozen
        )
        if ok:
            (self.frozen.add if frozen else self.frozen.discard)(holder)

    @rule(holder=parties, frozen=st.booleans())
    def freeze_cash(self, holder: str, frozen: bool) -> None:
        ok, _ = self._run(
            "lion-bank",
            "payments",
            "set_controls",
            account=self.net.pk(holder),
            currency="SGD",
            frozen=frozen,
        )
        if ok:
            (self.cash_frozen.add if frozen else self.cash_frozen.discard)(holder)

    @rule(
        maker=parties,
        side=st.sampled_from(("sell", "buy")),
        amount=units,
        price=st.integers(1, 2_000_000),
        taker=parties,
    )
    def freeze_a_maker_then_accept(
        self, maker: str, side: str, amount: int, price: int, taker: str
    ) -> None:
        # The maker is frozen in what it escrowed (units, or cash) after it escrowed it; then a
        # taker tries (the seller, maker or taker, is minted the units first).
        self.mint(maker if side == "sell" else taker, amount)
        offer = self.offer(maker, side, amount, price, lifetime=3)
        if offer != "dvp-none":
            if side == "sell":
                self.freeze(maker, frozen=True)
            else:
                self.freeze_cash(maker, frozen=True)
            self.accept(offer, taker)

    @rule(
        target=offers,
        maker=parties,
        side=st.sampled_from(("sell", "buy")),
        amount=units,
        price=st.integers(1, 2_000_000),
        lifetime=st.integers(0, 3),
    )
    def offer(self, maker: str, side: str, amount: int, price: int, lifetime: int) -> str:
        ok, result = self._run(
            maker,
            "assets",
            "offer_dvp",
            symbol="BOND",
            side=side,
            amount=amount,
            currency="SGD",
            price=price,
            expires_ms=self.net.now_ms + 1000 * lifetime,
        )
        return str(as_record(result)["offer"]) if ok else "dvp-none"

    @rule(offer=offers, taker=parties)
    def accept(self, offer: str, taker: str) -> None:
        record = self.net.query("assets", "offer", id=offer)
        outcome = self.net.attempt(taker, "assets", "accept_dvp", offer=offer)
        if not outcome.ok:
            return  # and it moved nothing (checked by attempt)
        record = as_record(record)
        amount, price = record["amount"], record["price"]
        assert isinstance(amount, int)
        assert isinstance(price, int)
        maker = record["maker"]
        assert isinstance(maker, bytes)
        taker_key = self.net.pk(taker)
        buyer, seller = (taker_key, maker) if record["side"] == "sell" else (maker, taker_key)
        # The transaction's own deltas: asset to the buyer, cash to the seller, from escrow
        # on the maker's side.
        assert outcome.units_delta(buyer, "BOND") == amount
        assert outcome.balance_delta(seller, "SGD") == price
        if record["side"] == "sell":
            assert outcome.balance_delta(buyer, "SGD") == -price
            assert outcome.units_delta(seller, "BOND") == 0
        else:
            assert outcome.units_delta(seller, "BOND") == -amount
            assert outcome.balance_delta(buyer, "SGD") == 0
        for account in (buyer, seller):
            assert self._name(account) not in self.frozen
            assert self._name(account) not in self.cash_frozen

    @rule(offer=offers, who=parties)
    def cancel(self, offer: str, who: str) -> None:
        record = self.net.query("assets", "offer", id=offer)
        ok, result = self._run(who, "assets", "cancel_dvp", offer=offer)
        if ok and as_record(result)["status"] == "cancelled":
            # Before its expiry only the maker, or for a sell offer the asset's agent (its
            # issuer), cancels.
            maker = as_record(record)["maker"]
            assert isinstance(maker, bytes)
            sell = as_record(record)["side"] == "sell"
            assert who in ((self._name(maker), ISSUER) if sell else (self._name(maker),))

    @rule()
    def tick(self) -> None:
        self.net.advance(DAY_MS // 24)

    @invariant()
    def compliance_and_conservation(self) -> None:
        asset = self.net.query("assets", "asset", symbol="BOND")
        if asset is None:
            return
        asset = as_record(asset)
        supply = asset["supply"]
        assert isinstance(supply, int)
        assert supply <= CAP
        balances = {name: self.net.units(name, "BOND") for name in PARTIES}
        in_escrow = {name: self.net.escrowed(name, "BOND") for name in PARTIES}
        # A maker's units in its own open sell offers are still its holding.
        holdings = {name: balances[name] + in_escrow[name] for name in PARTIES}
        holders = [name for name, held in holdings.items() if held > 0]
        assert set(holders) <= ELIGIBLE, f"ineligible holders {set(holders) - ELIGIBLE}"
        assert all(held <= HOLDER_CAP for held in holdings.values())
        assert asset["holders"] == len(holders) <= MAX_HOLDERS
        offers = self.net.query("assets", "offers", limit=500)
        assert isinstance(offers, tuple)
        escrowed_units = escrowed_cash = 0
        by_maker = dict.fromkeys(PARTIES, 0)
        for item in offers:
            item = as_record(item)
            if item["side"] == "sell":
                amount = item["amount"]
                assert isinstance(amount, int)
                escrowed_units += amount
                maker = next(name for name in PARTIES if self.net.pk(name) == item["maker"])
                by_maker[maker] += amount
            else:
                escrowed_cash += item["price"]  # type: ignore[operator]
        assert in_escrow == by_maker
        assert sum(balances.values()) + escrowed_units == supply
        sgd = self.net.query("payments", "currency", code="SGD")
        sgd = as_record(sgd)
        cash = sum(self.net.balance(name, "SGD") for name in self.net.consortium.party_names())
        assert cash + escrowed_cash == sgd["supply"]

    @invariant()
    def no_open_offer_has_expired(self) -> None:
        last_block_ms = self.net.chain.host.last_block_time_ms()
        offers = self.net.query("assets", "offers", limit=500)
        assert isinstance(offers, tuple)
        for item in offers:
            item = as_record(item)
            expires_ms = item["expires_ms"]
            assert isinstance(expires_ms, int)
            assert expires_ms > last_block_ms, "an expired offer is still open"
            if item["side"] == "buy":
                escrow = self.net.query("payments", "escrow", app="assets", id=item["id"])
                assert as_record(escrow)["amount"] == item["price"]


AssetsMachine.TestCase.settings = machine_settings(max_examples=50, step_count=20)
TestAssetsInvariants = AssetsMachine.TestCase
