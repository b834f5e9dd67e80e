"""Digital assets: permissioned tokens with compliance rules and delivery-versus-payment.

Theory of operation
-------------------
Modelled on permissioned security-token standards (ERC-3643, ERC-1400):

* ``create_asset``: an issuer (the sender) defines an asset class: symbol, decimals, supply
  cap and compliance rules: eligible membership roles and jurisdictions of holders, maximum
  number of holders, per-holder cap, lock-up until a block time. An ``agent`` key (default:
  the issuer) may freeze, pause and force transfers.
* ``mint``/``burn`` by the issuer; supply never exceeds the cap, and a minted amount lands only
  with an eligible holder.
* Every transfer is judged by one rule evaluation, ``can_transfer``, which returns a reason
  code and message; the first failing rule wins (order: paused, self transfer, lock-up, sender
  frozen, balance, partially frozen amount, receiver frozen, receiver eligibility, holder cap,
  holder count). The same evaluation is a dry-run query.
* Freezes are full (no transfers out of or into the account) or partial (an amount that
  cannot leave). ``pause`` stops transfers and DvP; ``force_transfer`` by the agent (lost-key
  recovery, court order) ignores pause, lock-up and the sender's freeze but never the
  receiver's eligibility, and is recorded as ``forced`` with its reason.
* DvP: ``offer_dvp`` with side ``sell`` escrows the asset here, side ``buy`` escrows the cash
  in ``payments`` (``escrow_lock``, owned by this app); ``accept_dvp`` settles the asset leg
  and the cash leg (``payments.transfer`` from the taker, or ``escrow_release``) in one
  transaction or neither; a maker frozen since its offer (here for a sell offer's units, in
  ``payments`` for a buy offer's cash) cannot settle it, but may still cancel; ``cancel_dvp``
  (the maker, for a sell offer also the asset's agent, or anyone after expiry) returns the
  escrow, so no offer keeps units out of reach of the agent's forced transfers. The currency
  must be registered in ``payments`` when the offer is made. An offer expires at the first
  block whose time reaches ``expires_ms``: ``accept_dvp`` is then ``offer_expired``, and that
  block's ``end_block`` marks it ``expired`` and returns the escrow (the asset here, or the
  cash through ``payments.escrow_refund``), so no expired offer is reported open or keeps
  anything locked.

Conservation: for every asset ``supply == sum(balances) + sum(open sell-offer escrows)``.
The dry-run query cannot read membership (queries see only this app's state), so it takes
the receiver's ``to_roles``/``to_jurisdiction`` from the client (who reads membership's
``identity`` query) and says whether the identity rules were evaluated.

Holdings: units a maker escrows in its own sell offer stay its holding until the offer settles.
Each holder's escrowed units are counted (``esc``), and its holding, balance plus escrowed, is
what the per-holder cap, the holder count and ``max_holders`` judge; so an offer that is
cancelled or expires returns its escrow without ever taking the maker over the cap or the
asset over its holder count. A sell offer made before the escrow was counted (its record
has no ``escrow_held``) settles and returns as it did then.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from mypy_extensions import mypyc_attr

from apps._records import (
    Identity,
    as_int,
    as_map,
    expired_in_backlog,
    get_int,
    get_record,
    identity_of,
    key,
    last_segment,
    prefix,
    put_int,
    put_record,
    scan_end,
    schedule_expiry,
    take_expired_offers,
    unschedule_expiry,
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
    ROLES,
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
    Choice,
    DispatchingApp,
    Identifier,
    Integer,
    Operation,
    PublicKey,
    Query,
    Strings,
    Text,
    TimeMs,
)
from consensus.codec import Value

__all__ = ["AssetsApp", "TransferVerdict", "dvp_offer_id"]

SYMBOL_PATTERN: Final = re.compile(r"[A-Z][A-Z0-9.\-]{1,15}")
JURISDICTION_PATTERN: Final = re.compile(r"[A-Z]{2}")
ROLE_PATTERN: Final = re.compile(r"[a-z]{1,32}")
# Token decimals as in ERC-20 practice; 18 is the usual maximum.
DECIMALS_MAX: Final = 18
# Lists in rules: ISO 3166 countries of a consortium, not the whole world.
RULE_LIST_MAX: Final = 64
PAGE_MAX: Final = 500
# Holders one asset may be limited to: a rule, not a count of anything stored.
MAX_HOLDERS_MAX: Final = 2**32
_HOLDERS: Final = frozenset({ROLE_BANK, ROLE_ENTERPRISE, ROLE_CUSTOMER})
_CURRENCY: Final = re.compile(r"[A-Z]{3}")


_ASSET_STEWARDS: Final = Lookup("asset", (("symbol", "symbol"),), ("issuer", "agent"))
_DVP_PARTIES: Final = Lookup("offer", (("id", "offer"),), ("maker", "taker", "counterparty"))
_MOVEMENT_KINDS: Final = ("mint", "burn", "transfer", "forced", "dvp_escrow", "dvp", "dvp_release")
_MOVEMENT: Final = event_of("from", "to", lookups=(_ASSET_STEWARDS,))
# Who may read what (``apps.access``): asset definitions are public; a holding is its holder's
# and its asset's issuer's and agent's (the cap table is theirs); DvP offers are a market.
READ_RULES: Final = ReadRules(
    queries={
        "assets": public("asset definitions"),
        "asset": public("asset definitions"),
        "rules": public("asset transfer rules"),
        "balance": account_data("holder", lookups=(_ASSET_STEWARDS,)),
        "balances": account_data("holder"),
        "holders": account_data(lookups=(_ASSET_STEWARDS,)),
        # The dry run reads the receiver's holding (its freeze, balance and escrow): a proof
        # carries them, so a proven answer is also the receiver's data.
        "can_transfer": account_data(
            "from",
            lookups=(_ASSET_STEWARDS,),
            proof=account_data("to", lookups=(_ASSET_STEWARDS,)),
        ),
        "history": account_data("holder", lookups=(_ASSET_STEWARDS,)),
        "offers": members_only("open DvP offers are a market"),
        # Taken, an offer is a trade: its maker's and taker's, like their settlement events.
        "offer": members_only(
            "DvP offers are a market; a taken one is its maker's and taker's",
            closes="taker",
            closed=record_of("maker", "taker"),
        ),
    },
    events={
        "asset_created": public("asset definitions"),
        "pause": public("an asset's trading status"),
        "freeze": event_of("holder", lookups=(_ASSET_STEWARDS,)),
        "freeze_partial": event_of("holder", lookups=(_ASSET_STEWARDS,)),
        "dvp_offered": event_of("maker"),
        "dvp_settled": event_of("maker", "taker"),
        "dvp_cancelled": event_of(lookups=(_DVP_PARTIES,)),
        **dict.fromkeys(_MOVEMENT_KINDS, _MOVEMENT),
    },
    overseers=OVERSEERS,
)


# ---------------------------------------------------------------------- the schema
_SYMBOL: Final = Argument(
    "symbol",
    Identifier(SYMBOL_PATTERN, f"a symbol matching {SYMBOL_PATTERN.pattern}"),
    "asset symbol",
)
_ISSUERS: Final = frozenset({ROLE_BANK, ROLE_ENTERPRISE})
_OFFER: Final = Argument("offer", Identifier(), "DvP offer id")


def _limit(default: int) -> Argument:
    return Argument(
        "limit",
        Integer(1, PAGE_MAX),
        f"at most this many results (1..{PAGE_MAX})",
        required=False,
        default=default,
    )


SCHEMA: Final = AppSchema(
    help="Digital assets: permissioned tokens, compliance rules, delivery-versus-payment.",
    operations=(
        Operation(
            "create_asset",
            _ISSUERS,
            "Create an asset class issued by the sender.",
            (
                _SYMBOL,
                Argument("name", Text(), "display name (default: the symbol)", required=False),
                Argument("decimals", Integer(0, DECIMALS_MAX), f"decimals (0..{DECIMALS_MAX})"),
                Argument("supply_cap", Amount(), "supply cap in base units"),
                Argument(
                    "eligible_roles",
                    Strings(ROLE_PATTERN, len(ROLES)),
                    "roles allowed to hold it (default: any)",
                    required=False,
                ),
                Argument(
                    "eligible_jurisdictions",
                    Strings(JURISDICTION_PATTERN, RULE_LIST_MAX),
                    "jurisdictions allowed to hold it (default: any)",
                    required=False,
                ),
                Argument(
                    "max_holders",
                    Integer(0, MAX_HOLDERS_MAX),
                    "maximum number of holders (0: none)",
                    required=False,
                    default=0,
                ),
                Argument(
                    "holder_cap",
                    Amount(allow_zero=True),
                    "maximum per holder (0: none)",
                    required=False,
                    default=0,
                ),
                Argument(
                    "lockup_until_ms",
                    TimeMs(),
                    "no transfers before this block time",
                    required=False,
                    default=0,
                ),
                Argument(
                    "agent",
                    PublicKey(),
                    "agent for freezes and forced transfers (default: the issuer)",
                    required=False,
                ),
            ),
        ),
        Operation(
            "mint",
            _ISSUERS,
            "Mint units to an eligible holder (the issuer).",
            (
                _SYMBOL,
                Argument("to", PublicKey(), "receiver"),
                Argument("amount", Amount(), "units"),
            ),
        ),
        Operation(
            "burn",
            _ISSUERS,
            "Burn units from a holder (the issuer).",
            (
                _SYMBOL,
                Argument("holder", PublicKey(), "holder"),
                Argument("amount", Amount(), "units"),
            ),
        ),
        Operation(
            "transfer",
            _HOLDERS,
            "Transfer units (every can_transfer rule applies).",
            (
                _SYMBOL,
                Argument("to", PublicKey(), "receiver"),
                Argument("amount", Amount(), "units"),
            ),
        ),
        Operation(
            "freeze",
            _ISSUERS,
            "Freeze or unfreeze a holder's account (issuer or agent).",
            (
                _SYMBOL,
                Argument("holder", PublicKey(), "holder"),
                Argument("frozen", Boolean(), "true to freeze"),
            ),
        ),
        Operation(
            "freeze_partial",
            _ISSUERS,
            "Freeze part of a holder's balance (issuer or agent).",
            (
                _SYMBOL,
                Argument("holder", PublicKey(), "holder"),
                Argument("amount", Amount(allow_zero=True), "units that cannot leave"),
            ),
        ),
        Operation(
            "pause",
            _ISSUERS,
            "Pause or resume all transfers of an asset (issuer or agent).",
            (_SYMBOL, Argument("paused", Boolean(), "true to pause")),
        ),
        Operation(
            "force_transfer",
            _ISSUERS,
            "Move units between holders (the agent; recorded as forced with a reason).",
            (
                _SYMBOL,
                Argument("from", PublicKey(), "current holder"),
                Argument("to", PublicKey(), "receiver"),
                Argument("amount", Amount(), "units"),
                Argument("reason", Text(), "why (lost key, court order, ...)"),
            ),
        ),
        Operation(
            "offer_dvp",
            _HOLDERS,
            "Offer delivery-versus-payment: sell (escrow units) or buy (escrow cash).",
            (
                _SYMBOL,
                Argument("side", Choice(("sell", "buy")), "sell or buy"),
                Argument("amount", Amount(), "units"),
                Argument(
                    "currency",
                    Identifier(_CURRENCY, "an ISO 4217 code like 'USD'"),
                    "currency of the cash leg",
                ),
                Argument("price", Amount(), "total cash amount"),
                Argument("expires_ms", TimeMs(), "offer expiry (block time)"),
                Argument(
                    "counterparty",
                    PublicKey(),
                    "reserve the offer for this party",
                    required=False,
                ),
            ),
        ),
        Operation(
            "accept_dvp",
            _HOLDERS,
            "Accept a DvP offer: asset and cash legs settle atomically.",
            (_OFFER,),
        ),
        Operation(
            "cancel_dvp",
            _HOLDERS,
            "Cancel a DvP offer (the maker, or for a sell offer the asset's agent); the block "
            "that passes its expiry releases it.",
            (_OFFER,),
        ),
    ),
    queries=(
        Query("assets", "Every asset class."),
        Query("asset", "One asset class.", (_SYMBOL,)),
        Query("rules", "An asset's compliance rules.", (_SYMBOL,)),
        Query(
            "balance",
            "A holder's balance and freezes.",
            (_SYMBOL, Argument("holder", PublicKey(), "holder")),
        ),
        Query(
            "balances",
            "Every asset balance of a holder.",
            (Argument("holder", PublicKey(), "holder"),),
        ),
        Query("holders", "Holders of an asset.", (_SYMBOL, _limit(100))),
        Query(
            "can_transfer",
            "Dry run of the transfer rules (the CLI fills the receiver's roles from membership).",
            (
                _SYMBOL,
                Argument("from", PublicKey(), "sender"),
                Argument("to", PublicKey(), "receiver"),
                Argument("amount", Amount(), "units"),
                Argument(
                    "now_ms",
                    TimeMs(),
                    "evaluate at this block time (clients default to the latest block's)",
                    client_default="now",
                ),
                Argument(
                    "to_roles",
                    Strings(ROLE_PATTERN, len(ROLES)),
                    "receiver's roles",
                    required=False,
                ),
                Argument(
                    "to_jurisdiction", Identifier(), "receiver's jurisdiction", required=False
                ),
            ),
        ),
        Query(
            "history",
            "Movements of an asset (or of one holder), newest first.",
            (
                _SYMBOL,
                Argument("holder", PublicKey(), "only this holder's movements", required=False),
                _limit(50),
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
            "Open DvP offers (never an expired one).",
            (
                Argument("symbol", _SYMBOL.type, "only this asset", required=False),
                _limit(100),
            ),
        ),
        Query("offer", "One DvP offer.", (Argument("id", Identifier(), "offer id"),)),
    ),
)


def dvp_offer_id(transaction_hash: bytes) -> str:
    """The id ``offer_dvp`` gives the offer created by the transaction with this hash."""
    return "dvp-" + transaction_hash.hex()[:24]


@dataclass(frozen=True, slots=True)
class TransferVerdict:
    """The outcome of ``can_transfer``: ``code`` is ``"ok"`` or the failing rule."""

    code: str
    message: str

    @property
    def allowed(self) -> bool:
        """True when every rule passed."""
        return self.code == "ok"

    def raise_unless_allowed(self) -> None:
        """Turn a refusal into the ``AppError`` that rejects the transaction."""
        if not self.allowed:
            raise AppError(self.code, self.message)


OK: Final = TransferVerdict("ok", "every transfer rule passed")


@dataclass(frozen=True, slots=True)
class ReceiverFacts:
    """What the receiver rules need from membership about the receiving identity."""

    member: bool
    active: bool
    roles: frozenset[str]
    jurisdiction: str

    @classmethod
    def of(cls, identity: Identity | None) -> ReceiverFacts:
        """Facts from a membership answer (None: not a member)."""
        if identity is None:
            return cls(False, False, frozenset(), "")
        return cls(True, identity.active, identity.roles, identity.jurisdiction)


# A bank's own app may extend a shipped one, also when this module runs compiled (node.native).
@mypyc_attr(allow_interpreted_subclasses=True)
class AssetsApp(DispatchingApp):
    """The ``assets`` app (see the module docstring for the rules)."""

    name: ClassVar[str] = "assets"
    schema: ClassVar[AppSchema] = SCHEMA
    read_rules: ClassVar[ReadRules] = READ_RULES

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        """The assets app starts empty; its genesis section must be an empty map."""
        if config:
            raise AppError("bad_genesis", "assets takes no genesis configuration")

    # ------------------------------------------------------------------ issuer operations
    def _create_asset(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        symbol = a.text("symbol")
        rules: dict[str, Value] = {
            "eligible_roles": a.strings("eligible_roles"),
            "eligible_jurisdictions": a.strings("eligible_jurisdictions"),
            "max_holders": a.integer("max_holders"),
            "holder_cap": a.integer("holder_cap"),
            "lockup_until_ms": a.integer("lockup_until_ms"),
        }
        unknown_roles = set(_strings(rules["eligible_roles"])) - ROLES
        if unknown_roles:
            raise AppError("bad_argument", f"unknown roles {sorted(unknown_roles)}")
        name = a.optional_text("name")
        asset: dict[str, Value] = {
            "symbol": symbol,
            "name": symbol if name is None else name,
            "decimals": a.integer("decimals"),
            "supply_cap": a.integer("supply_cap"),
            "supply": 0,
            "holders": 0,
            "paused": False,
            "rules": rules,
        }
        agent = a.optional_key("agent")
        if not execute:
            return None
        if get_record(ctx.state, key("asset", symbol)) is not None:
            raise AppError("asset_exists", f"asset {symbol} already exists")
        asset["issuer"] = ctx.sender
        asset["agent"] = agent if agent is not None else ctx.sender
        asset["created_ms"] = ctx.block.time_ms
        put_record(ctx.state, key("asset", symbol), asset)
        ctx.emit("asset_created", {"symbol": symbol, "issuer": ctx.sender})
        return asset

    def _mint(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        symbol = a.text("symbol")
        to = a.key("to")
        amount = a.integer("amount")
        if not execute:
            return None
        asset = _asset(ctx.state, symbol)
        _require(asset, ctx.sender, "issuer")
        supply = as_int(asset["supply"]) + amount
        if supply > as_int(asset["supply_cap"]):
            raise AppError(
                "supply_cap",
                f"minting {amount} would exceed {symbol}'s cap {asset['supply_cap']!s}",
            )
        facts = ReceiverFacts.of(identity_of(ctx, to))
        _receiver_rules(ctx.state, asset, None, to, amount, facts).raise_unless_allowed()
        asset["supply"] = supply
        _credit(ctx.state, asset, to, amount)
        seq = _record(ctx, symbol, "mint", None, to, amount, "")
        return {"transfer": seq}

    def _burn(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        symbol = a.text("symbol")
        holder = a.key("holder")
        amount = a.integer("amount")
        if not execute:
            return None
        asset = _asset(ctx.state, symbol)
        _require(asset, ctx.sender, "issuer")
        _debit(ctx.state, asset, holder, amount)
        freeze = _freeze_record(ctx.state, symbol, holder)
        balance = get_int(ctx.state, key("bal", symbol, holder))
        if as_int(freeze["frozen_amount"]) > balance:
            freeze["frozen_amount"] = balance
            _put_freeze(ctx.state, symbol, holder, freeze)
        asset["supply"] = as_int(asset["supply"]) - amount
        put_record(ctx.state, key("asset", symbol), asset)
        seq = _record(ctx, symbol, "burn", holder, None, amount, "")
        return {"transfer": seq}

    def _freeze(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        symbol = a.text("symbol")
        holder = a.key("holder")
        frozen = a.flag("frozen")
        if not execute:
            return None
        asset = _asset(ctx.state, symbol)
        _require(asset, ctx.sender, "issuer", "agent")
        freeze = _freeze_record(ctx.state, symbol, holder)
        freeze["frozen"] = frozen
        _put_freeze(ctx.state, symbol, holder, freeze)
        ctx.emit("freeze", {"symbol": symbol, "holder": holder, "frozen": frozen})
        return freeze

    def _freeze_partial(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        symbol = a.text("symbol")
        holder = a.key("holder")
        amount = a.integer("amount")
        if not execute:
            return None
        asset = _asset(ctx.state, symbol)
        _require(asset, ctx.sender, "issuer", "agent")
        balance = get_int(ctx.state, key("bal", symbol, holder))
        if amount > balance:
            raise AppError("exceeds_balance", f"cannot freeze {amount}: the balance is {balance}")
        freeze = _freeze_record(ctx.state, symbol, holder)
        freeze["frozen_amount"] = amount
        _put_freeze(ctx.state, symbol, holder, freeze)
        ctx.emit("freeze_partial", {"symbol": symbol, "holder": holder, "amount": amount})
        return freeze

    def _pause(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        symbol = a.text("symbol")
        paused = a.flag("paused")
        if not execute:
            return None
        asset = _asset(ctx.state, symbol)
        _require(asset, ctx.sender, "issuer", "agent")
        asset["paused"] = paused
        put_record(ctx.state, key("asset", symbol), asset)
        ctx.emit("pause", {"symbol": symbol, "paused": paused})
        return None

    def _force_transfer(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        symbol = a.text("symbol")
        source = a.key("from")
        to = a.key("to")
        amount = a.integer("amount")
        reason = a.text("reason")
        if not execute:
            return None
        asset = _asset(ctx.state, symbol)
        _require(asset, ctx.sender, "agent")
        if source == to:
            raise AppError("self_transfer", "sender and receiver are the same account")
        balance = get_int(ctx.state, key("bal", symbol, source))
        if balance < amount:
            raise AppError("insufficient_balance", f"the balance is {balance}, below {amount}")
        facts = ReceiverFacts.of(identity_of(ctx, to))
        _receiver_rules(ctx.state, asset, source, to, amount, facts).raise_unless_allowed()
        freeze = _freeze_record(ctx.state, symbol, source)
        if as_int(freeze["frozen_amount"]) > balance - amount:
            freeze["frozen_amount"] = balance - amount
            _put_freeze(ctx.state, symbol, source, freeze)
        _move(ctx.state, asset, source, to, amount)
        seq = _record(ctx, symbol, "forced", source, to, amount, reason)
        return {"transfer": seq}

    # ------------------------------------------------------------------ transfers
    def _transfer(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        symbol = a.text("symbol")
        to = a.key("to")
        amount = a.integer("amount")
        if not execute:
            return None
        asset = _asset(ctx.state, symbol)
        facts = ReceiverFacts.of(identity_of(ctx, to))
        can_transfer(
            ctx.state, asset, ctx.sender, to, amount, ctx.block.time_ms, facts
        ).raise_unless_allowed()
        _move(ctx.state, asset, ctx.sender, to, amount)
        seq = _record(ctx, symbol, "transfer", ctx.sender, to, amount, "")
        return {"transfer": seq}

    # ------------------------------------------------------------------ DvP
    def _offer_dvp(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        symbol = a.text("symbol")
        side = a.text("side")
        amount = a.integer("amount")
        currency = a.text("currency")
        price = a.integer("price")
        expires_ms = a.integer("expires_ms")
        counterparty = a.optional_key("counterparty")
        if not execute:
            return None
        asset = _asset(ctx.state, symbol)
        if expires_ms <= ctx.block.time_ms:
            raise AppError("offer_expiry", "an offer must expire after the current block time")
        if ctx.query("payments", "currency", {"code": currency}) is None:
            raise AppError("unknown_currency", f"currency {currency} is not registered")
        offer_id = dvp_offer_id(ctx.transaction_hash)
        if get_record(ctx.state, key("dvp", offer_id)) is not None:
            raise AppError("duplicate_offer", f"offer {offer_id} already exists")
        if side == "sell":
            _sender_rules(
                ctx.state, asset, ctx.sender, amount, ctx.block.time_ms
            ).raise_unless_allowed()
            _escrow(ctx.state, symbol, ctx.sender, amount)
            _record(ctx, symbol, "dvp_escrow", ctx.sender, None, amount, offer_id)
        else:
            if asset["paused"]:
                raise AppError("asset_paused", f"asset {symbol} is paused")
            facts = ReceiverFacts.of(identity_of(ctx, ctx.sender))
            _receiver_rules(
                ctx.state, asset, None, ctx.sender, amount, facts
            ).raise_unless_allowed()
            ctx.call(
                "payments",
                "escrow_lock",
                {
                    "from": ctx.sender,
                    "currency": currency,
                    "amount": price,
                    "escrow_id": offer_id,
                },
            )
        offer: dict[str, Value] = {
            "id": offer_id,
            "symbol": symbol,
            "side": side,
            "maker": ctx.sender,
            "amount": amount,
            "currency": currency,
            "price": price,
            "counterparty": counterparty,
            "expires_ms": expires_ms,
            "created_ms": ctx.block.time_ms,
            "status": "open",
        }
        if side == "sell":
            offer["escrow_held"] = True  # its units count in the maker's holding
        put_record(ctx.state, key("dvp", offer_id), offer)
        ctx.state.put(key("open", offer_id), b"")
        schedule_expiry(ctx.state, expires_ms, offer_id)
        ctx.emit("dvp_offered", {"offer": offer_id, "side": side, "maker": ctx.sender})
        return {"offer": offer_id}

    def _open_offer(self, state: ReadState, offer_id: str) -> dict[str, Value]:
        offer = get_record(state, key("dvp", offer_id))
        if offer is None:
            raise AppError("unknown_offer", f"no DvP offer {offer_id!r}")
        if offer["status"] == "expired":
            raise AppError(
                "offer_expired",
                f"offer {offer_id} expired at {offer['expires_ms']!s}; its escrow went back "
                "to the maker",
            )
        if offer["status"] != "open":
            raise AppError("offer_closed", f"offer {offer_id} is {offer['status']!s}")
        return offer

    def _accept_dvp(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        offer_id = a.text("offer")
        if not execute:
            return None
        offer = self._open_offer(ctx.state, offer_id)
        maker = _bytes(offer["maker"])
        if ctx.block.time_ms >= as_int(offer["expires_ms"]):
            raise AppError("offer_expired", f"offer {offer_id} has expired")
        if maker == ctx.sender:
            raise AppError("own_offer", "the maker cannot accept its own offer")
        if offer["counterparty"] is not None and offer["counterparty"] != ctx.sender:
            raise AppError("not_counterparty", f"offer {offer_id} is reserved for another party")
        symbol = str(offer["symbol"])
        asset = _asset(ctx.state, symbol)
        amount = as_int(offer["amount"])
        if offer["side"] == "sell":
            # Cash leg: the taker (buyer) pays the maker; asset leg: escrow to the taker.
            if asset["paused"]:
                raise AppError("asset_paused", f"asset {symbol} is paused")
            if ctx.block.time_ms < as_int(as_map(asset["rules"])["lockup_until_ms"]):
                raise AppError("locked_up", f"asset {symbol} is locked up")
            # The escrowed units are still the maker's: a freeze since the offer keeps them.
            if _freeze_record(ctx.state, symbol, maker)["frozen"]:
                raise AppError("sender_frozen", "the maker's account is frozen")
            facts = ReceiverFacts.of(identity_of(ctx, ctx.sender))
            held = _escrow_held(offer)
            # The units leave the maker's holding (counted while they were in escrow).
            _receiver_rules(
                ctx.state, asset, maker if held else None, ctx.sender, amount, facts
            ).raise_unless_allowed()
            payment = ctx.call(
                "payments",
                "transfer",
                {
                    "from": ctx.sender,
                    "to": maker,
                    "currency": offer["currency"],
                    "amount": offer["price"],
                    "end_to_end_id": offer_id,
                    "purpose": f"DvP {symbol}",
                },
            )
            if held:
                _unescrow(ctx.state, asset, maker, amount, returned=False)
            _credit(ctx.state, asset, ctx.sender, amount)
            seq = _record(ctx, symbol, "dvp", None, ctx.sender, amount, offer_id)
        else:
            # Asset leg: the taker (seller) delivers to the maker; cash leg: escrow to the taker.
            facts = ReceiverFacts.of(identity_of(ctx, maker))
            can_transfer(
                ctx.state, asset, ctx.sender, maker, amount, ctx.block.time_ms, facts
            ).raise_unless_allowed()
            _move(ctx.state, asset, ctx.sender, maker, amount)
            seq = _record(ctx, symbol, "dvp", ctx.sender, maker, amount, offer_id)
            payment = ctx.call(
                "payments", "escrow_release", {"escrow_id": offer_id, "to": ctx.sender}
            )
        offer["status"] = "settled"
        offer["taker"] = ctx.sender
        offer["settled_ms"] = ctx.block.time_ms
        put_record(ctx.state, key("dvp", offer_id), offer)
        ctx.state.delete(key("open", offer_id))
        unschedule_expiry(ctx.state, as_int(offer["expires_ms"]), offer_id)
        ctx.emit("dvp_settled", {"offer": offer_id, "maker": maker, "taker": ctx.sender})
        return {"offer": offer_id, "transfer": seq, "payment": payment}

    def _cancel_dvp(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        offer_id = a.text("offer")
        if not execute:
            return None
        offer = self._open_offer(ctx.state, offer_id)
        maker = _bytes(offer["maker"])
        expired = ctx.block.time_ms >= as_int(offer["expires_ms"])
        # The asset's agent may cancel a sell offer too: its escrowed units are out of reach
        # of the agent's forced transfers until they are back in the maker's balance. (A buy
        # offer escrows the maker's cash, which is not the agent's to touch.)
        if (
            maker != ctx.sender
            and not expired
            and (
                offer["side"] != "sell"
                or _asset(ctx.state, str(offer["symbol"]))["agent"] != ctx.sender
            )
        ):
            raise AppError(
                "not_offer_maker",
                "only the maker (or, for a sell offer, the asset's agent) may cancel an"
                " unexpired offer",
            )
        unschedule_expiry(ctx.state, as_int(offer["expires_ms"]), offer_id)
        self._release(ctx, offer, "expired" if expired else "cancelled")
        return {"offer": offer_id, "status": offer["status"]}

    def _release(self, ctx: TxContext, offer: dict[str, Value], status: str) -> None:
        """Close an open offer as ``status`` and return its escrow to the maker."""
        offer_id = str(offer["id"])
        maker = _bytes(offer["maker"])
        symbol = str(offer["symbol"])
        if offer["side"] == "sell":
            asset = _asset(ctx.state, symbol)
            if _escrow_held(offer):
                _unescrow(ctx.state, asset, maker, as_int(offer["amount"]), returned=True)
            else:
                _credit(ctx.state, asset, maker, as_int(offer["amount"]))
            _record(ctx, symbol, "dvp_release", None, maker, as_int(offer["amount"]), offer_id)
        else:
            ctx.call("payments", "escrow_refund", {"escrow_id": offer_id})
        offer["status"] = status
        offer["closed_ms"] = ctx.block.time_ms
        put_record(ctx.state, key("dvp", offer_id), offer)
        ctx.state.delete(key("open", offer_id))
        ctx.emit("dvp_cancelled", {"offer": offer_id, "status": status})

    # ------------------------------------------------------------------ expiry
    def end_block(self, ctx: TxContext) -> None:
        """Close every DvP offer that expired by this block's time (oldest first, bounded per
        block: ``apps._records.take_expired``) and return its escrow to the maker."""
        for offer in take_expired_offers(ctx.state, ctx.block.time_ms, "dvp"):
            self._release(ctx, offer, "expired")

    # ------------------------------------------------------------------ queries
    def answer(self, state: ReadState, path: str, a: Arguments) -> Value:
        """Paths: ``assets``, ``asset`` {symbol}, ``rules`` {symbol}, ``balance``
        {symbol, holder}, ``balances`` {holder}, ``holders`` {symbol, limit?},
        ``can_transfer`` {symbol, from, to, amount, now_ms, to_roles?, to_jurisdiction?},
        ``history`` {symbol, holder?, limit?, before?}, ``offers`` {symbol?, limit?},
        ``offer`` {id}."""
        if path == "assets":
            start = prefix("asset")
            return tuple(get_record(state, k) for k, _ in state.scan(start, scan_end(start)))
        if path == "asset":
            return get_record(state, key("asset", a.text("symbol")))
        if path == "rules":
            asset = get_record(state, key("asset", a.text("symbol")))
            return None if asset is None else asset["rules"]
        if path == "balance":
            symbol = a.text("symbol")
            holder = a.key("holder")
            freeze = _freeze_record(state, symbol, holder)
            return {
                "balance": get_int(state, key("bal", symbol, holder)),
                "escrowed": get_int(state, key("esc", symbol, holder)),
                **freeze,
            }
        if path == "balances":
            holder = a.key("holder")
            start = prefix("hbal", holder)
            return {
                last_segment(k): get_int(state, key("bal", last_segment(k), holder))
                for k, _ in state.scan(start, scan_end(start))
            }
        if path == "holders":
            symbol = a.text("symbol")
            limit = a.integer("limit")
            return self._holders(state, symbol, limit)
        if path == "can_transfer":
            return self._dry_run(state, a)
        if path == "history":
            return self._history(state, a)
        if path == "offers":
            wanted = a.optional_text("symbol")
            limit = a.integer("limit")
            offers: list[Value] = []
            start = prefix("open")
            for k, _ in state.scan(start, scan_end(start)):
                offer = get_record(state, key("dvp", last_segment(k)))
                assert offer is not None
                if _offer_view(state, offer)["status"] != "open":
                    continue  # expired, waiting in the sweep's backlog
                if wanted is None or offer["symbol"] == wanted:
                    offers.append(offer)
                if len(offers) >= limit:
                    break
            return tuple(offers)
        if path == "offer":
            offer = get_record(state, key("dvp", a.text("id")))
            return None if offer is None else _offer_view(state, offer)
        raise AppError("unknown_query", f"assets has no query {path!r}")

    def _dry_run(self, state: ReadState, a: Arguments) -> Value:
        symbol = a.text("symbol")
        source = a.key("from")
        to = a.key("to")
        amount = a.integer("amount")
        now_ms = a.integer("now_ms")
        identity_given = a.has("to_roles") or a.has("to_jurisdiction")
        facts = (
            ReceiverFacts(
                member=True,
                active=True,
                roles=frozenset(a.strings("to_roles")),
                jurisdiction=a.optional_text("to_jurisdiction") or "",
            )
            if identity_given
            else None
        )
        asset = get_record(state, key("asset", symbol))
        if asset is None:
            verdict = TransferVerdict("unknown_asset", f"no asset {symbol}")
        else:
            verdict = can_transfer(state, asset, source, to, amount, now_ms, facts)
        result: dict[str, Value] = {
            "code": verdict.code,
            "message": verdict.message,
            "allowed": verdict.allowed,
            "identity_rules_evaluated": facts is not None,
        }
        return result

    def _holders(self, state: ReadState, symbol: str, limit: int) -> Value:
        """The first ``limit`` holders of ``symbol`` in key order, each with its balance and its
        units escrowed in its own open sell offers (a holder with escrowed units alone is one):
        the first ``limit`` of either list are enough to find them."""
        found: dict[str, list[int]] = {}
        for index, name in enumerate(("bal", "esc")):
            start = prefix(name, symbol)
            for taken, (k, _) in enumerate(state.scan(start, scan_end(start)), 1):
                found.setdefault(last_segment(k), [0, 0])[index] = get_int(state, k)
                if taken >= limit:
                    break
        return tuple(
            {"holder": holder, "balance": amounts[0], "escrowed": amounts[1]}
            for holder, amounts in sorted(found.items())[:limit]
        )

    def _history(self, state: ReadState, a: Arguments) -> Value:
        symbol = a.text("symbol")
        holder = a.optional_key("holder")
        limit = a.integer("limit")
        before = a.optional_integer("before")
        start = prefix("hist", symbol, holder) if holder is not None else prefix("tx", symbol)
        end = start[:-1] + (f"/{before:016x}".encode() if before is not None else b"0")
        found: list[Value] = []
        for k, _ in state.scan(start, end, reverse=True):
            found.append(get_record(state, key("tx", symbol, int(last_segment(k), 16))))
            if len(found) >= limit:
                break
        return tuple(found)


# ---------------------------------------------------------------------- rules
def can_transfer(
    state: ReadState,
    asset: Mapping[str, Value],
    source: bytes,
    to: bytes,
    amount: int,
    now_ms: int,
    receiver: ReceiverFacts | None,
) -> TransferVerdict:
    """Evaluate every transfer rule in order; the first failing one is the verdict.
    ``receiver`` None skips the membership-based rules (dry run without identity facts)."""
    if source == to:
        return TransferVerdict("self_transfer", "sender and receiver are the same account")
    verdict = _sender_rules(state, asset, source, amount, now_ms)
    if not verdict.allowed:
        return verdict
    return _receiver_rules(state, asset, source, to, amount, receiver)


def _sender_rules(
    state: ReadState, asset: Mapping[str, Value], source: bytes, amount: int, now_ms: int
) -> TransferVerdict:
    symbol = str(asset["symbol"])
    if asset["paused"]:
        return TransferVerdict("asset_paused", f"asset {symbol} is paused")
    lockup = as_int(as_map(asset["rules"])["lockup_until_ms"])
    if now_ms < lockup:
        return TransferVerdict("locked_up", f"{symbol} is locked up until {lockup} ms")
    freeze = _freeze_record(state, symbol, source)
    if freeze["frozen"]:
        return TransferVerdict("sender_frozen", "the sender's account is frozen")
    balance = get_int(state, key("bal", symbol, source))
    if balance < amount:
        return TransferVerdict("insufficient_balance", f"the balance {balance} is below {amount}")
    frozen_amount = as_int(freeze["frozen_amount"])
    if balance - frozen_amount < amount:
        return TransferVerdict(
            "frozen_amount",
            f"{frozen_amount} of the balance {balance} is frozen; {amount} cannot leave",
        )
    return OK


def _receiver_rules(
    state: ReadState,
    asset: Mapping[str, Value],
    source: bytes | None,
    to: bytes,
    amount: int,
    receiver: ReceiverFacts | None,
) -> TransferVerdict:
    symbol = str(asset["symbol"])
    rules = as_map(asset["rules"])
    if _freeze_record(state, symbol, to)["frozen"]:
        return TransferVerdict("receiver_frozen", "the receiver's account is frozen")
    if receiver is not None:
        if not receiver.member:
            return TransferVerdict("receiver_not_member", "the receiver is not a member")
        if not receiver.active:
            return TransferVerdict("receiver_inactive", "the receiver is not an active member")
        roles = frozenset(_strings(rules["eligible_roles"]))
        if roles and not roles & receiver.roles:
            return TransferVerdict(
                "receiver_role", f"{symbol} may only be held by roles {sorted(roles)}"
            )
        jurisdictions = _strings(rules["eligible_jurisdictions"])
        if jurisdictions and receiver.jurisdiction not in jurisdictions:
            return TransferVerdict(
                "receiver_jurisdiction",
                f"{symbol} may only be held in {list(jurisdictions)}, "
                f"not {receiver.jurisdiction!r}",
            )
    held = _holding(state, symbol, to)
    cap = as_int(rules["holder_cap"])
    if cap and held + amount > cap:
        return TransferVerdict("holder_cap", f"the receiver would hold over {cap} {symbol}")
    max_holders = as_int(rules["max_holders"])
    if max_holders and held == 0:
        leaving = source is not None and _holding(state, symbol, source) == amount
        if as_int(asset["holders"]) + 1 - int(leaving) > max_holders:
            return TransferVerdict(
                "max_holders", f"{symbol} may have at most {max_holders} holders"
            )
    return OK


# ---------------------------------------------------------------------- state helpers
def _strings(value: Value) -> tuple[str, ...]:
    assert isinstance(value, (tuple, list)), value
    return tuple(str(item) for item in value)


def _bytes(value: Value) -> bytes:
    assert isinstance(value, bytes), value
    return value


def _asset(state: ReadState, symbol: str) -> dict[str, Value]:
    asset = get_record(state, key("asset", symbol))
    if asset is None:
        raise AppError("unknown_asset", f"no asset {symbol}")
    return asset


def _offer_view(state: ReadState, offer: dict[str, Value]) -> dict[str, Value]:
    """An offer as queries report it: one still waiting in the expiry sweep's backlog is
    ``expired`` already (its escrow goes back to the maker within the next blocks)."""
    if offer["status"] == "open" and expired_in_backlog(state, as_int(offer["expires_ms"])):
        return {**offer, "status": "expired"}
    return offer


def _require(asset: Mapping[str, Value], sender: bytes, *powers: str) -> None:
    """``not_issuer``, ``not_agent`` or ``not_issuer_or_agent``: the code names every power
    that would have allowed the operation."""
    if not any(asset[power] == sender for power in powers):
        raise AppError(
            "not_" + "_or_".join(powers),
            f"only the asset's {' or '.join(powers)} may do this for {asset['symbol']!s}",
        )


def _freeze_record(state: ReadState, symbol: str, holder: bytes) -> dict[str, Value]:
    record = get_record(state, key("frz", symbol, holder))
    if record is None:
        return {"frozen": False, "frozen_amount": 0}
    return record


def _put_freeze(state: AppState, symbol: str, holder: bytes, record: dict[str, Value]) -> None:
    if not record["frozen"] and record["frozen_amount"] == 0:
        state.delete(key("frz", symbol, holder))
    else:
        put_record(state, key("frz", symbol, holder), record)


def _escrow_held(offer: Mapping[str, Value]) -> bool:
    """Whether a sell offer's escrowed units are counted in its maker's holding (every offer
    made since the count was kept)."""
    return offer.get("escrow_held") is True


def _holding(state: ReadState, symbol: str, holder: bytes) -> int:
    """What ``holder`` holds of ``symbol``: its balance and its units escrowed in its own open
    sell offers."""
    return get_int(state, key("bal", symbol, holder)) + get_int(state, key("esc", symbol, holder))


def _credit(state: AppState, asset: dict[str, Value], holder: bytes, amount: int) -> None:
    """Add to a balance (keeping the holder count and indexes) and store the asset."""
    symbol = str(asset["symbol"])
    balance = get_int(state, key("bal", symbol, holder))
    if balance == 0 and get_int(state, key("esc", symbol, holder)) == 0:
        _holder_joins(state, asset, holder)
    put_int(state, key("bal", symbol, holder), balance + amount)
    put_record(state, key("asset", symbol), asset)


def _debit(state: AppState, asset: dict[str, Value], holder: bytes, amount: int) -> None:
    """Take from a balance (keeping the holder count and indexes) and store the asset."""
    symbol = str(asset["symbol"])
    balance = get_int(state, key("bal", symbol, holder))
    if balance < amount:
        raise AppError("insufficient_balance", f"the balance {balance} is below {amount}")
    if balance == amount and get_int(state, key("esc", symbol, holder)) == 0:
        _holder_leaves(state, asset, holder)
    put_int(state, key("bal", symbol, holder), balance - amount)
    put_record(state, key("asset", symbol), asset)


def _holder_joins(state: AppState, asset: dict[str, Value], holder: bytes) -> None:
    asset["holders"] = as_int(asset["holders"]) + 1
    state.put(key("hbal", holder, str(asset["symbol"])), b"")


def _holder_leaves(state: AppState, asset: dict[str, Value], holder: bytes) -> None:
    asset["holders"] = as_int(asset["holders"]) - 1
    state.delete(key("hbal", holder, str(asset["symbol"])))


def _escrow(state: AppState, symbol: str, holder: bytes, amount: int) -> None:
    """Move ``amount`` of ``holder``'s balance into its sell offer's escrow: still its
    holding, so the holder count does not change."""
    balance = get_int(state, key("bal", symbol, holder))
    if balance < amount:
        raise AppError("insufficient_balance", f"the balance {balance} is below {amount}")
    put_int(state, key("bal", symbol, holder), balance - amount)
    escrowed = key("esc", symbol, holder)
    put_int(state, escrowed, get_int(state, escrowed) + amount)


def _unescrow(
    state: AppState, asset: dict[str, Value], holder: bytes, amount: int, *, returned: bool
) -> None:
    """Take ``amount`` out of ``holder``'s escrow: back to its balance (``returned``: the
    offer was cancelled or expired) or out of its holding (the offer settled)."""
    symbol = str(asset["symbol"])
    escrowed = key("esc", symbol, holder)
    held = get_int(state, escrowed)
    assert held >= amount, "an open sell offer's units are in its maker's escrow"
    put_int(state, escrowed, held - amount)
    balance = key("bal", symbol, holder)
    if returned:
        put_int(state, balance, get_int(state, balance) + amount)
    elif held == amount and get_int(state, balance) == 0:
        _holder_leaves(state, asset, holder)
        put_record(state, key("asset", symbol), asset)


def _move(state: AppState, asset: dict[str, Value], source: bytes, to: bytes, amount: int) -> None:
    _debit(state, asset, source, amount)
    _credit(state, asset, to, amount)


def _record(
    ctx: TxContext,
    symbol: str,
    kind: str,
    source: bytes | None,
    to: bytes | None,
    amount: int,
    note: str,
) -> int:
    """Number and store one movement of ``symbol``, indexed under each holder it touched."""
    seq_key = key("txseq", symbol)
    seq = get_int(ctx.state, seq_key)
    put_record(
        ctx.state,
        key("tx", symbol, seq),
        {
            "seq": seq,
            "symbol": symbol,
            "kind": kind,
            "from": source,
            "to": to,
            "amount": amount,
            "note": note,
            "by": ctx.sender or None,  # None: the end-of-block expiry sweep
            "time_ms": ctx.block.time_ms,
            "height": ctx.block.height,
            "transaction": ctx.transaction_hash,
        },
    )
    for holder in (source, to):
        if holder is not None:
            ctx.state.put(key("hist", symbol, holder, seq), b"")
    put_int(ctx.state, seq_key, seq + 1)
    ctx.emit(kind, {"symbol": symbol, "from": source, "to": to, "amount": amount, "seq": seq})
    return seq
