"""Cross-border payments: multi-currency accounts, payments, FX payment-versus-payment.

Theory of operation
-------------------
Modelled on multi-CBDC and correspondent-banking platforms (mBridge, Partior):

* A **currency** (ISO 4217 code, minor-unit digits) has exactly one issuer: the institution
  that is its settlement bank. Only identities of that institution holding the bank role may
  ``issue`` it (to participating banks) or ``redeem`` it (from their own account). These two
  operations are the only ones that change a currency's ``supply``; every other movement
  conserves it: ``supply == sum(balances) + sum(escrowed)`` for each currency.
* An **account** is a member identity (its public key) with one balance per currency; a
  balance is never negative and never above ``AMOUNT_MAX``. An identity's account in a
  currency opens with its first credit (genesis, issue, an incoming payment) and stays open at
  a zero balance; a debit from an account that was never opened is ``no_account``, a debit
  above an open account's balance ``insufficient_funds``.
* A **payment** (``transfer``) carries the fields a bank expects: an end-to-end id unique per
  sender (enforced), purpose, originator and beneficiary details, remittance text.
* **Controls**: the issuer of a currency caps every single payment in it
  (``set_currency_limit``); the issuer or the account holder's own bank (an enterprise's
  sponsor bank) may freeze an account in a currency and cap its single payments and its daily
  outflow (``set_controls``), also while the holder is suspended. Each
  keeps its own controls and both apply (frozen when either froze it, the lower of two
  limits), so the holder's bank cannot lift what an issuer of another institution set. A
  rejected payment's ``AppError`` code names the rule that rejected it.
* **FX PvP**: ``offer_fx`` escrows the maker's sell leg; ``accept_fx`` moves the taker's buy
  leg to the maker and the escrowed sell leg to the taker in one transaction, or neither
  (any ``AppError`` discards every write of the transaction). Escrowed funds are still their
  owner's: once the owner's account is frozen in their currency they cannot leave for a
  taker or beneficiary (``account_frozen``), though they can still go back to the owner.
  ``cancel_fx`` (the maker; anyone once expired) releases the escrow. An offer expires at the
  first block whose time reaches ``expires_ms``: from then on ``accept_fx`` is
  ``offer_expired``, and that block's ``end_block`` marks the offer ``expired`` and returns
  the escrow to the maker (an ``fx_release`` movement), so no expired offer is reported open
  or keeps funds locked.
* **Calls from other apps** (``call``): ``transfer`` and ``escrow_lock`` may only debit the
  transaction's sender (the one who signed the calling app's operation); ``escrow_release`` and
  ``escrow_refund`` act only on escrows the calling app itself locked.

Every balance change is a numbered movement record (``pay/<seq>``) indexed in the history of
each account it touched (``hist/<account>/<seq>``), so history is a reverse prefix scan.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar, Final

from mypy_extensions import mypyc_attr

from apps._records import (
    AMOUNT_MAX,
    STATE_LIMITS,
    active_identity,
    as_int,
    as_map,
    expired_in_backlog,
    genesis_entry,
    get_int,
    get_record,
    identity_of,
    institution_of,
    key,
    last_segment,
    numbered_key,
    prefix,
    put_int,
    put_record,
    read_value,
    require_active,
    scan_end,
    scan_records,
    schedule_expiry,
    take_expired_offers,
    unschedule_expiry,
    write_value,
)
from apps.access import (
    OVERSEERS,
    Lookup,
    ReadRules,
    account_data,
    event_of,
    members_only,
    public,
    record_of,
)
from apps.base import (
    ROLE_BANK,
    ROLE_CUSTOMER,
    ROLE_ENTERPRISE,
    AppError,
    AppState,
    ReadState,
    TxContext,
)
from apps.schema import (
    Amount,
    AppSchema,
    Argument,
    Arguments,
    Boolean,
    Call,
    DispatchingApp,
    Identifier,
    Integer,
    Operation,
    Party,
    PublicKey,
    Query,
    Text,
    TimeMs,
)
from consensus.codec import Value, encode

__all__ = ["CURRENCY_PATTERN", "PaymentsApp", "fx_offer_id"]

CURRENCY_PATTERN: Final = re.compile(r"[A-Z]{3}")
# ISO 4217 minor units are 0..4 (e.g. JPY 0, USD 2, BHD 3, CLF 4).
DIGITS_MAX: Final = 4
DAY_MS: Final = 86_400_000
# A history page is a client request: bounded so one query cannot scan an account's whole life.
HISTORY_PAGE_MAX: Final = 200
OFFERS_PAGE_MAX: Final = 500
# The next movement number (every movement takes one: ``_record_movement``).
_SEQ_KEY: Final = key("seq")
# Movement records, by number.
_PAY_PREFIX: Final = prefix("pay")
_PAYERS: Final = frozenset({ROLE_BANK, ROLE_ENTERPRISE, ROLE_CUSTOMER})

_OFFER_PARTIES: Final = Lookup("offer", (("id", "offer"),), ("maker", "taker", "counterparty"))
_ESCROW_OWNER: Final = Lookup("escrow", (("app", "app"), ("id", "escrow")), ("owner",))
# Who may read what (``apps.access``): balances, history and controls are the account's; a
# payment belongs to both sides; currencies are public reference data; open FX offers are a
# market every member may see.
READ_RULES: Final = ReadRules(
    queries={
        "currencies": public("currency definitions"),
        "currency": public("currency definitions"),
        "balances": account_data("account"),
        "balance": account_data("account"),
        "history": account_data("account"),
        "controls": account_data("account"),
        "payment": record_of("from", "to", keyed_by=("sender",)),
        "escrow": record_of("owner"),
        "offers": members_only("open FX offers are a market"),
        # Taken, an offer is a trade: its maker's and taker's, like their settlement events.
        "offer": members_only(
            "FX offers are a market; a taken one is its maker's and taker's",
            closes="taker",
            closed=record_of("maker", "taker"),
        ),
    },
    events={
        "currency_created": public("currency definitions"),
        "currency_limit_set": public("currency definitions"),
        "issued": event_of("to"),
        "redeemed": event_of("from"),
        "controls_set": event_of("account"),
        "payment": event_of("from", "to"),
        "fx_offered": event_of("maker"),
        "fx_settled": event_of("maker", "taker"),
        "fx_cancelled": event_of(lookups=(_OFFER_PARTIES,)),
        "escrow_locked": event_of(lookups=(_ESCROW_OWNER,)),
        "escrow_release": event_of("to"),
        "escrow_refund": event_of("to"),
    },
    overseers=OVERSEERS,
)


def fx_offer_id(transaction_hash: bytes) -> str:
    """The id ``offer_fx`` gives the offer created by the transaction with this hash."""
    return "fx-" + transaction_hash.hex()[:24]


# ---------------------------------------------------------------------- the schema
_CURRENCY: Final = Identifier(CURRENCY_PATTERN, "an ISO 4217 code like 'USD'")
_ACCOUNT: Final = Argument("account", PublicKey(), "the account")


def _currency_argument(
    name: str = "currency", description: str = "ISO 4217 currency code"
) -> Argument:
    return Argument(name, _CURRENCY, description)


def _limit(high: int, default: int) -> Argument:
    return Argument(
        "limit",
        Integer(1, high),
        f"at most this many results (1..{high})",
        required=False,
        default=default,
    )


# A payment's fields, for the ``transfer`` operation and the ``transfer`` call of other apps.
_PAYMENT: Final = (
    Argument("to", PublicKey(), "beneficiary"),
    _currency_argument(),
    Argument("amount", Amount(), "amount"),
    Argument("end_to_end_id", Identifier(), "end-to-end id, unique per sender"),
    Argument("purpose", Text(), "purpose of the payment", required=False, default=""),
    Argument("originator", Party(), "originator details", required=False, default={}),
    Argument("beneficiary", Party(), "beneficiary details", required=False, default={}),
    Argument("remittance", Text(), "remittance information", required=False, default=""),
)
_OFFER: Final = Argument("offer", Identifier(), "FX offer id")
_PAYER: Final = Argument("from", PublicKey(), "the paying account (the transaction's sender)")

SCHEMA: Final = AppSchema(
    help="Cross-border payments: currencies, accounts, payments, FX payment-versus-payment.",
    operations=(
        Operation(
            "create_currency",
            frozenset({ROLE_BANK}),
            "Register a currency whose issuer is the sender's institution (a bank).",
            (
                _currency_argument("code"),
                Argument("digits", Integer(0, DIGITS_MAX), f"minor-unit digits (0..{DIGITS_MAX})"),
                Argument(
                    "transaction_limit",
                    Amount(allow_zero=True),
                    "cap on any single payment (0: none)",
                    required=False,
                    default=0,
                ),
            ),
        ),
        Operation(
            "issue",
            frozenset({ROLE_BANK}),
            "Issue currency to a participating bank (the currency's issuer only).",
            (
                _currency_argument(),
                Argument("to", PublicKey(), "receiving bank"),
                Argument("amount", Amount(), "amount"),
            ),
        ),
        Operation(
            "redeem",
            frozenset({ROLE_BANK}),
            "Redeem (destroy) currency from the issuer's own account.",
            (_currency_argument(), Argument("amount", Amount(), "amount")),
        ),
        Operation(
            "set_currency_limit",
            frozenset({ROLE_BANK}),
            "Cap every single payment in a currency (the issuer only; 0 removes the cap).",
            (
                _currency_argument(),
                Argument("transaction_limit", Amount(allow_zero=True), "the cap (0: none)"),
            ),
        ),
        Operation(
            "set_controls",
            frozenset({ROLE_BANK}),
            "Freeze an account in a currency or cap its payments (issuer or the holder's bank).",
            (
                _ACCOUNT,
                _currency_argument(),
                Argument("frozen", Boolean(), "freeze (true) or unfreeze (false)", required=False),
                Argument(
                    "transaction_limit",
                    Amount(allow_zero=True),
                    "cap on single payments (0: none)",
                    required=False,
                ),
                Argument(
                    "daily_limit",
                    Amount(allow_zero=True),
                    "cap on the daily outflow (0: none)",
                    required=False,
                ),
            ),
        ),
        Operation(
            "transfer",
            _PAYERS,
            "Pay another account (end-to-end id unique per sender).",
            _PAYMENT,
        ),
        Operation(
            "offer_fx",
            _PAYERS,
            "Offer to sell one currency for another (the sell leg is escrowed until settled).",
            (
                _currency_argument("sell_currency", "currency sold"),
                Argument("sell_amount", Amount(), "amount sold"),
                _currency_argument("buy_currency", "currency bought"),
                Argument("buy_amount", Amount(), "amount bought"),
                Argument("expires_ms", TimeMs(), "expiry (block time)"),
                Argument(
                    "counterparty",
                    PublicKey(),
                    "reserve the offer for this party",
                    required=False,
                ),
            ),
        ),
        Operation(
            "accept_fx",
            _PAYERS,
            "Accept an FX offer: both legs settle atomically.",
            (_OFFER,),
        ),
        Operation(
            "cancel_fx",
            _PAYERS,
            "Cancel an FX offer (the maker); the block that passes its expiry releases it.",
            (_OFFER,),
        ),
    ),
    queries=(
        Query("currencies", "Every registered currency with issuer and supply."),
        Query("currency", "One currency.", (_currency_argument("code"),)),
        Query(
            "balances",
            "Every account (currency) of a party with its balance, zero included.",
            (_ACCOUNT,),
        ),
        Query("balance", "One balance of an account.", (_ACCOUNT, _currency_argument())),
        Query(
            "payment",
            "A payment by id, or by sender and end-to-end id.",
            (
                Argument("id", Integer(0, 2**63), "payment (movement) number", required=False),
                Argument("sender", PublicKey(), "the paying account", required=False),
                Argument(
                    "end_to_end_id", Identifier(), "the sender's end-to-end id", required=False
                ),
            ),
        ),
        Query(
            "history",
            "An account's movements, newest first.",
            (
                _ACCOUNT,
                _limit(HISTORY_PAGE_MAX, 50),
                Argument(
                    "before",
                    Integer(0, 2**63),
                    "only movements numbered below this",
                    required=False,
                ),
            ),
        ),
        Query(
            "offers",
            "Open FX offers (never an expired one).",
            (
                Argument("currency", _CURRENCY, "only offers in this currency", required=False),
                Argument("maker", PublicKey(), "only offers of this maker", required=False),
                _limit(OFFERS_PAGE_MAX, 100),
            ),
        ),
        Query("offer", "One FX offer.", (Argument("id", Identifier(), "offer id"),)),
        Query("controls", "Controls on an account.", (_ACCOUNT,)),
        Query(
            "escrow",
            "An escrow held for another app (e.g. assets DvP).",
            (
                Argument("app", Identifier(), "owning app"),
                Argument("id", Identifier(), "escrow id"),
            ),
        ),
    ),
    calls=(
        Call(
            "transfer",
            "A payment from the transaction's sender, for another app (every payment rule).",
            (_PAYER, *_PAYMENT),
        ),
        Call(
            "escrow_lock",
            "Move the sender's funds into an escrow owned by the calling app.",
            (
                _PAYER,
                _currency_argument(),
                Argument("amount", Amount(), "amount"),
                Argument("escrow_id", Identifier(), "escrow id, unique per calling app"),
            ),
        ),
        Call(
            "escrow_release",
            "Pay an escrow the calling app owns to a beneficiary.",
            (
                Argument("escrow_id", Identifier(), "escrow id"),
                Argument("to", PublicKey(), "beneficiary"),
            ),
        ),
        Call(
            "escrow_refund",
            "Return an escrow the calling app owns to its owner.",
            (Argument("escrow_id", Identifier(), "escrow id"),),
        ),
    ),
)
# Genesis entries, parsed like arguments.
_GENESIS_CURRENCY: Final = (
    _currency_argument("code"),
    Argument("digits", Integer(0, DIGITS_MAX), "minor-unit digits"),
    Argument("issuer", Identifier(), "issuing institution id"),
    Argument(
        "transaction_limit",
        Integer(0, AMOUNT_MAX),
        "cap on any single payment (0: none)",
        required=False,
        default=0,
    ),
)
_GENESIS_BALANCE: Final = (
    _currency_argument(),
    _ACCOUNT,
    Argument("amount", Amount(), "opening balance"),
)


# A bank's own app may extend a shipped one, also when this module runs compiled (node.native).
@mypyc_attr(allow_interpreted_subclasses=True)
class PaymentsApp(DispatchingApp):
    """The ``payments`` app (see the module docstring for the rules)."""

    name: ClassVar[str] = "payments"
    schema: ClassVar[AppSchema] = SCHEMA
    read_rules: ClassVar[ReadRules] = READ_RULES

    # ------------------------------------------------------------------ genesis
    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        """``{"currencies": [{"code", "digits", "issuer" (institution id),
        "transaction_limit"?}], "balances": [{"account", "currency", "amount"}]}``; initial
        balances count towards supply."""
        currencies = config.get("currencies", ())
        if not isinstance(currencies, (list, tuple)):
            raise AppError("bad_genesis", "payments.currencies must be a list")
        for entry in currencies:
            item = genesis_entry(_GENESIS_CURRENCY, entry, "each currency")
            code = item.text("code")
            if get_record(state, key("cur", code)) is not None:
                raise AppError("bad_genesis", f"currency {code} listed twice")
            put_record(
                state,
                key("cur", code),
                {
                    "code": code,
                    "digits": item.integer("digits"),
                    "issuer": item.text("issuer"),
                    "supply": 0,
                    "transaction_limit": item.integer("transaction_limit"),
                },
            )
        balances = config.get("balances", ())
        if not isinstance(balances, (list, tuple)):
            raise AppError("bad_genesis", "payments.balances must be a list")
        for entry in balances:
            item = genesis_entry(_GENESIS_BALANCE, entry, "each balance")
            code = item.text("currency")
            currency = get_record(state, key("cur", code))
            if currency is None:
                raise AppError("bad_genesis", f"balance in unknown currency {code}")
            account = item.key("account")
            amount = item.integer("amount")
            _credit(state, account, code, amount)
            _add_supply(state, currency, amount)

    # ------------------------------------------------------------------ currencies
    def _create_currency(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        code = a.text("code")
        digits = a.integer("digits")
        limit = a.integer("transaction_limit")
        if not execute:
            return None
        if get_record(ctx.state, key("cur", code)) is not None:
            raise AppError("currency_exists", f"currency {code} already exists")
        issuer = active_identity(ctx, ctx.sender, "sender")
        record: dict[str, Value] = {
            "code": code,
            "digits": digits,
            "issuer": issuer.institution,
            "supply": 0,
            "transaction_limit": limit,
        }
        put_record(ctx.state, key("cur", code), record)
        ctx.emit("currency_created", {"code": code, "issuer": issuer.institution})
        return record

    def _require_issuer(self, ctx: TxContext, currency: Mapping[str, Value]) -> None:
        sender = active_identity(ctx, ctx.sender, "sender")
        if sender.institution != currency["issuer"] or ROLE_BANK not in sender.roles:
            raise AppError(
                "not_issuer",
                f"only the issuing settlement bank {currency['issuer']!r} may do this for "
                f"{currency['code']!s}",
            )

    def _issue(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        code = a.text("currency")
        to = a.key("to")
        amount = a.integer("amount")
        if not execute:
            return None
        currency = _currency(ctx.state, code)
        self._require_issuer(ctx, currency)
        recipient = active_identity(ctx, to, "recipient")
        if ROLE_BANK not in recipient.roles:
            raise AppError(
                "not_participating_bank", f"{code} is issued only to participating banks"
            )
        _add_supply(ctx.state, currency, amount)
        _credit(ctx.state, to, code, amount)
        seq = _record_movement(ctx, "issue", None, to, code, amount, {})
        ctx.emit("issued", {"currency": code, "to": to, "amount": amount, "payment": seq})
        return {"payment": seq}

    def _redeem(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        code = a.text("currency")
        amount = a.integer("amount")
        if not execute:
            return None
        currency = _currency(ctx.state, code)
        self._require_issuer(ctx, currency)
        _debit(ctx.state, ctx.sender, code, amount)
        _add_supply(ctx.state, currency, -amount)
        seq = _record_movement(ctx, "redeem", ctx.sender, None, code, amount, {})
        ctx.emit("redeemed", {"currency": code, "from": ctx.sender, "amount": amount})
        return {"payment": seq}

    def _set_currency_limit(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        code = a.text("currency")
        limit = a.integer("transaction_limit")
        if not execute:
            return None
        currency = _currency(ctx.state, code)
        self._require_issuer(ctx, currency)
        currency["transaction_limit"] = limit
        put_record(ctx.state, key("cur", code), currency)
        ctx.emit("currency_limit_set", {"currency": code, "transaction_limit": limit})
        return None

    def _set_controls(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        account = a.key("account")
        code = a.text("currency")
        frozen = a.optional_flag("frozen")
        transaction_limit = a.optional_integer("transaction_limit")
        daily_limit = a.optional_integer("daily_limit")
        if not execute:
            return None
        currency = _currency(ctx.state, code)
        sender = active_identity(ctx, ctx.sender, "sender")
        # A suspended holder's account may be frozen too, ready for its reinstatement.
        owner = identity_of(ctx, account)
        if owner is None:
            raise AppError("unknown_party", f"account {account.hex()[:16]}… is not a member")
        holder_bank = _holder_bank(ctx, owner.institution)
        if sender.institution not in (currency["issuer"], holder_bank):
            raise AppError(
                "not_controller",
                "controls are set by the currency's issuer or the account holder's own bank",
            )
        # The holder's bank sets its own controls; an issuer that is not the holder's bank
        # sets the issuer's (kept in the same record, under ``issuer``), which the holder's
        # bank cannot lift (both apply: ``_controls``).
        record_key = key("ctl", account, code)
        record = get_record(ctx.state, record_key) or _no_controls()
        if sender.institution == holder_bank:
            layer = record
        else:
            issuer = record.get("issuer")
            layer = dict(as_map(issuer)) if issuer is not None else _no_controls()
            record["issuer"] = layer
        if frozen is not None:
            layer["frozen"] = frozen
        if transaction_limit is not None:
            layer["transaction_limit"] = transaction_limit
        if daily_limit is not None:
            layer["daily_limit"] = daily_limit
        put_record(ctx.state, record_key, record)
        controls = _controls(ctx.state, account, code)
        ctx.emit(
            "controls_set",
            {"account": account, "currency": code, **controls, "by": sender.institution},
        )
        return controls

    # ------------------------------------------------------------------ payments
    def _transfer(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        return self._pay(ctx, a, ctx.sender, execute, caller="payments")

    def _pay(
        self, ctx: TxContext, a: Arguments, payer: bytes, execute: bool, *, caller: str
    ) -> Value:
        to = a.key("to")
        code = a.text("currency")
        amount = a.integer("amount")
        end_to_end_id = a.text("end_to_end_id")
        purpose = a.text("purpose")
        originator = a.map("originator")
        beneficiary = a.map("beneficiary")
        remittance = a.text("remittance")
        if not execute:
            return None
        if to == payer:
            raise AppError("self_payment", "a payment needs a different beneficiary")
        state = ctx.state  # read once: see ``_record_movement``
        currency = _currency(state, code)
        require_active(ctx, to, "beneficiary")
        e2e_key = key("e2e", payer, end_to_end_id)
        if read_value(state, e2e_key) is not None:
            raise AppError(
                "duplicate_end_to_end_id",
                f"end-to-end id {end_to_end_id!r} was already used by this sender",
            )
        _check_outflow(ctx, payer, currency, amount)
        _check_inflow(state, to, code)
        _debit(state, payer, code, amount)
        _credit(state, to, code, amount)
        seq = get_int(state, _SEQ_KEY)
        block = ctx.block
        record = _transfer_record(
            seq,
            payer,
            to,
            code,
            amount,
            block.time_ms,
            block.height,
            ctx.transaction_hash,
            end_to_end_id=end_to_end_id,
            purpose=purpose,
            originator=originator,
            beneficiary=beneficiary,
            remittance=remittance,
            caller=caller,
        )
        _store_movement(state, seq, record, payer, to)
        write_value(state, e2e_key, encode(seq, STATE_LIMITS))
        # Its attributes in canonical key order too, as the record's.
        ctx.emit(
            "payment",
            {
                "to": to,
                "from": payer,
                "amount": amount,
                "payment": seq,
                "currency": code,
                "end_to_end_id": end_to_end_id,
            },
        )
        return {"payment": seq}

    # ------------------------------------------------------------------ FX PvP
    def _offer_fx(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        sell = a.text("sell_currency")
        sell_amount = a.integer("sell_amount")
        buy = a.text("buy_currency")
        buy_amount = a.integer("buy_amount")
        expires_ms = a.integer("expires_ms")
        counterparty = a.optional_key("counterparty")
        if not execute:
            return None
        if sell == buy:
            raise AppError("same_currency", "an FX offer exchanges two different currencies")
        if expires_ms <= ctx.block.time_ms:
            raise AppError("offer_expiry", "an offer must expire after the current block time")
        sell_record = _currency(ctx.state, sell)
        _currency(ctx.state, buy)
        offer_id = fx_offer_id(ctx.transaction_hash)
        if get_record(ctx.state, key("fx", offer_id)) is not None:
            raise AppError("duplicate_offer", f"offer {offer_id} already exists")
        _check_outflow(ctx, ctx.sender, sell_record, sell_amount)
        _debit(ctx.state, ctx.sender, sell, sell_amount)
        offer: dict[str, Value] = {
            "id": offer_id,
            "maker": ctx.sender,
            "sell_currency": sell,
            "sell_amount": sell_amount,
            "buy_currency": buy,
            "buy_amount": buy_amount,
            "counterparty": counterparty,
            "expires_ms": expires_ms,
            "created_ms": ctx.block.time_ms,
            "status": "open",
        }
        put_record(ctx.state, key("fx", offer_id), offer)
        ctx.state.put(key("open", offer_id), b"")
        schedule_expiry(ctx.state, expires_ms, offer_id)
        seq = _record_movement(
            ctx, "fx_escrow", ctx.sender, None, sell, sell_amount, {"offer": offer_id}
        )
        ctx.emit("fx_offered", {"offer": offer_id, "maker": ctx.sender, "payment": seq})
        return {"offer": offer_id}

    def _open_offer(self, state: ReadState, offer_id: str) -> dict[str, Value]:
        offer = get_record(state, key("fx", offer_id))
        if offer is None:
            raise AppError("unknown_offer", f"no FX offer {offer_id!r}")
        if offer["status"] == "expired":
            raise AppError(
                "offer_expired",
                f"offer {offer_id} expired at {offer['expires_ms']!s}; its escrow went back "
                "to the maker",
            )
        if offer["status"] != "open":
            raise AppError("offer_closed", f"offer {offer_id} is {offer['status']!s}")
        return offer

    def _accept_fx(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        offer_id = a.text("offer")
        if not execute:
            return None
        offer = self._open_offer(ctx.state, offer_id)
        maker = offer["maker"]
        assert isinstance(maker, bytes)
        if ctx.block.time_ms >= as_int(offer["expires_ms"]):
            raise AppError("offer_expired", f"offer {offer_id} expired at {offer['expires_ms']!s}")
        if maker == ctx.sender:
            raise AppError("own_offer", "the maker cannot accept its own offer")
        if offer["counterparty"] is not None and offer["counterparty"] != ctx.sender:
            raise AppError("not_counterparty", f"offer {offer_id} is reserved for another party")
        sell = str(offer["sell_currency"])
        buy = str(offer["buy_currency"])
        sell_amount = as_int(offer["sell_amount"])
        buy_amount = as_int(offer["buy_amount"])
        require_active(ctx, maker, "maker")
        if _controls(ctx.state, maker, sell)["frozen"]:
            raise AppError(
                "account_frozen",
                f"the maker's {sell} account is frozen: its escrowed sell leg cannot leave",
            )
        # Leg 1: the taker pays the maker in the buy currency (every payment rule applies).
        _check_outflow(ctx, ctx.sender, _currency(ctx.state, buy), buy_amount)
        _check_inflow(ctx.state, maker, buy)
        _debit(ctx.state, ctx.sender, buy, buy_amount)
        _credit(ctx.state, maker, buy, buy_amount)
        # Leg 2: the escrowed sell leg goes to the taker.
        _check_inflow(ctx.state, ctx.sender, sell)
        _credit(ctx.state, ctx.sender, sell, sell_amount)
        offer["status"] = "settled"
        offer["taker"] = ctx.sender
        offer["settled_ms"] = ctx.block.time_ms
        put_record(ctx.state, key("fx", offer_id), offer)
        ctx.state.delete(key("open", offer_id))
        unschedule_expiry(ctx.state, as_int(offer["expires_ms"]), offer_id)
        leg = {"offer": offer_id}
        first = _record_movement(ctx, "fx_settle", ctx.sender, maker, buy, buy_amount, leg)
        second = _record_movement(ctx, "fx_settle", None, ctx.sender, sell, sell_amount, leg)
        ctx.emit(
            "fx_settled",
            {"offer": offer_id, "maker": maker, "taker": ctx.sender, "payments": (first, second)},
        )
        result: dict[str, Value] = {"offer": offer_id, "payments": (first, second)}
        return result

    def _cancel_fx(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        offer_id = a.text("offer")
        if not execute:
            return None
        offer = self._open_offer(ctx.state, offer_id)
        maker = offer["maker"]
        assert isinstance(maker, bytes)
        expired = ctx.block.time_ms >= as_int(offer["expires_ms"])
        if maker != ctx.sender and not expired:
            raise AppError("not_offer_maker", "only the maker may cancel an unexpired offer")
        unschedule_expiry(ctx.state, as_int(offer["expires_ms"]), offer_id)
        self._release(ctx, offer, "expired" if expired else "cancelled")
        return {"offer": offer_id, "status": offer["status"]}

    def _release(self, ctx: TxContext, offer: dict[str, Value], status: str) -> None:
        """Close an open offer as ``status`` and return its escrowed sell leg to the maker."""
        offer_id = str(offer["id"])
        maker = offer["maker"]
        assert isinstance(maker, bytes)
        sell = str(offer["sell_currency"])
        amount = as_int(offer["sell_amount"])
        _credit(ctx.state, maker, sell, amount)
        offer["status"] = status
        offer["closed_ms"] = ctx.block.time_ms
        put_record(ctx.state, key("fx", offer_id), offer)
        ctx.state.delete(key("open", offer_id))
        seq = _record_movement(ctx, "fx_release", None, maker, sell, amount, {"offer": offer_id})
        ctx.emit("fx_cancelled", {"offer": offer_id, "status": status, "payment": seq})

    # ------------------------------------------------------------------ expiry
    def end_block(self, ctx: TxContext) -> None:
        """Close every offer that expired by this block's time (oldest first, bounded per
        block: ``apps._records.take_expired``) and return its escrow to the maker."""
        for offer in take_expired_offers(ctx.state, ctx.block.time_ms, "fx"):
            self._release(ctx, offer, "expired")

    # ------------------------------------------------------------------ calls from other apps
    # Operations for other apps in the same transaction (the schema's ``calls``): ``transfer``
    # and ``escrow_lock`` debit only ``from``, which must be the transaction's sender;
    # ``escrow_release`` and ``escrow_refund`` act only on escrows ``caller`` itself locked.
    def _call_transfer(self, ctx: TxContext, caller: str, a: Arguments) -> Value:
        payer = a.key("from")
        _require_sender(ctx, payer, caller)
        return self._pay(ctx, a, payer, True, caller=caller)

    def _call_escrow_release(self, ctx: TxContext, caller: str, a: Arguments) -> Value:
        return self._escrow_close(ctx, caller, a, release=True)

    def _call_escrow_refund(self, ctx: TxContext, caller: str, a: Arguments) -> Value:
        return self._escrow_close(ctx, caller, a, release=False)

    def _call_escrow_lock(self, ctx: TxContext, caller: str, a: Arguments) -> Value:
        owner = a.key("from")
        code = a.text("currency")
        amount = a.integer("amount")
        escrow_id = a.text("escrow_id")
        _require_sender(ctx, owner, caller)
        currency = _currency(ctx.state, code)
        escrow_key = key("esc", caller, escrow_id)
        if ctx.state.get(escrow_key) is not None:
            raise AppError("duplicate_escrow", f"escrow {caller}/{escrow_id} already exists")
        _check_outflow(ctx, owner, currency, amount)
        _debit(ctx.state, owner, code, amount)
        put_record(
            ctx.state,
            escrow_key,
            {"app": caller, "id": escrow_id, "owner": owner, "currency": code, "amount": amount},
        )
        seq = _record_movement(
            ctx, "escrow_lock", owner, None, code, amount, {"app": caller, "escrow": escrow_id}
        )
        ctx.emit("escrow_locked", {"app": caller, "escrow": escrow_id, "payment": seq})
        result: dict[str, Value] = {"escrow_id": escrow_id, "payment": seq}
        return result

    def _escrow_close(self, ctx: TxContext, caller: str, a: Arguments, *, release: bool) -> Value:
        escrow_id = a.text("escrow_id")
        escrow_key = key("esc", caller, escrow_id)
        escrow = get_record(ctx.state, escrow_key)
        if escrow is None:
            raise AppError("unknown_escrow", f"app {caller!r} holds no escrow {escrow_id!r}")
        owner = escrow["owner"]
        assert isinstance(owner, bytes)
        to = a.key("to") if release else owner
        code = str(escrow["currency"])
        amount = as_int(escrow["amount"])
        if release:
            # The escrow is still its owner's money: it cannot leave a frozen account.
            if _controls(ctx.state, owner, code)["frozen"]:
                raise AppError("account_frozen", f"account {owner.hex()[:16]}… is frozen in {code}")
            require_active(ctx, to, "beneficiary")
            _check_inflow(ctx.state, to, code)
        _credit(ctx.state, to, code, amount)
        ctx.state.delete(escrow_key)
        kind = "escrow_release" if release else "escrow_refund"
        seq = _record_movement(
            ctx, kind, None, to, code, amount, {"app": caller, "escrow": escrow_id}
        )
        ctx.emit(kind, {"app": caller, "escrow": escrow_id, "to": to, "payment": seq})
        return {"payment": seq}

    # ------------------------------------------------------------------ queries
    def answer(self, state: ReadState, path: str, a: Arguments) -> Value:
        """Paths: ``currencies``, ``currency`` {code}, ``balances`` {account},
        ``balance`` {account, currency}, ``payment`` {id} | {sender, end_to_end_id},
        ``history`` {account, limit?, before?}, ``offers`` {currency?, maker?, limit?},
        ``offer`` {id}, ``controls`` {account}, ``escrow`` {app, id}."""
        if path == "currencies":
            return tuple(value for _, value in scan_records(state, prefix("cur")))
        if path == "currency":
            return get_record(state, key("cur", a.text("code")))
        if path == "balances":
            account = a.key("account")
            start = prefix("acct", account)
            return {
                last_segment(record_key): get_int(
                    state, key("bal", account, last_segment(record_key))
                )
                for record_key, _ in state.scan(start, scan_end(start))
            }
        if path == "balance":
            return get_int(state, key("bal", a.key("account"), a.text("currency")))
        if path == "payment":
            if a.has("id"):
                return get_record(state, key("pay", a.integer("id")))
            a.require("sender", "without an id")
            a.require("end_to_end_id", "without an id")
            e2e_key = key("e2e", a.key("sender"), a.text("end_to_end_id"))
            if state.get(e2e_key) is None:
                return None
            return get_record(state, key("pay", get_int(state, e2e_key)))
        if path == "history":
            return self._history(state, a)
        if path == "offers":
            return self._offers(state, a)
        if path == "offer":
            offer = get_record(state, key("fx", a.text("id")))
            return None if offer is None else _offer_view(state, offer)
        if path == "controls":
            account = a.key("account")
            return {
                last_segment(record_key): _combined(dict(as_map(record)))
                for record_key, record in scan_records(state, prefix("ctl", account))
            }
        if path == "escrow":
            return get_record(state, key("esc", a.text("app"), a.text("id")))
        raise AppError("unknown_query", f"payments has no query {path!r}")

    def _history(self, state: ReadState, a: Arguments) -> Value:
        account = a.key("account")
        limit = a.integer("limit")
        before = a.optional_integer("before")
        start = prefix("hist", account)
        end = key("hist", account, before) if before is not None else start[:-1] + b"0"
        movements: list[Value] = []
        for record_key, _ in state.scan(start, end, reverse=True):
            seq = int(last_segment(record_key), 16)
            movements.append(get_record(state, key("pay", seq)))
            if len(movements) >= limit:
                break
        return tuple(movements)

    def _offers(self, state: ReadState, a: Arguments) -> Value:
        currency = a.optional_text("currency")
        maker = a.optional_key("maker")
        limit = a.integer("limit")
        offers: list[Value] = []
        for record_key, _ in state.scan(prefix("open"), prefix("open")[:-1] + b"0"):
            offer = get_record(state, key("fx", last_segment(record_key)))
            assert offer is not None
            if _offer_view(state, offer)["status"] != "open":
                continue  # expired, waiting in the sweep's backlog
            if currency is not None and currency not in (
                offer["sell_currency"],
                offer["buy_currency"],
            ):
                continue
            if maker is not None and offer["maker"] != maker:
                continue
            offers.append(offer)
            if len(offers) >= limit:
                break
        return tuple(offers)


# ---------------------------------------------------------------------- state helpers
def _offer_view(state: ReadState, offer: dict[str, Value]) -> dict[str, Value]:
    """An offer as queries report it: one still waiting in the expiry sweep's backlog is
    ``expired`` already (its escrow goes back to the maker within the next blocks)."""
    if offer["status"] == "open" and expired_in_backlog(state, as_int(offer["expires_ms"])):
        return {**offer, "status": "expired"}
    return offer


def _currency(state: ReadState, code: str) -> dict[str, Value]:
    currency = get_record(state, key("cur", code))
    if currency is None:
        raise AppError("unknown_currency", f"currency {code} is not registered")
    return currency


def _add_supply(state: AppState, currency: dict[str, Value], delta: int) -> None:
    supply = as_int(currency["supply"]) + delta
    if supply > AMOUNT_MAX:
        raise AppError("amount_overflow", f"{currency['code']!s} supply would exceed {AMOUNT_MAX}")
    assert supply >= 0, "supply below zero: redeem debits a balance first"
    currency["supply"] = supply
    put_record(state, key("cur", str(currency["code"])), currency)


def _credit(state: AppState, account: bytes, code: str, amount: int) -> None:
    """Add to a balance, opening the account in ``code`` on its first credit."""
    balance_key = key("bal", account, code)
    previous = get_int(state, balance_key)
    balance = previous + amount
    if balance > AMOUNT_MAX:
        raise AppError("amount_overflow", f"the balance would exceed {AMOUNT_MAX}")
    put_int(state, balance_key, balance)
    if previous == 0:  # a positive balance means the account is open already
        account_key = key("acct", account, code)
        if read_value(state, account_key) is None:
            write_value(state, account_key, b"")


def _require_account(state: ReadState, account: bytes, code: str) -> None:
    """``no_account`` unless ``account`` has opened an account in ``code``."""
    if (
        read_value(state, key("bal", account, code)) is None
        and read_value(state, key("acct", account, code)) is None
    ):
        raise AppError(
            "no_account",
            f"{account.hex()[:16]}… holds no {code} account (an account opens with its first "
            "credit)",
        )


def _debit(state: AppState, account: bytes, code: str, amount: int) -> None:
    balance_key = key("bal", account, code)
    balance = get_int(state, balance_key)
    if balance < amount:
        if balance == 0:
            _require_account(state, account, code)
        raise AppError(
            "insufficient_funds",
            f"balance {balance} {code} is below the amount {amount}",
        )
    put_int(state, balance_key, balance - amount)


def _holder_bank(ctx: TxContext, institution_id: str) -> str | None:
    """The bank that holds accounts of ``institution_id``'s identities: the institution itself
    when it is a bank, an enterprise's sponsor bank, else none."""
    institution = institution_of(ctx, institution_id)
    if institution is None:
        return None
    if institution.get("kind") == "bank":
        return institution_id
    sponsor = institution.get("sponsor")
    return sponsor if isinstance(sponsor, str) else None


def _no_controls() -> dict[str, Value]:
    return {"frozen": False, "transaction_limit": 0, "daily_limit": 0}


def _controls(state: ReadState, account: bytes, code: str) -> dict[str, Value]:
    """The controls that apply to ``account`` in ``code`` (``_combined``)."""
    record = get_record(state, key("ctl", account, code))
    return _no_controls() if record is None else _combined(record)


def _combined(record: dict[str, Value]) -> dict[str, Value]:
    """The controls a ``ctl`` record sets: the holder's bank's, and those of the currency's
    issuer (under ``issuer``, when an issuer of another institution set any) together, so the
    account is frozen when either froze it and each limit is the lower of the two set (0:
    none)."""
    issuer = record.get("issuer")
    if issuer is None:
        return record
    issuer_controls = as_map(issuer)
    return {
        "frozen": bool(record["frozen"]) or bool(issuer_controls["frozen"]),
        "transaction_limit": _lower_limit(record, issuer_controls, "transaction_limit"),
        "daily_limit": _lower_limit(record, issuer_controls, "daily_limit"),
    }


def _lower_limit(first: Mapping[str, Value], second: Mapping[str, Value], name: str) -> int:
    """The tighter of two limits, where 0 means none."""
    limits = [limit for limit in (as_int(first[name]), as_int(second[name])) if limit]
    return min(limits) if limits else 0


def _check_inflow(state: ReadState, account: bytes, code: str) -> None:
    if _controls(state, account, code)["frozen"]:
        raise AppError(
            "beneficiary_frozen", f"beneficiary account {account.hex()[:16]}… is frozen in {code}"
        )


def _check_outflow(
    ctx: TxContext, account: bytes, currency: Mapping[str, Value], amount: int
) -> None:
    """Every rule a debit of ``account`` must pass, in order; updates the daily outflow."""
    code = str(currency["code"])
    state = ctx.state  # read once: see ``_record_movement``
    _require_account(state, account, code)
    controls = _controls(state, account, code)
    if controls["frozen"]:
        raise AppError("account_frozen", f"account {account.hex()[:16]}… is frozen in {code}")
    currency_limit = as_int(currency["transaction_limit"])
    if currency_limit and amount > currency_limit:
        raise AppError(
            "currency_transaction_limit",
            f"{amount} exceeds the issuer's per-transaction limit {currency_limit} {code}",
        )
    account_limit = as_int(controls["transaction_limit"])
    if account_limit and amount > account_limit:
        raise AppError(
            "account_transaction_limit",
            f"{amount} exceeds the account's per-transaction limit {account_limit} {code}",
        )
    day = ctx.block.time_ms // DAY_MS
    outflow_key = key("out", account, code)
    outflow = get_record(state, outflow_key)
    spent = as_int(outflow["total"]) if outflow is not None and outflow["day"] == day else 0
    daily_limit = as_int(controls["daily_limit"])
    if daily_limit and spent + amount > daily_limit:
        raise AppError(
            "account_daily_limit",
            f"{spent} + {amount} exceeds the account's daily limit {daily_limit} {code}",
        )
    put_record(state, outflow_key, {"day": day, "total": min(spent + amount, AMOUNT_MAX)})
    # Insufficient funds is checked by the debit itself, after the controls.


def _require_sender(ctx: TxContext, payer: bytes, caller: str) -> None:
    if payer != ctx.sender:
        raise AppError(
            "unauthorised_debit",
            f"app {caller!r} may only move funds of the transaction's sender",
        )


def _record_movement(
    ctx: TxContext,
    kind: str,
    payer: bytes | None,
    payee: bytes | None,
    code: str,
    amount: int,
    details: Mapping[str, Value],
) -> int:
    """Number and store one balance movement, indexed under each account it touched."""
    # The context's properties read once (compiled, each read through the ``TxContext``
    # protocol is an attribute lookup through Python).
    state = ctx.state
    block = ctx.block
    seq = get_int(state, _SEQ_KEY)
    record: dict[str, Value] = {
        "id": seq,
        "kind": kind,
        "from": payer,
        "to": payee,
        "currency": code,
        "amount": amount,
        "time_ms": block.time_ms,
        "height": block.height,
        "transaction": ctx.transaction_hash,
        **details,
    }
    _store_movement(state, seq, record, payer, payee)
    return seq


def _store_movement(
    state: AppState,
    seq: int,
    record: Mapping[str, Value],
    payer: bytes | None,
    payee: bytes | None,
) -> None:
    """Store movement ``seq`` (the next number), index it under each account it touched and
    take the number."""
    put_record(state, numbered_key(_PAY_PREFIX, seq), record)
    for account in (payer, payee):
        if account is not None:
            write_value(state, numbered_key(prefix("hist", account), seq), b"")
    put_int(state, _SEQ_KEY, seq + 1)


def _transfer_record(
    seq: int,
    payer: bytes,
    payee: bytes,
    code: str,
    amount: int,
    time_ms: int,
    height: int,
    transaction_hash: bytes,
    *,
    end_to_end_id: str,
    purpose: str,
    originator: dict[str, Value],
    beneficiary: dict[str, Value],
    remittance: str,
    caller: str,
) -> dict[str, Value]:
    """A transfer's movement record: the fields ``_record_movement`` stores for kind
    ``transfer`` with the transfer's details (and ``app`` when another app asked for it),
    built in the canonical order of its keys (shorter first, then bytewise), so the codec
    packs the map as it is instead of copying it into that order. Same value, same bytes."""
    record: dict[str, Value] = {"id": seq, "to": payee}
    if caller != "payments":
        record["app"] = caller
    record.update(
        {
            "from": payer,
            "kind": "transfer",
            "amount": amount,
            "height": height,
            "purpose": purpose,
            "time_ms": time_ms,
            "currency": code,
            "originator": originator,
            "remittance": remittance,
            "beneficiary": beneficiary,
            "transaction": transaction_hash,
            "end_to_end_id": end_to_end_id,
        }
    )
    return record
