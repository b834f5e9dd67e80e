"""A realistic demo consortium and an endless, deterministic stream of its transactions.

Theory of operation
-------------------
``demo_consortium(seed)`` describes a small cross-border trade network: three settlement
banks (Singapore, Hong Kong, mainland China), each issuing its own currency (SGD, HKD, CNY);
a core enterprise (a car maker) with a tier-1 and a tier-2 supplier; a fund manager; retail
customers of each bank; and a regulator. It returns the genesis sections of the
``membership``, ``payments``, ``scf`` and ``assets`` apps and every party's private key, all
derived from the integer seed (``PrivateKey(hash(tag, seed, name))``): the same seed always
gives the same keys and genesis.

``DemoTraffic`` turns the consortium into an endless stream of signed transactions. A
hash-based generator (no ``random``: SHA-256 of the seed and a counter) picks the next step,
weighted towards everyday work:

* payments between parties, occasional issuance by a settlement bank;
* FX payment-versus-payment offers and, later, their acceptance (or cancellation);
* supply-chain finance pipelines: order, milestones, receivable issue, acceptance, partial
  transfer to the tier-2 supplier (a split), financing with a bank, repayment;
* a tokenised bond and a money-market fund unit: creation, minting, transfers and DvP.

The generator keeps a model of balances and of its own open work (offers, receivables) and
applies each step to the model as if it succeeded, so when the stream is applied in order
almost every transaction is accepted. A multi-step flow only advances after
``STEP_GAP_TRANSACTIONS`` other transactions (``step_gap_transactions``: a driver submitting
to several nodes at a high rate asks for a wider gap, a few seconds of traffic), so the earlier
step has normally committed even when a block reorders senders. Nonces are tracked per sender
(start from ``nonces`` to resume against a chain that already has traffic).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from apps.assets import dvp_offer_id
from apps.payments import fx_offer_id
from apps.scf import child_receivable_id, receivable_id
from apps.transaction import Transaction, sign_transaction
from consensus.codec import Value, encode
from consensus.crypto import PrivateKey, hash_bytes

__all__ = [
    "DEFAULT_CHAIN_ID",
    "Consortium",
    "DemoTraffic",
    "DeterministicChooser",
    "Party",
    "demo_consortium",
]

DEFAULT_CHAIN_ID: Final = "suanpan-demo"
_KEY_TAG: Final = "suanpan/demo-key/v1"
# A later step of a flow waits this many transactions so its predecessor has committed.
STEP_GAP_TRANSACTIONS: Final = 24
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
# Genesis liquidity in minor units: 100 million units per bank per currency, 1 million to
# each enterprise and 10 thousand to each customer in its home currency.
BANK_LIQUIDITY: Final = 100_000_000_00
ENTERPRISE_FUNDS: Final = 1_000_000_00
CUSTOMER_FUNDS: Final = 10_000_00


@dataclass(frozen=True, slots=True)
class Party:
    """One signing identity of the demo: its name, key, institution, roles and currency."""

    name: str
    key: PrivateKey
    institution: str
    roles: tuple[str, ...]
    currency: str
    jurisdiction: str

    @property
    def public_key(self) -> bytes:
        """The identity's public key."""
        return self.key.public_key


@dataclass(frozen=True, slots=True)
class Consortium:
    """The demo network: parties (with keys) and the apps' genesis sections."""

    seed: int
    chain_id: str
    parties: tuple[Party, ...]
    app_genesis: Mapping[str, Value]

    def party(self, name: str) -> Party:
        """The party called ``name``; raises ``KeyError``."""
        for party in self.parties:
            if party.name == name:
                return party
        raise KeyError(name)

    def party_names(self) -> tuple[str, ...]:
        """Every party's name, in declaration order."""
        return tuple(party.name for party in self.parties)

    def party_name(self, public_key: Value) -> str:
        """The name of the party with ``public_key``; raises ``KeyError``."""
        for party in self.parties:
            if party.public_key == public_key:
                return party.name
        raise KeyError(public_key)

    def with_role(self, role: str) -> tuple[Party, ...]:
        """Parties holding ``role``, in declaration order."""
        return tuple(party for party in self.parties if role in party.roles)


# (institution id, display name, kind, jurisdiction, sponsor, currency)
_INSTITUTIONS: Final = (
    ("lion-bank", "Lion City Bank", "bank", "SG", None, "SGD"),
    ("harbour-bank", "Harbour Bank", "bank", "HK", None, "HKD"),
    ("pearl-bank", "Pearl River Bank", "bank", "CN", None, "CNY"),
    ("mas", "Monetary Authority", "regulator", "SG", None, ""),
    ("dragon-motors", "Dragon Motors", "enterprise", "CN", "pearl-bank", "CNY"),
    ("kowloon-parts", "Kowloon Parts", "enterprise", "HK", "harbour-bank", "HKD"),
    ("merlion-metals", "Merlion Metals", "enterprise", "SG", "lion-bank", "SGD"),
    ("straits-funds", "Straits Fund Managers", "enterprise", "SG", "lion-bank", "SGD"),
)
# (party name, institution id, roles)
_PARTIES: Final = (
    ("lion-bank", "lion-bank", ("bank",)),
    ("harbour-bank", "harbour-bank", ("bank",)),
    ("pearl-bank", "pearl-bank", ("bank",)),
    ("regulator", "mas", ("regulator",)),
    ("dragon-motors", "dragon-motors", ("enterprise",)),
    ("kowloon-parts", "kowloon-parts", ("enterprise",)),
    ("merlion-metals", "merlion-metals", ("enterprise",)),
    ("straits-funds", "straits-funds", ("enterprise",)),
    ("alice", "lion-bank", ("customer",)),
    ("bob", "harbour-bank", ("customer",)),
    ("chen", "pearl-bank", ("customer",)),
)
CURRENCIES: Final = (("SGD", "lion-bank"), ("HKD", "harbour-bank"), ("CNY", "pearl-bank"))


def _party_key(seed: int, name: str) -> PrivateKey:
    return PrivateKey(hash_bytes(encode((_KEY_TAG, seed, name))))


def demo_consortium(seed: int = 0, chain_id: str = DEFAULT_CHAIN_ID) -> Consortium:
    """The demo network for ``seed``: parties with keys, and genesis for membership,
    payments, scf and assets."""
    by_id = {entry[0]: entry for entry in _INSTITUTIONS}
    parties = tuple(
        Party(
            name=name,
            key=_party_key(seed, name),
            institution=institution,
            roles=roles,
            currency=by_id[institution][5],
            jurisdiction=by_id[institution][3],
        )
        for name, institution, roles in _PARTIES
    )
    institutions: list[Value] = []
    for institution_id, display, kind, jurisdiction, sponsor, _ in _INSTITUTIONS:
        entry: dict[str, Value] = {
            "id": institution_id,
            "name": display,
            "kind": kind,
            "jurisdiction": jurisdiction,
        }
        if sponsor is not None:
            entry["sponsor"] = sponsor
        institutions.append(entry)
    identities: list[Value] = [
        {"public_key": party.public_key, "institution": party.institution, "roles": party.roles}
        for party in parties
    ]
    balances: list[Value] = [
        {"account": account, "currency": code, "amount": amount}
        for account, code, amount in _genesis_balances(parties)
    ]
    currencies: list[Value] = [
        {"code": code, "digits": 2, "issuer": issuer} for code, issuer in CURRENCIES
    ]
    genesis: dict[str, Value] = {
        "membership": {"institutions": institutions, "identities": identities},
        "payments": {"currencies": currencies, "balances": balances},
        "scf": {},
        "assets": {},
    }
    return Consortium(seed, chain_id, parties, genesis)


def _genesis_balances(parties: Sequence[Party]) -> list[tuple[bytes, str, int]]:
    """Genesis liquidity: banks in every currency, others in their home currency."""
    balances: list[tuple[bytes, str, int]] = []
    for party in parties:
        if "bank" in party.roles:
            balances.extend((party.public_key, code, BANK_LIQUIDITY) for code, _ in CURRENCIES)
        elif "enterprise" in party.roles:
            balances.append((party.public_key, party.currency, ENTERPRISE_FUNDS))
        elif "customer" in party.roles:
            balances.append((party.public_key, party.currency, CUSTOMER_FUNDS))
    return balances


class DeterministicChooser:
    """Pseudo-random choices from SHA-256(seed, counter): reproducible, no ``random``."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._counter = 0

    def below(self, bound: int) -> int:
        """An integer in ``[0, bound)``."""
        assert bound > 0
        digest = hash_bytes(encode(("suanpan/demo-choice/v1", self._seed, self._counter)))
        self._counter += 1
        return int.from_bytes(digest[:8], "big") % bound

    def between(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``."""
        return low + self.below(high - low + 1)

    def pick(self, options: Sequence[Party]) -> Party:
        """One of ``options``."""
        return options[self.below(len(options))]

    def digest(self) -> bytes:
        """32 pseudo-random bytes (invoice and document hashes)."""
        return hash_bytes(encode(("suanpan/demo-digest/v1", self._seed, self.below(2**62))))


@dataclass(slots=True)
class _Pending:
    """A multi-step flow waiting for its next step."""

    kind: str
    ready_at: int
    data: dict[str, Value] = field(default_factory=dict)


# Weighted everyday actions (weights sum to 100).
_ACTIONS: Final = (
    ("payment", 40),
    ("fx_offer", 10),
    ("issue_currency", 4),
    ("scf_start", 8),
    ("asset_transfer", 12),
    ("dvp_offer", 8),
    ("customer_payment", 18),
)


class DemoTraffic:
    """An endless deterministic stream of signed demo transactions (see the module docstring).

    ``next_transaction(now_ms)`` returns the next one; ``now_ms`` is the driver's idea of the
    current block time (offer expiries and due dates are set relative to it).
    """

    def __init__(
        self,
        consortium: Consortium,
        *,
        seed: int | None = None,
        nonces: Mapping[bytes, int] | None = None,
        step_gap_transactions: int = STEP_GAP_TRANSACTIONS,
    ) -> None:
        assert step_gap_transactions >= 1, step_gap_transactions
        self.consortium = consortium
        self._step_gap = step_gap_transactions
        self._stream_seed = consortium.seed if seed is None else seed
        self._choose = DeterministicChooser(self._stream_seed)
        self._nonces: dict[bytes, int] = dict(nonces or {})
        self._count = 0
        self._pending: list[_Pending] = []
        self._queue: list[Transaction] = []
        self._balances: dict[tuple[bytes, str], int] = {
            (account, code): amount
            for account, code, amount in _genesis_balances(consortium.parties)
        }
        self._assets_ready = False
        self._asset_holdings: dict[tuple[bytes, str], int] = {}
        self._orders = 0

    @property
    def count(self) -> int:
        """Transactions produced so far."""
        return self._count

    def nonce_of(self, public_key: bytes) -> int:
        """The nonce the next transaction of ``public_key`` will carry."""
        return self._nonces.get(public_key, 0)

    def __iter__(self) -> Iterator[Transaction]:
        """Endless stream at a nominal one-second block time from the demo epoch."""
        now_ms = DEMO_EPOCH_MS
        while True:
            yield self.next_transaction(now_ms)
            now_ms += 100

    def batch(self, count: int, now_ms: int) -> list[Transaction]:
        """The next ``count`` transactions."""
        return [self.next_transaction(now_ms) for _ in range(count)]

    def next_transaction(self, now_ms: int) -> Transaction:
        """The next signed transaction of the stream."""
        while not self._queue:
            self._plan(now_ms)
        self._count += 1
        return self._queue.pop(0)

    # ------------------------------------------------------------------ planning
    def _sign(
        self, party: Party, app: str, operation: str, arguments: Mapping[str, Value]
    ) -> Transaction:
        nonce = self._nonces.get(party.public_key, 0)
        self._nonces[party.public_key] = nonce + 1
        tx = sign_transaction(
            party.key,
            chain_id=self.consortium.chain_id,
            app=app,
            operation=operation,
            arguments=arguments,
            nonce=nonce,
        )
        self._queue.append(tx)
        return tx

    def _plan(self, now_ms: int) -> None:
        if not self._assets_ready:
            self._bootstrap_assets()
            return
        due = [item for item in self._pending if item.ready_at <= self._count]
        if due and self._choose.below(3) > 0:
            item = due[0]
            self._pending.remove(item)
            self._advance(item, now_ms)
            return
        roll = self._choose.below(100)
        action = _ACTIONS[-1][0]
        for name, weight in _ACTIONS:
            if roll < weight:
                action = name
                break
            roll -= weight
        {
            "payment": self._payment,
            "customer_payment": self._customer_payment,
            "fx_offer": self._fx_offer,
            "issue_currency": self._issue_currency,
            "scf_start": self._scf_start,
            "asset_transfer": self._asset_transfer,
            "dvp_offer": self._dvp_offer,
        }[action](now_ms)

    def _later(self, kind: str, **data: Value) -> None:
        self._pending.append(
            _Pending(kind, self._count + len(self._queue) + self._step_gap, dict(data))
        )

    def _balance(self, party: Party, code: str) -> int:
        return self._balances.get((party.public_key, code), 0)

    def _move(self, source: Party, to: Party, code: str, amount: int) -> None:
        self._balances[(source.public_key, code)] = self._balance(source, code) - amount
        self._balances[(to.public_key, code)] = self._balance(to, code) + amount

    def _payers(self) -> tuple[Party, ...]:
        return tuple(
            party
            for party in self.consortium.parties
            if set(party.roles) & {"bank", "enterprise", "customer"}
        )

    def _e2e(self, party: Party) -> str:
        return f"e2e-{party.name}-{self.nonce_of(party.public_key)}"

    # ------------------------------------------------------------------ payments
    def _pay(self, source: Party, to: Party, code: str, amount: int, purpose: str) -> None:
        self._sign(
            source,
            "payments",
            "transfer",
            {
                "to": to.public_key,
                "currency": code,
                "amount": amount,
                "end_to_end_id": self._e2e(source),
                "purpose": purpose,
                "originator": {"name": source.name, "country": source.jurisdiction},
                "beneficiary": {"name": to.name, "country": to.jurisdiction},
            },
        )
        self._move(source, to, code, amount)

    def _payment(self, now_ms: int) -> None:
        payers = [p for p in self._payers() if "customer" not in p.roles]
        source = self._choose.pick(payers)
        to = self._choose.pick([p for p in self._payers() if p != source])
        code = source.currency if "bank" not in source.roles else self._currency()
        amount = self._amount(self._balance(source, code))
        if amount == 0:
            return self._issue_currency(now_ms)
        purpose = ("trade settlement", "supplier invoice", "interbank liquidity", "dividend")
        self._pay(source, to, code, amount, purpose[self._choose.below(len(purpose))])
        return None

    def _customer_payment(self, now_ms: int) -> None:
        customers = self.consortium.with_role("customer")
        source = self._choose.pick(customers)
        to = self._choose.pick([p for p in self._payers() if p != source])
        amount = self._amount(self._balance(source, source.currency))
        if amount == 0:
            bank = self._bank_of(source.currency)
            self._pay(bank, source, source.currency, CUSTOMER_FUNDS, "account top-up")
            return
        self._pay(source, to, source.currency, amount, "remittance")

    def _currency(self) -> str:
        return CURRENCIES[self._choose.below(len(CURRENCIES))][0]

    def _bank_of(self, code: str) -> Party:
        issuer = dict(CURRENCIES)[code]
        return self.consortium.party(issuer)

    def _amount(self, balance: int) -> int:
        """A payment of up to 1% of ``balance`` (at least one major unit), or 0 when poor."""
        if balance < 200:
            return 0
        return self._choose.between(100, max(100, balance // 100))

    def _issue_currency(self, now_ms: int) -> None:
        code = self._currency()
        issuer = self._bank_of(code)
        banks = self.consortium.with_role("bank")
        to = self._choose.pick(banks)
        amount = self._choose.between(1_000, 1_000_000) * 100
        self._sign(
            issuer, "payments", "issue", {"currency": code, "to": to.public_key, "amount": amount}
        )
        self._balances[(to.public_key, code)] = self._balance(to, code) + amount

    def _fx_offer(self, now_ms: int) -> None:
        makers = [p for p in self._payers() if "customer" not in p.roles]
        maker = self._choose.pick(makers)
        sell = maker.currency if "bank" not in maker.roles else self._currency()
        buy = self._choose.pick(
            [p for p in self.consortium.with_role("bank") if p.currency != sell]
        ).currency
        sell_amount = self._amount(self._balance(maker, sell))
        if sell_amount == 0:
            return
        # Rates are integer ratios in the generator too: roughly 1 SGD = 5.8 HKD = 5.4 CNY.
        rates = {"SGD": 100, "HKD": 17, "CNY": 19}
        buy_amount = sell_amount * rates[sell] // rates[buy]
        if buy_amount == 0:
            return
        tx = self._sign(
            maker,
            "payments",
            "offer_fx",
            {
                "sell_currency": sell,
                "sell_amount": sell_amount,
                "buy_currency": buy,
                "buy_amount": buy_amount,
                "expires_ms": now_ms + DAY_MS,
            },
        )
        self._balances[(maker.public_key, sell)] = self._balance(maker, sell) - sell_amount
        self._later(
            "fx_accept",
            offer=fx_offer_id(tx.hash),
            maker=maker.name,
            sell=sell,
            sell_amount=sell_amount,
            buy=buy,
            buy_amount=buy_amount,
        )

    # ------------------------------------------------------------------ multi-step flows
    def _advance(self, item: _Pending, now_ms: int) -> None:
        data = item.data
        if item.kind == "fx_accept":
            self._fx_accept(data)
        elif item.kind.startswith("scf_"):
            self._scf_step(item.kind, data, now_ms)
        elif item.kind == "dvp_accept":
            self._dvp_accept(data)
        else:  # pragma: no cover - every kind is planned above
            raise AssertionError(item.kind)

    def _fx_accept(self, data: Mapping[str, Value]) -> None:
        maker = self.consortium.party(str(data["maker"]))
        buy, buy_amount = str(data["buy"]), _int(data["buy_amount"])
        sell, sell_amount = str(data["sell"]), _int(data["sell_amount"])
        takers = [
            p
            for p in self.consortium.with_role("bank")
            if p != maker and self._balance(p, buy) >= buy_amount
        ]
        if not takers or self._choose.below(8) == 0:
            self._sign(maker, "payments", "cancel_fx", {"offer": data["offer"]})
            self._balances[(maker.public_key, sell)] = self._balance(maker, sell) + sell_amount
            return
        taker = self._choose.pick(takers)
        self._sign(taker, "payments", "accept_fx", {"offer": data["offer"]})
        self._move(taker, maker, buy, buy_amount)
        self._balances[(taker.public_key, sell)] = self._balance(taker, sell) + sell_amount

    def _scf_start(self, now_ms: int) -> None:
        buyer = self.consortium.party("dragon-motors")
        supplier = self.consortium.party("kowloon-parts")
        self._orders += 1
        # The stream's seed (not only the consortium's) keeps order ids unique when a driver
        # resumes a chain with another stream seed.
        order_id = f"PO-{self._stream_seed}-{self._orders}"
        self._sign(
            buyer,
            "scf",
            "register_order",
            {
                "order_id": order_id,
                "supplier": supplier.public_key,
                "description": "brake assemblies",
            },
        )
        amount = self._choose.between(50_000, 200_000) * 100
        self._later("scf_ship", order_id=order_id, amount=amount)

    def _scf_step(self, kind: str, data: dict[str, Value], now_ms: int) -> None:
        buyer = self.consortium.party("dragon-motors")
        supplier = self.consortium.party("kowloon-parts")
        tier2 = self.consortium.party("merlion-metals")
        order_id = data.get("order_id")
        if kind == "scf_ship":
            self._sign(
                supplier,
                "scf",
                "record_milestone",
                {
                    "order_id": order_id,
                    "milestone": "shipped",
                    "document_hash": self._choose.digest(),
                },
            )
            self._sign(
                supplier,
                "scf",
                "record_milestone",
                {"order_id": order_id, "milestone": "delivered"},
            )
            self._later("scf_accept_goods", **data)
        elif kind == "scf_accept_goods":
            self._sign(
                buyer, "scf", "record_milestone", {"order_id": order_id, "milestone": "accepted"}
            )
            tx = self._sign(
                buyer,
                "scf",
                "issue",
                {
                    "supplier": supplier.public_key,
                    "amount": data["amount"],
                    "currency": "CNY",
                    "due_ms": now_ms + 90 * DAY_MS,
                    "invoice_hash": self._choose.digest(),
                    "order_id": order_id,
                },
            )
            self._later("scf_accept", receivable=receivable_id(tx.hash), amount=data["amount"])
        elif kind == "scf_accept":
            rid = str(data["receivable"])
            self._sign(supplier, "scf", "accept", {"receivable": rid})
            part = _int(data["amount"]) * 2 // 5
            self._sign(
                supplier,
                "scf",
                "transfer",
                {"receivable": rid, "to": tier2.public_key, "amount": part},
            )
            self._later(
                "scf_finance",
                receivable=rid,
                amount=data["amount"],
                tier2_child=child_receivable_id(rid, 0),
                kept_child=child_receivable_id(rid, 1),
            )
        elif kind == "scf_finance":
            bank = self.consortium.party("lion-bank")
            self._sign(
                tier2,
                "scf",
                "offer_financing",
                {
                    "receivable": data["tier2_child"],
                    "bank": bank.public_key,
                    "rate_bps": 450,
                    "expires_ms": now_ms + DAY_MS,
                },
            )
            self._later("scf_fund", **data)
        elif kind == "scf_fund":
            bank = self.consortium.party("lion-bank")
            self._sign(bank, "scf", "accept_financing", {"receivable": data["tier2_child"]})
            self._later("scf_repay", **data)
        elif kind == "scf_repay":
            # Amount as recorded when the pipeline started (children sum to it).
            amount = _int(data["amount"])
            if self._balance(buyer, "CNY") < amount:
                lender = self.consortium.party("pearl-bank")
                self._pay(lender, buyer, "CNY", amount * 4, "working capital loan")
            self._sign(buyer, "scf", "repay", {"receivable": data["receivable"]})
            self._balances[(buyer.public_key, "CNY")] = self._balance(buyer, "CNY") - amount
        else:  # pragma: no cover
            raise AssertionError(kind)

    # ------------------------------------------------------------------ assets
    def _bootstrap_assets(self) -> None:
        bank = self.consortium.party("lion-bank")
        fund = self.consortium.party("straits-funds")
        self._sign(
            bank,
            "assets",
            "create_asset",
            {
                "symbol": "LCB-2030",
                "name": "Lion City Bank 3.1% bond 2030",
                "decimals": 0,
                "supply_cap": 10_000_000,
                "eligible_roles": ["bank", "enterprise"],
                "eligible_jurisdictions": ["SG", "HK", "CN"],
                "max_holders": 50,
                "holder_cap": 5_000_000,
            },
        )
        self._sign(
            fund,
            "assets",
            "create_asset",
            {
                "symbol": "SMMF",
                "name": "Straits Money Market Fund units",
                "decimals": 4,
                "supply_cap": 10**15,
                "eligible_jurisdictions": ["SG", "HK"],
            },
        )
        for holder, amount in (
            ("harbour-bank", 1_000_000),
            ("straits-funds", 1_000_000),
            ("lion-bank", 3_000_000),
        ):
            party = self.consortium.party(holder)
            self._sign(
                bank,
                "assets",
                "mint",
                {"symbol": "LCB-2030", "to": party.public_key, "amount": amount},
            )
            self._asset_holdings[(party.public_key, "LCB-2030")] = amount
        for holder in ("alice", "bob", "straits-funds", "merlion-metals"):
            party = self.consortium.party(holder)
            self._sign(
                fund,
                "assets",
                "mint",
                {"symbol": "SMMF", "to": party.public_key, "amount": 50_000_0000},
            )
            self._asset_holdings[(party.public_key, "SMMF")] = 50_000_0000
        self._assets_ready = True

    def _eligible(self, symbol: str) -> list[Party]:
        if symbol == "LCB-2030":
            return [p for p in self.consortium.parties if set(p.roles) & {"bank", "enterprise"}]
        return [p for p in self._payers() if p.jurisdiction in ("SG", "HK")]

    def _holding(self, party: Party, symbol: str) -> int:
        return self._asset_holdings.get((party.public_key, symbol), 0)

    def _asset_transfer(self, now_ms: int) -> None:
        symbol = ("LCB-2030", "SMMF")[self._choose.below(2)]
        holders = [p for p in self._eligible(symbol) if self._holding(p, symbol) >= 100]
        if not holders:
            return
        source = self._choose.pick(holders)
        to = self._choose.pick([p for p in self._eligible(symbol) if p != source])
        amount = self._choose.between(1, self._holding(source, symbol) // 100)
        if symbol == "LCB-2030" and self._holding(to, symbol) + amount > 5_000_000:
            return
        self._sign(
            source, "assets", "transfer", {"symbol": symbol, "to": to.public_key, "amount": amount}
        )
        self._asset_holdings[(source.public_key, symbol)] = self._holding(source, symbol) - amount
        self._asset_holdings[(to.public_key, symbol)] = self._holding(to, symbol) + amount

    def _dvp_offer(self, now_ms: int) -> None:
        symbol = "LCB-2030"
        sellers = [p for p in self._eligible(symbol) if self._holding(p, symbol) >= 2_000]
        if not sellers:
            return
        seller = self._choose.pick(sellers)
        amount = self._choose.between(100, self._holding(seller, symbol) // 20)
        price = amount * 101  # 1.01 SGD per unit, in cents
        tx = self._sign(
            seller,
            "assets",
            "offer_dvp",
            {
                "symbol": symbol,
                "side": "sell",
                "amount": amount,
                "currency": "SGD",
                "price": price,
                "expires_ms": now_ms + DAY_MS,
            },
        )
        self._asset_holdings[(seller.public_key, symbol)] = self._holding(seller, symbol) - amount
        self._later(
            "dvp_accept",
            offer=dvp_offer_id(tx.hash),
            seller=seller.name,
            amount=amount,
            price=price,
        )

    def _dvp_accept(self, data: Mapping[str, Value]) -> None:
        seller = self.consortium.party(str(data["seller"]))
        amount, price = _int(data["amount"]), _int(data["price"])
        buyers = [
            p
            for p in self._eligible("LCB-2030")
            if p != seller
            and self._balance(p, "SGD") >= price
            and self._holding(p, "LCB-2030") + amount <= 5_000_000
        ]
        if not buyers:
            self._sign(seller, "assets", "cancel_dvp", {"offer": data["offer"]})
            self._asset_holdings[(seller.public_key, "LCB-2030")] = (
                self._holding(seller, "LCB-2030") + amount
            )
            return
        buyer = self._choose.pick(buyers)
        self._sign(buyer, "assets", "accept_dvp", {"offer": data["offer"]})
        self._move(buyer, seller, "SGD", price)
        self._asset_holdings[(buyer.public_key, "LCB-2030")] = (
            self._holding(buyer, "LCB-2030") + amount
        )


# 2024-01-01T00:00:00Z: the nominal start of the demo's own clock in ``DemoTraffic.__iter__``.
DEMO_EPOCH_MS: Final = 1_704_067_200_000


def _int(value: Value) -> int:
    assert isinstance(value, int)
    return value
