"""More items expire at once than one block closes: the rest close in the next blocks, and
until then every query already reports them as expired (DvP offers, financing offers,
governance proposals; FX offers are in tests/test_payments.py)."""

from __future__ import annotations

from collections.abc import Mapping

from apps._records import EXPIRY_SWEEP_MAX
from apps.assets import dvp_offer_id
from apps.base import Event
from apps.membership import PROPOSAL_LIFETIME_BLOCKS
from apps.scf import receivable_id
from consensus.codec import Value
from tests.apps_fixtures import DAY_MS, Network
from tests.host_fixtures import Chain, key

COUNT = EXPIRY_SWEEP_MAX + 2


def _map(value: Value) -> Mapping[str, Value]:
    assert isinstance(value, Mapping)
    return value  # type: ignore[return-value]


def _closed(events: tuple[Event, ...]) -> int:
    return sum(1 for event in events if event.kind == "dvp_cancelled")


def test_dvp_offers_beyond_one_blocks_sweep() -> None:
    net = Network.start()
    net.ok("lion-bank", "assets", "create_asset", symbol="BOND", decimals=0, supply_cap=COUNT)
    net.ok("lion-bank", "assets", "mint", symbol="BOND", to=net.pk("lion-bank"), amount=COUNT)
    expires_ms = net.now_ms + 5_000
    offers = [
        net.sign(
            "lion-bank",
            "assets",
            "offer_dvp",
            symbol="BOND",
            side="sell",
            amount=1,
            currency="SGD",
            price=1,
            expires_ms=expires_ms,
        )
        for _ in range(COUNT)
    ]
    assert all(receipt.ok for receipt in net.chain.run(offers).receipts)
    net.advance(10_000)
    assert _closed(net.chain.run([]).block_events) == EXPIRY_SWEEP_MAX
    assert net.units("lion-bank", "BOND") == EXPIRY_SWEEP_MAX
    assert net.query("assets", "offers", limit=500) == ()
    for tx in offers:
        assert _map(net.query("assets", "offer", id=dvp_offer_id(tx.hash)))["status"] == "expired"
    assert _closed(net.chain.run([]).block_events) == 2
    assert net.units("lion-bank", "BOND") == COUNT


def test_financing_offers_beyond_one_blocks_sweep() -> None:
    net = Network.start()
    issued = [
        net.sign(
            "dragon-motors",
            "scf",
            "issue",
            supplier=net.pk("kowloon-parts"),
            amount=100,
            currency="CNY",
            due_ms=net.now_ms + 90 * DAY_MS,
            invoice_hash=index.to_bytes(32, "big"),
        )
        for index in range(COUNT)
    ]
    rids = [receivable_id(tx.hash) for tx in issued]
    net.chain.run(issued)
    net.chain.run([net.sign("kowloon-parts", "scf", "accept", receivable=rid) for rid in rids])
    expires_ms = net.now_ms + 5_000
    offers = [
        net.sign(
            "kowloon-parts",
            "scf",
            "offer_financing",
            receivable=rid,
            bank=net.pk("lion-bank"),
            rate_bps=100,
            expires_ms=expires_ms,
        )
        for rid in rids
    ]
    assert all(receipt.ok for receipt in net.chain.run(offers).receipts)
    net.advance(10_000)
    assert len(net.chain.run([]).block_events) == EXPIRY_SWEEP_MAX
    held = net.query("scf", "by_holder", holder=net.pk("kowloon-parts"), limit=500)
    assert isinstance(held, tuple)
    assert len(held) == COUNT
    assert all(_map(record)["financing"] is None for record in held)
    assert all(_map(net.query("scf", "receivable", id=rid))["financing"] is None for rid in rids)
    assert len(net.chain.run([]).block_events) == 2


def test_proposals_beyond_one_blocks_sweep() -> None:
    c = Chain.start()
    proposals = [
        c.sign(
            key("bank_a"),
            "membership",
            "propose",
            {
                "action": "admit_institution",
                "institution": {
                    "id": f"bank-{index}",
                    "name": f"Bank {index}",
                    "kind": "bank",
                    "jurisdiction": "AE",
                },
                "identities": [],
            },
        )
        for index in range(COUNT)
    ]
    assert all(receipt.ok for receipt in c.run(proposals).receipts)
    listed = c.host.query("membership", "proposals", {})
    assert isinstance(listed, tuple)
    assert len(listed) == COUNT
    c.host.height += PROPOSAL_LIFETIME_BLOCKS  # jump the committed height past every expiry
    assert len(c.run([]).block_events) == EXPIRY_SWEEP_MAX
    assert c.host.query("membership", "proposals", {}) == ()
    for tx in proposals:
        found = c.host.query("membership", "proposal", {"id": tx.hash.hex()})
        assert _map(found)["status"] == "expired"
    assert len(c.run([]).block_events) == 2
