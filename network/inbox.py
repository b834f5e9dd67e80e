"""Received consensus messages, taken from the peers in turn.

One queue shared by every peer is first come, first served: a peer that sends as fast as its
receive rate allows keeps the queue full, and a message from any other peer waits behind
everything the flooder got in first (thousands of messages, each decoded and checked by the
replica) even though the flooder is held to its rate. A byzantine validator could so slow
every step of consensus without breaking a rule.

``FairInbox`` keeps a bounded queue per peer and gives the node one message from each peer
with messages waiting, in turn (round robin over the peers, in the order they became
non-empty). A message from a peer that sends little therefore waits behind at most one message
of each other peer, however much those send. A peer whose queue is full waits in ``put`` (its
connection's receive loop stops reading, which back-pressures that peer's socket alone); the
others are not held up. The inbox also holds at most ``total_max`` messages in all: when it is
full, the peers wait for room in the order they came, one message each (a peer's receive loop
puts one message at a time), so a quiet peer's message gets in after at most one of each other
peer's. A peer's queue is forgotten once it is empty, so the peers that come and go leave
nothing behind.

It is one consumer's: ``receive`` (or ``async for``) from one task.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Hashable
from typing import Generic, TypeVar

import trio

__all__ = ["FairInbox"]

_Item = TypeVar("_Item")


class _Waiter(Generic[_Item]):
    """A ``put`` that found no room: its message, admitted by a ``receive`` that frees room."""

    __slots__ = ("admitted", "item", "sender")

    def __init__(self, sender: Hashable, item: _Item) -> None:
        self.sender = sender
        self.item = item
        self.admitted = trio.Event()


class FairInbox(Generic[_Item]):
    """Per-sender bounded queues taken in turn (see the module docstring)."""

    def __init__(self, per_peer_max: int, total_max: int) -> None:
        if not 1 <= per_peer_max <= total_max:
            raise ValueError("want 1 <= per_peer_max <= total_max")
        self.per_peer_max = per_peer_max
        self.total_max = total_max
        self._count = 0
        # Senders with messages waiting, in the order of their turns; each with its queue.
        self._turns: OrderedDict[Hashable, deque[_Item]] = OrderedDict()
        self._readable = trio.lowlevel.ParkingLot()
        # Puts that found no room, in the order they came; a freed place goes to the first
        # one it fits (one per peer: a peer's receive loop puts one message at a time).
        self._waiters: deque[_Waiter[_Item]] = deque()

    def __len__(self) -> int:
        return self._count

    def waiting(self, sender: Hashable) -> int:
        """How many of ``sender``'s messages wait (not counting one waiting for room)."""
        queue = self._turns.get(sender)
        return 0 if queue is None else len(queue)

    def _fits(self, sender: Hashable) -> bool:
        return self._count < self.total_max and self.waiting(sender) < self.per_peer_max

    def _add(self, sender: Hashable, item: _Item) -> None:
        queue = self._turns.get(sender)
        if queue is None:
            queue = self._turns[sender] = deque()
        queue.append(item)
        self._count += 1
        self._readable.unpark()

    async def put(self, sender: Hashable, item: _Item) -> None:
        """Queue ``item`` from ``sender``; waits while ``sender``'s queue, or the inbox, is
        full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        # No waiting put fits (each ``receive`` admits those that do), so one that fits now
        # takes no place another was waiting for.
        if self._fits(sender):
            self._add(sender, item)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        waiter = _Waiter(sender, item)
        self._waiters.append(waiter)
        try:
            await waiter.admitted.wait()
        except BaseException:
            if not waiter.admitted.is_set():
                self._waiters.remove(waiter)
            raise

    async def receive(self) -> _Item:
        """The next message: the oldest of the sender whose turn it is."""
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while not self._turns:
            await self._readable.park()
            parked = True
        sender, queue = self._turns.popitem(last=False)
        item = queue.popleft()
        self._count -= 1
        if queue:
            self._turns[sender] = queue  # its next turn comes after every other sender's
        self._admit()
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return item

    def _admit(self) -> None:
        """Move the waiting puts that now fit into their queues, first come first."""
        for waiter in list(self._waiters):
            if self._count >= self.total_max:
                break
            if self.waiting(waiter.sender) < self.per_peer_max:
                self._waiters.remove(waiter)
                self._add(waiter.sender, waiter.item)
                waiter.admitted.set()

    def __aiter__(self) -> AsyncIterator[_Item]:
        return self

    async def __anext__(self) -> _Item:
        return await self.receive()
