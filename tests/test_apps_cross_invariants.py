"""Payments, supply-chain finance and digital assets together under random operation sequences
(hypothesis state machine over the real host and the demo consortium).

The operations interleave: payments and FX PvP, receivables issued, split, transferred,
financed and repaid, an asset minted, transferred and traded by DvP against cash escrowed in
payments, account freezes in both apps, identity and enterprise suspensions through
membership, and time passing so offers expire. After every step the invariants are read from
the raw committed state of every app (not through the apps' own queries):

* per currency, ``supply == balances + escrows held for other apps + open FX sell legs``, and
  the supply moved only by issue and redeem;
* no balance (cash or asset) is negative or zero-but-stored;
* every split receivable's children sum to it and keep its root; a leaf is repaid once;
* the asset's supply stays within its cap and equals balances plus open sell escrows; every
  holder is within the holder cap and eligible; the holder count is exact and within limits;
* every open buy DvP offer has exactly its price escrowed in payments, and no escrow outlives
  its offer;
* nothing open (FX offer, DvP offer, financing offer) has outlived its expiry: the block that
  passed it released it;
* a freeze holds whoever set it: an account is frozen in a currency while the issuer or the
  holder's own bank froze it (the other cannot lift it), and nothing, escrowed funds and units
  included, leaves or enters an account while it is frozen;
* only the maker (or, for a sell offer, the asset's agent) cancels a DvP offer before it
  expires.

Every operation runs alone in a block, and that block is compared with an empty block at the
same height and time (``tests.apps_fixtures.run_alone``): a rejected operation must leave every
app's state exactly as the empty block does (only the sender's nonce moves), which compares the
full state after the block with and without it, whatever expired in that block anyway.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from apps._records import AMOUNT_MAX, STATE_LIMITS
from apps.state import namespace_prefix
from consensus.codec import Value, decode
from tests.apps_fixtures import DAY_MS, Network, Outcome, as_record
from tests.hypothesis_profiles import machine_settings

CURRENCIES = ("SGD", "HKD", "CNY")
ISSUERS = {"SGD": "lion-bank", "HKD": "harbour-bank", "CNY": "pearl-bank"}
BANKS = ("lion-bank", "harbour-bank", "pearl-bank")
PAYERS = (*BANKS, "dragon-motors", "kowloon-parts", "merlion-metals", "straits-funds", "alice")
# Who may suspend whom without governance: the sponsoring bank (or the regulator, in SG).
SPONSOR = {
    "alice": "lion-bank",
    "bob": "harbour-bank",
    "chen": "pearl-bank",
    "merlion-metals": "lion-bank",
    "straits-funds": "lion-bank",
    "kowloon-parts": "harbour-bank",
    "dragon-motors": "pearl-bank",
}
ENTERPRISES = ("merlion-metals", "straits-funds", "kowloon-parts", "dragon-motors")
# The institution of an account's own bank: a bank's own, a customer's bank's (an enterprise
# is an institution of its own, so only a currency's issuer sets controls on its accounts).
OWN_BANK = {"alice": "lion-bank", **{bank: bank for bank in BANKS}}
CORE = "dragon-motors"  # the debtor of every receivable
RECEIVABLE_HOLDERS = ("kowloon-parts", "merlion-metals", "straits-funds", "lion-bank", "pearl-bank")
SYMBOL, ASSET_ISSUER = "BOND", "lion-bank"
ASSET_CAP, HOLDER_CAP, MAX_HOLDERS = 2_000, 900, 4
ELIGIBLE_ROLES = frozenset({"bank", "enterprise"})
ELIGIBLE_JURISDICTIONS = frozenset({"SG", "HK"})
HOUR_MS = 3_600_000

payers = st.sampled_from(PAYERS)
currencies = st.sampled_from(CURRENCIES)
# Everyday amounts, and amounts around what a party holds (so funds run out: customers hold
# 10^6, enterprises 10^8 and banks 10^10 minor units per currency at genesis).
cash = st.integers(min_value=1, max_value=3_000_000) | st.integers(10**6, 2 * 10**10)
units = st.integers(min_value=1, max_value=300)
# Offers live a few steps (every step is at least one block of one second).
lifetimes = st.integers(min_value=3, max_value=30)
# Banks hold every currency, so they can take either side of most offers.
takers = st.sampled_from(BANKS) | payers


class CrossAppMachine(RuleBasedStateMachine):
    fx_offers = Bundle("fx_offers")
    dvp_offers = Bundle("dvp_offers")
    receivables = Bundle("receivables")

    def __init__(self) -> None:
        super().__init__()
        self.net = Network.start()
        self.supply = {code: as_int(self._currency(code)["supply"]) for code in CURRENCIES}
        self.serial = 0
        self.repaid: set[str] = set()
        # (account, currency) -> the institutions whose freeze of it stands.
        self.cash_frozen_by: dict[tuple[str, str], set[str]] = {}
        self.units_frozen: set[str] = set()

    # ------------------------------------------------------------------ plumbing
    def _next(self) -> int:
        self.serial += 1
        return self.serial

    def _attempt(self, name: str, app: str, operation: str, **arguments: Value) -> Outcome:
        return self.net.attempt(name, app, operation, **arguments)

    def _currency(self, code: str) -> Mapping[str, Value]:
        return as_record(self.net.query("payments", "currency", code=code))

    def _records(self, app: str, collection: str) -> Iterator[tuple[str, Mapping[str, Value]]]:
        """(key after the collection, decoded record) for one collection of an app's raw
        committed state."""
        start = namespace_prefix(app) + collection.encode("ascii") + b"/"
        for stored_key, data in self.net.chain.backend.scan(start, start[:-1] + b"0"):
            yield stored_key[len(start) :].decode("ascii"), as_record(decode(data, STATE_LIMITS))

    def _integers(self, app: str, collection: str) -> Iterator[tuple[str, int]]:
        start = namespace_prefix(app) + collection.encode("ascii") + b"/"
        for stored_key, data in self.net.chain.backend.scan(start, start[:-1] + b"0"):
            value = decode(data, STATE_LIMITS)
            assert isinstance(value, int)
            yield stored_key[len(start) :].decode("ascii"), value

    def _cash_frozen(self, account: bytes, code: str) -> bool:
        return any(
            by and self.net.pk(name) == account
            for (name, frozen_code), by in self.cash_frozen_by.items()
            if frozen_code == code
        )

    def _units_frozen(self, holder: bytes) -> bool:
        return any(self.net.pk(name) == holder for name in self.units_frozen)

    def _leaf(self, rid: str, pick: int) -> Mapping[str, Value] | None:
        records = dict(self._records("scf", "rcv"))
        root = records[rid]["root"]
        live = [
            record
            for record in records.values()
            if record["root"] == root and not record["children"] and record["status"] == "active"
        ]
        return live[pick % len(live)] if live else None

    # ------------------------------------------------------------------ setup
    @initialize()
    def create_asset(self) -> None:
        self.net.ok(
            ASSET_ISSUER,
            "assets",
            "create_asset",
            symbol=SYMBOL,
            decimals=0,
            supply_cap=ASSET_CAP,
            eligible_roles=tuple(sorted(ELIGIBLE_ROLES)),
            eligible_jurisdictions=tuple(sorted(ELIGIBLE_JURISDICTIONS)),
            max_holders=MAX_HOLDERS,
            holder_cap=HOLDER_CAP,
        )
        for holder in ("harbour-bank", "merlion-metals"):
            self.net.ok(
                ASSET_ISSUER, "assets", "mint", symbol=SYMBOL, to=self.net.pk(holder), amount=400
            )

    # ------------------------------------------------------------------ payments
    @rule(source=payers, to=st.sampled_from((*PAYERS, "bob", "chen")), code=currencies, amount=cash)
    def pay(self, source: str, to: str, code: str, amount: int) -> None:
        outcome = self._attempt(
            source,
            "payments",
            "transfer",
            to=self.net.pk(to),
            currency=code,
            amount=amount,
            end_to_end_id=f"X-{self._next()}",
        )
        if outcome.ok:
            assert outcome.balance_delta(self.net.pk(source), code) == -amount
            assert outcome.balance_delta(self.net.pk(to), code) == amount
            assert not self._cash_frozen(self.net.pk(source), code)
            assert not self._cash_frozen(self.net.pk(to), code)

    @rule(code=currencies, to=st.sampled_from(BANKS), amount=cash, redeem=st.booleans())
    def issue_or_redeem(self, code: str, to: str, amount: int, redeem: bool) -> None:
        if redeem:
            outcome = self._attempt(
                ISSUERS[code], "payments", "redeem", currency=code, amount=amount
            )
        else:
            outcome = self._attempt(
                ISSUERS[code], "payments", "issue", currency=code, to=self.net.pk(to), amount=amount
            )
        if outcome.ok:
            self.supply[code] += -amount if redeem else amount

    @rule(
        target=fx_offers,
        maker=payers,
        sell=currencies,
        buy=currencies,
        sell_amount=cash,
        buy_amount=cash,
        blocks=lifetimes,
    )
    def offer_fx(
        self, maker: str, sell: str, buy: str, sell_amount: int, buy_amount: int, blocks: int
    ) -> MultipleResults[str]:
        outcome = self._attempt(
            maker,
            "payments",
            "offer_fx",
            sell_currency=sell,
            sell_amount=sell_amount,
            buy_currency=buy,
            buy_amount=buy_amount,
            expires_ms=self.net.now_ms + 1000 * blocks,
        )
        if not outcome.ok:
            return multiple()
        assert outcome.balance_delta(self.net.pk(maker), sell) == -sell_amount
        assert not self._cash_frozen(self.net.pk(maker), sell)
        return multiple(str(as_record(outcome.receipt.result)["offer"]))

    @rule(offer=fx_offers, taker=takers)
    def accept_fx(self, offer: str, taker: str) -> None:
        record = self.net.query("payments", "offer", id=offer)
        outcome = self._attempt(taker, "payments", "accept_fx", offer=offer)
        if not outcome.ok:
            return
        record = as_record(record)
        maker, taker_key = record["maker"], self.net.pk(taker)
        assert isinstance(maker, bytes)
        sell, buy = str(record["sell_currency"]), str(record["buy_currency"])
        assert outcome.balance_delta(maker, buy) == record["buy_amount"]
        assert outcome.balance_delta(taker_key, sell) == record["sell_amount"]
        assert outcome.balance_delta(taker_key, buy) == -as_int(record["buy_amount"])
        # Neither leg leaves or enters a frozen account, the escrowed one included.
        for account, code in ((maker, sell), (maker, buy), (taker_key, sell), (taker_key, buy)):
            assert not self._cash_frozen(account, code), (account.hex()[:8], code)

    @rule(offer=fx_offers, who=payers)
    def cancel_fx(self, offer: str, who: str) -> None:
        self._attempt(who, "payments", "cancel_fx", offer=offer)

    @rule(account=st.sampled_from(PAYERS), code=currencies, frozen=st.booleans())
    def freeze_cash(self, account: str, code: str, frozen: bool) -> None:
        self._set_controls(ISSUERS[code], account, code, frozen)

    @rule(account=st.sampled_from(sorted(OWN_BANK)), code=currencies, frozen=st.booleans())
    def bank_freezes_cash(self, account: str, code: str, frozen: bool) -> None:
        # The holder's own bank, which may be another institution than the issuer.
        self._set_controls(OWN_BANK[account], account, code, frozen)

    def _set_controls(self, bank: str, account: str, code: str, frozen: bool) -> None:
        outcome = self._attempt(
            bank,
            "payments",
            "set_controls",
            account=self.net.pk(account),
            currency=code,
            frozen=frozen,
        )
        if outcome.ok:
            by = self.cash_frozen_by.setdefault((account, code), set())
            if frozen:
                by.add(bank)
            else:
                by.discard(bank)

    # ------------------------------------------------------------------ assets
    @rule(to=payers, amount=units)
    def mint(self, to: str, amount: int) -> None:
        self._attempt(
            ASSET_ISSUER, "assets", "mint", symbol=SYMBOL, to=self.net.pk(to), amount=amount
        )

    @rule(source=payers, to=payers, amount=units)
    def transfer_units(self, source: str, to: str, amount: int) -> None:
        outcome = self._attempt(
            source, "assets", "transfer", symbol=SYMBOL, to=self.net.pk(to), amount=amount
        )
        if outcome.ok:
            assert outcome.units_delta(self.net.pk(source), SYMBOL) == -amount
            assert outcome.units_delta(self.net.pk(to), SYMBOL) == amount
            assert not self._units_frozen(self.net.pk(source))
            assert not self._units_frozen(self.net.pk(to))

    @rule(holder=payers, frozen=st.booleans())
    def freeze_units(self, holder: str, frozen: bool) -> None:
        outcome = self._attempt(
            ASSET_ISSUER,
            "assets",
            "freeze",
            symbol=SYMBOL,
            holder=self.net.pk(holder),
            frozen=frozen,
        )
        if outcome.ok:
            (self.units_frozen.add if frozen else self.units_frozen.discard)(holder)

    @rule(holder=payers, amount=units)
    def burn(self, holder: str, amount: int) -> None:
        outcome = self._attempt(
            ASSET_ISSUER, "assets", "burn", symbol=SYMBOL, holder=self.net.pk(holder), amount=amount
        )
        if outcome.ok:
            assert outcome.units_delta(self.net.pk(holder), SYMBOL) == -amount

    @rule(
        target=dvp_offers,
        maker=payers,
        side=st.sampled_from(("sell", "buy")),
        amount=units,
        price=cash,
        code=st.sampled_from(("SGD", "HKD")),
        blocks=lifetimes,
    )
    def offer_dvp(
        self, maker: str, side: str, amount: int, price: int, code: str, blocks: int
    ) -> MultipleResults[str]:
        outcome = self._attempt(
            maker,
            "assets",
            "offer_dvp",
            symbol=SYMBOL,
            side=side,
            amount=amount,
            currency=code,
            price=price,
            expires_ms=self.net.now_ms + 1000 * blocks,
        )
        if not outcome.ok:
            return multiple()
        if side == "sell":
            assert outcome.units_delta(self.net.pk(maker), SYMBOL) == -amount
        else:
            assert outcome.balance_delta(self.net.pk(maker), code) == -price
        return multiple(str(as_record(outcome.receipt.result)["offer"]))

    @rule(offer=dvp_offers, taker=takers)
    def accept_dvp(self, offer: str, taker: str) -> None:
        record = self.net.query("assets", "offer", id=offer)
        outcome = self._attempt(taker, "assets", "accept_dvp", offer=offer)
        if not outcome.ok:
            return
        record = as_record(record)
        maker, taker_key = record["maker"], self.net.pk(taker)
        assert isinstance(maker, bytes)
        buyer, seller = (taker_key, maker) if record["side"] == "sell" else (maker, taker_key)
        assert outcome.units_delta(buyer, SYMBOL) == record["amount"]
        code = str(record["currency"])
        assert outcome.balance_delta(seller, code) == record["price"]
        # Neither leg leaves or enters a frozen account, the escrowed one included.
        for account in (buyer, seller):
            assert not self._units_frozen(account)
            assert not self._cash_frozen(account, code)

    @rule(offer=dvp_offers, who=payers)
    def cancel_dvp(self, offer: str, who: str) -> None:
        record = self.net.query("assets", "offer", id=offer)
        outcome = self._attempt(who, "assets", "cancel_dvp", offer=offer)
        if outcome.ok and as_record(outcome.receipt.result)["status"] == "cancelled":
            # Before its expiry only the maker, or for a sell offer the asset's agent (here its
            # issuer), cancels.
            maker = as_record(record)["maker"]
            sell = as_record(record)["side"] == "sell"
            allowed = (maker, self.net.pk(ASSET_ISSUER)) if sell else (maker,)
            assert self.net.pk(who) in allowed

    # ------------------------------------------------------------------ supply-chain finance
    @rule(target=receivables, amount=st.integers(1, 2_000_000))
    def issue_receivable(self, amount: int) -> MultipleResults[str]:
        outcome = self._attempt(
            CORE,
            "scf",
            "issue",
            supplier=self.net.pk("kowloon-parts"),
            amount=amount,
            currency="CNY",
            due_ms=self.net.now_ms + 10 * DAY_MS,
            invoice_hash=self._next().to_bytes(32, "big"),
        )
        if not outcome.ok:
            return multiple()
        rid = str(as_record(outcome.receipt.result)["id"])
        self._attempt("kowloon-parts", "scf", "accept", receivable=rid)
        return multiple(rid)

    @rule(
        rid=receivables,
        pick=st.integers(0, 20),
        to=st.sampled_from(RECEIVABLE_HOLDERS),
        part=st.integers(1, 2_000_000),
    )
    def transfer_receivable(self, rid: str, pick: int, to: str, part: int) -> None:
        leaf = self._leaf(rid, pick)
        if leaf is not None:
            holder = self.net.consortium.party_name(leaf["holder"])
            self._attempt(
                holder, "scf", "transfer", receivable=leaf["id"], to=self.net.pk(to), amount=part
            )

    @rule(
        rid=receivables,
        pick=st.integers(0, 20),
        bank=st.sampled_from(("lion-bank", "pearl-bank")),
        rate=st.integers(0, 2_000),
        hours=st.integers(1, 48),
        accept=st.booleans(),
    )
    def finance(self, rid: str, pick: int, bank: str, rate: int, hours: int, accept: bool) -> None:
        leaf = self._leaf(rid, pick)
        if leaf is None:
            return
        holder = self.net.consortium.party_name(leaf["holder"])
        offered = self._attempt(
            holder,
            "scf",
            "offer_financing",
            receivable=leaf["id"],
            bank=self.net.pk(bank),
            rate_bps=rate,
            expires_ms=self.net.now_ms + hours * HOUR_MS,
        )
        if offered.ok and accept:
            price = as_int(as_record(offered.receipt.result)["price"])
            outcome = self._attempt(bank, "scf", "accept_financing", receivable=leaf["id"])
            if outcome.ok:
                assert outcome.balance_delta(self.net.pk(bank), "CNY") == -price
                assert outcome.balance_delta(leaf["holder"], "CNY") == price  # type: ignore[arg-type]

    @rule(rid=receivables)
    def repay(self, rid: str) -> None:
        outcome = self._attempt(CORE, "scf", "repay", receivable=rid)
        if outcome.ok:
            for item in as_record(outcome.receipt.result)["repaid"]:  # type: ignore[union-attr]
                leaf_id = str(as_record(item)["id"])
                assert leaf_id not in self.repaid, f"{leaf_id} was repaid twice"
                self.repaid.add(leaf_id)

    # ------------------------------------------------------------------ membership and time
    @rule(who=st.sampled_from(sorted(SPONSOR)), by_regulator=st.booleans(), suspend=st.booleans())
    def suspend_identity(self, who: str, by_regulator: bool, suspend: bool) -> None:
        actor = "regulator" if by_regulator else SPONSOR[who]
        operation = "suspend_identity" if suspend else "reinstate_identity"
        self._attempt(actor, "membership", operation, public_key=self.net.pk(who))

    @rule(enterprise=st.sampled_from(ENTERPRISES), suspend=st.booleans())
    def suspend_enterprise(self, enterprise: str, suspend: bool) -> None:
        operation = "suspend_enterprise" if suspend else "reinstate_enterprise"
        self._attempt(SPONSOR[enterprise], "membership", operation, id=enterprise)

    @rule(blocks=st.integers(1, 3), hours=st.integers(0, 12))
    def wait(self, blocks: int, hours: int) -> None:
        self.net.advance(hours * HOUR_MS)
        for _ in range(blocks):
            self.net.chain.run([])

    # ------------------------------------------------------------------ invariants
    @invariant()
    def cash_is_conserved_and_never_negative(self) -> None:
        held = dict.fromkeys(CURRENCIES, 0)
        for name, balance in self._integers("payments", "bal"):
            assert 0 < balance <= AMOUNT_MAX, name  # a zero balance is stored as absence
            held[name.rsplit("/", 1)[1]] += balance
        for _, escrow in self._records("payments", "esc"):
            held[str(escrow["currency"])] += as_int(escrow["amount"])
        for _, offer in self._records("payments", "fx"):
            if offer["status"] == "open":
                held[str(offer["sell_currency"])] += as_int(offer["sell_amount"])
        for code in CURRENCIES:
            supply = self._currency(code)["supply"]
            assert supply == self.supply[code], f"{code} supply moved outside issue/redeem"
            assert held[code] == supply, f"{code}: {held[code]} held and escrowed, {supply} issued"

    @invariant()
    def controls_report_every_standing_freeze(self) -> None:
        for (account, code), by in self.cash_frozen_by.items():
            controls = as_record(
                self.net.query("payments", "controls", account=self.net.pk(account))
            )
            assert as_record(controls[code])["frozen"] is bool(by), (account, code, by)

    @invariant()
    def receivable_trees_sum_to_their_parent(self) -> None:
        records = dict(self._records("scf", "rcv"))
        for record in records.values():
            assert as_int(record["amount"]) > 0
            children = record["children"]
            assert isinstance(children, tuple)
            if children:
                assert record["status"] == "split"
                assert sum(as_int(records[str(c)]["amount"]) for c in children) == record["amount"]
                for child in children:
                    assert records[str(child)]["parent"] == record["id"]
                    assert records[str(child)]["root"] == record["root"]

    @invariant()
    def asset_within_its_caps_and_conserved(self) -> None:
        asset = as_record(self.net.query("assets", "asset", symbol=SYMBOL))
        supply = as_int(asset["supply"])
        assert supply <= ASSET_CAP
        balances = {
            name.split("/")[1]: balance
            for name, balance in self._integers("assets", "bal")
            if name.startswith(SYMBOL + "/")
        }
        in_escrow = {
            name.split("/")[1]: units
            for name, units in self._integers("assets", "esc")
            if name.startswith(SYMBOL + "/")
        }
        by_maker: dict[str, int] = {}
        for _, offer in self._records("assets", "dvp"):
            if offer["status"] == "open" and offer["side"] == "sell":
                maker = offer["maker"]
                assert isinstance(maker, bytes)
                by_maker[maker.hex()] = by_maker.get(maker.hex(), 0) + as_int(offer["amount"])
        # A maker's units in its own open sell offers are still its holding.
        assert in_escrow == by_maker
        assert sum(balances.values()) + sum(by_maker.values()) == supply
        holdings = {
            holder: balances.get(holder, 0) + in_escrow.get(holder, 0)
            for holder in balances.keys() | in_escrow.keys()
        }
        assert all(0 < held <= HOLDER_CAP for held in holdings.values())
        assert as_int(asset["holders"]) == len(holdings) <= MAX_HOLDERS
        for holder in holdings:
            identity = as_record(
                self.net.query("membership", "identity", public_key=bytes.fromhex(holder))
            )
            roles = identity["roles"]
            assert isinstance(roles, tuple)
            assert ELIGIBLE_ROLES & set(roles), f"{holder} holds {SYMBOL} without an eligible role"
            assert identity["jurisdiction"] in ELIGIBLE_JURISDICTIONS

    @invariant()
    def every_buy_offer_has_its_escrow_and_no_escrow_is_orphaned(self) -> None:
        offers = dict(self._records("assets", "dvp"))
        escrows = dict(self._records("payments", "esc"))
        for offer_id, offer in offers.items():
            escrow = escrows.get(f"assets/{offer_id}")
            if offer["status"] == "open" and offer["side"] == "buy":
                assert escrow is not None, f"buy offer {offer_id} lost its escrow"
                assert escrow["amount"] == offer["price"]
                assert escrow["currency"] == offer["currency"]
                assert escrow["owner"] == offer["maker"]
            else:
                assert escrow is None, f"offer {offer_id} is {offer['status']!r} but escrowed"
        assert all(name.split("/")[1] in offers for name in escrows)

    @invariant()
    def nothing_open_outlives_its_expiry(self) -> None:
        last_block_ms = self.net.chain.host.last_block_time_ms()
        for app, collection in (("payments", "fx"), ("assets", "dvp")):
            for offer_id, offer in self._records(app, collection):
                if offer["status"] == "open":
                    assert as_int(offer["expires_ms"]) > last_block_ms, f"{offer_id} expired"
        for rid, record in self._records("scf", "rcv"):
            if record["financing"] is not None:
                expires_ms = as_record(record["financing"])["expires_ms"]
                assert as_int(expires_ms) > last_block_ms, f"financing of {rid} expired"


def as_int(value: Value) -> int:
    assert isinstance(value, int)
    assert not isinstance(value, bool)
    return value


CrossAppMachine.TestCase.settings = machine_settings(max_examples=60, step_count=30)
TestCrossAppInvariants = CrossAppMachine.TestCase
