"""Supply-chain finance scenarios on the real host: orders, receivables, splits, financing."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from apps.demo import ENTERPRISE_FUNDS
from apps.scf import child_receivable_id, discounted_price, receivable_id
from consensus.codec import Value
from tests.apps_fixtures import DAY_MS, Network

CORE, TIER1, TIER2 = "dragon-motors", "kowloon-parts", "merlion-metals"
INVOICE = bytes(range(32))


@pytest.fixture
def net() -> Network:
    return Network.start()


def _map(value: Value) -> Mapping[str, Value]:
    assert isinstance(value, Mapping)
    return value  # type: ignore[return-value]


def _ids(value: Value) -> list[Value]:
    assert isinstance(value, tuple)
    return [_map(item)["id"] for item in value]


def issue(net: Network, amount: int = 100_000, *, accept: bool = True, **change: Value) -> str:
    args: dict[str, Value] = {
        "supplier": net.pk(TIER1),
        "amount": amount,
        "currency": "CNY",
        "due_ms": net.now_ms + 90 * DAY_MS,
        "invoice_hash": INVOICE,
    }
    args.update(change)
    tx = net.sign(CORE, "scf", "issue", **args)
    result = _map(net.chain.run_one(tx))
    assert result["id"] == receivable_id(tx.hash)
    rid = str(result["id"])
    if accept:
        net.ok(TIER1, "scf", "accept", receivable=rid)
    return rid


def receivable(net: Network, rid: str) -> Mapping[str, Value]:
    return _map(net.query("scf", "receivable", id=rid))


# ---------------------------------------------------------------------- orders
def test_order_milestones_in_order_by_the_right_party(net: Network) -> None:
    net.ok(CORE, "scf", "register_order", order_id="PO-1", supplier=net.pk(TIER1))
    assert (
        net.rejected(CORE, "scf", "register_order", order_id="PO-1", supplier=net.pk(TIER1))
        == "duplicate_order"
    )
    assert (
        net.rejected(TIER1, "scf", "record_milestone", order_id="PO-1", milestone="delivered")
        == "milestone_order"
    )
    assert (
        net.rejected(CORE, "scf", "record_milestone", order_id="PO-1", milestone="shipped")
        == "not_order_party"
    )
    net.ok(
        TIER1,
        "scf",
        "record_milestone",
        order_id="PO-1",
        milestone="shipped",
        document_hash=INVOICE,
    )
    net.ok(TIER1, "scf", "record_milestone", order_id="PO-1", milestone="delivered")
    assert (
        net.rejected(TIER1, "scf", "record_milestone", order_id="PO-1", milestone="accepted")
        == "not_order_party"
    )
    net.ok(CORE, "scf", "record_milestone", order_id="PO-1", milestone="accepted")
    order = _map(net.query("scf", "order", order_id="PO-1"))
    milestones = order["milestones"]
    assert isinstance(milestones, tuple)
    assert [_map(m)["milestone"] for m in milestones] == ["shipped", "delivered", "accepted"]
    assert (
        net.rejected(CORE, "scf", "record_milestone", order_id="PO-2", milestone="shipped")
        == "unknown_order"
    )
    assert (
        net.rejected(CORE, "scf", "record_milestone", order_id="PO-1", milestone="lost")
        == "bad_argument"
    )
    tx = net.sign(CORE, "scf", "record_milestone", order_id="PO-1", milestone="accepted")
    receipt = net.chain.run([tx]).receipts[0]
    assert receipt.code == "milestone_order"
    assert "every milestone of order 'PO-1' is recorded already" in receipt.message


# ---------------------------------------------------------------------- issue / accept
def test_issue_accept_and_queries_by_holder_and_debtor(net: Network) -> None:
    net.ok(CORE, "scf", "register_order", order_id="PO-9", supplier=net.pk(TIER1))
    rid = issue(net, accept=False, order_id="PO-9")
    assert receivable(net, rid)["status"] == "issued"
    # Not yet accepted: no exposure, and only the supplier may accept.
    assert net.query("scf", "exposure", debtor=net.pk(CORE)) == {}
    assert net.rejected(TIER2, "scf", "accept", receivable=rid) == "not_holder"
    net.ok(TIER1, "scf", "accept", receivable=rid)
    assert net.rejected(TIER1, "scf", "accept", receivable=rid) == "not_issued"
    assert _ids(net.query("scf", "by_holder", holder=net.pk(TIER1))) == [rid]
    assert _ids(net.query("scf", "by_debtor", debtor=net.pk(CORE))) == [rid]
    exposure = _map(net.query("scf", "exposure", debtor=net.pk(CORE)))
    assert _map(exposure["CNY"])["outstanding"] == 100_000


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"supplier": "self"}, "self_dealing"),
        ({"supplier": "bank"}, "not_an_enterprise"),
        ({"currency": "EUR"}, "unknown_currency"),
        ({"due_ms": 1}, "due_date_passed"),
        ({"order_id": "PO-missing"}, "unknown_order"),
        ({"invoice_hash": b"short"}, "bad_argument"),
        ({"amount": 0}, "bad_argument"),
    ],
)
def test_issue_rejections(net: Network, change: dict[str, Value], code: str) -> None:
    args: dict[str, Value] = {
        "supplier": net.pk(TIER1),
        "amount": 10,
        "currency": "CNY",
        "due_ms": net.now_ms + DAY_MS,
        "invoice_hash": INVOICE,
    }
    args.update(change)
    if change.get("supplier") == "self":
        args["supplier"] = net.pk(CORE)
    elif change.get("supplier") == "bank":
        args["supplier"] = net.pk("pearl-bank")
    assert net.rejected(CORE, "scf", "issue", **args) == code


def test_invoice_is_financed_once_and_order_parties_must_match(net: Network) -> None:
    issue(net)
    code = net.rejected(
        CORE,
        "scf",
        "issue",
        supplier=net.pk(TIER1),
        amount=5,
        currency="CNY",
        due_ms=net.now_ms + DAY_MS,
        invoice_hash=INVOICE,
    )
    assert code == "duplicate_invoice"
    net.ok(CORE, "scf", "register_order", order_id="PO-3", supplier=net.pk(TIER2))
    code = net.rejected(
        CORE,
        "scf",
        "issue",
        supplier=net.pk(TIER1),
        amount=5,
        currency="CNY",
        due_ms=net.now_ms + DAY_MS,
        invoice_hash=bytes(32),
        order_id="PO-3",
    )
    assert code == "order_parties"


def test_debtor_cancels_before_acceptance_only(net: Network) -> None:
    rid = issue(net, accept=False)
    assert net.rejected(TIER1, "scf", "cancel", receivable=rid) == "not_debtor"
    net.ok(CORE, "scf", "cancel", receivable=rid)
    assert receivable(net, rid)["status"] == "cancelled"
    assert net.query("scf", "by_holder", holder=net.pk(TIER1)) == ()
    accepted = issue(net, invoice_hash=bytes(32))
    assert net.rejected(CORE, "scf", "cancel", receivable=accepted) == "not_issued"


# ---------------------------------------------------------------------- transfer / split
def test_partial_transfer_splits_and_lineage_traces_to_the_invoice(net: Network) -> None:
    rid = issue(net)
    result = _map(net.ok(TIER1, "scf", "transfer", receivable=rid, to=net.pk(TIER2), amount=40_000))
    first, rest = child_receivable_id(rid, 0), child_receivable_id(rid, 1)
    assert result["children"] == (first, rest)
    assert receivable(net, first)["holder"] == net.pk(TIER2)
    assert receivable(net, first)["amount"] + receivable(net, rest)["amount"] == 100_000  # type: ignore[operator]
    assert receivable(net, rid)["status"] == "split"
    # Split the kept part again into three.
    net.ok(TIER1, "scf", "split", receivable=rest, amounts=[10_000, 20_000, 30_000])
    lineage = _map(net.query("scf", "lineage", id=child_receivable_id(rest, 2)))
    assert lineage["root"] == rid
    assert lineage["invoice_hash"] == INVOICE
    assert [_map(a)["id"] for a in lineage["ancestors"]] == [rid, rest]  # type: ignore[union-attr]
    tree = _map(lineage["tree"])
    assert tree["id"] == rid
    children = tree["children"]
    assert isinstance(children, tuple)
    assert [_map(c)["id"] for c in children] == [first, rest]
    grandchildren = _map(children[1])["children"]
    assert isinstance(grandchildren, tuple)
    assert sum(_map(g)["amount"] for g in grandchildren) == 60_000  # type: ignore[misc]
    # Exposure is unchanged by splitting.
    exposure = _map(net.query("scf", "exposure", debtor=net.pk(CORE)))
    assert _map(exposure["CNY"])["outstanding"] == 100_000
    assert _map(exposure["CNY"])["count"] == 4


def test_full_transfer_changes_holder(net: Network) -> None:
    rid = issue(net)
    net.ok(TIER1, "scf", "transfer", receivable=rid, to=net.pk(TIER2))
    assert receivable(net, rid)["holder"] == net.pk(TIER2)
    assert _ids(net.query("scf", "by_holder", holder=net.pk(TIER2))) == [rid]
    assert net.query("scf", "by_holder", holder=net.pk(TIER1)) == ()


def test_transfer_and_split_rejections(net: Network) -> None:
    rid = issue(net)
    assert net.rejected(TIER2, "scf", "transfer", receivable=rid, to=net.pk(TIER2)) == (
        "not_holder"
    )
    assert net.rejected(TIER1, "scf", "transfer", receivable=rid, to=net.pk(TIER1)) == (
        "self_transfer"
    )
    assert net.rejected(TIER1, "scf", "transfer", receivable=rid, to=net.pk("alice")) == (
        "recipient_role"
    )
    assert (
        net.rejected(TIER1, "scf", "transfer", receivable=rid, to=net.pk(TIER2), amount=100_001)
        == "exceeds_amount"
    )
    assert net.rejected(TIER1, "scf", "split", receivable=rid, amounts=[1, 2]) == "split_sum"
    assert net.rejected(TIER1, "scf", "split", receivable=rid, amounts=[100_000]) == (
        "bad_argument"
    )
    assert net.rejected(TIER1, "scf", "transfer", receivable="rc-none", to=net.pk(TIER2)) == (
        "unknown_receivable"
    )
    pending = issue(net, accept=False, invoice_hash=bytes(32))
    assert net.rejected(TIER1, "scf", "transfer", receivable=pending, to=net.pk(TIER2)) == (
        "not_active"
    )
    net.advance(91 * DAY_MS)
    assert net.rejected(TIER1, "scf", "transfer", receivable=rid, to=net.pk(TIER2)) == (
        "receivable_overdue"
    )
    net.ok(TIER1, "scf", "mark_overdue", receivable=rid)
    # Marked overdue, it is still named overdue (not merely "not active").
    assert net.rejected(TIER1, "scf", "split", receivable=rid, amounts=[1, 99_999]) == (
        "receivable_overdue"
    )


def test_a_receivable_is_never_handed_to_its_own_debtor(net: Network) -> None:
    # The debtor cannot pay itself: a part pushed onto it could never be repaid, would stay
    # in its exposure for ever, and would make repaying the whole invoice fail.
    rid = issue(net)
    for amount in (None, 1):
        arguments: dict[str, Value] = {"receivable": rid, "to": net.pk(CORE)}
        if amount is not None:
            arguments["amount"] = amount
        outcome = net.attempt(TIER1, "scf", "transfer", **arguments)
        assert outcome.receipt.code == "self_dealing"
    assert receivable(net, rid)["holder"] == net.pk(TIER1)
    net.ok(CORE, "scf", "repay", receivable=rid)
    assert net.query("scf", "exposure", debtor=net.pk(CORE)) == {}


def test_an_identity_of_a_suspended_enterprise_is_no_counterparty(net: Network) -> None:
    # Its identity is still active, but its institution is not: like a suspended identity, it
    # is issued nothing, transferred nothing and repaid nothing until it is reinstated.
    rid = issue(net)
    net.ok(TIER1, "scf", "transfer", receivable=rid, to=net.pk(TIER2), amount=10)
    net.ok("lion-bank", "membership", "suspend_enterprise", id=TIER2)
    arguments: dict[str, Value] = {
        "supplier": net.pk(TIER2),
        "amount": 5,
        "currency": "CNY",
        "due_ms": net.now_ms + DAY_MS,
        "invoice_hash": bytes(32),
    }
    assert net.attempt(CORE, "scf", "issue", **arguments).receipt.code == "inactive_party"
    kept = child_receivable_id(rid, 1)
    outcome = net.attempt(TIER1, "scf", "transfer", receivable=kept, to=net.pk(TIER2), amount=5)
    assert outcome.receipt.code == "inactive_party"
    assert net.attempt(CORE, "scf", "repay", receivable=rid).receipt.code == "inactive_party"
    net.ok("lion-bank", "membership", "reinstate_enterprise", id=TIER2)
    net.ok(CORE, "scf", "issue", **arguments)
    net.ok(TIER1, "scf", "transfer", receivable=kept, to=net.pk(TIER2), amount=5)
    net.ok(CORE, "scf", "repay", receivable=rid)


# ---------------------------------------------------------------------- financing
def test_bank_finances_at_a_discount_atomically(net: Network) -> None:
    rid = issue(net, amount=1_000_000)
    due = receivable(net, rid)["due_ms"]
    assert isinstance(due, int)
    offer = _map(
        net.ok(
            TIER1,
            "scf",
            "offer_financing",
            receivable=rid,
            bank=net.pk("lion-bank"),
            rate_bps=500,
            expires_ms=net.now_ms + DAY_MS,
        )
    )
    price = offer["price"]
    assert price == discounted_price(1_000_000, 500, due - (net.now_ms - 1000))
    assert isinstance(price, int)
    assert 1_000_000 - 13_000 < price < 1_000_000  # about 5% a year for 90 days
    assert net.rejected(TIER1, "scf", "transfer", receivable=rid, to=net.pk(TIER2)) == (
        "financing_pending"
    )
    assert net.rejected("harbour-bank", "scf", "accept_financing", receivable=rid) == (
        "not_financier"
    )
    before = net.balance(TIER1, "CNY")
    net.ok("lion-bank", "scf", "accept_financing", receivable=rid)
    assert net.balance(TIER1, "CNY") == before + price
    record = receivable(net, rid)
    assert record["holder"] == net.pk("lion-bank")
    assert record["financed_by"] == net.pk("lion-bank")
    assert net.rejected("lion-bank", "scf", "accept_financing", receivable=rid) == ("no_financing")


def test_financing_rules(net: Network) -> None:
    rid = issue(net)
    args: dict[str, Value] = {"receivable": rid, "rate_bps": 100, "expires_ms": net.now_ms + 5_000}
    assert net.rejected(TIER1, "scf", "offer_financing", bank=net.pk(TIER2), **args) == (
        "not_a_bank"
    )
    assert (
        net.rejected(
            TIER1, "scf", "offer_financing", bank=net.pk("lion-bank"), **{**args, "expires_ms": 1}
        )
        == "offer_expiry"
    )
    net.ok(TIER1, "scf", "offer_financing", bank=net.pk("lion-bank"), **args)
    assert net.rejected(TIER2, "scf", "cancel_financing", receivable=rid) == "not_holder"
    net.ok(TIER1, "scf", "cancel_financing", receivable=rid)
    assert net.rejected(TIER1, "scf", "cancel_financing", receivable=rid) == "no_financing"
    assert receivable(net, rid)["financing"] is None


def test_a_financing_offer_that_would_cost_nothing_is_refused(net: Network) -> None:
    # At 100 % a year for more than a year the discount is the whole amount: no bank could pay
    # such a price, so the offer is refused instead of blocking the receivable until it expires.
    rid = issue(net, due_ms=net.now_ms + 400 * DAY_MS)
    offer: dict[str, Value] = {
        "receivable": rid,
        "bank": net.pk("lion-bank"),
        "rate_bps": 10_000,
        "expires_ms": net.now_ms + DAY_MS,
    }
    assert net.attempt(TIER1, "scf", "offer_financing", **offer).receipt.code == "zero_price"
    assert receivable(net, rid)["financing"] is None
    net.ok(TIER1, "scf", "offer_financing", **{**offer, "rate_bps": 9_000})
    net.ok("lion-bank", "scf", "accept_financing", receivable=rid)


def test_an_expired_financing_offer_is_withdrawn_and_blocks_nothing(net: Network) -> None:
    rid = issue(net)
    offer: dict[str, Value] = {
        "receivable": rid,
        "bank": net.pk("lion-bank"),
        "rate_bps": 100,
        "expires_ms": net.now_ms + 5_000,
    }
    net.ok(TIER1, "scf", "offer_financing", **offer)
    assert net.rejected(TIER1, "scf", "transfer", receivable=rid, to=net.pk(TIER2)) == (
        "financing_pending"
    )
    net.advance(10_000)
    # The first block past the expiry refuses the acceptance, then withdraws the offer.
    result = net.chain.run([net.sign("lion-bank", "scf", "accept_financing", receivable=rid)])
    assert result.receipts[0].code == "offer_expired"
    assert [(event.app, event.kind) for event in result.block_events] == [
        ("scf", "financing_expired")
    ]
    assert receivable(net, rid)["financing"] is None
    assert net.rejected("lion-bank", "scf", "accept_financing", receivable=rid) == ("no_financing")
    # An offer that expires in the same block as a transfer does not block the transfer, and
    # the transfer withdraws it (the sweep then finds nothing left to do).
    net.ok(TIER1, "scf", "offer_financing", **{**offer, "expires_ms": net.now_ms + 500})
    result = net.chain.run([net.sign(TIER1, "scf", "transfer", receivable=rid, to=net.pk(TIER2))])
    assert result.receipts[0].ok
    assert result.block_events == ()
    record = receivable(net, rid)
    assert record["holder"] == net.pk(TIER2)
    assert record["financing"] is None


def test_a_bank_finances_a_receivable_again_after_selling_it_on(net: Network) -> None:
    # The history a property test found: lion-bank finances a receivable, sells it back to the
    # supplier, and is offered it again. Each financing pays under its own end-to-end id.
    rid = issue(net, amount=1)
    offer: dict[str, Value] = {
        "receivable": rid,
        "bank": net.pk("lion-bank"),
        "rate_bps": 0,
        "expires_ms": net.now_ms + DAY_MS,
    }
    net.ok(TIER1, "scf", "offer_financing", **offer)
    first = _map(net.ok("lion-bank", "scf", "accept_financing", receivable=rid))
    net.ok("lion-bank", "scf", "transfer", receivable=rid, to=net.pk(TIER1), amount=1)
    net.ok(TIER1, "scf", "offer_financing", **offer)
    second = _map(net.ok("lion-bank", "scf", "accept_financing", receivable=rid))
    assert receivable(net, rid)["holder"] == net.pk("lion-bank")
    assert receivable(net, rid)["financings"] == 2
    for n, result in ((1, first), (2, second)):
        payment = _map(
            net.query(
                "payments",
                "payment",
                sender=net.pk("lion-bank"),
                end_to_end_id=f"scf-fin-{rid}-{n}",
            )
        )
        assert payment["id"] == _map(result["payment"])["payment"]
        assert payment["to"] == net.pk(TIER1)
    # The bank's own payments keep the uniqueness rule.
    args: dict[str, Value] = {"to": net.pk(TIER1), "currency": "CNY", "amount": 1}
    net.ok("lion-bank", "payments", "transfer", end_to_end_id="LB-1", **args)
    assert net.rejected("lion-bank", "payments", "transfer", end_to_end_id="LB-1", **args) == (
        "duplicate_end_to_end_id"
    )
    # Repaid once, to the bank that holds it now.
    net.ok(CORE, "scf", "repay", receivable=rid)
    assert net.rejected(CORE, "scf", "repay", receivable=rid) == "nothing_due"


def test_financing_without_bank_funds_changes_nothing(net: Network) -> None:
    # A receivable larger than the bank's CNY liquidity: the payment fails, the holder stays.
    rid = issue(net, amount=10**15)
    net.ok(
        TIER1,
        "scf",
        "offer_financing",
        receivable=rid,
        bank=net.pk("lion-bank"),
        rate_bps=0,
        expires_ms=net.now_ms + DAY_MS,
    )
    assert net.rejected("lion-bank", "scf", "accept_financing", receivable=rid) == (
        "insufficient_funds"
    )
    assert receivable(net, rid)["holder"] == net.pk(TIER1)


# ---------------------------------------------------------------------- repayment
def test_debtor_repays_every_current_holder(net: Network) -> None:
    rid = issue(net)
    net.ok(TIER1, "scf", "transfer", receivable=rid, to=net.pk(TIER2), amount=30_000)
    tier1, tier2 = net.balance(TIER1, "CNY"), net.balance(TIER2, "CNY")
    assert net.rejected(TIER1, "scf", "repay", receivable=rid) == "not_debtor"
    result = _map(net.ok(CORE, "scf", "repay", receivable=rid))
    assert len(result["repaid"]) == 2  # type: ignore[arg-type]
    assert net.balance(TIER2, "CNY") == tier2 + 30_000
    assert net.balance(TIER1, "CNY") == tier1 + 70_000
    assert net.balance(CORE, "CNY") == ENTERPRISE_FUNDS - 100_000
    assert receivable(net, child_receivable_id(rid, 0))["status"] == "repaid"
    assert net.query("scf", "exposure", debtor=net.pk(CORE)) == {}
    assert net.rejected(CORE, "scf", "repay", receivable=rid) == "nothing_due"


def test_repaying_withdraws_a_pending_financing_offer(net: Network) -> None:
    rid = issue(net)
    net.ok(
        TIER1,
        "scf",
        "offer_financing",
        receivable=rid,
        bank=net.pk("lion-bank"),
        rate_bps=100,
        expires_ms=net.now_ms + DAY_MS,
    )
    net.ok(CORE, "scf", "repay", receivable=rid)
    assert receivable(net, rid)["financing"] is None
    # Nothing is left to finance: the bank is told the offer is gone, not that it is overdue.
    assert net.rejected("lion-bank", "scf", "accept_financing", receivable=rid) == ("no_financing")
    net.advance(2 * DAY_MS)
    assert net.chain.run([]).block_events == ()  # the withdrawn offer left no expiry behind


def test_repay_without_funds_pays_nobody(net: Network) -> None:
    rid = issue(net, amount=ENTERPRISE_FUNDS + 1)
    assert net.rejected(CORE, "scf", "repay", receivable=rid) == "insufficient_funds"
    assert receivable(net, rid)["status"] == "active"


def _split_wide(net: Network, rid: str, every: tuple[int, ...]) -> None:
    """Split ``rid`` 16 ways, then every ``every[1]``-th of its children 16 ways, then every
    ``every[2]``-th of theirs, and so on (``every[0]`` is 1)."""
    parents = [rid]
    for step in every:
        block = []
        children: list[str] = []
        for parent in parents[::step]:
            amount = receivable(net, parent)["amount"]
            assert isinstance(amount, int)
            amounts: Value = (amount // 16,) * 16
            block.append(net.sign(TIER1, "scf", "split", receivable=parent, amounts=amounts))
            children.extend(child_receivable_id(parent, index) for index in range(16))
        assert all(receipt.ok for receipt in net.chain.run(block).receipts)
        parents = children


def test_repaying_and_marking_overdue_walk_a_bounded_part_of_a_tree(net: Network) -> None:
    # However far a holder split a receivable, one repayment or overdue marking walks at most
    # WALK_NODES_MAX receivables of it; a larger tree is settled a subtree at a time.
    rid = issue(net, amount=16**3)
    _split_wide(net, rid, (1, 1, 8))  # 1 + 16 + 256 + 32 * 16 = 785 receivables
    net.advance(91 * DAY_MS)
    for operation, name in (("mark_overdue", TIER2), ("repay", CORE)):
        outcome = net.attempt(name, "scf", operation, receivable=rid)
        assert outcome.receipt.code == "too_many_leaves", operation
    # The first child's subtree: 16 children, two of them split 16 ways again.
    first = child_receivable_id(rid, 0)
    marked = _map(net.ok(TIER2, "scf", "mark_overdue", receivable=first))["overdue"]
    assert isinstance(marked, tuple)
    assert len(marked) == 14 + 2 * 16
    repaid = _map(net.ok(CORE, "scf", "repay", receivable=first))["repaid"]
    assert isinstance(repaid, tuple)
    assert len(repaid) == 14 + 2 * 16


def test_overdue_after_due_date_and_still_repayable(net: Network) -> None:
    rid = issue(net)
    assert net.rejected(TIER1, "scf", "mark_overdue", receivable=rid) == "not_due"
    net.advance(91 * DAY_MS)
    late = _map(net.query("scf", "exposure", debtor=net.pk(CORE), now_ms=net.now_ms))
    assert _map(late["CNY"])["overdue"] == 100_000
    net.ok(TIER1, "scf", "mark_overdue", receivable=rid)
    assert receivable(net, rid)["status"] == "overdue"
    assert net.rejected(TIER1, "scf", "mark_overdue", receivable=rid) == "nothing_due"
    net.ok(CORE, "scf", "repay", receivable=rid)
    assert receivable(net, rid)["status"] == "repaid"
