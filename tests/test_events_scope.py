"""``GET /events`` follows the caller's membership as the chain changes it: a stream opened
by a bank's staff key stops carrying the bank's customers' items from the height at which the
key is suspended, as a new request would be refused them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import trio

from apps.base import Event
from apps.host import Receipt
from apps.payments import PaymentsApp
from consensus.codec import Value
from consensus.crypto import PrivateKey
from node.access import AccessControl
from node.auth import RequestVerifier
from node.events import EventFilter, StreamBlock, StreamTransaction, event_stream

STAFF: Final = PrivateKey(b"\x11" * 32).public_key
ALICE: Final = PrivateKey(b"\x12" * 32).public_key
BOB: Final = PrivateKey(b"\x13" * 32).public_key
SUSPENDED_AT: Final = 2
TOP: Final = 3


class Chain:
    """A fake node: block h holds one payment by alice; the staff key is suspended from
    height ``SUSPENDED_AT`` on (membership answers as of the height the node is at)."""

    def __init__(self) -> None:
        self.current = 1

    def height(self) -> int:
        return self.current

    async def wait_for_height(self, height: int, timeout_s: float) -> None:
        """The next block commits at once."""
        await trio.lowlevel.checkpoint()
        self.current = max(self.current, min(height, TOP))

    def stream_block(self, height: int) -> StreamBlock | None:
        if height > self.current:
            return None
        payment = Event(
            "payments", "payment", {"from": ALICE, "to": BOB, "amount": height, "currency": "SGD"}
        )
        receipt = Receipt(bytes([height]) * 32, 0, "ok", events=(payment,))
        transaction = StreamTransaction(
            bytes([height]) * 32, 0, ALICE, "payments", "transfer", receipt
        )
        return StreamBlock(height, bytes(32), 0, 0, (transaction,))

    def query(self, app: str, path: str, arguments: Mapping[str, Value]) -> Value:
        assert app == "membership"
        if path == "institution":
            bank = arguments["id"] == "lion-bank"
            return {
                "id": arguments["id"],
                "kind": "bank",
                "jurisdiction": "SG" if bank else "HK",
                "status": "active",
            }
        key = arguments["public_key"]
        if key == STAFF:
            status = "suspended" if self.current >= SUSPENDED_AT else "active"
            staff: dict[str, Value] = {
                "institution": "lion-bank",
                "roles": ("bank",),
                "status": status,
                "jurisdiction": "SG",
            }
            return staff
        if key in (ALICE, BOB):
            institution = "lion-bank" if key == ALICE else "harbour-bank"
            return {
                "institution": institution,
                "roles": ("customer",),
                "status": "active",
                "jurisdiction": "SG" if key == ALICE else "HK",
            }
        return None


async def test_a_suspended_keys_open_stream_carries_nothing_of_its_banks_customers() -> None:
    chain = Chain()
    access = AccessControl(
        mode="scoped",
        verifier=RequestVerifier("scope-net"),
        query=chain.query,
        rules_of=lambda app: PaymentsApp.read_rules if app == "payments" else None,
        node_keys=frozenset(),
        height=chain.height,
    )
    principal = access.principal_of(STAFF)
    wanted = EventFilter(types=frozenset({"receipt", "app_event"}), until=TOP)
    heights: list[int] = []
    with trio.fail_after(30):
        async for chunk in event_stream(chain, access, principal, wanted, 1):
            lines = chunk.decode().splitlines()
            heights.extend(int(line[4:].split("-")[0]) for line in lines if line.startswith("id: "))
    # Block 1's receipt and payment, while the key is active; nothing after its suspension.
    assert heights == [1, 1]
