"""Supply-chain finance: receivables issued by a core enterprise and split along the chain.

Theory of operation
-------------------
Modelled on receivable platforms where a core enterprise's payable becomes a transferable
digital IOU:

* ``issue``: a core enterprise (the **debtor**, the sender) issues a receivable to its tier-1
  supplier against an invoice (amount in minor units, currency registered in ``payments``, due
  date as block time, invoice reference hash unique per debtor). It is ``issued`` until the
  supplier ``accept``s it (then ``active``); the debtor may ``cancel`` it before that.
* ``transfer``: the holder passes all of an active receivable (the holder changes) or part of
  it (a **split**: two children, the transferred part to the new holder and the rest kept),
  to anyone but its debtor (who could not repay itself).
  ``split`` divides one into 2..``SPLIT_CHILDREN_MAX`` children held by the holder. Children
  always sum exactly to their parent; the parent becomes ``split`` and is no longer live.
  Every receivable records its ``parent`` and ``root`` (the original invoice), so lineage is
  traceable both ways (``child/<parent>/<index>`` keys list a node's children in order).
* Financing: the holder ``offer_financing`` to a bank at an annual discount rate; the price is
  fixed at offer time as ``amount - floor(amount * rate_bps * remaining_ms / (10^4 * year))``
  (the floor favours the seller by under one minor unit; an offer whose price would be nothing
  is refused). ``accept_financing`` by that bank pays the price through ``payments`` (from
  the bank, the transaction's sender) and makes the bank the holder in the same transaction.
  A receivable may be financed any number of times as it changes hands (a bank that sold it
  on may finance it again); the n-th financing's payment carries the end-to-end id
  ``scf-fin-<id>-<n>``, counted per receivable (``financings``). An unaccepted financing offer
  blocks transfers until it expires; the first block whose time reaches its ``expires_ms``
  withdraws it (``end_block``).
* ``repay``: the debtor pays every live leaf under a receivable to its current holder through
  ``payments`` (end-to-end id ``scf-repay-<leaf id>``: repaying marks the leaf ``repaid`` in
  the same transaction and a repaid leaf is never live again, so each leaf is repaid exactly
  once and the id is unique per repayment). After the due date a live receivable can be
  marked ``overdue`` (``mark_overdue``) and can no longer be transferred or financed; it can
  still be repaid.
* Orders: a buyer ``register_order``s with a supplier; milestones ``shipped`` and
  ``delivered`` (supplier) then ``accepted`` (buyer) are recorded strictly in that order.

Live receivables (``issued``, ``active``, ``overdue``) are indexed by holder and by debtor, so
"receivables by holder/debtor" and "exposure per debtor" are prefix scans.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar, Final

from mypy_extensions import mypyc_attr

from apps._records import (
    AMOUNT_MAX,
    Identity,
    active_identity,
    as_int,
    as_map,
    expired_in_backlog,
    get_record,
    key,
    last_segment,
    prefix,
    put_record,
    scan_end,
    schedule_expiry,
    take_expired,
    unschedule_expiry,
)
from apps.access import (
    OVERSEERS,
    Lookup,
    ReadRules,
    account_data,
    event_of,
    record_of,
)
from apps.base import (
    ROLE_BANK,
    ROLE_ENTERPRISE,
    AppError,
    AppState,
    ReadState,
    TxContext,
)
from apps.schema import (
    Amount,
    Amounts,
    AppSchema,
    Argument,
    Arguments,
    Choice,
    DispatchingApp,
    Hash,
    Identifier,
    Integer,
    Operation,
    PublicKey,
    Query,
    Text,
    TimeMs,
)
from consensus.codec import Value
from consensus.crypto import hash_bytes

__all__ = ["ScfApp", "child_receivable_id", "receivable_id"]

# A split into more pieces than this is a misuse, not a supply chain; it also bounds a tree.
SPLIT_CHILDREN_MAX: Final = 16
# Lineage deeper than this is refused so the lineage query stays bounded.
DEPTH_MAX: Final = 32
# The lineage tree query returns at most this many nodes (then marks itself truncated).
LINEAGE_NODES_MAX: Final = 1000
# Receivables listed by one holder/debtor query.
LIST_PAGE_MAX: Final = 500
# Repaying one receivable pays at most this many leaves in one transaction (block size bound).
REPAY_LEAVES_MAX: Final = 256
# Repaying or marking overdue walks at most this many receivables of a tree, so one
# transaction's work stays bounded however far a tree was split (every split has at least two
# children, so any tree of up to REPAY_LEAVES_MAX leaves fits); a larger tree is repaid or
# marked a subtree at a time.
WALK_NODES_MAX: Final = 2 * REPAY_LEAVES_MAX
YEAR_MS: Final = 365 * 86_400_000
BPS_MAX: Final = 10_000
MILESTONES: Final = ("shipped", "delivered", "accepted")
LIVE: Final = frozenset({"issued", "active", "overdue"})
_CURRENCY: Final = re.compile(r"[A-Z]{3}")


_RECEIVABLE_PARTIES: Final = Lookup(
    "receivable", (("id", "id"),), ("debtor", "holder", "financed_by", "bank")
)
_ORDER_PARTIES: Final = Lookup("order", (("order_id", "order_id"),), ("buyer", "supplier"))
_LINEAGE_HOLDERS: Final = Lookup("lineage", (("id", "id"),), ("holder", "financed_by"))
# Who may read what (``apps.access``): a receivable is its debtor's and its holders' (every
# holder along its lineage, and a bank it is offered to); an order is its buyer's and
# supplier's; lists and exposure are the named party's.
READ_RULES: Final = ReadRules(
    queries={
        "receivable": record_of("debtor", "holder", "financed_by", "bank"),
        "by_holder": account_data("holder"),
        "by_debtor": account_data("debtor"),
        "exposure": account_data("debtor"),
        "lineage": record_of("holder", "financed_by", lookups=(_RECEIVABLE_PARTIES,)),
        "order": record_of("buyer", "supplier"),
    },
    events={
        "order_registered": event_of("buyer", lookups=(_ORDER_PARTIES,)),
        "milestone": event_of(lookups=(_ORDER_PARTIES,)),
        "receivable_issued": event_of("debtor", "holder"),
        "receivable_accepted": event_of(lookups=(_RECEIVABLE_PARTIES,)),
        "receivable_cancelled": event_of(lookups=(_RECEIVABLE_PARTIES,)),
        "receivable_transferred": event_of("from", "to", lookups=(_RECEIVABLE_PARTIES,)),
        "receivable_split": event_of(lookups=(_RECEIVABLE_PARTIES,)),
        "financing_offered": event_of("bank", lookups=(_RECEIVABLE_PARTIES,)),
        "financing_cancelled": event_of(lookups=(_RECEIVABLE_PARTIES,)),
        "financing_expired": event_of(lookups=(_RECEIVABLE_PARTIES,)),
        "receivable_financed": event_of("bank", lookups=(_RECEIVABLE_PARTIES,)),
        "receivable_repaid": event_of("holder", lookups=(_RECEIVABLE_PARTIES,)),
        "receivable_overdue": event_of(lookups=(_RECEIVABLE_PARTIES, _LINEAGE_HOLDERS)),
    },
    overseers=OVERSEERS,
)


# ---------------------------------------------------------------------- the schema
_RECEIVABLE: Final = Argument("receivable", Identifier(), "receivable id (rc-...)")
_ORDER_ID: Final = Argument("order_id", Identifier(), "order id")
_ENTERPRISE: Final = frozenset({ROLE_ENTERPRISE})
_HOLDERS: Final = frozenset({ROLE_ENTERPRISE, ROLE_BANK})


def _limit() -> Argument:
    return Argument(
        "limit",
        Integer(1, LIST_PAGE_MAX),
        f"at most this many results (1..{LIST_PAGE_MAX})",
        required=False,
        default=100,
    )


SCHEMA: Final = AppSchema(
    help="Supply-chain finance: orders, receivables, splits, financing and repayment.",
    operations=(
        Operation(
            "register_order",
            _ENTERPRISE,
            "Register a purchase order with a supplier (the sender is the buyer).",
            (
                _ORDER_ID,
                Argument("supplier", PublicKey(), "the supplier (an enterprise)"),
                Argument("description", Text(), "what is ordered", required=False, default=""),
            ),
        ),
        Operation(
            "record_milestone",
            _ENTERPRISE,
            "Record shipped/delivered (supplier) or accepted (buyer), in that order.",
            (
                _ORDER_ID,
                Argument("milestone", Choice(MILESTONES), "the milestone"),
                Argument(
                    "document_hash", Hash(), "hash of the supporting document", required=False
                ),
            ),
        ),
        Operation(
            "issue",
            _ENTERPRISE,
            "Issue a receivable to a supplier against an invoice (the sender is the debtor).",
            (
                Argument("supplier", PublicKey(), "the supplier (an enterprise)"),
                Argument("amount", Amount(), "face amount"),
                Argument(
                    "currency",
                    Identifier(_CURRENCY, "an ISO 4217 code like 'USD'"),
                    "ISO 4217 currency code (registered in payments)",
                ),
                Argument("due_ms", TimeMs(), "due date (block time)"),
                Argument("invoice_hash", Hash(), "invoice reference hash (unique per debtor)"),
                Argument("order_id", Identifier(), "the order it pays for", required=False),
            ),
        ),
        Operation(
            "accept", _ENTERPRISE, "Accept a receivable issued to the sender.", (_RECEIVABLE,)
        ),
        Operation(
            "cancel",
            _ENTERPRISE,
            "Cancel a receivable not yet accepted (the debtor).",
            (_RECEIVABLE,),
        ),
        Operation(
            "transfer",
            _HOLDERS,
            "Transfer all of a receivable, or part of it (a split), to another holder.",
            (
                _RECEIVABLE,
                Argument("to", PublicKey(), "new holder (enterprise or bank)"),
                Argument("amount", Amount(), "part to transfer (default: all)", required=False),
            ),
        ),
        Operation(
            "split",
            _HOLDERS,
            "Split a receivable into children held by the sender (amounts sum to the parent).",
            (
                _RECEIVABLE,
                Argument("amounts", Amounts(SPLIT_CHILDREN_MAX), "children's amounts"),
            ),
        ),
        Operation(
            "offer_financing",
            _ENTERPRISE,
            "Offer a receivable to a bank at an annual discount rate.",
            (
                _RECEIVABLE,
                Argument("bank", PublicKey(), "the financing bank"),
                Argument("rate_bps", Integer(0, BPS_MAX), "annual discount rate in basis points"),
                Argument("expires_ms", TimeMs(), "offer expiry (block time)"),
            ),
        ),
        Operation(
            "cancel_financing",
            _ENTERPRISE,
            "Withdraw a financing offer (the holder).",
            (_RECEIVABLE,),
        ),
        Operation(
            "accept_financing",
            frozenset({ROLE_BANK}),
            "Finance a receivable: the bank pays the discounted price and becomes the holder.",
            (_RECEIVABLE,),
        ),
        Operation(
            "repay",
            _ENTERPRISE,
            "Repay every live part of a receivable to its holders (the debtor).",
            (_RECEIVABLE,),
        ),
        Operation(
            "mark_overdue",
            _HOLDERS,
            "Mark a receivable past its due date as overdue.",
            (_RECEIVABLE,),
        ),
    ),
    queries=(
        Query("receivable", "One receivable.", (Argument("id", Identifier(), "receivable id"),)),
        Query(
            "by_holder",
            "Live receivables held by a party.",
            (Argument("holder", PublicKey(), "the holder"), _limit()),
        ),
        Query(
            "by_debtor",
            "Live receivables owed by a debtor.",
            (Argument("debtor", PublicKey(), "the debtor"), _limit()),
        ),
        Query(
            "lineage",
            "A receivable's ancestors and the whole tree from its original invoice.",
            (Argument("id", Identifier(), "receivable id"),),
        ),
        Query(
            "exposure",
            "Outstanding and overdue amounts per currency of a debtor.",
            (
                Argument("debtor", PublicKey(), "the debtor"),
                Argument(
                    "now_ms", TimeMs(), "count as overdue what is due by then", required=False
                ),
            ),
        ),
        Query("order", "One order with its milestones.", (_ORDER_ID,)),
    ),
)


def receivable_id(transaction_hash: bytes) -> str:
    """The id ``issue`` gives the receivable created by the transaction with this hash."""
    return "rc-" + transaction_hash.hex()[:24]


def child_receivable_id(parent_id: str, index: int) -> str:
    """The id of child ``index`` of a split of ``parent_id``."""
    return "rc-" + hash_bytes(f"{parent_id}/{index}".encode("ascii")).hex()[:24]


def discounted_price(amount: int, rate_bps: int, remaining_ms: int) -> int:
    """What a bank pays for ``amount`` due in ``remaining_ms`` at an annual ``rate_bps``."""
    discount = amount * rate_bps * max(remaining_ms, 0) // (BPS_MAX * YEAR_MS)
    return amount - min(discount, amount)


# A bank's own app may extend a shipped one, also when this module runs compiled (node.native).
@mypyc_attr(allow_interpreted_subclasses=True)
class ScfApp(DispatchingApp):
    """The ``scf`` app (see the module docstring for the rules)."""

    name: ClassVar[str] = "scf"
    schema: ClassVar[AppSchema] = SCHEMA
    read_rules: ClassVar[ReadRules] = READ_RULES

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        """The scf app starts empty; its genesis section must be an empty map."""
        if config:
            raise AppError("bad_genesis", "scf takes no genesis configuration")

    # ------------------------------------------------------------------ orders
    def _register_order(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        order_id = a.text("order_id")
        supplier = a.key("supplier")
        description = a.text("description")
        if not execute:
            return None
        if get_record(ctx.state, key("order", order_id)) is not None:
            raise AppError("duplicate_order", f"order {order_id!r} already exists")
        if supplier == ctx.sender:
            raise AppError("self_dealing", "buyer and supplier must differ")
        _enterprise(ctx, supplier, "supplier")
        order: dict[str, Value] = {
            "order_id": order_id,
            "buyer": ctx.sender,
            "supplier": supplier,
            "description": description,
            "created_ms": ctx.block.time_ms,
            "milestones": (),
        }
        put_record(ctx.state, key("order", order_id), order)
        ctx.emit("order_registered", {"order_id": order_id, "buyer": ctx.sender})
        return order

    def _record_milestone(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        order_id = a.text("order_id")
        milestone = a.text("milestone")
        document = a.optional_key("document_hash")
        if not execute:
            return None
        order = get_record(ctx.state, key("order", order_id))
        if order is None:
            raise AppError("unknown_order", f"no order {order_id!r}")
        recorded = order["milestones"]
        assert isinstance(recorded, tuple)
        expected = MILESTONES[len(recorded)] if len(recorded) < len(MILESTONES) else None
        if milestone != expected:
            raise AppError(
                "milestone_order",
                f"milestones are shipped, delivered, accepted in order; next is {expected!r}"
                if expected is not None
                else f"every milestone of order {order_id!r} is recorded already",
            )
        allowed = order["buyer"] if milestone == "accepted" else order["supplier"]
        if ctx.sender != allowed:
            who = "buyer" if milestone == "accepted" else "supplier"
            raise AppError("not_order_party", f"only the order's {who} records {milestone!r}")
        entry: dict[str, Value] = {
            "milestone": milestone,
            "time_ms": ctx.block.time_ms,
            "by": ctx.sender,
            "document_hash": document,
        }
        order["milestones"] = (*recorded, entry)
        put_record(ctx.state, key("order", order_id), order)
        ctx.emit("milestone", {"order_id": order_id, "milestone": milestone})
        return order

    # ------------------------------------------------------------------ issue / accept
    def _issue(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        supplier = a.key("supplier")
        amount = a.integer("amount")
        currency = a.text("currency")
        due_ms = a.integer("due_ms")
        invoice_hash = a.key("invoice_hash")
        order_id = a.optional_text("order_id")
        if not execute:
            return None
        if supplier == ctx.sender:
            raise AppError("self_dealing", "debtor and supplier must differ")
        if due_ms <= ctx.block.time_ms:
            raise AppError("due_date_passed", "the due date must be after the current block time")
        if ctx.query("payments", "currency", {"code": currency}) is None:
            raise AppError("unknown_currency", f"currency {currency} is not registered")
        _enterprise(ctx, supplier, "supplier")
        invoice_key = key("invoice", ctx.sender, invoice_hash)
        if ctx.state.get(invoice_key) is not None:
            raise AppError("duplicate_invoice", "this debtor already issued against that invoice")
        if order_id is not None:
            order = get_record(ctx.state, key("order", order_id))
            if order is None:
                raise AppError("unknown_order", f"no order {order_id!r}")
            if order["buyer"] != ctx.sender or order["supplier"] != supplier:
                raise AppError("order_parties", "the order's buyer and supplier must match")
        rid = receivable_id(ctx.transaction_hash)
        if get_record(ctx.state, key("rcv", rid)) is not None:
            raise AppError("duplicate_receivable", f"receivable {rid} already exists")
        record: dict[str, Value] = {
            "id": rid,
            "root": rid,
            "parent": None,
            "depth": 0,
            "debtor": ctx.sender,
            "holder": supplier,
            "amount": amount,
            "currency": currency,
            "due_ms": due_ms,
            "invoice_hash": invoice_hash,
            "order_id": order_id,
            "status": "issued",
            "children": (),
            "created_ms": ctx.block.time_ms,
            "financed_by": None,
            "financing": None,
            "financings": 0,
        }
        ctx.state.put(invoice_key, rid.encode("ascii"))
        _save(ctx.state, record, None)
        ctx.emit("receivable_issued", {"id": rid, "debtor": ctx.sender, "holder": supplier})
        return {"id": rid}

    def _accept(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        rid = a.text("receivable")
        if not execute:
            return None
        record = _receivable(ctx.state, rid)
        if record["status"] != "issued":
            raise AppError("not_issued", f"receivable {rid} is {record['status']!s}")
        if record["holder"] != ctx.sender:
            raise AppError("not_holder", "only the supplier it was issued to may accept it")
        before = dict(record)
        record["status"] = "active"
        _save(ctx.state, record, before)
        ctx.emit("receivable_accepted", {"id": rid})
        return None

    def _cancel(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        rid = a.text("receivable")
        if not execute:
            return None
        record = _receivable(ctx.state, rid)
        if record["debtor"] != ctx.sender:
            raise AppError("not_debtor", "only the debtor may cancel a receivable")
        if record["status"] != "issued":
            raise AppError("not_issued", "only a receivable not yet accepted can be cancelled")
        before = dict(record)
        record["status"] = "cancelled"
        _save(ctx.state, record, before)
        ctx.emit("receivable_cancelled", {"id": rid})
        return None

    # ------------------------------------------------------------------ transfer / split
    def _transferable(self, ctx: TxContext, rid: str) -> dict[str, Value]:
        """The receivable, if the sender may transfer, split or offer it now. An expired
        financing offer no longer counts: it is dropped from the returned record."""
        record = _receivable(ctx.state, rid)
        if record["holder"] != ctx.sender:
            raise AppError("not_holder", f"receivable {rid} is held by someone else")
        if record["status"] == "overdue" or (
            record["status"] == "active" and ctx.block.time_ms >= as_int(record["due_ms"])
        ):
            raise AppError("receivable_overdue", f"receivable {rid} is past its due date")
        if record["status"] != "active":
            raise AppError("not_active", f"receivable {rid} is {record['status']!s}")
        financing = record["financing"]
        if financing is not None:
            if ctx.block.time_ms < as_int(as_map(financing)["expires_ms"]):
                raise AppError("financing_pending", f"receivable {rid} has an open financing offer")
            record["financing"] = None
        return record

    def _transfer(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        rid = a.text("receivable")
        to = a.key("to")
        amount = a.optional_integer("amount")
        if not execute:
            return None
        record = self._transferable(ctx, rid)
        if to == ctx.sender:
            raise AppError("self_transfer", "a receivable is transferred to another party")
        if to == record["debtor"]:
            # The debtor cannot pay itself: a part it held could never be repaid.
            raise AppError("self_dealing", "a receivable is never held by its own debtor")
        recipient = active_identity(ctx, to, "recipient")
        if not recipient.roles & {ROLE_ENTERPRISE, ROLE_BANK}:
            raise AppError("recipient_role", "receivables are held by enterprises and banks")
        face = as_int(record["amount"])
        if amount is None or amount == face:
            before = dict(record)
            record["holder"] = to
            _save(ctx.state, record, before)
            ctx.emit("receivable_transferred", {"id": rid, "from": ctx.sender, "to": to})
            return {"id": rid}
        if amount > face:
            raise AppError("exceeds_amount", f"{amount} exceeds the receivable's {face}")
        children = self._divide(ctx, record, ((amount, to), (face - amount, ctx.sender)))
        ctx.emit("receivable_transferred", {"id": children[0], "from": ctx.sender, "to": to})
        return {"children": children}

    def _split(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        rid = a.text("receivable")
        amounts = a.integers("amounts")
        if not execute:
            return None
        record = self._transferable(ctx, rid)
        face = as_int(record["amount"])
        if sum(amounts) != face:
            raise AppError("split_sum", f"children must sum to the parent's {face}")
        children = self._divide(ctx, record, tuple((part, ctx.sender) for part in amounts))
        return {"children": children}

    def _divide(
        self, ctx: TxContext, parent: dict[str, Value], parts: tuple[tuple[int, bytes], ...]
    ) -> tuple[str, ...]:
        """Split ``parent`` into children (amount, holder); amounts sum to the parent's."""
        assert sum(part for part, _ in parts) == parent["amount"]
        depth = as_int(parent["depth"]) + 1
        if depth > DEPTH_MAX:
            raise AppError("lineage_too_deep", f"a receivable lineage is at most {DEPTH_MAX} deep")
        parent_id = str(parent["id"])
        before = dict(parent)
        children: list[str] = []
        for index, (part, holder) in enumerate(parts):
            child_id = child_receivable_id(parent_id, index)
            assert get_record(ctx.state, key("rcv", child_id)) is None, child_id
            child = dict(parent)
            child.update(
                {
                    "id": child_id,
                    "parent": parent_id,
                    "depth": depth,
                    "holder": holder,
                    "amount": part,
                    "status": "active",
                    "children": (),
                    "created_ms": ctx.block.time_ms,
                    "financed_by": None,
                    "financing": None,
                    "financings": 0,
                }
            )
            _save(ctx.state, child, None)
            ctx.state.put(key("child", parent_id, index), child_id.encode("ascii"))
            children.append(child_id)
        parent["status"] = "split"
        parent["children"] = tuple(children)
        _save(ctx.state, parent, before)
        ctx.emit("receivable_split", {"id": parent_id, "children": tuple(children)})
        return tuple(children)

    # ------------------------------------------------------------------ financing
    def _offer_financing(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        rid = a.text("receivable")
        bank = a.key("bank")
        rate_bps = a.integer("rate_bps")
        expires_ms = a.integer("expires_ms")
        if not execute:
            return None
        record = self._transferable(ctx, rid)
        if expires_ms <= ctx.block.time_ms:
            raise AppError("offer_expiry", "an offer must expire after the current block time")
        financier = active_identity(ctx, bank, "bank")
        if ROLE_BANK not in financier.roles:
            raise AppError("not_a_bank", "receivables are financed by banks")
        remaining = as_int(record["due_ms"]) - ctx.block.time_ms
        price = discounted_price(as_int(record["amount"]), rate_bps, remaining)
        if price == 0:
            # A payment moves a positive amount: no bank could ever accept this offer.
            raise AppError("zero_price", f"at {rate_bps} bps the discount takes the whole amount")
        before = dict(record)
        record["financing"] = {
            "bank": bank,
            "rate_bps": rate_bps,
            "price": price,
            "expires_ms": expires_ms,
        }
        _save(ctx.state, record, before)
        ctx.emit("financing_offered", {"id": rid, "bank": bank, "price": price})
        result: dict[str, Value] = {"id": rid, "price": price}
        return result

    def _cancel_financing(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        rid = a.text("receivable")
        if not execute:
            return None
        record = _receivable(ctx.state, rid)
        if record["holder"] != ctx.sender:
            raise AppError("not_holder", f"receivable {rid} is held by someone else")
        if record["financing"] is None:
            raise AppError("no_financing", f"receivable {rid} has no financing offer")
        before = dict(record)
        record["financing"] = None
        _save(ctx.state, record, before)
        ctx.emit("financing_cancelled", {"id": rid})
        return None

    def _accept_financing(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        rid = a.text("receivable")
        if not execute:
            return None
        record = _receivable(ctx.state, rid)
        if record["financing"] is None:
            raise AppError("no_financing", f"receivable {rid} has no financing offer")
        offer = as_map(record["financing"])
        if offer["bank"] != ctx.sender:
            raise AppError("not_financier", "the offer was made to another bank")
        if ctx.block.time_ms >= as_int(offer["expires_ms"]):
            raise AppError("offer_expired", "the financing offer has expired")
        if ctx.block.time_ms >= as_int(record["due_ms"]):
            raise AppError("receivable_overdue", f"receivable {rid} can no longer be financed")
        # Only an active receivable carries an offer: splitting, repaying and marking overdue
        # withdraw it.
        assert record["status"] == "active", rid
        holder = record["holder"]
        assert isinstance(holder, bytes)
        price = as_int(offer["price"])
        # Unique per financing, not per receivable: the same bank may finance a receivable
        # again after selling it on, and the payment's end-to-end id (unique per payer) must
        # not refuse that. A counter (rather than the transaction hash) keeps the id short,
        # readable and derivable: financing n of receivable R paid "scf-fin-R-n".
        financings = as_int(record["financings"]) + 1
        payment = ctx.call(
            "payments",
            "transfer",
            {
                "from": ctx.sender,
                "to": holder,
                "currency": record["currency"],
                "amount": price,
                "end_to_end_id": f"scf-fin-{rid}-{financings}",
                "purpose": "receivable financing",
                "remittance": rid,
            },
        )
        before = dict(record)
        record["holder"] = ctx.sender
        record["financed_by"] = ctx.sender
        record["financing"] = None
        record["financings"] = financings
        _save(ctx.state, record, before)
        ctx.emit("receivable_financed", {"id": rid, "bank": ctx.sender, "price": price})
        return {"id": rid, "price": price, "payment": payment}

    # ------------------------------------------------------------------ repayment
    def _live_leaves(self, state: ReadState, rid: str) -> list[dict[str, Value]]:
        """The live leaves under ``rid``, in lineage order; ``too_many_leaves`` when the tree
        under it has more than ``WALK_NODES_MAX`` receivables."""
        leaves: list[dict[str, Value]] = []
        pending = [rid]
        visited = 0
        while pending:
            visited += 1
            if visited > WALK_NODES_MAX:
                raise AppError(
                    "too_many_leaves",
                    f"receivable {rid} spans more than {WALK_NODES_MAX} receivables: settle it "
                    "a part at a time",
                )
            record = _receivable(state, pending.pop())
            children = record["children"]
            assert isinstance(children, tuple)
            if children:
                pending.extend(str(child) for child in reversed(children))
            elif record["status"] in LIVE:
                leaves.append(record)
        return leaves

    def _repay(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        rid = a.text("receivable")
        if not execute:
            return None
        record = _receivable(ctx.state, rid)
        if record["debtor"] != ctx.sender:
            raise AppError("not_debtor", "only the debtor repays a receivable")
        leaves = self._live_leaves(ctx.state, rid)
        if not leaves:
            raise AppError("nothing_due", f"receivable {rid} has nothing outstanding")
        if len(leaves) > REPAY_LEAVES_MAX:
            raise AppError("too_many_leaves", f"repay at most {REPAY_LEAVES_MAX} leaves at once")
        paid: list[Value] = []
        for leaf in leaves:
            if leaf["status"] == "issued":
                raise AppError("not_active", f"receivable {leaf['id']!s} was never accepted")
            payment = ctx.call(
                "payments",
                "transfer",
                {
                    "from": ctx.sender,
                    "to": leaf["holder"],
                    "currency": leaf["currency"],
                    "amount": leaf["amount"],
                    "end_to_end_id": f"scf-repay-{leaf['id']!s}",
                    "purpose": "receivable repayment",
                    "remittance": str(leaf["id"]),
                },
            )
            before = dict(leaf)
            leaf["status"] = "repaid"
            leaf["repaid_ms"] = ctx.block.time_ms
            leaf["financing"] = None  # nothing is left to finance
            _save(ctx.state, leaf, before)
            paid.append({"id": leaf["id"], "holder": leaf["holder"], "payment": payment})
            ctx.emit("receivable_repaid", {"id": leaf["id"], "holder": leaf["holder"]})
        return {"repaid": tuple(paid)}

    def _mark_overdue(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        rid = a.text("receivable")
        if not execute:
            return None
        record = _receivable(ctx.state, rid)
        if ctx.block.time_ms < as_int(record["due_ms"]):
            raise AppError("not_due", f"receivable {rid} is not yet due")
        marked: list[Value] = []
        for leaf in self._live_leaves(ctx.state, rid):
            if leaf["status"] == "active":
                before = dict(leaf)
                leaf["status"] = "overdue"
                leaf["financing"] = None
                _save(ctx.state, leaf, before)
                marked.append(leaf["id"])
        if not marked:
            raise AppError("nothing_due", f"receivable {rid} has no active leaf to mark")
        ctx.emit("receivable_overdue", {"id": rid, "leaves": tuple(marked)})
        return {"overdue": tuple(marked)}

    # ------------------------------------------------------------------ expiry
    def end_block(self, ctx: TxContext) -> None:
        """Withdraw every financing offer that expired by this block's time (oldest first,
        bounded per block: ``apps._records.take_expired``)."""
        for _, rid in take_expired(ctx.state, ctx.block.time_ms):
            record = _receivable(ctx.state, rid)
            # The index lists receivables with a financing offer: every change of the offer
            # goes through ``_save``, which keeps the index in step.
            assert record["financing"] is not None, rid
            before = dict(record)
            record["financing"] = None
            _save(ctx.state, record, before)
            ctx.emit("financing_expired", {"id": rid})

    # ------------------------------------------------------------------ queries
    def answer(self, state: ReadState, path: str, a: Arguments) -> Value:
        """Paths: ``receivable`` {id}, ``by_holder`` {holder, limit?}, ``by_debtor``
        {debtor, limit?}, ``lineage`` {id}, ``exposure`` {debtor, now_ms?}, ``order``
        {order_id}."""
        if path == "receivable":
            record = get_record(state, key("rcv", a.text("id")))
            return None if record is None else _view(state, record)
        if path in ("by_holder", "by_debtor"):
            role = "holder" if path == "by_holder" else "debtor"
            party = a.key(role)
            limit = a.integer("limit")
            start = prefix(role, party)
            found: list[Value] = []
            for record_key, _ in state.scan(start, scan_end(start)):
                found.append(_view(state, _receivable(state, last_segment(record_key))))
                if len(found) >= limit:
                    break
            return tuple(found)
        if path == "lineage":
            return self._lineage(state, a.text("id"))
        if path == "exposure":
            return self._exposure(state, a.key("debtor"), a.optional_integer("now_ms"))
        if path == "order":
            return get_record(state, key("order", a.text("order_id")))
        raise AppError("unknown_query", f"scf has no query {path!r}")

    def _lineage(self, state: ReadState, rid: str) -> Value:
        record = get_record(state, key("rcv", rid))
        if record is None:
            return None
        ancestors: list[Value] = []
        parent = record["parent"]
        while parent is not None:
            ancestor = _receivable(state, str(parent))
            ancestors.append(_summary(ancestor))
            parent = ancestor["parent"]
        ancestors.reverse()
        budget = [LINEAGE_NODES_MAX]
        root = _receivable(state, str(record["root"]))
        tree = self._subtree(state, root, budget)
        return {
            "id": rid,
            "root": record["root"],
            "invoice_hash": record["invoice_hash"],
            "ancestors": tuple(ancestors),
            "tree": tree,
            "truncated": budget[0] < 0,
        }

    def _subtree(
        self, state: ReadState, record: dict[str, Value], budget: list[int]
    ) -> dict[str, Value]:
        budget[0] -= 1
        node = _summary(record)
        children: list[Value] = []
        start = prefix("child", str(record["id"]))
        for _, child_id in state.scan(start, scan_end(start)):
            if budget[0] <= 0:
                budget[0] = -1
                break
            children.append(self._subtree(state, _receivable(state, child_id.decode()), budget))
        node["children"] = tuple(children)
        return node

    def _exposure(self, state: ReadState, debtor: bytes, now_ms: int | None) -> Value:
        totals: dict[str, dict[str, Value]] = {}
        start = prefix("debtor", debtor)
        for record_key, _ in state.scan(start, scan_end(start)):
            record = _receivable(state, last_segment(record_key))
            if record["status"] == "issued":
                continue
            currency = str(record["currency"])
            entry = totals.setdefault(currency, {"outstanding": 0, "overdue": 0, "count": 0})
            amount = as_int(record["amount"])
            entry["outstanding"] = as_int(entry["outstanding"]) + amount
            entry["count"] = as_int(entry["count"]) + 1
            late = record["status"] == "overdue" or (
                now_ms is not None and now_ms >= as_int(record["due_ms"])
            )
            if late:
                entry["overdue"] = as_int(entry["overdue"]) + amount
        return {currency: totals[currency] for currency in sorted(totals)}


# ---------------------------------------------------------------------- helpers
def _enterprise(ctx: TxContext, public_key: bytes, who: str) -> Identity:
    identity = active_identity(ctx, public_key, who)
    if ROLE_ENTERPRISE not in identity.roles:
        raise AppError("not_an_enterprise", f"the {who} must be an enterprise")
    return identity


def _receivable(state: ReadState, rid: str) -> dict[str, Value]:
    record = get_record(state, key("rcv", rid))
    if record is None:
        raise AppError("unknown_receivable", f"no receivable {rid!r}")
    return record


def _financing_expiry(record: Mapping[str, Value] | None) -> int | None:
    if record is None or record["financing"] is None:
        return None
    return as_int(as_map(record["financing"])["expires_ms"])


def _view(state: ReadState, record: dict[str, Value]) -> dict[str, Value]:
    """A receivable as queries report it: a financing offer that expired but is still waiting
    in the sweep's backlog is shown withdrawn already."""
    expires_ms = _financing_expiry(record)
    if expires_ms is not None and expired_in_backlog(state, expires_ms):
        return {**record, "financing": None}
    return record


def _summary(record: Mapping[str, Value]) -> dict[str, Value]:
    return {
        name: record[name]
        for name in ("id", "parent", "holder", "amount", "currency", "status", "financed_by")
    }


def _save(state: AppState, record: dict[str, Value], before: Mapping[str, Value] | None) -> None:
    """Store a receivable and keep the holder/debtor indexes of live receivables, and the
    expiry index of financing offers, in step."""
    rid = str(record["id"])
    # The stored record, not ``before``: a caller may have dropped an expired offer from the
    # record before taking its snapshot (``_transferable``).
    stored_expiry = _financing_expiry(get_record(state, key("rcv", rid)))
    expiry = _financing_expiry(record)
    if expiry != stored_expiry:
        if stored_expiry is not None:
            unschedule_expiry(state, stored_expiry, rid)
        if expiry is not None:
            schedule_expiry(state, expiry, rid)
    if before is not None and before["status"] in LIVE:
        state.delete(key("holder", _key_bytes(before["holder"]), rid))
        state.delete(key("debtor", _key_bytes(before["debtor"]), rid))
    if record["status"] in LIVE:
        state.put(key("holder", _key_bytes(record["holder"]), rid), b"")
        state.put(key("debtor", _key_bytes(record["debtor"]), rid), b"")
    assert 0 < as_int(record["amount"]) <= AMOUNT_MAX
    put_record(state, key("rcv", rid), record)


def _key_bytes(value: Value) -> bytes:
    assert isinstance(value, bytes), value
    return value
