"""``GET /events``: committed blocks, receipts and app events as Server-Sent Events.

Theory of operation
-------------------
Each committed block becomes a numbered sequence of **items**: the block itself (number 0),
then, for each transaction in order, its receipt followed by the events it emitted, then the
events of the apps' end-of-block work (offers expired and their escrow released, proposals
expired: no transaction and no sender; ``"end_block": true``, with the ``hash`` the apps saw
there, ``apps.host.end_block_hash``). An item's
SSE id is ``<height>-<number>``, so a client that reconnects with ``Last-Event-ID`` (or
``?after=<id>``) resumes exactly after the last item it saw, and ``?from=H`` starts at the
first item of block H (default: the next block to commit). Items are built from the store, so
any committed height can be replayed; the stream then follows new commits as they happen,
writing an SSE comment as a heartbeat while the chain is idle.

Three item types (the SSE ``event:`` field):

* ``block``: height, hash, time, proposer and transaction count (public, like the headers);
* ``receipt``: one transaction's outcome: hash, sender, app and operation, status, code,
  message, result and events;
* ``app_event``: one event of a transaction (``payments`` ``payment``, ``scf``
  ``receivable_financed``, ``assets`` ``freeze``, ...), with the transaction hash and sender.

The stream is **scoped by the read rules** (``node.access``): a receipt or event the caller may
not read is left out, exactly as if it had been filtered; the first item (``scope``) says whose
view this is. The caller's membership is read again for each block, so a stream follows it as
the chain changes it: a key suspended (or given other roles) gets from that height on what a new
request would. Filters narrow it further: ``types`` (block, receipt, app_event), ``app``,
``kind`` (event kinds) and ``account`` (items whose subjects include the account: its sender or
an account the event's rule names). A filter on an account the caller may not read is refused
up front with 403 naming the rule. ``until=H`` ends the stream after block H (a finite replay).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from apps.base import Event
from apps.host import Receipt
from apps.transaction import Transaction, TransactionError
from consensus.crypto import hash_bytes
from node.access import AccessControl, Principal
from node.digits import decimal_value
from node.jsonvalue import JsonType, to_json

__all__ = [
    "ITEM_TYPES",
    "EventFilter",
    "EventSource",
    "StreamBlock",
    "StreamBlockCache",
    "StreamTransaction",
    "event_stream",
    "parse_event_id",
    "parse_filter",
]

ITEM_BLOCK: Final = "block"
ITEM_RECEIPT: Final = "receipt"
ITEM_EVENT: Final = "app_event"
ITEM_TYPES: Final = (ITEM_BLOCK, ITEM_RECEIPT, ITEM_EVENT)
# While no block commits, a heartbeat comment every this many seconds shows the link is alive.
HEARTBEAT_S: Final = 5.0
# A client reconnecting after a break waits this long before it retries (SSE ``retry:``).
RETRY_MS: Final = 2000
# Filters name at most this many apps, kinds or accounts (a URL is not a database query).
FILTER_VALUES_MAX: Final = 32
# Blocks whose items are kept ready for the next subscriber (followers read the same blocks).
_CACHED_BLOCKS: Final = 16
# A height or an event's number has at most this many digits (2**63 - 1 has 19).
_NUMBER_DIGITS_MAX: Final = 19


@dataclass(frozen=True, slots=True)
class StreamTransaction:
    """One committed transaction as the stream shows it."""

    hash: bytes
    index: int
    sender: bytes
    app: str
    operation: str
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class StreamBlock:
    """One committed block as the stream shows it."""

    height: int
    hash: bytes
    time_ms: int
    proposer: int
    transactions: tuple[StreamTransaction, ...]
    # The apps' end-of-block work: its events, and the transaction hash the apps saw there.
    end_block_events: tuple[Event, ...] = ()
    end_block_hash: bytes = b""


class EventSource(Protocol):
    """What the stream needs from the node."""

    def height(self) -> int:
        """Last committed height."""
        ...

    async def wait_for_height(self, height: int, timeout_s: float) -> None:
        """Return when ``height`` is committed, or at the timeout."""
        ...

    def stream_block(self, height: int) -> StreamBlock | None:
        """The committed block at ``height`` with its receipts, or None."""
        ...


class StreamBlockCache:
    """The last few ``StreamBlock``s, built once by ``load`` and shared by every subscriber."""

    def __init__(self, load: Callable[[int], StreamBlock | None]) -> None:
        self._load = load
        self._blocks: OrderedDict[int, StreamBlock] = OrderedDict()

    def peek(self, height: int) -> StreamBlock | None:
        """The block at ``height`` if it is cached (never loads it)."""
        return self._blocks.get(height)

    def get(self, height: int) -> StreamBlock | None:
        """The block at ``height`` (None when not committed)."""
        block = self._blocks.get(height)
        if block is not None:
            self._blocks.move_to_end(height)
            return block
        block = self._load(height)
        if block is not None:
            self._blocks[height] = block
            while len(self._blocks) > _CACHED_BLOCKS:
                self._blocks.popitem(last=False)
        return block


def stream_transaction(
    raw: bytes, index: int, receipt: Receipt, chain_id: str
) -> StreamTransaction:
    """A committed transaction's stream view (its signature was checked when it committed)."""
    try:
        transaction = Transaction.decode(raw, chain_id=chain_id, check_signature=False)
        sender, app, operation = transaction.sender, transaction.app, transaction.operation
    except TransactionError:
        sender, app, operation = b"", "", ""
    return StreamTransaction(hash_bytes(raw), index, sender, app, operation, receipt)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What a subscriber asked for (empty sets: everything)."""

    types: frozenset[str] = frozenset(ITEM_TYPES)
    apps: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    accounts: frozenset[bytes] = frozenset()
    until: int | None = None


def _list(query: Mapping[str, str], name: str) -> list[str]:
    text = query.get(name, "")
    values = [value.strip() for value in text.split(",") if value.strip()]
    if len(values) > FILTER_VALUES_MAX:
        raise ValueError(f"{name} lists {len(values)} values; at most {FILTER_VALUES_MAX}")
    return values


def parse_filter(query: Mapping[str, str]) -> EventFilter:
    """The filter in a request's query string; raises ``ValueError`` naming the parameter."""
    types = _list(query, "types") or list(ITEM_TYPES)
    unknown = sorted(set(types) - set(ITEM_TYPES))
    if unknown:
        raise ValueError(f"types: unknown {', '.join(unknown)}; use {', '.join(ITEM_TYPES)}")
    accounts: set[bytes] = set()
    for text in _list(query, "account"):
        try:
            account = bytes.fromhex(text)
        except ValueError:
            account = b""
        if len(account) != 32:
            raise ValueError(f"account: {text[:80]!r} is not a 64-hex-digit public key")
        accounts.add(account)
    until = query.get("until")
    until_height = None if until is None else _number(until)
    if until is not None and until_height is None:
        raise ValueError("until must be a block height")
    return EventFilter(
        types=frozenset(types),
        apps=frozenset(_list(query, "app")),
        kinds=frozenset(_list(query, "kind")),
        accounts=frozenset(accounts),
        until=until_height,
    )


def _number(text: str) -> int | None:
    """``text`` as a height or an event's number (ASCII digits, at most 19 past leading
    zeros), or None."""
    return decimal_value(text, _NUMBER_DIGITS_MAX)


def parse_event_id(text: str) -> tuple[int, int]:
    """``"<height>-<number>"`` -> (height, number); raises ``ValueError``."""
    height_text, separator, number_text = text.strip().partition("-")
    height, number = _number(height_text), _number(number_text)
    if not separator or height is None or number is None:
        raise ValueError(f"event id {text[:40]!r} is not <height>-<number>")
    return height, number


def _message(kind: str, item_id: str | None, document: Mapping[str, JsonType]) -> bytes:
    lines = [f"event: {kind}"]
    if item_id is not None:
        lines.append(f"id: {item_id}")
    lines.append("data: " + json.dumps(document, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def _event_json(event: Event) -> dict[str, JsonType]:
    return {"app": event.app, "kind": event.kind, "attributes": to_json(dict(event.attributes))}


class _View:
    """Decides, per item, whether one subscriber gets it (rules and filter)."""

    def __init__(self, access: AccessControl, principal: Principal, wanted: EventFilter) -> None:
        self.access = access
        self.principal = principal
        self.wanted = wanted

    def _concerns(self, sender: bytes, events: tuple[Event, ...]) -> bool:
        if not self.wanted.accounts:
            return True
        if sender in self.wanted.accounts:
            return True
        for event in events:
            _, subjects = self.access.event_subjects(sender, event)
            if subjects.accounts & self.wanted.accounts:
                return True
        return False

    def receipt(self, transaction: StreamTransaction) -> bool:
        wanted = self.wanted
        events = transaction.receipt.events
        if ITEM_RECEIPT not in wanted.types:
            return False
        if (
            wanted.apps
            and transaction.app not in wanted.apps
            and not any(event.app in wanted.apps for event in events)
        ):
            return False
        if wanted.kinds and not any(event.kind in wanted.kinds for event in events):
            return False
        if not self._concerns(transaction.sender, events):
            return False
        return self.access.receipt_visible(
            self.principal, transaction.sender, transaction.app, events
        )

    def event(self, sender: bytes, event: Event) -> bool:
        """Whether the subscriber gets ``event`` of a transaction sent by ``sender`` (``b""``
        for end-of-block events: nobody's key, so only the event's own rule can grant it)."""
        wanted = self.wanted
        if ITEM_EVENT not in wanted.types:
            return False
        if wanted.apps and event.app not in wanted.apps:
            return False
        if wanted.kinds and event.kind not in wanted.kinds:
            return False
        if not self._concerns(sender, (event,)):
            return False
        return self.access.event_visible(self.principal, sender, event)


def _items(block: StreamBlock, view: _View) -> list[tuple[int, str, dict[str, JsonType]]]:
    """(number, type, document) of every item of ``block`` the subscriber gets."""
    items: list[tuple[int, str, dict[str, JsonType]]] = []
    if ITEM_BLOCK in view.wanted.types:
        items.append(
            (
                0,
                ITEM_BLOCK,
                {
                    "height": block.height,
                    "hash": block.hash.hex(),
                    "time_ms": block.time_ms,
                    "proposer": block.proposer,
                    "transactions": len(block.transactions),
                },
            )
        )
    number = 0
    for transaction in block.transactions:
        number += 1
        receipt = transaction.receipt
        common: dict[str, JsonType] = {
            "height": block.height,
            "time_ms": block.time_ms,
            "index": transaction.index,
            "hash": transaction.hash.hex(),
            "sender": transaction.sender.hex(),
        }
        if view.receipt(transaction):
            items.append(
                (
                    number,
                    ITEM_RECEIPT,
                    {
                        **common,
                        "app": transaction.app,
                        "operation": transaction.operation,
                        "status": receipt.status,
                        "code": receipt.code,
                        "message": receipt.message,
                        "result": to_json(receipt.result),
                        "events": [_event_json(event) for event in receipt.events],
                    },
                )
            )
        for position, event in enumerate(receipt.events):
            number += 1
            if view.event(transaction.sender, event):
                items.append(
                    (number, ITEM_EVENT, {**common, "event_index": position, **_event_json(event)})
                )
    end_block: dict[str, JsonType] = {
        "height": block.height,
        "time_ms": block.time_ms,
        "index": len(block.transactions),
        "hash": block.end_block_hash.hex(),
        "sender": "",
        "end_block": True,
    }
    for position, event in enumerate(block.end_block_events):
        number += 1
        if view.event(b"", event):
            items.append(
                (number, ITEM_EVENT, {**end_block, "event_index": position, **_event_json(event)})
            )
    return items


async def event_stream(
    source: EventSource,
    access: AccessControl,
    principal: Principal,
    wanted: EventFilter,
    start_height: int,
    after_number: int = -1,
) -> AsyncGenerator[bytes, None]:
    """The SSE bytes of every item from block ``start_height`` (items numbered above
    ``after_number`` in that first block) that ``principal`` may read and ``wanted`` selects."""
    view = _View(access, principal, wanted)
    yield f"retry: {RETRY_MS}\n\n".encode()
    yield _message(
        "scope",
        None,
        {
            "caller": principal.label(),
            "sees": "everything"
            if access.sees_everything(principal)
            else "what its read rules allow",
            "from": start_height,
        },
    )
    height = start_height
    skip_through = after_number
    while wanted.until is None or height <= wanted.until:
        if source.height() < height:
            await source.wait_for_height(height, HEARTBEAT_S)
            if source.height() < height:
                yield f": heartbeat {source.height()}\n\n".encode()
                continue
        block = source.stream_block(height)
        if block is not None:
            # Who the caller is now: membership may have changed since the stream began.
            view.principal = access.current(principal)
            for number, kind, document in _items(block, view):
                if number > skip_through:
                    yield _message(kind, f"{height}-{number}", document)
        skip_through = -1
        height += 1
        await trio.lowlevel.checkpoint()
    yield _message("end", None, {"until": wanted.until})
