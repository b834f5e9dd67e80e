"""The monitoring rule engine: alerts from the event stream, one item at a time.

Theory of operation
-------------------
``Monitor.feed`` takes the items of ``GET /events`` (``node.client.StreamEvent``) in order and
returns the alerts they raise. Time is the chain's: each item carries its block's time, so a
replay of old blocks raises exactly the alerts the live run raised, and velocity windows are in
block time. The rules (``MonitorRules``, from a TOML file or defaults):

* ``large_payment``: a ``payments`` ``payment`` event whose amount is at or above the
  threshold of its currency (``large_payment_thresholds``, minor units; ``"*"`` for the rest);
* ``velocity``: ``velocity_payments`` payments or more sent from one account within
  ``velocity_window_s`` seconds; raised once when the count is reached, again only after the
  account's window has emptied below it;
* ``unusual_financier``: a receivable ``receivable_financed`` by a bank outside the debtor's
  ``expected_financiers`` (when listed), or by a bank that never financed that debtor before,
  once the debtor has at least ``financier_history_min`` financings (the debtor is looked up:
  ``scf`` ``receivable``);
* ``account_frozen``: ``payments`` ``controls_set`` with ``frozen`` true, or ``assets``
  ``freeze`` with ``frozen`` true;
* ``fx_expired_locked``: an FX offer still reported open, its sell leg still in escrow, after a
  block passed its expiry (offers are learned from ``fx_offered`` events, looked up for their
  expiry, and from the open offers when the monitor starts; checked at every block). The
  payments app releases an expired offer at the end of the block that passes its expiry, so on
  a healthy chain this stays silent: it catches a release that failed (``end_block_fault``).

Lookups go through the node's API with the monitor's key; the read rules apply to them (run
the monitor with a key that reads everything it watches: a node key, an auditor, a
``[rpc] readers`` key). An alert is a value (``Alert``) the command prints and counts.
"""

from __future__ import annotations

import tomllib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from consensus.codec import Value
from node.client.client import StreamEvent
from node.jsonvalue import JsonType, from_json

__all__ = [
    "RULES",
    "Alert",
    "Monitor",
    "MonitorRules",
    "RulesError",
    "load_rules",
]

RULE_LARGE_PAYMENT: Final = "large_payment"
RULE_VELOCITY: Final = "velocity"
RULE_UNUSUAL_FINANCIER: Final = "unusual_financier"
RULE_ACCOUNT_FROZEN: Final = "account_frozen"
RULE_FX_EXPIRED_LOCKED: Final = "fx_expired_locked"
RULES: Final = (
    RULE_LARGE_PAYMENT,
    RULE_VELOCITY,
    RULE_UNUSUAL_FINANCIER,
    RULE_ACCOUNT_FROZEN,
    RULE_FX_EXPIRED_LOCKED,
)
# Open FX offers tracked at once: a busy market's worth; beyond it the oldest are dropped.
_OFFERS_TRACKED_MAX: Final = 100_000
# Accounts whose recent payments are remembered for the velocity rule.
_VELOCITY_ACCOUNTS_MAX: Final = 100_000
# Open offers read when the monitor starts (the payments app pages them).
_OPEN_OFFERS_PAGE: Final = 500

Query = Callable[[str, str, Mapping[str, Value]], Value]


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class MonitorRules:
    """Which rules run and their thresholds (see the module docstring)."""

    enabled: frozenset[str] = frozenset(RULES)
    large_payment_thresholds: Mapping[str, int] = field(default_factory=lambda: {"*": 1_000_000_00})
    velocity_payments: int = 10
    velocity_window_s: int = 60
    financier_history_min: int = 3
    expected_financiers: Mapping[bytes, frozenset[bytes]] = field(default_factory=dict)


def _positive(document: Mapping[str, object], name: str, default: int) -> int:
    value = document.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RulesError(f"{name} must be a positive integer, not {value!r}")
    return value


def _key(text: object, where: str) -> bytes:
    try:
        key = bytes.fromhex(str(text))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise RulesError(f"{where}: {text!r} is not a 64-hex-digit public key")
    return key


def load_rules(path: Path) -> MonitorRules:
    """Rules from a TOML file (every key optional)::

    enabled = ["large_payment", "velocity", ...]
    velocity_payments = 10
    velocity_window_s = 60
    financier_history_min = 3
    [large_payment_thresholds]   # minor units per currency; "*" for the others
    SGD = 100000000
    "*" = 100000000
    [expected_financiers]        # debtor public key = [bank public keys]
    "<hex>" = ["<hex>", ...]
    """
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise RulesError(f"{path}: {error}") from None
    known = {
        "enabled",
        "velocity_payments",
        "velocity_window_s",
        "financier_history_min",
        "large_payment_thresholds",
        "expected_financiers",
    }
    unknown = sorted(set(document) - known)
    if unknown:
        raise RulesError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {sorted(known)}")
    enabled = document.get("enabled", list(RULES))
    if not isinstance(enabled, list) or not set(enabled) <= set(RULES):
        raise RulesError(f"{path}: enabled must list rules among {', '.join(RULES)}")
    thresholds = document.get("large_payment_thresholds", {"*": 1_000_000_00})
    if not isinstance(thresholds, dict):
        raise RulesError(f"{path}: [large_payment_thresholds] must be a table")
    for currency, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RulesError(f"{path}: large_payment_thresholds.{currency} must be positive")
    financiers = document.get("expected_financiers", {})
    if not isinstance(financiers, dict):
        raise RulesError(f"{path}: [expected_financiers] must be a table")
    expected: dict[bytes, frozenset[bytes]] = {}
    for debtor, banks in financiers.items():
        if not isinstance(banks, list):
            raise RulesError(f"{path}: expected_financiers.{debtor} must be a list of keys")
        where = f"{path}: expected_financiers"
        expected[_key(debtor, where)] = frozenset(_key(bank, where) for bank in banks)
    return MonitorRules(
        enabled=frozenset(enabled),
        large_payment_thresholds=dict(thresholds),
        velocity_payments=_positive(document, "velocity_payments", 10),
        velocity_window_s=_positive(document, "velocity_window_s", 60),
        financier_history_min=_positive(document, "financier_history_min", 3),
        expected_financiers=expected,
    )


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: the rule, where in the chain (the item id and height), what happened."""

    rule: str
    height: int
    time_ms: int
    event_id: str
    message: str
    details: Mapping[str, JsonType]

    def to_json(self) -> dict[str, JsonType]:
        """The alert as one JSON document (what ``suanpan monitor --json`` prints)."""
        return {
            "rule": self.rule,
            "height": self.height,
            "time_ms": self.time_ms,
            "event_id": self.event_id,
            "message": self.message,
            "details": dict(self.details),
        }


def _record(value: Value) -> dict[str, Value] | None:
    """A map with string keys as a plain dict, or None."""
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {str(key): item for key, item in value.items()}
    return None


def _bytes(value: Value) -> bytes | None:
    return value if isinstance(value, bytes) else None


def _int(value: Value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(slots=True)
class _Offer:
    id: str
    maker: bytes
    expires_ms: int
    amount: int
    currency: str


class Monitor:
    """Evaluates ``rules`` over the event stream (module docstring). ``query`` answers app
    queries through the node's API; ``names`` shows known keys by name in messages."""

    def __init__(
        self, rules: MonitorRules, query: Query, names: Mapping[bytes, str] | None = None
    ) -> None:
        self.rules = rules
        self._query = query
        self._names = dict(names or {})
        self._recent: dict[bytes, deque[int]] = {}
        self._velocity_raised: set[bytes] = set()
        self._financiers: dict[bytes, dict[bytes, int]] = {}
        self._offers: dict[str, _Offer] = {}
        self.items_seen = 0
        self.height = 0

    def name(self, key: bytes | None) -> str:
        """A key as messages show it: its party name, or its first 16 hex digits."""
        if key is None:
            return "-"
        return self._names.get(key, key.hex()[:16])

    # -- start -------------------------------------------------------------------------------

    def seed_open_offers(self) -> int:
        """Track the FX offers already open when the monitor starts; returns how many."""
        if RULE_FX_EXPIRED_LOCKED not in self.rules.enabled:
            return 0
        offers = self._query("payments", "offers", {"limit": _OPEN_OFFERS_PAGE})
        count = 0
        for offer in offers if isinstance(offers, tuple | list) else ():
            record = _record(offer)
            if record is not None and self._track(record):
                count += 1
        return count

    def _track(self, offer: Mapping[str, Value]) -> bool:
        offer_id, maker = offer.get("id"), _bytes(offer.get("maker"))
        if not isinstance(offer_id, str) or maker is None or offer.get("status") != "open":
            return False
        if len(self._offers) >= _OFFERS_TRACKED_MAX:
            self._offers.pop(next(iter(self._offers)))
        self._offers[offer_id] = _Offer(
            offer_id,
            maker,
            _int(offer.get("expires_ms")),
            _int(offer.get("sell_amount")),
            str(offer.get("sell_currency", "")),
        )
        return True

    # -- items -------------------------------------------------------------------------------

    def feed(self, item: StreamEvent) -> list[Alert]:
        """The alerts ``item`` raises (in rule order)."""
        self.items_seen += 1
        data = item.data
        height = data.get("height")
        if isinstance(height, int):
            self.height = max(self.height, height)
        if item.kind == "block":
            return self._block(item)
        if item.kind != "app_event":
            return []
        attributes = from_json(data.get("attributes"))
        if not isinstance(attributes, Mapping):
            return []
        values = {str(name): value for name, value in attributes.items()}
        event = (str(data.get("app", "")), str(data.get("kind", "")))
        alerts: list[Alert] = []
        if event == ("payments", "payment"):
            alerts += self._payment(item, values)
        elif event == ("scf", "receivable_financed"):
            alerts += self._financed(item, values)
        elif event in (("payments", "controls_set"), ("assets", "freeze")):
            alerts += self._frozen(item, event[0], values)
        elif event == ("payments", "fx_offered"):
            self._offered(values)
        elif event in (("payments", "fx_settled"), ("payments", "fx_cancelled")):
            offer = values.get("offer")
            if isinstance(offer, str):
                self._offers.pop(offer, None)
        return alerts

    def _alert(
        self, rule: str, item: StreamEvent, message: str, details: Mapping[str, JsonType]
    ) -> Alert:
        data = item.data
        height = data.get("height")
        time_ms = data.get("time_ms")
        return Alert(
            rule,
            height if isinstance(height, int) else 0,
            time_ms if isinstance(time_ms, int) else 0,
            item.id,
            message,
            details,
        )

    def _payment(self, item: StreamEvent, values: Mapping[str, Value]) -> list[Alert]:
        alerts: list[Alert] = []
        source, to = _bytes(values.get("from")), _bytes(values.get("to"))
        amount, currency = _int(values.get("amount")), str(values.get("currency", ""))
        rules = self.rules
        if RULE_LARGE_PAYMENT in rules.enabled:
            thresholds = rules.large_payment_thresholds
            threshold = thresholds.get(currency, thresholds.get("*"))
            if threshold is not None and amount >= threshold:
                alerts.append(
                    self._alert(
                        RULE_LARGE_PAYMENT,
                        item,
                        f"payment of {amount} {currency} (minor units) from {self.name(source)}"
                        f" to {self.name(to)}, at or above the threshold {threshold}",
                        {
                            "from": None if source is None else source.hex(),
                            "to": None if to is None else to.hex(),
                            "amount": amount,
                            "currency": currency,
                            "threshold": threshold,
                            "transaction": str(item.data.get("hash", "")),
                        },
                    )
                )
        if RULE_VELOCITY in rules.enabled and source is not None:
            time_ms = item.data.get("time_ms")
            now_ms = time_ms if isinstance(time_ms, int) else 0
            recent = self._recent.get(source)
            if recent is None:
                if len(self._recent) >= _VELOCITY_ACCOUNTS_MAX:
                    oldest = next(iter(self._recent))
                    self._recent.pop(oldest)
                    self._velocity_raised.discard(oldest)
                recent = self._recent[source] = deque()
            recent.append(now_ms)
            window_ms = rules.velocity_window_s * 1000
            while recent and recent[0] <= now_ms - window_ms:
                recent.popleft()
            if len(recent) < rules.velocity_payments:
                self._velocity_raised.discard(source)
            elif source not in self._velocity_raised:
                self._velocity_raised.add(source)
                alerts.append(
                    self._alert(
                        RULE_VELOCITY,
                        item,
                        f"{len(recent)} payments from {self.name(source)} within"
                        f" {rules.velocity_window_s} s (limit {rules.velocity_payments})",
                        {
                            "from": source.hex(),
                            "payments": len(recent),
                            "window_s": rules.velocity_window_s,
                        },
                    )
                )
        return alerts

    def _financed(self, item: StreamEvent, values: Mapping[str, Value]) -> list[Alert]:
        if RULE_UNUSUAL_FINANCIER not in self.rules.enabled:
            return []
        bank, receivable = _bytes(values.get("bank")), values.get("id")
        if bank is None or not isinstance(receivable, str):
            return []
        record = _record(self._query("scf", "receivable", {"id": receivable}))
        debtor = None if record is None else _bytes(record.get("debtor"))
        if debtor is None:
            return []
        seen = self._financiers.setdefault(debtor, {})
        history = sum(seen.values())
        expected = self.rules.expected_financiers.get(debtor)
        reason = ""
        if expected is not None and bank not in expected:
            reason = "is not among the debtor's expected financiers"
        elif expected is None and bank not in seen and history >= self.rules.financier_history_min:
            reason = f"never financed this debtor in its {history} earlier financings"
        seen[bank] = seen.get(bank, 0) + 1
        if not reason:
            return []
        return [
            self._alert(
                RULE_UNUSUAL_FINANCIER,
                item,
                f"receivable {receivable} of {self.name(debtor)} financed by"
                f" {self.name(bank)}, which {reason}",
                {"receivable": receivable, "debtor": debtor.hex(), "bank": bank.hex()},
            )
        ]

    def _frozen(self, item: StreamEvent, app: str, values: Mapping[str, Value]) -> list[Alert]:
        if RULE_ACCOUNT_FROZEN not in self.rules.enabled or values.get("frozen") is not True:
            return []
        account = _bytes(values.get("account" if app == "payments" else "holder"))
        where = values.get("currency" if app == "payments" else "symbol")
        where = where if isinstance(where, str) else "?"
        return [
            self._alert(
                RULE_ACCOUNT_FROZEN,
                item,
                f"{app}: account {self.name(account)} frozen in {where}",
                {
                    "app": app,
                    "account": None if account is None else account.hex(),
                    "in": str(where),
                },
            )
        ]

    def _offered(self, values: Mapping[str, Value]) -> None:
        if RULE_FX_EXPIRED_LOCKED not in self.rules.enabled:
            return
        offer_id = values.get("offer")
        if not isinstance(offer_id, str):
            return
        offer = _record(self._query("payments", "offer", {"id": offer_id}))
        if offer is not None:
            self._track(offer)

    def _block(self, item: StreamEvent) -> list[Alert]:
        if RULE_FX_EXPIRED_LOCKED not in self.rules.enabled:
            return []
        time_ms = item.data.get("time_ms")
        if not isinstance(time_ms, int):
            return []
        alerts: list[Alert] = []
        for offer in [offer for offer in self._offers.values() if offer.expires_ms <= time_ms]:
            del self._offers[offer.id]
            current = _record(self._query("payments", "offer", {"id": offer.id}))
            if current is None or current.get("status") != "open":
                continue  # settled or cancelled in a block we did not see
            alerts.append(
                self._alert(
                    RULE_FX_EXPIRED_LOCKED,
                    item,
                    f"FX offer {offer.id} of {self.name(offer.maker)} expired at"
                    f" {offer.expires_ms} with {offer.amount} {offer.currency} (minor units)"
                    " still in escrow",
                    {
                        "offer": offer.id,
                        "maker": offer.maker.hex(),
                        "amount": offer.amount,
                        "currency": offer.currency,
                        "expires_ms": offer.expires_ms,
                    },
                )
            )
        return alerts
