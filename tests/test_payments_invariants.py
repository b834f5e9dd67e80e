"""Payments invariants under random operation sequences (hypothesis state machine, real host):
money is conserved per currency (only issue/redeem change supply), no balance is ever
negative, an FX PvP settles both legs or neither, a rejected operation changes nothing, no
offer is still open once a block's time has passed its expiry (the block's end released it),
and a freeze holds whoever set it: an account stays frozen while the issuer or its own bank
froze it, and no money, an escrowed sell leg included, leaves or enters a frozen account."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from apps.demo import CUSTOMER_FUNDS
from consensus.codec import Value
from tests.apps_fixtures import Network, as_record
from tests.hypothesis_profiles import machine_settings

PARTIES = ("lion-bank", "harbour-bank", "merlion-metals", "kowloon-parts", "alice", "bob")
CURRENCIES = ("SGD", "HKD")
ISSUERS = {"SGD": "lion-bank", "HKD": "harbour-bank"}
# An account's own bank (the enterprises are institutions of their own: only an issuer sets
# controls on their accounts).
OWN_BANK = {
    "lion-bank": "lion-bank",
    "harbour-bank": "harbour-bank",
    "alice": "lion-bank",
    "bob": "harbour-bank",
}
amounts = st.integers(min_value=1, max_value=2 * CUSTOMER_FUNDS)
parties = st.sampled_from(PARTIES)
currencies = st.sampled_from(CURRENCIES)


class PaymentsMachine(RuleBasedStateMachine):
    offers = Bundle("offers")

    def __init__(self) -> None:
        super().__init__()
        self.net = Network.start()
        self.supply = {code: self._supply(code) for code in CURRENCIES}
        self.e2e = 0
        # (account, currency) -> the banks whose freeze of it stands.
        self.frozen_by: dict[tuple[str, str], set[str]] = {}

    def _frozen(self, account: bytes, code: str) -> bool:
        return any(
            by and self.net.pk(name) == account
            for (name, frozen_code), by in self.frozen_by.items()
            if frozen_code == code
        )

    def _supply(self, code: str) -> int:
        record = self.net.query("payments", "currency", code=code)
        record = as_record(record)
        value = record["supply"]
        assert isinstance(value, int)
        return value

    def _balances(self) -> dict[tuple[str, str], int]:
        return {
            (name, code): self.net.balance(name, code)
            for name in self.net.consortium.party_names()
            for code in CURRENCIES
        }

    def _run(self, name: str, operation: str, **arguments: Value) -> tuple[bool, Value]:
        # Each operation runs alone in a block; a rejection is checked to change nothing.
        outcome = self.net.attempt(name, "payments", operation, **arguments)
        return outcome.ok, outcome.receipt.result

    @rule(source=parties, to=parties, code=currencies, amount=amounts)
    def transfer(self, source: str, to: str, code: str, amount: int) -> None:
        self.e2e += 1
        ok, _ = self._run(
            source,
            "transfer",
            to=self.net.pk(to),
            currency=code,
            amount=amount,
            end_to_end_id=f"E{self.e2e}",
        )
        if ok:
            assert not self._frozen(self.net.pk(source), code)
            assert not self._frozen(self.net.pk(to), code)

    @rule(code=currencies, to=st.sampled_from(("lion-bank", "harbour-bank")), amount=amounts)
    def issue(self, code: str, to: str, amount: int) -> None:
        ok, _ = self._run(ISSUERS[code], "issue", currency=code, to=self.net.pk(to), amount=amount)
        if ok:
            self.supply[code] += amount

    @rule(code=currencies, amount=amounts)
    def redeem(self, code: str, amount: int) -> None:
        ok, _ = self._run(ISSUERS[code], "redeem", currency=code, amount=amount)
        if ok:
            self.supply[code] -= amount

    @rule(
        target=offers,
        maker=parties,
        sell=currencies,
        sell_amount=amounts,
        buy_amount=amounts,
        lifetime_blocks=st.integers(min_value=0, max_value=4),
    )
    def offer_fx(
        self, maker: str, sell: str, sell_amount: int, buy_amount: int, lifetime_blocks: int
    ) -> str:
        buy = "HKD" if sell == "SGD" else "SGD"
        ok, result = self._run(
            maker,
            "offer_fx",
            sell_currency=sell,
            sell_amount=sell_amount,
            buy_currency=buy,
            buy_amount=buy_amount,
            expires_ms=self.net.now_ms + 1000 * lifetime_blocks,
        )
        if not ok:
            return "fx-none"
        assert not self._frozen(self.net.pk(maker), sell)
        return str(as_record(result)["offer"])

    @rule(offer=offers, taker=parties)
    def accept_fx(self, offer: str, taker: str) -> None:
        record = self.net.query("payments", "offer", id=offer)
        outcome = self.net.attempt(taker, "payments", "accept_fx", offer=offer)
        if not outcome.ok:
            return  # and it moved nothing (checked by attempt)
        record = as_record(record)
        maker = record["maker"]
        assert isinstance(maker, bytes)
        sell, buy = str(record["sell_currency"]), str(record["buy_currency"])
        sell_amount, buy_amount = record["sell_amount"], record["buy_amount"]
        assert isinstance(sell_amount, int)
        assert isinstance(buy_amount, int)
        # Both legs, exactly (the deltas are this transaction's own, whatever expired too).
        taker_key = self.net.pk(taker)
        assert outcome.balance_delta(maker, buy) == buy_amount
        assert outcome.balance_delta(taker_key, buy) == -buy_amount
        assert outcome.balance_delta(taker_key, sell) == sell_amount
        assert outcome.balance_delta(maker, sell) == 0  # the sell leg left escrow, not maker
        for account in (maker, taker_key):
            assert not self._frozen(account, sell)
            assert not self._frozen(account, buy)

    @rule(offer=offers, who=parties)
    def cancel_fx(self, offer: str, who: str) -> None:
        self._run(who, "cancel_fx", offer=offer)

    @rule(blocks=st.integers(min_value=1, max_value=3))
    def tick(self, blocks: int) -> None:
        for _ in range(blocks):
            self.net.chain.run([])

    @rule(name=parties, code=currencies, own_bank=st.booleans(), frozen=st.booleans())
    def freeze(self, name: str, code: str, own_bank: bool, frozen: bool) -> None:
        # The currency's issuer, or the account's own bank (another institution, or the same).
        bank = OWN_BANK.get(name, ISSUERS[code]) if own_bank else ISSUERS[code]
        ok, _ = self._run(
            bank, "set_controls", account=self.net.pk(name), currency=code, frozen=frozen
        )
        if ok:
            by = self.frozen_by.setdefault((name, code), set())
            if frozen:
                by.add(bank)
            else:
                by.discard(bank)

    @rule(
        maker=parties,
        sell=currencies,
        sell_amount=amounts,
        buy_amount=amounts,
        own_bank=st.booleans(),
        taker=parties,
    )
    def freeze_a_maker_then_accept(
        self, maker: str, sell: str, sell_amount: int, buy_amount: int, own_bank: bool, taker: str
    ) -> None:
        # The maker is frozen in what it escrowed, after it escrowed it; then a taker tries.
        offer = self.offer_fx(maker, sell, sell_amount, buy_amount, lifetime_blocks=4)
        if offer != "fx-none":
            self.freeze(maker, sell, own_bank, frozen=True)
            self.accept_fx(offer, taker)

    @rule(name=parties, code=currencies, to=parties, amount=amounts)
    def own_bank_unfreezes_then_pay(self, name: str, code: str, to: str, amount: int) -> None:
        # The issuer freezes an account; its own bank (perhaps another institution) lifts its
        # own freeze; the account then tries to pay.
        self.freeze(name, code, own_bank=False, frozen=True)
        self.freeze(name, code, own_bank=True, frozen=False)
        self.transfer(name, to, code, amount)

    @invariant()
    def controls_report_every_standing_freeze(self) -> None:
        for (name, code), by in self.frozen_by.items():
            controls = as_record(self.net.query("payments", "controls", account=self.net.pk(name)))
            assert as_record(controls[code])["frozen"] is bool(by), (name, code, by)

    @invariant()
    def money_is_conserved_and_never_negative(self) -> None:
        balances = self._balances()
        assert all(balance >= 0 for balance in balances.values())
        open_offers = self.net.query("payments", "offers", limit=500)
        assert isinstance(open_offers, tuple)
        for code in CURRENCIES:
            escrowed = 0
            for item in open_offers:
                item = as_record(item)
                if item["sell_currency"] == code:
                    amount = item["sell_amount"]
                    assert isinstance(amount, int)
                    escrowed += amount
            held = sum(balance for (_, c), balance in balances.items() if c == code)
            assert self._supply(code) == self.supply[code]
            assert held + escrowed == self.supply[code]

    @invariant()
    def no_open_offer_has_expired(self) -> None:
        last_block_ms = self.net.chain.host.last_block_time_ms()
        open_offers = self.net.query("payments", "offers", limit=500)
        assert isinstance(open_offers, tuple)
        for item in open_offers:
            expires_ms = as_record(item)["expires_ms"]
            assert isinstance(expires_ms, int)
            assert expires_ms > last_block_ms, "an expired offer is still open"


PaymentsMachine.TestCase.settings = machine_settings(max_examples=50, step_count=20)
TestPaymentsInvariants = PaymentsMachine.TestCase
